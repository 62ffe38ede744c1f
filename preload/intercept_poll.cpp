// Readiness: poll and select (epoll: intercept_epoll.cpp).  Calls that involve no accelerated
// socket pass through.  For an accelerated socket the engine says what is ready (the kernel socket
// is always writable and only carries doorbell bytes); before sleeping in the kernel the shim arms
// the peer's doorbell, so the peer's next message makes the kernel socket readable and wakes the
// sleeper.
#include <poll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <errno.h>
#include <time.h>

#include <algorithm>
#include <vector>

#include "common/clock.hpp"
#include "preload/accel.hpp"
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

accel::Conn* conn_of(int fd) noexcept {
    Socket* s = tracked(fd);
    if (!s) return nullptr;
    accel::Conn* c = s->conn.load(std::memory_order_acquire);
    if (!c || c->state.load(std::memory_order_acquire) == accel::State::Kernel) return nullptr;
    return c;
}

bool any_accel(const pollfd* fds, nfds_t n) noexcept {
    if (!fds || !accel::any_live()) return false;
    // The kernel refuses nfds above RLIMIT_NOFILE (EINVAL) without reading the array: so must we.
    if (n > 1024) {
        rlimit rl{};
        if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || n > rl.rlim_cur) return false;
    }
    for (nfds_t i = 0; i < n; ++i)
        if (conn_of(fds[i].fd)) return true;
    return false;
}

// poll() over a set with accelerated sockets.  timeout_ns < 0: no limit.
int poll_mixed(pollfd* fds, nfds_t n, long long timeout_ns, const sigset_t* mask) noexcept {
    long long deadline = timeout_ns < 0 ? -1 : now_ns() + timeout_ns;
    std::vector<pollfd> k;
    std::vector<accel::Conn*> conns;
    try {
        k.assign(fds, fds + n);
        conns.resize(n);
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        int ready = 0;
        bool pending = false;
        for (nfds_t i = 0; i < n; ++i) {
            conns[i] = conn_of(fds[i].fd);
            fds[i].revents = 0;
            if (conns[i]) {
                fds[i].revents = accel::poll_events(conns[i], fds[i].fd, fds[i].events);
                accel::State st = conns[i]->state.load(std::memory_order_acquire);
                if (st == accel::State::Pending) pending = true;
                if (st == accel::State::Kernel) conns[i] = nullptr;  // it went back to TCP: the kernel answers
                if (fds[i].revents) ++ready;
            }
        }
        // Arm before sleeping; something that raced in means "look again" instead.
        bool raced = false;
        if (ready == 0)
            for (nfds_t i = 0; i < n; ++i)
                if (conns[i] && accel::arm(conns[i], fds[i].fd, fds[i].events & (POLLIN | POLLRDNORM | POLLPRI | POLLRDHUP),
                                           fds[i].events & (POLLOUT | POLLWRNORM)))
                    raced = true;
        long long wait_ns = 0;
        if (ready == 0 && !raced) {
            wait_ns = deadline < 0 ? -1 : std::max(0LL, deadline - now_ns());
            if (pending && (wait_ns < 0 || wait_ns > 1000000)) wait_ns = 1000000;  // a decision has no doorbell
        }
        for (nfds_t i = 0; i < n; ++i) {
            k[i] = fds[i];
            k[i].revents = 0;
            if (conns[i]) k[i].events = POLLIN;  // doorbells and the peer's FIN
        }
        timespec ts{}, *tsp = nullptr;
        if (wait_ns >= 0) {
            ts.tv_sec = wait_ns / 1000000000LL;
            ts.tv_nsec = wait_ns % 1000000000LL;
            tsp = &ts;
        }
        // Under a seccomp filter ppoll may be forbidden; such a program waits with poll itself.
        int r = mask == nullptr && g_rt.sandboxed.load(std::memory_order_relaxed)
                    ? real::poll(k.data(), n, wait_ns < 0 ? -1 : static_cast<int>((wait_ns + 999999) / 1000000))
                    : real::ppoll(k.data(), n, tsp, mask);
        if (r < 0) return r;
        int total = 0;
        bool rang = false;
        for (nfds_t i = 0; i < n; ++i) {
            if (conns[i]) {
                if (k[i].revents) rang = true;
            } else {
                fds[i].revents = k[i].revents;
            }
            if (fds[i].revents) ++total;
        }
        if (rang && ready == 0) {
            // A doorbell: take the bytes away (the next sleep must not see them again), then the
            // engine decides what the ring brought.
            for (nfds_t i = 0; i < n; ++i)
                if (conns[i] && k[i].revents) {
                    accel::drain_doorbells(conns[i], fds[i].fd);
                    fds[i].revents = accel::poll_events(conns[i], fds[i].fd, fds[i].events);
                    if (fds[i].revents) ++total;
                }
        }
        if (total > 0 || ready > 0) return total;
        if (deadline >= 0 && now_ns() >= deadline) return 0;
    }
}

long long ts_ns(const timespec* t) noexcept { return t ? t->tv_sec * 1000000000LL + t->tv_nsec : -1; }

