// Readiness: poll, select, epoll.  All pass through for kernel-path sockets.  With stats on, a
// poll-style call is counted when one of its fds is a tracked socket (the scan costs O(nfds) and
// is skipped when stats are off); epoll_wait and select are counted per call.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

// glibc declares poll() with an access attribute that makes GCC flag forwarding the array as a read
// of uninitialised memory; forwarding is exactly what we want.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

using namespace sdx;

namespace {

void note_pollfds(const pollfd* fds, nfds_t n, Call c) noexcept {
    if (!g_rt.stats_enabled.load(std::memory_order_relaxed) || fds == nullptr) return;
    for (nfds_t i = 0; i < n; ++i)
        if (tracked(fds[i].fd)) {
            count(c);
            return;
        }
}

}  // namespace

SDX_EXPORT int poll(pollfd* fds, nfds_t n, int timeout) {
    note_pollfds(fds, n, Call::poll);
    return real::poll(fds, n, timeout);
}

SDX_EXPORT int ppoll(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask) {
    note_pollfds(fds, n, Call::ppoll);
    return real::ppoll(fds, n, timeout, mask);
}

SDX_EXPORT int __poll_chk(pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
    note_pollfds(fds, n, Call::__poll_chk);
    return real::__poll_chk(fds, n, timeout, fdslen);
}

SDX_EXPORT int __ppoll_chk(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask, size_t fdslen) {
    note_pollfds(fds, n, Call::__ppoll_chk);
    return real::__ppoll_chk(fds, n, timeout, mask, fdslen);
}

SDX_EXPORT int select(int n, fd_set* r, fd_set* w, fd_set* e, timeval* timeout) {
    count(Call::select);
    return real::select(n, r, w, e, timeout);
}

SDX_EXPORT int pselect(int n, fd_set* r, fd_set* w, fd_set* e, const timespec* timeout, const sigset_t* mask) {
    count(Call::pselect);
    return real::pselect(n, r, w, e, timeout, mask);
}

SDX_EXPORT int epoll_create(int size) noexcept {
    count(Call::epoll_create);
    return real::epoll_create(size);
}

SDX_EXPORT int epoll_create1(int flags) noexcept {
    count(Call::epoll_create1);
    return real::epoll_create1(flags);
}

SDX_EXPORT int epoll_ctl(int ep, int op, int fd, epoll_event* ev) noexcept {
    if (tracked(fd)) count(Call::epoll_ctl);
    return real::epoll_ctl(ep, op, fd, ev);
}

SDX_EXPORT int epoll_wait(int ep, epoll_event* ev, int max, int timeout) {
    count(Call::epoll_wait);
    return real::epoll_wait(ep, ev, max, timeout);
}

SDX_EXPORT int epoll_pwait(int ep, epoll_event* ev, int max, int timeout, const sigset_t* mask) {
    count(Call::epoll_pwait);
    return real::epoll_pwait(ep, ev, max, timeout, mask);
}

SDX_EXPORT int epoll_pwait2(int ep, epoll_event* ev, int max, const timespec* timeout, const sigset_t* mask) {
    count(Call::epoll_pwait2);
    return real::epoll_pwait2(ep, ev, max, timeout, mask);
}
