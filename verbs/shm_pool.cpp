#include "verbs/shm_pool.hpp"

#include <errno.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <new>

#include "common/clock.hpp"

namespace sdx::shm {

namespace {

// Whether process `pid` is gone for good (a zombie still counts as there: its memory is not
// released yet, and a wrong "alive" only costs a fresh segment).
bool gone(pid_t pid) noexcept { return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH; }

// A lock a fork()ed child can reset (another thread may have held it at the fork).
struct Lock {
    std::atomic_flag f = ATOMIC_FLAG_INIT;
    void lock() noexcept {
        while (f.test_and_set(std::memory_order_acquire)) f.wait(true, std::memory_order_relaxed);
    }
    void unlock() noexcept {
        f.clear(std::memory_order_release);
        f.notify_one();
    }
};

struct PoolEntry {
    Segment seg;
    std::string listener;
    pid_t passive = 0;
};

struct CacheEntry {
    Segment seg;
    pid_t pid = 0;
    std::uint64_t id = 0;
};

// Leaked on purpose: connections may end in atexit handlers and static destructors.
struct State {
    Lock lock;
    std::deque<PoolEntry> pool;     // oldest first
    std::deque<CacheEntry> cache;   // oldest first
    std::atomic<int> fds{0};        // SegmentPool reservations
    long long swept_ns = 0;         // the cache's last sweep for dead creators
};
State& st() {
    static State* s = new State;
    return *s;
}

constexpr long long kSweepEveryNs = 1'000'000'000LL;

}  // namespace

bool SegmentPool::reserve_fd() noexcept {
    auto& s = st();
    int n = s.fds.load(std::memory_order_relaxed);
    while (n < kMaxFds)
        if (s.fds.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
    return false;
}

void SegmentPool::unreserve_fd() noexcept { st().fds.fetch_sub(1, std::memory_order_relaxed); }

std::optional<Segment> SegmentPool::take(const std::string& listener, std::size_t ring_capacity) {
    auto& s = st();
    std::optional<Segment> found;
    {
        std::lock_guard g(s.lock);
        for (auto it = s.pool.begin(); it != s.pool.end(); ++it) {
            if (it->listener != listener || it->seg.ring_capacity() != ring_capacity) continue;
            // The passive side's last act is to set its flag; a dead one does nothing more.
            // A dead passive process counts only if no forked process of its side still holds it.
            Rendezvous* rv = it->seg.rendezvous();
            if (!rv->finished[1].load(std::memory_order_acquire) &&
                !(rv->holders[1].load(std::memory_order_acquire) <= 1 && gone(it->passive)))
                continue;
            found.emplace(std::move(it->seg));
            s.pool.erase(it);
            break;
        }
    }
    if (found) found->renew();
    return found;
}

void SegmentPool::give(Segment seg, const std::string& listener, pid_t passive_pid) {
    auto& s = st();
    std::optional<Segment> drop;  // unmapped outside the lock
    int released = 0;
    {
        std::lock_guard g(s.lock);
        if (static_cast<int>(s.pool.size()) >= kMaxIdle) {
            drop.emplace(std::move(s.pool.front().seg));
            s.pool.pop_front();
            ++released;
        }
        try {
            s.pool.push_back(PoolEntry{std::move(seg), listener, passive_pid});
        } catch (...) {
            ++released;  // out of memory: this one is unmapped instead
        }
    }
    while (released-- > 0) unreserve_fd();
}

void SegmentPool::after_fork_child() noexcept {
    auto& s = st();
    new (&s.lock) Lock;
    // The inherited live connections keep their reservations (they end in this process too).
    s.fds.fetch_sub(static_cast<int>(s.pool.size()), std::memory_order_relaxed);
    while (!s.pool.empty()) s.pool.pop_front();  // unmaps and closes this process's copies
}

std::optional<Segment> AttachCache::take(pid_t pid, std::uint64_t id) {
    auto& s = st();
    std::lock_guard g(s.lock);
    for (auto it = s.cache.begin(); it != s.cache.end(); ++it) {
        if (it->pid != pid || it->id != id) continue;
        std::optional<Segment> seg(std::move(it->seg));
        s.cache.erase(it);
        return seg;
    }
    return std::nullopt;
}

void AttachCache::give(Segment seg, pid_t pid) {
    auto& s = st();
    std::deque<CacheEntry> drop;  // unmapped outside the lock
    {
        std::lock_guard g(s.lock);
        try {
            long long now = now_ns();
            if (now - s.swept_ns > kSweepEveryNs) {  // creators that died keep nothing mapped here for long
                s.swept_ns = now;
                for (auto it = s.cache.begin(); it != s.cache.end();) {
                    if (gone(it->pid)) {
                        drop.push_back(std::move(*it));
                        it = s.cache.erase(it);
                    } else {
                        ++it;
                    }
                }
            }
            if (static_cast<int>(s.cache.size()) >= kMaxIdle) {
                drop.push_back(std::move(s.cache.front()));
                s.cache.pop_front();
            }
            std::uint64_t id = seg.id();
            s.cache.push_back(CacheEntry{std::move(seg), pid, id});
        } catch (...) {
            // out of memory: the segment is unmapped as it goes out of scope
        }
    }
}

void AttachCache::after_fork_child() noexcept {
    auto& s = st();
    new (&s.lock) Lock;
    while (!s.cache.empty()) s.cache.pop_front();
}

}  // namespace sdx::shm
