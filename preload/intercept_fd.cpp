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

// dup-like calls: newfd (>= 0 on success) now refers to what oldfd refers to.
template <typename Dup>
int dup_like(int oldfd, Call c, Dup&& do_dup) noexcept {
    Socket* s = acquire(oldfd);
    if (s) count(c);
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
    if (s->refs.load(std::memory_order_acquire) != 1) return;  // a dup, or a call in flight, keeps it
    int saved = errno;
    ep::socket_closing(s);
    if (accel::Conn* c = s->conn.exchange(nullptr, std::memory_order_acq_rel)) {
        linger lg{};
        socklen_t len = sizeof lg;
        bool abort = !g_rt.sandboxed.load(std::memory_order_relaxed) &&  // (getsockopt may be forbidden)
                     real::getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) == 0 && lg.l_onoff && lg.l_linger == 0;
        accel::release(c, fd, abort);
    }
    if (s->listener) {
        accel::close_listener(s->listener);
        s->listener = nullptr;
    }
    errno = saved;
}

}  // namespace

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
    return dup_like(fd, Call::dup2, [&] { return real::dup2(fd, fd2); });
}

SDX_EXPORT int dup3(int fd, int fd2, int flags) noexcept {
    if (fd == fd2) return real::dup3(fd, fd2, flags);  // EINVAL from the kernel
    return dup_like(fd, Call::dup3, [&] { return real::dup3(fd, fd2, flags); });
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
