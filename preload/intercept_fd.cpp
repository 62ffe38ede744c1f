// close(), dup() & co., fcntl(), ioctl(): keep the fd table in step with the kernel's.
//
// Entries are cleared *before* the kernel closes the fd: once the number is free the kernel may hand
// it to another thread's socket() at once, and that socket's entry must not be clobbered.
#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdarg>

#include "preload/accel.hpp"
#include "preload/epoll_set.hpp"
#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

using namespace sdx;

namespace {

void last_close(int fd, Socket* s) noexcept;

// dup-like calls: newfd (>= 0 on success) now refers to what oldfd refers to.  `target` is the
// fd dup2/dup3 will replace (-1 for dup and F_DUPFD): when it is the last fd of a socket, that
// socket is closed as close() would (an sdx connection ends with DisConn, not as a dead peer).
template <typename Dup>
int dup_like(int oldfd, Call c, Dup&& do_dup, int target = -1) noexcept {
    Socket* s = acquire(oldfd);
    if (s) count(c);
    if (target >= 0 && target != oldfd && real::fcntl(oldfd, F_GETFD, 0) != -1)
        if (Socket* old = tracked(target); old && old != s) last_close(target, old);
    int r = do_dup();
    if (r >= 0) {
        int saved = errno;
        track_dup(r, s);  // s == nullptr clears a stale entry for r
        ep::fd_duplicated(oldfd, r);
        errno = saved;
    } else if (s) {
        s->unref();
    }
    return r;
}

int fcntl_common(int fd, int cmd, unsigned long arg, Call c,
                 int (*real_fcntl)(int, int, unsigned long)) noexcept {
    switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
        return dup_like(fd, c, [&] { return real_fcntl(fd, cmd, arg); });
    case F_SETFL: {
        int r = real_fcntl(fd, cmd, arg);
        if (r == 0)
            if (Socket* s = tracked(fd)) s->nonblocking.store((arg & O_NONBLOCK) != 0, std::memory_order_relaxed);
        if (tracked(fd)) count(c);
        return r;
    }
    default:
        if (tracked(fd)) count(c);
        return real_fcntl(fd, cmd, arg);
    }
}

// The last fd of a socket in this process is closing: end its sdx connection (or drop this
// process's hold on it) and its listener rendezvous, while the fd is still open.
void last_close(int fd, Socket* s) noexcept {
    if (s->fd_refs.load(std::memory_order_acquire) != 1) return;  // another fd keeps it
    if (s->conn.load(std::memory_order_acquire) && s->inflight.load(std::memory_order_acquire) > 0) {
        // Another thread is inside a call on this socket.  In the kernel that call holds the file,
        // so the socket lives on (the peer sees no EOF) until it returns: keep the kernel socket
        // open under a private fd, and let the last call out end it (call_done).
        int saved = errno;
        int keep = real::fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (keep >= 0) {
            if (accel::Conn* c = s->conn.load(std::memory_order_acquire)) accel::move_fd(c, keep);
            s->deferred_fd.store(keep, std::memory_order_release);
            if (s->inflight.load(std::memory_order_acquire) > 0 || s->deferred_fd.exchange(-1) != keep) {
                errno = saved;
                return;  // the call will end it (or already took it over)
            }
            real::close(keep);  // the call ended meanwhile: end it here
        }
        errno = saved;
    }
    end_socket(fd, s);
}

}  // namespace

void sdx::call_done(Socket* s) noexcept {
    if (s->inflight.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    int keep = s->deferred_fd.exchange(-1, std::memory_order_acq_rel);
    if (keep < 0) return;
    int saved = errno;
    end_socket(keep, s);
    real::close(keep);
    errno = saved;
}

void sdx::end_socket(int fd, Socket* s) noexcept {
    int saved = errno;
    ep::socket_closing(s);
    if (accel::Conn* c = s->conn.exchange(nullptr, std::memory_order_acq_rel)) {
        linger lg{};
        socklen_t len = sizeof lg;
        bool abort = s->conn_opts.load(std::memory_order_relaxed) &&       // SO_LINGER never set: no abort
                     !g_rt.sandboxed.load(std::memory_order_relaxed) &&  // (getsockopt may be forbidden)
                     real::getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0 && lg.l_onoff && lg.l_linger == 0;
        accel::release(c, fd, abort);
    }
    if (s->listener) {
        accel::close_listener(s->listener);
        s->listener = nullptr;
    }
    errno = saved;
}



SDX_EXPORT int close(int fd) {
    if (Socket* s = tracked(fd)) {
        count(Call::close);
        last_close(fd, s);
        untrack(fd);
    }
    ep::fd_closing(fd);
    return real::close(fd);
}

SDX_EXPORT int close_range(unsigned int first, unsigned int last, int flags) noexcept {
    // Clear only when the kernel will really close: valid flags, no CLOEXEC-only request, first <= last.
    constexpr int kKnown = CLOSE_RANGE_CLOEXEC | CLOSE_RANGE_UNSHARE;
    if ((flags & ~kKnown) == 0 && !(flags & CLOSE_RANGE_CLOEXEC) && first <= last) {
        bool any = false;
        g_fds.for_each(first, last, [&](int fd, Socket* s) {
            any = true;
            last_close(fd, s);
            untrack(fd);
        });
        if (any) count(Call::close_range);
        ep::fds_closing(first, last);
    }
    return real::close_range(first, last, flags);
}

SDX_EXPORT int dup(int fd) noexcept {
    return dup_like(fd, Call::dup, [&] { return real::dup(fd); });
}

SDX_EXPORT int dup2(int fd, int fd2) noexcept {
    if (fd == fd2) return real::dup2(fd, fd2);
    return dup_like(fd, Call::dup2, [&] { return real::dup2(fd, fd2); }, fd2);
}

SDX_EXPORT int dup3(int fd, int fd2, int flags) noexcept {
    if (fd == fd2) return real::dup3(fd, fd2, flags);  // EINVAL from the kernel
    return dup_like(fd, Call::dup3, [&] { return real::dup3(fd, fd2, flags); }, fd2);
}

SDX_EXPORT int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);  // every fcntl argument fits one machine word
    va_end(ap);
    return fcntl_common(fd, cmd, arg, Call::fcntl, [](int f, int c, unsigned long a) { return real::fcntl(f, c, a); });
}

SDX_EXPORT int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return fcntl_common(fd, cmd, arg, Call::fcntl64, [](int f, int c, unsigned long a) { return real::fcntl64(f, c, a); });
}

SDX_EXPORT int ioctl(int fd, unsigned long request, ...) noexcept {
    va_list ap;
    va_start(ap, request);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    Socket* s = tracked(fd);
    if (!s) return real::ioctl(fd, request, arg);
    count(Call::ioctl);
    if (accel::Conn* c = s->conn.load(std::memory_order_acquire); c && (request == FIONREAD || request == SIOCATMARK) && arg) {
        int v = 0;
        if (accel::ioctl(c, fd, request, &v)) {
            *reinterpret_cast<int*>(arg) = v;
            return 0;
        }
    }
    int r = real::ioctl(fd, request, arg);
    if (r == 0 && request == FIONBIO && arg != 0)
        s->nonblocking.store(*reinterpret_cast<const int*>(arg) != 0, std::memory_order_relaxed);
    return r;
}
