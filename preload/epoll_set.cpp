#include "preload/epoll_set.hpp"

#include <errno.h>
#include <sys/eventfd.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/clock.hpp"
#include "preload/accel.hpp"
#include "preload/fd_table.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"
#include "preload/socket.hpp"

namespace sdx::ep {

namespace {

// The events whose readiness the engine decides; EPOLLERR and EPOLLHUP are always reported.
constexpr std::uint32_t kReadiness =
    EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLRDHUP;
// What the kernel accepts together with EPOLLEXCLUSIVE (fs/eventpoll.c).
constexpr std::uint32_t kExclusiveOk = EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE;

struct Entry {
    int fd;
    Socket* sock;                // sockets are type-stable; socket_closing() removes the entry
    epoll_event app;             // what the application registered
    bool managed = false;        // the kernel holds the shim's registration (doorbells), not the app's
    bool disabled = false;       // EPOLLONESHOT fired; waits for EPOLL_CTL_MOD
    std::uint64_t seen_gen = ~0ull;  // edge-triggered: the connection generation last reported

    std::uint64_t key() const noexcept { return reinterpret_cast<std::uint64_t>(this); }
};

// One epoll fd's registrations of tracked sockets.  Sets are never freed, only reused, so a
// thread that found one in the table may take a reference even while another closes the fd.
struct Set {
    std::atomic<int> refs{0};  // fd numbers naming this set, plus waits in progress
    int ep = -1;
    std::mutex mu;
    std::unordered_map<int, std::unique_ptr<Entry>> by_fd;
    std::unordered_set<std::uint64_t> keys;  // kernel data of managed entries
    std::vector<Entry*> managed;             // scanned by every wait
    std::uint64_t convert_seen = 0;
    std::size_t rotate = 0;                  // where the next scan starts (fairness at maxevents)
    // Registered in another epoll set (nested_in_another): the kernel must see this set readable
    // whenever the engine has something, so its doorbells stay armed between waits, and an
    // eventfd of the shim's (`self_fd`, data self_key()) stands in for what arrived unrung.
    bool nested = false;
    std::atomic<int> self_fd{-1};  // atomic: close() of the number clears it, lock-free (forget_self_fd)
    // Its counter is non-zero (under mu): a second write would be a new edge for an outer
    // edge-triggered registration although nothing new arrived.
    bool signalled = false;
    // The other way round: nested sets registered in this one (their epoll fds), whose readiness a
    // wait on this set brings up to date first (refresh_inner).
    std::vector<int> inner_fds;
    // Kernel data that is an address of ours, as the Entries' are, so no application's data can
    // be mistaken for it.
    std::uint64_t self_key() const noexcept { return reinterpret_cast<std::uint64_t>(&self_fd); }
};

// Sets with a self_fd, found lock-free by close() and dup2() (which may run in signal handlers).
constexpr int kMaxNested = 64;
std::atomic<Set*> g_nested_sets[kMaxNested];
std::atomic<int> g_nested{0};  // how many are registered (close() looks only when any)

constinit FdTable<Set> g_sets;
std::mutex g_all_mu;
std::vector<Set*>* g_all = nullptr;           // every Set ever made (under g_all_mu)
std::atomic<std::uint64_t> g_convert{0};      // bumped by socket_connecting()

bool try_ref(Set* s) noexcept {
    int n = s->refs.load(std::memory_order_acquire);
    while (n > 0)
        if (s->refs.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) return true;
    return false;
}

void drop_entry(Set* set, Entry* e, bool kernel_del) noexcept {
    if (kernel_del && e->managed) real::epoll_ctl(set->ep, EPOLL_CTL_DEL, e->fd, nullptr);
    if (e->managed) {
        set->keys.erase(e->key());
        set->managed.erase(std::find(set->managed.begin(), set->managed.end(), e));
    }
    e->sock->epoll_regs.fetch_sub(1, std::memory_order_relaxed);
    set->by_fd.erase(e->fd);  // frees e
}

void unref(Set* s) noexcept {
    if (s->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    std::lock_guard<std::mutex> lk(s->mu);
    while (!s->by_fd.empty()) drop_entry(s, s->by_fd.begin()->second.get(), false);  // the kernel set is gone
    if (s->nested) {
        for (auto& slot : g_nested_sets) {
            Set* expect = s;
            if (slot.compare_exchange_strong(expect, nullptr)) g_nested.fetch_sub(1, std::memory_order_relaxed);
        }
    }
    if (int fd = s->self_fd.exchange(-1); fd >= 0) real::close(fd);
    s->keys.erase(s->self_key());
    s->nested = false;
    s->signalled = false;
    s->inner_fds.clear();
    s->ep = -1;
}

// The Set of epoll fd `ep` with a reference held, or nullptr.
Set* acquire(int ep) noexcept {
    Set* s = g_sets.get(ep);
    if (!s || !try_ref(s)) return nullptr;
    if (g_sets.get(ep) != s) {
        unref(s);
        return nullptr;
    }
    return s;
}

// The Set of `ep`, made on first use; referenced.
Set* acquire_or_make(int ep) {
    if (Set* s = acquire(ep)) return s;
    std::lock_guard<std::mutex> lk(g_all_mu);
    if (Set* s = acquire(ep)) return s;  // another thread made it
    if (!g_all) g_all = new std::vector<Set*>;
    Set* fresh = nullptr;
    for (Set* s : *g_all) {
        std::lock_guard<std::mutex> sl(s->mu);
        if (s->refs.load(std::memory_order_acquire) == 0 && s->ep == -1) {
            fresh = s;
            break;
        }
    }
    if (!fresh) {
        fresh = new Set;
        g_all->push_back(fresh);
    }
    fresh->ep = ep;
    fresh->convert_seen = g_convert.load(std::memory_order_acquire);
    fresh->refs.store(2, std::memory_order_release);  // the table's and the caller's
    if (g_sets.exchange(ep, fresh) == fresh) {  // no page for the table: cannot keep a set
        fresh->refs.store(0, std::memory_order_release);
        fresh->ep = -1;
        return nullptr;
    }
    return fresh;
}

epoll_event kernel_registration(const Entry& e) noexcept {
    epoll_event k{};
    // Edge-triggered: a doorbell is one wakeup, and a peer gone for good (EOF on the kernel socket)
    // does not keep waking the set.  EPOLLEXCLUSIVE allows no EPOLLRDHUP.
    k.events = EPOLLIN | EPOLLET | (e.app.events & (EPOLLEXCLUSIVE | EPOLLWAKEUP));
    if (!(e.app.events & EPOLLEXCLUSIVE)) k.events |= EPOLLRDHUP;
    k.data.u64 = e.key();
    return k;
}

// Moves an entry between the application's kernel registration and the shim's.
bool set_managed(Set* set, Entry* e, bool managed) noexcept {
    if (e->managed == managed) return true;
    epoll_event k = managed ? kernel_registration(*e) : e->app;
    if (!managed && e->disabled) k.events = 0;  // a fired EPOLLONESHOT stays quiet until MOD
    if (real::epoll_ctl(set->ep, EPOLL_CTL_MOD, e->fd, &k) != 0) return false;
    e->managed = managed;
    if (managed) {
        set->keys.insert(e->key());
        set->managed.push_back(e);
    } else {
        set->keys.erase(e->key());
        set->managed.erase(std::find(set->managed.begin(), set->managed.end(), e));
    }
    return true;
}

accel::Conn* conn_of(const Entry* e) noexcept { return e->sock->conn.load(std::memory_order_acquire); }

// Takes over registrations of sockets that connect()ed after epoll_ctl, and gives back those
// whose connection settled on kernel TCP.  Caller holds set->mu.
void reconcile(Set* set) {
    std::uint64_t conv = g_convert.load(std::memory_order_acquire);
    if (conv != set->convert_seen) {
        set->convert_seen = conv;
        for (auto& [fd, e] : set->by_fd) {
            accel::Conn* c = conn_of(e.get());
            if (!e->managed && c && c->state.load(std::memory_order_acquire) != accel::State::Kernel)
                set_managed(set, e.get(), true);
        }
    }
    for (std::size_t i = 0; i < set->managed.size();) {
        Entry* e = set->managed[i];
        accel::Conn* c = conn_of(e);
        if (c && c->state.load(std::memory_order_acquire) == accel::State::Kernel && set_managed(set, e, false)) continue;
        ++i;
    }
}

// Reports managed entries that are ready, as the kernel would.  Caller holds set->mu.
int scan(Set* set, epoll_event* out, int max, bool* pending) noexcept {
    int n = 0;
    std::size_t count = set->managed.size();
    std::size_t start = count ? set->rotate % count : 0;
    for (std::size_t k = 0; k < count && n < max; ++k) {
        Entry* e = set->managed[(start + k) % count];
        if (e->disabled) continue;
        accel::Conn* c = conn_of(e);
        if (!c) continue;  // closing
        std::uint64_t gen = 0;
        auto want = static_cast<short>(e->app.events & kReadiness);
        unsigned m = static_cast<unsigned short>(accel::poll_events(c, e->fd, want, &gen));
        if (c->state.load(std::memory_order_acquire) == accel::State::Pending) *pending = true;
        if (m == 0) continue;
        if ((e->app.events & EPOLLET) && gen == e->seen_gen) continue;  // no new edge
        e->seen_gen = gen;
        if (e->app.events & EPOLLONESHOT) e->disabled = true;
        out[n].events = m;
        out[n].data = e->app.data;
        ++n;
        set->rotate = (start + k + 1) % count;
    }
    return n;
}

// Before sleeping: every managed connection's peer rings the kernel socket at its next message.
// True when something arrived meanwhile (look again instead of sleeping).  Caller holds set->mu.
bool arm_all(Set* set) noexcept {
    bool raced = false;
    for (Entry* e : set->managed)
        if (accel::Conn* c = conn_of(e); c && !e->disabled &&
            accel::arm(c, e->fd, e->app.events & (EPOLLIN | EPOLLRDNORM | EPOLLPRI | EPOLLRDHUP),
                       e->app.events & (EPOLLOUT | EPOLLWRNORM)))
            raced = true;
    return raced;
}

// A nested set: makes the kernel set readable for what the engines have that rang nothing.
void signal_self(Set* set) noexcept {
    int fd = set->self_fd.load(std::memory_order_acquire);
    if (fd < 0 || set->signalled) return;
    std::uint64_t one = 1;
    if (real::write(fd, &one, sizeof one) == sizeof one) set->signalled = true;
}

void unsignal_self(Set* set) noexcept {
    int fd = set->self_fd.load(std::memory_order_acquire);
    if (fd < 0 || !set->signalled) return;
    std::uint64_t v;
    (void)!real::read(fd, &v, sizeof v);
    set->signalled = false;
}

// A nested set after a wait: every doorbell armed again, so the next arrival makes the kernel set
// (and so the outer one) readable.  Caller holds set->mu.
void rearm_nested(Set* set) noexcept {
    if (set->nested && arm_all(set)) signal_self(set);
}

// Whether a wait on `set` would report one of its accelerated entries now (scan() without its
// effects).  Caller holds set->mu.
bool would_report(Set* set) noexcept {
    for (Entry* e : set->managed) {
        accel::Conn* c = conn_of(e);
        if (e->disabled || !c) continue;
        std::uint64_t gen = 0;
        auto want = static_cast<short>(e->app.events & kReadiness);
        if (accel::poll_events(c, e->fd, want, &gen) == 0) continue;
        if ((e->app.events & EPOLLET) && gen == e->seen_gen) continue;
        return true;
    }
    return false;
}

// Before a wait on `outer`: each nested set in it shows exactly what the engines have for it, as
// the kernel's ready list would.  Its signal is reset and raised again only if an entry is ready
// (a level-triggered socket left readable by a partial read, which rings nothing new), and its
// doorbells are armed, so what arrives later rings.  A signal left standing after the
// application drained the socket is taken back here.
void refresh_inner(Set* outer) noexcept {
    std::vector<int> fds;
    {
        std::lock_guard<std::mutex> lk(outer->mu);
        if (outer->inner_fds.empty()) return;
        fds = outer->inner_fds;
    }
    std::vector<int> gone;
    for (int fd : fds) {
        Set* in = acquire(fd);
        if (!in) {  // closed without EPOLL_CTL_DEL: the kernel dropped it from the outer set too
            gone.push_back(fd);
            continue;
        }
        {
            std::lock_guard<std::mutex> lk(in->mu);
            if (in->nested && in->self_fd.load(std::memory_order_acquire) >= 0) {
                // Raised only when not raised yet, taken back only when nothing is ready: an outer
                // edge-triggered registration sees an edge only for something new.
                if (arm_all(in) || would_report(in)) signal_self(in);
                else unsignal_self(in);
            }
        }
        unref(in);
    }
    if (!gone.empty()) {
        std::lock_guard<std::mutex> lk(outer->mu);
        auto& v = outer->inner_fds;
        for (int fd : gone) v.erase(std::remove(v.begin(), v.end(), fd), v.end());
    }
}

// Removes the kernel's events for managed entries (doorbells) from `ev`, taking their bytes away.
// Returns how many events are left; *rang tells whether a doorbell was among them.
int filter(Set* set, epoll_event* ev, int n, bool* rang) noexcept {
    int kept = 0;
    for (int i = 0; i < n; ++i) {
        auto it = set->keys.find(ev[i].data.u64);
        if (it == set->keys.end()) {
            ev[kept++] = ev[i];
            continue;
        }
        if (*it == set->self_key()) {  // our own signal: reset it, and let the engines speak
            set->signalled = true;  // whatever we believed: the kernel saw it set
            unsignal_self(set);
            *rang = true;
            continue;
        }
        auto* e = reinterpret_cast<Entry*>(*it);
        // A connection that went back to TCP (revert.hpp) has data there, not doorbells: the next
        // round gives the kernel registration back to the application, and the kernel reports it.
        if (accel::Conn* c = conn_of(e)) accel::drain_doorbells(c, e->fd);
        *rang = true;
    }
    return kept;
}

// The kernel wait, through the call the application made (its timeout resolution, its mask).
int kernel_wait(int ep, epoll_event* ev, int max, long long wait_ns, const sigset_t* mask, Flavor how) noexcept {
    int ms = wait_ns < 0 ? -1 : static_cast<int>(std::min<long long>((wait_ns + 999999) / 1000000, INT32_MAX));
    if (how == Flavor::pwait2) {
        timespec ts{static_cast<time_t>(wait_ns / 1000000000LL), static_cast<long>(wait_ns % 1000000000LL)};
        return real::epoll_pwait2(ep, ev, max, wait_ns < 0 ? nullptr : &ts, mask);
    }
    if (how == Flavor::pwait) return real::epoll_pwait(ep, ev, max, ms, mask);
    return real::epoll_wait(ep, ev, max, ms);
}

struct SetRef {
    Set* s;
    explicit SetRef(Set* p) : s(p) {}
    ~SetRef() {
        if (s) unref(s);
    }
    SetRef(const SetRef&) = delete;
    SetRef& operator=(const SetRef&) = delete;
};

}  // namespace

int ctl(int ep, int op, int fd, Socket* s, epoll_event* ev) noexcept {
    try {
        if (op == EPOLL_CTL_ADD) {
            if (!ev) return real::epoll_ctl(ep, op, fd, ev);  // EFAULT from the kernel
            accel::Conn* c = s->conn.load(std::memory_order_acquire);
            bool manage = c && c->state.load(std::memory_order_acquire) != accel::State::Kernel;
            // A socket not yet connected may become accelerated later: keep its registration.
            bool watch = !c && s->role.load(std::memory_order_relaxed) == SocketRole::Unknown;
            if (!manage && !watch) return real::epoll_ctl(ep, op, fd, ev);
            if ((ev->events & EPOLLEXCLUSIVE) && (ev->events & ~kExclusiveOk)) {
                errno = EINVAL;
                return -1;
            }
            auto e = std::make_unique<Entry>();
            e->fd = fd;
            e->sock = s;
            e->app = *ev;
            epoll_event k = manage ? kernel_registration(*e) : *ev;
            if (real::epoll_ctl(ep, op, fd, &k) != 0) return -1;
            SetRef set(acquire_or_make(ep));
            if (!set.s) {  // cannot keep a set: the plain registration is the best there is
                if (manage) real::epoll_ctl(ep, EPOLL_CTL_MOD, fd, ev);
                return 0;
            }
            std::lock_guard<std::mutex> lk(set.s->mu);
            s->epoll_regs.fetch_add(1, std::memory_order_relaxed);
            Entry* raw = e.get();
            set.s->by_fd[fd] = std::move(e);
            if (manage) {
                raw->managed = true;
                set.s->keys.insert(raw->key());
                set.s->managed.push_back(raw);
                rearm_nested(set.s);
            }
            return 0;
        }
        SetRef set(acquire(ep));
        if (!set.s) return real::epoll_ctl(ep, op, fd, ev);
        std::lock_guard<std::mutex> lk(set.s->mu);
        auto it = set.s->by_fd.find(fd);
        if (it == set.s->by_fd.end() || it->second->sock != s) return real::epoll_ctl(ep, op, fd, ev);
        Entry* e = it->second.get();
        if (op == EPOLL_CTL_DEL) {
            if (real::epoll_ctl(ep, op, fd, ev) != 0) return -1;
            drop_entry(set.s, e, false);
            return 0;
        }
        if (op != EPOLL_CTL_MOD || !ev) return real::epoll_ctl(ep, op, fd, ev);  // EINVAL, EFAULT
        if (!e->managed) {
            if (real::epoll_ctl(ep, op, fd, ev) != 0) return -1;
            e->app = *ev;
            return 0;
        }
        if ((ev->events | e->app.events) & EPOLLEXCLUSIVE) {  // the kernel refuses MOD of these
            errno = EINVAL;
            return -1;
        }
        e->app = *ev;
        e->disabled = false;
        e->seen_gen = ~0ull;  // MOD reports the current state, as the kernel's does
        rearm_nested(set.s);
        return 0;
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
}

int wait(int ep, epoll_event* ev, int max, long long timeout_ns, const sigset_t* mask, Flavor how) noexcept {
    if (max <= 0 || !ev) return -2;  // the kernel's EINVAL/EFAULT
    SetRef set(acquire(ep));
    if (!set.s) return -2;
    long long deadline = timeout_ns < 0 ? -1 : now_ns() + timeout_ns;
    auto left = [&] { return deadline < 0 ? -1 : std::max(0LL, deadline - now_ns()); };
    try {
        for (;;) {
            bool pending = false, raced = false, plain = false;
            int n = 0;
            refresh_inner(set.s);
            {
                std::lock_guard<std::mutex> lk(set.s->mu);
                // Nothing accelerated in this set (any more): the kernel answers alone.
                plain = set.s->managed.empty() && !set.s->nested && set.s->inner_fds.empty() &&
                        g_convert.load(std::memory_order_acquire) == set.s->convert_seen;
                if (!plain) {
                    reconcile(set.s);
                    n = scan(set.s, ev, max, &pending);
                    // A wait that may sleep arms the doorbells first; a zero timeout only looks.
                    if (n == 0 && timeout_ns != 0) raced = arm_all(set.s);
                }
            }
            if (plain) return kernel_wait(ep, ev, max, left(), mask, how);
            if (n > 0) {
                // Engine-ready sockets first, then whatever the kernel has for the others now.
                int k = kernel_wait(ep, ev + n, max - n, 0, mask, how);
                bool rang = false;
                std::lock_guard<std::mutex> lk(set.s->mu);
                if (k > 0) n += filter(set.s, ev + n, k, &rang);
                rearm_nested(set.s);
                return n;
            }
            if (raced) continue;
            long long wait_ns = left();
            // A connection still waiting for its peer's decision has no doorbell: look again soon.
            if (pending && (wait_ns < 0 || wait_ns > 1000000)) wait_ns = 1000000;
            int k = kernel_wait(ep, ev, max, wait_ns, mask, how);
            if (k < 0) return k;
            bool rang = false;
            {
                std::lock_guard<std::mutex> lk(set.s->mu);
                k = filter(set.s, ev, k, &rang);
                if (k > 0) {
                    k += scan(set.s, ev + k, max - k, &pending);
                    rearm_nested(set.s);
                    return k;
                }
                if (!rang && deadline >= 0 && now_ns() >= deadline) {
                    rearm_nested(set.s);
                    return 0;
                }
            }
            // A doorbell: the engine decides what it brought (maybe nothing: then sleep again).
        }
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
}

void nested_in_another(int outer, int inner) noexcept {
    try {
        if (SetRef out(acquire_or_make(outer)); out.s) {
            std::lock_guard<std::mutex> lk(out.s->mu);
            if (std::find(out.s->inner_fds.begin(), out.s->inner_fds.end(), inner) == out.s->inner_fds.end())
                out.s->inner_fds.push_back(inner);
        }
        SetRef set(acquire_or_make(inner));
        if (!set.s) return;
        std::lock_guard<std::mutex> lk(set.s->mu);
        if (set.s->nested) return;
        int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (efd < 0) return;
        epoll_event k{};
        k.events = EPOLLIN;  // level-triggered: readable until filter() reads it
        k.data.u64 = set.s->self_key();
        if (real::epoll_ctl(inner, EPOLL_CTL_ADD, efd, &k) != 0) {
            real::close(efd);
            return;
        }
        bool registered = false;
        for (auto& slot : g_nested_sets) {
            Set* expect = nullptr;
            if (slot.compare_exchange_strong(expect, set.s)) {
                registered = true;
                break;
            }
        }
        if (!registered) {  // too many nested sets: this one works as before (first wake-up only)
            real::epoll_ctl(inner, EPOLL_CTL_DEL, efd, nullptr);
            real::close(efd);
            return;
        }
        g_nested.fetch_add(1, std::memory_order_relaxed);
        set.s->self_fd.store(efd, std::memory_order_release);
        set.s->keys.insert(set.s->self_key());
        set.s->nested = true;
        rearm_nested(set.s);
    } catch (...) {
    }
}

// The application closes (or dup2()s over) the number of a nested set's eventfd: that is how
// programs that close every fd they do not know behave.  The set forgets it, so nothing of ours is
// ever written to whatever the number names next (its nested sockets then wake the outer set only
// through their own doorbells).  Lock-free: close() may run in a signal handler.
void forget_self_fds(unsigned first, unsigned last) noexcept {
    if (g_nested.load(std::memory_order_relaxed) == 0) return;
    bool checked_pid = false;
    for (auto& slot : g_nested_sets) {
        Set* set = slot.load(std::memory_order_acquire);
        if (!set) continue;
        int fd = set->self_fd.load(std::memory_order_acquire);
        if (fd < 0 || static_cast<unsigned>(fd) < first || static_cast<unsigned>(fd) > last) continue;
        // A vfork child closing its copy of the number must not blind the parent.
        if (!checked_pid && ::getpid() != g_rt.pid) return;
        checked_pid = true;
        set->self_fd.compare_exchange_strong(fd, -1, std::memory_order_acq_rel);
    }
}

void socket_closing(Socket* s) noexcept {
    if (s->epoll_regs.load(std::memory_order_relaxed) == 0) return;
    std::lock_guard<std::mutex> lk(g_all_mu);
    if (!g_all) return;
    for (Set* set : *g_all) {
        std::lock_guard<std::mutex> sl(set->mu);
        if (set->ep < 0) continue;
        std::vector<Entry*> mine;
        for (auto& [fd, e] : set->by_fd)
            if (e->sock == s) mine.push_back(e.get());
        // The fd is still open: the shim's kernel registration goes first, so no doorbell can
        // arrive for an entry that no longer exists.
        for (Entry* e : mine) drop_entry(set, e, true);
    }
}

bool any_nested() noexcept { return g_nested.load(std::memory_order_relaxed) > 0; }

void unnested(int outer, int inner) noexcept {
    SetRef set(acquire(outer));
    if (!set.s) return;
    std::lock_guard<std::mutex> lk(set.s->mu);
    auto& v = set.s->inner_fds;
    v.erase(std::remove(v.begin(), v.end(), inner), v.end());
}

void fd_closing(int fd) noexcept {
    forget_self_fds(static_cast<unsigned>(fd), static_cast<unsigned>(fd));
    if (g_sets.get(fd) == nullptr) return;
    if (Set* s = g_sets.exchange(fd, nullptr)) unref(s);
}

void fds_closing(unsigned first, unsigned last) noexcept {
    forget_self_fds(first, last);
    g_sets.for_each(first, last, [](int fd, Set*) { fd_closing(fd); });
}

void fd_duplicated(int oldfd, int newfd) noexcept {
    forget_self_fds(static_cast<unsigned>(newfd), static_cast<unsigned>(newfd));
    Set* s = acquire(oldfd);  // becomes the table's reference for newfd
    if (!s && !g_sets.get(newfd)) return;
    // What newfd named before is gone (dup2 closed it).  When the table could not store s, the
    // exchange hands s back, and dropping it is right too.
    if (Set* old = g_sets.exchange(newfd, s)) unref(old);
}

void socket_connecting(Socket* s) noexcept {
    if (s->epoll_regs.load(std::memory_order_relaxed) > 0) g_convert.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace sdx::ep
