// socket(), connect(), accept() & co.  The kernel always makes the TCP connection; the shim records
// which sockets are TCP streams, their role and what the rules decide for them.  Switching a socket
// to an sdx transport hooks in exactly here (after connect()/accept() succeed), keeping the fd.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <errno.h>
#include <fcntl.h>

#include <algorithm>
#include <cstring>

#include "preload/accel.hpp"
#include "preload/epoll_set.hpp"
#include "preload/stats_region.hpp"
#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

using namespace sdx;

namespace {

bool is_tcp_stream(int domain, int type, int protocol) {
    return (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM &&
           (protocol == 0 || protocol == IPPROTO_TCP);
}

// `peer`: the address accept() returned (len 0: not known).
void on_accepted(int listen_fd, int fd, int flags, const sockaddr_storage& peer_in, socklen_t peer_len) noexcept {
    if (fd < 0) return;
    Socket* l = tracked(listen_fd);
    if (!l) {
        untrack(fd);  // clear a stale entry for a number the kernel reused
        return;
    }
    track_new(fd, l->domain, SocketRole::Accepted, (flags & SOCK_NONBLOCK) != 0, l->decision.load(std::memory_order_relaxed));
    bool opts = l->conn_opts.load(std::memory_order_relaxed);  // accepted sockets inherit the listener's
    // Its peer may be an sdx process that announced itself to this listener before its SYN.
    if (l->listener) {
        int saved = errno;
        sockaddr_storage peer = peer_in;
        socklen_t len = peer_len;
        Socket* s = tracked(fd);
        if (s && (len > 0 || (len = sizeof peer, real::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0))) {
            shmstats::SocketSlot* slot = s->slot.load(std::memory_order_acquire);
            statsreg::set_peer(slot, reinterpret_cast<sockaddr*>(&peer), len);
            s->conn_opts.store(opts, std::memory_order_relaxed);
            if (accel::Conn* c = accel::accept_from(l->listener, fd, reinterpret_cast<sockaddr*>(&peer), len, slot, opts))
                s->conn.store(c, std::memory_order_release);
            ep::socket_connecting(s);
        }
        errno = saved;
    }
}

// accept()/accept4() for a tracked listener.  The peer's address comes from the call itself when
// the application asked for it in full (no getpeername), or through a buffer of ours when it
// passed none; the application's buffer and length behave exactly as the kernel makes them.
int accept_via(int fd, sockaddr* addr, socklen_t* len, int flags, bool four) {
    sockaddr_storage ss{};
    socklen_t sl = 0;
    int r;
    if (addr) {
        socklen_t cap = len ? *len : 0;
        r = four ? real::accept4(fd, addr, len, flags) : real::accept(fd, addr, len);
        if (r >= 0 && len && *len <= cap && *len <= sizeof ss) {  // not truncated: the peer in full
            std::memcpy(&ss, addr, *len);
            sl = *len;
        }
    } else {
        socklen_t mine = sizeof ss;
        r = four ? real::accept4(fd, reinterpret_cast<sockaddr*>(&ss), &mine, flags)
                 : real::accept(fd, reinterpret_cast<sockaddr*>(&ss), &mine);
        if (r >= 0) sl = mine;
    }
    int saved = errno;
    on_accepted(fd, r, flags, ss, r >= 0 ? sl : 0);
    errno = saved;
    return r;
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
            if (shmstats::SocketSlot* sl = s->slot.load(std::memory_order_acquire)) sl->path.store(shmstats::Path::Listen);
            if (!s->listener && s->decision.load(std::memory_order_relaxed) != conf::Use::Tcp) s->listener = accel::open_listener(fd);
            errno = saved;
        }
    }
    return r;
}

SDX_EXPORT int accept(int fd, sockaddr* addr, socklen_t* len) {
    if (!tracked(fd)) {
        int r = real::accept(fd, addr, len);
        if (r >= 0) untrack(r);  // clear a stale entry for a number the kernel reused
        return r;
    }
    count(Call::accept);
    return accept_via(fd, addr, len, 0, false);
}

SDX_EXPORT int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
    if (!tracked(fd)) {
        int r = real::accept4(fd, addr, len, flags);
        if (r >= 0) untrack(r);  // clear a stale entry for a number the kernel reused
        return r;
    }
    count(Call::accept4);
    return accept_via(fd, addr, len, flags, true);
}