// A timeout the kernel refuses with EINVAL (ppoll, pselect): the call goes to the kernel as is.
bool bad_timespec(const timespec* t) noexcept { return t && (t->tv_sec < 0 || t->tv_nsec < 0 || t->tv_nsec >= 1000000000L); }

// select() through poll_mixed when an accelerated socket is in the sets.
int select_mixed(int n, fd_set* r, fd_set* w, fd_set* e, long long timeout_ns, const sigset_t* mask, bool* used) noexcept {
    *used = false;
    if (!accel::any_live()) return 0;
    bool any = false;
    for (int fd = 0; fd < n && !any; ++fd)
        if ((r && FD_ISSET(fd, r)) || (w && FD_ISSET(fd, w)) || (e && FD_ISSET(fd, e))) any = conn_of(fd) != nullptr;
    if (!any) return 0;
    *used = true;
    std::vector<pollfd> p;
    try {
        for (int fd = 0; fd < n; ++fd) {
            short ev = 0;
            if (r && FD_ISSET(fd, r)) ev |= POLLIN;
            if (w && FD_ISSET(fd, w)) ev |= POLLOUT;
            if (e && FD_ISSET(fd, e)) ev |= POLLPRI;
            if (ev) p.push_back(pollfd{fd, ev, 0});
        }
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
    int rc = poll_mixed(p.data(), p.size(), timeout_ns, mask);
    if (rc < 0) return rc;
    for (const pollfd& q : p)
        if (q.revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
    if (r) FD_ZERO(r);
    if (w) FD_ZERO(w);
    if (e) FD_ZERO(e);
    int count = 0;
    for (const pollfd& q : p) {
        if (r && (q.events & POLLIN) && (q.revents & (POLLIN | POLLHUP | POLLERR))) FD_SET(q.fd, r), ++count;
        if (w && (q.events & POLLOUT) && (q.revents & (POLLOUT | POLLERR))) FD_SET(q.fd, w), ++count;
        if (e && (q.events & POLLPRI) && (q.revents & POLLPRI)) FD_SET(q.fd, e), ++count;
    }
    return count;
}

}  // namespace

SDX_EXPORT int poll(pollfd* fds, nfds_t n, int timeout) {
    note_pollfds(fds, n, Call::poll);
    if (any_accel(fds, n)) return poll_mixed(fds, n, timeout < 0 ? -1 : timeout * 1000000LL, nullptr);
    return real::poll(fds, n, timeout);
}

SDX_EXPORT int ppoll(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask) {
    note_pollfds(fds, n, Call::ppoll);
    if (!bad_timespec(timeout) && any_accel(fds, n)) return poll_mixed(fds, n, ts_ns(timeout), mask);
    return real::ppoll(fds, n, timeout, mask);
}

SDX_EXPORT int __poll_chk(pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
    note_pollfds(fds, n, Call::__poll_chk);
    if (n <= fdslen / sizeof(pollfd) && any_accel(fds, n))
        return poll_mixed(fds, n, timeout < 0 ? -1 : timeout * 1000000LL, nullptr);
    return real::__poll_chk(fds, n, timeout, fdslen);
}

SDX_EXPORT int __ppoll_chk(pollfd* fds, nfds_t n, const timespec* timeout, const sigset_t* mask, size_t fdslen) {
    note_pollfds(fds, n, Call::__ppoll_chk);
    if (n <= fdslen / sizeof(pollfd) && !bad_timespec(timeout) && any_accel(fds, n)) return poll_mixed(fds, n, ts_ns(timeout), mask);
    return real::__ppoll_chk(fds, n, timeout, mask, fdslen);
}

SDX_EXPORT int select(int n, fd_set* r, fd_set* w, fd_set* e, timeval* timeout) {
    count(Call::select);
    bool bad = timeout && (timeout->tv_sec < 0 || timeout->tv_usec < 0 || timeout->tv_usec >= 1000000);
    if (n > 0 && n <= FD_SETSIZE && !bad) {
        bool used = false;
        long long t = timeout ? timeout->tv_sec * 1000000000LL + timeout->tv_usec * 1000LL : -1;
        long long start = now_ns();
        int rc = select_mixed(n, r, w, e, t, nullptr, &used);
        if (used) {
            if (timeout) {  // Linux reports the time left
                long long left = std::max(0LL, t - (now_ns() - start));
                timeout->tv_sec = left / 1000000000LL;
                timeout->tv_usec = (left % 1000000000LL) / 1000;
            }
            return rc;
        }
    }
    return real::select(n, r, w, e, timeout);
}

SDX_EXPORT int pselect(int n, fd_set* r, fd_set* w, fd_set* e, const timespec* timeout, const sigset_t* mask) {
    count(Call::pselect);
    if (n > 0 && n <= FD_SETSIZE && !bad_timespec(timeout)) {
        bool used = false;
        int rc = select_mixed(n, r, w, e, ts_ns(timeout), mask, &used);
        if (used) return rc;
    }
    return real::pselect(n, r, w, e, timeout, mask);
}
