// epoll: registrations of accelerated sockets are answered by the shim (epoll_set.hpp); every
// other fd, and every epoll fd without an accelerated socket, goes straight to the kernel.
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "preload/accel.hpp"
#include "preload/epoll_set.hpp"
#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

using namespace sdx;

namespace {
long long ms_ns(int timeout) noexcept { return timeout < 0 ? -1 : timeout * 1000000LL; }
}  // namespace

SDX_EXPORT int epoll_create(int size) noexcept {
    count(Call::epoll_create);
    return real::epoll_create(size);
}

SDX_EXPORT int epoll_create1(int flags) noexcept {
    count(Call::epoll_create1);
    return real::epoll_create1(flags);
}

namespace {
// Whether `fd` is an epoll fd (nested epoll; rare enough for a readlink).
bool is_epoll_fd(int fd) noexcept {
    char path[32], target[32] = {};
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = ::readlink(path, target, sizeof target - 1);
    return n > 0 && std::strcmp(target, "anon_inode:[eventpoll]") == 0;
}
}  // namespace

SDX_EXPORT int epoll_ctl(int ep, int op, int fd, epoll_event* ev) noexcept {
    Socket* s = tracked(fd);
    if (!s) {
        int r = real::epoll_ctl(ep, op, fd, ev);
        // (Only with acceleration on, and never under a seccomp filter: readlink may be forbidden.)
        if (r == 0 && op == EPOLL_CTL_ADD && accel::enabled() && !g_rt.sandboxed.load(std::memory_order_relaxed) && is_epoll_fd(fd)) {
            int saved = errno;
            ep::nested_in_another(ep, fd);
            errno = saved;
        }
        if (r == 0 && op == EPOLL_CTL_DEL && ep::any_nested()) ep::unnested(ep, fd);
        return r;
    }
    count(Call::epoll_ctl);
    return ep::ctl(ep, op, fd, s, ev);
}

SDX_EXPORT int epoll_wait(int ep, epoll_event* ev, int max, int timeout) {
    count(Call::epoll_wait);
    int r = ep::wait(ep, ev, max, ms_ns(timeout), nullptr, ep::Flavor::wait);
    return r != -2 ? r : real::epoll_wait(ep, ev, max, timeout);
}

SDX_EXPORT int epoll_pwait(int ep, epoll_event* ev, int max, int timeout, const sigset_t* mask) {
    count(Call::epoll_pwait);
    int r = ep::wait(ep, ev, max, ms_ns(timeout), mask, ep::Flavor::pwait);
    return r != -2 ? r : real::epoll_pwait(ep, ev, max, timeout, mask);
}

SDX_EXPORT int epoll_pwait2(int ep, epoll_event* ev, int max, const timespec* timeout, const sigset_t* mask) {
    count(Call::epoll_pwait2);
    // An invalid timespec is the kernel's EINVAL to report.
    if (timeout && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L))
        return real::epoll_pwait2(ep, ev, max, timeout, mask);
    int r = ep::wait(ep, ev, max, timeout ? timeout->tv_sec * 1000000000LL + timeout->tv_nsec : -1, mask, ep::Flavor::pwait2);
    return r != -2 ? r : real::epoll_pwait2(ep, ev, max, timeout, mask);
}