SDX_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
    Socket* s = tracked(fd);
    if (!s) return real::connect(fd, addr, len);
    count(Call::connect);
    // A second connect() (to learn how a nonblocking one ended) must not announce again.
    if (s->role.load(std::memory_order_relaxed) == SocketRole::Client || s->conn.load(std::memory_order_relaxed) || !addr)
        return real::connect(fd, addr, len);
    s->role.store(SocketRole::Client, std::memory_order_relaxed);
    conf::Use use = decide(conf::Role::Client, addr, len);
    s->decision.store(use, std::memory_order_relaxed);
    shmstats::SocketSlot* slot = s->slot.load(std::memory_order_acquire);
    statsreg::set_peer(slot, addr, len);
    if (use == conf::Use::Tcp && accel::enabled()) note_fallback(Fallback::Rule, slot);
    accel::Conn* c = use == conf::Use::Tcp ? nullptr : accel::announce(addr, len, slot, s->conn_opts.load(std::memory_order_relaxed));
    int r = real::connect(fd, addr, len);
    if (c) {
        int saved = errno;
        accel::connect_done(c, fd, r == 0 || errno == EINPROGRESS, r == 0);
        s->conn.store(c, std::memory_order_release);
        ep::socket_connecting(s);
        errno = saved;
    }
    return r;
}

SDX_EXPORT int shutdown(int fd, int how) noexcept {
    Socket* s = tracked(fd);
    if (!s) return real::shutdown(fd, how);
    count(Call::shutdown);
    accel::Conn* c = s->conn.load(std::memory_order_acquire);
    if (c && how >= SHUT_RD && how <= SHUT_RDWR && accel::settle(c, fd, true)) {
        // The engine carries the half-close (DisConn).  The kernel connection stays whole: its
        // FIN means "the peer closed", the liveness signal.
        accel::shutdown(c, fd, how);
        return 0;
    }
    return real::shutdown(fd, how);
}

SDX_EXPORT int getsockopt(int fd, int level, int name, void* value, socklen_t* len) noexcept {
    Socket* s = tracked(fd);
    if (!s) return real::getsockopt(fd, level, name, value, len);
    count(Call::getsockopt);
    accel::Conn* c = s->conn.load(std::memory_order_acquire);
    if (c && level == IPPROTO_TCP && name == TCP_NODELAY && value && len && *len >= sizeof(int)) {
        int r = real::getsockopt(fd, level, name, value, len);
        if (r == 0) *static_cast<int*>(value) = s->app_nodelay.load(std::memory_order_relaxed) ? 1 : 0;
        return r;
    }
    if (c && level == SOL_SOCKET && name == SO_ERROR && value && len && *len >= sizeof(int)) {
        int err = 0;
        if (accel::take_error(c, fd, &err)) {
            *static_cast<int*>(value) = err;
            *len = sizeof(int);
            return 0;
        }
    }
    return real::getsockopt(fd, level, name, value, len);
}

SDX_EXPORT int setsockopt(int fd, int level, int name, const void* value, socklen_t len) noexcept {
    Socket* s = tracked(fd);
    if (!s) return real::setsockopt(fd, level, name, value, len);
    count(Call::setsockopt);
    bool nodelay = level == IPPROTO_TCP && name == TCP_NODELAY && value && len >= static_cast<socklen_t>(sizeof(int));
    if (nodelay && s->conn.load(std::memory_order_acquire)) {
        // An sdx connection keeps Nagle off underneath (its doorbells must not wait); the
        // application's choice is remembered and reported back.
        int r = real::setsockopt(fd, level, name, value, len);
        if (r == 0) {
            s->app_nodelay.store(*static_cast<const int*>(value) != 0, std::memory_order_relaxed);
            int one = 1;
            real::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        return r;
    }
    int r = real::setsockopt(fd, level, name, value, len);
    if (r == 0 && level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO || name == SO_OOBINLINE || name == SO_LINGER))
        s->conn_opts.store(true, std::memory_order_relaxed);
    if (r == 0 && nodelay) s->app_nodelay.store(*static_cast<const int*>(value) != 0, std::memory_order_relaxed);
    if (r == 0 && level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO) && value && len >= static_cast<socklen_t>(sizeof(timeval)))
        if (accel::Conn* c = s->conn.load(std::memory_order_acquire)) accel::set_timeout(c, name, *static_cast<const timeval*>(value));
    // SO_OOBINLINE changes what the engine does with the urgent byte (the kernel socket keeps the
    // setting too, for connections set up later: accel reads it from there).
    if (r == 0 && level == SOL_SOCKET && name == SO_OOBINLINE && value && len >= static_cast<socklen_t>(sizeof(int)))
        if (accel::Conn* c = s->conn.load(std::memory_order_acquire)) accel::set_oob_inline(c, fd, *static_cast<const int*>(value) != 0);
    return r;
}

SDX_EXPORT int getsockname(int fd, sockaddr* addr, socklen_t* len) noexcept {
    if (tracked(fd)) count(Call::getsockname);
    return real::getsockname(fd, addr, len);
}

SDX_EXPORT int getpeername(int fd, sockaddr* addr, socklen_t* len) noexcept {
    if (tracked(fd)) count(Call::getpeername);
    return real::getpeername(fd, addr, len);
}
