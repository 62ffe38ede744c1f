// socket(), connect(), accept() & co.  The kernel always makes the TCP connection; the shim records
// which sockets are TCP streams, their role and what the rules decide for them.  Switching a socket
// to an sdx transport hooks in exactly here (after connect()/accept() succeed), keeping the fd.
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>

#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

using namespace sdx;

namespace {

bool is_tcp_stream(int domain, int type, int protocol) {
    return (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM &&
           (protocol == 0 || protocol == IPPROTO_TCP);
}

void on_accepted(int listen_fd, int fd, int flags) noexcept {
    if (fd < 0) return;
    if (Socket* l = tracked(listen_fd)) {
        track_new(fd, l->domain, SocketRole::Accepted, (flags & SOCK_NONBLOCK) != 0,
                  l->decision.load(std::memory_order_relaxed));
    } else {
        untrack(fd);  // clear a stale entry for a number the kernel reused
    }
}

}  // namespace

SDX_EXPORT int socket(int domain, int type, int protocol) noexcept {
    int fd = real::socket(domain, type, protocol);
    if (fd < 0) return fd;
    if (is_tcp_stream(domain, type, protocol)) {
        track_new(fd, domain, SocketRole::Unknown, (type & SOCK_NONBLOCK) != 0, conf::Use::Both);
        count(Call::socket);
    } else {
        untrack(fd);
    }
    return fd;
}

SDX_EXPORT int socketpair(int domain, int type, int protocol, int sv[2]) noexcept {
    int r = real::socketpair(domain, type, protocol, sv);
    if (r == 0) {
        untrack(sv[0]);
        untrack(sv[1]);
    }
    return r;
}

SDX_EXPORT int bind(int fd, const sockaddr* addr, socklen_t len) noexcept {
    if (tracked(fd)) count(Call::bind);
    return real::bind(fd, addr, len);
}

SDX_EXPORT int listen(int fd, int backlog) noexcept {
    int r = real::listen(fd, backlog);
    if (r == 0) {
        if (Socket* s = tracked(fd)) {
            count(Call::listen);
            sockaddr_storage ss{};
            socklen_t len = sizeof ss;
            int saved = errno;
            if (real::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
                s->decision.store(decide(conf::Role::Server, reinterpret_cast<sockaddr*>(&ss), len), std::memory_order_relaxed);
            errno = saved;
            s->role.store(SocketRole::Listener, std::memory_order_relaxed);
        }
    }
    return r;
}

SDX_EXPORT int accept(int fd, sockaddr* addr, socklen_t* len) {
    int r = real::accept(fd, addr, len);
    if (tracked(fd)) count(Call::accept);
    on_accepted(fd, r, 0);
    return r;
}

SDX_EXPORT int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
    int r = real::accept4(fd, addr, len, flags);
    if (tracked(fd)) count(Call::accept4);
    on_accepted(fd, r, flags);
    return r;
}

SDX_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
    if (Socket* s = tracked(fd)) {
        count(Call::connect);
        s->role.store(SocketRole::Client, std::memory_order_relaxed);
        s->decision.store(decide(conf::Role::Client, addr, len), std::memory_order_relaxed);
    }
    return real::connect(fd, addr, len);
}

SDX_EXPORT int shutdown(int fd, int how) noexcept {
    if (tracked(fd)) count(Call::shutdown);
    return real::shutdown(fd, how);
}

SDX_EXPORT int getsockopt(int fd, int level, int name, void* value, socklen_t* len) noexcept {
    if (tracked(fd)) count(Call::getsockopt);
    return real::getsockopt(fd, level, name, value, len);
}

SDX_EXPORT int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
    if (tracked(fd)) count(Call::setsockopt);
    return real::setsockopt(fd, level, name, value, len);
}

SDX_EXPORT int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept {
    if (tracked(fd)) count(Call::getsockname);
    return real::getsockname(fd, addr, len);
}

SDX_EXPORT int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept {
    if (tracked(fd)) count(Call::getpeername);
    return real::getpeername(fd, addr, len);
}
