#include "verbs/shm_ring.hpp"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "common/clock.hpp"

namespace sdx::shm {

namespace {

constexpr std::uint32_t kPad = 1u << 31;  // record header flag: padding up to the end of the ring

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace

std::size_t ring_capacity_for(std::size_t credits, std::size_t max_msg) noexcept {
    std::size_t need = credits * RingProducer::footprint(max_msg) + RingProducer::footprint(max_msg);
    std::size_t cap = 4096;
    while (cap < need) cap <<= 1;
    return cap;
}

PostResult RingProducer::post(std::span<const std::byte> header, std::span<const iovec> payload) noexcept {
    std::size_t len = header.size();
    for (const iovec& v : payload) len += v.iov_len;
    std::size_t need = footprint(len);
    if (need > cap_ / 2) return PostResult::TooLarge;
    std::uint64_t head = ctl_->head.load(std::memory_order_relaxed);
    std::uint64_t tail = ctl_->tail.load(std::memory_order_acquire);
    std::size_t pos = head & (cap_ - 1);
    std::size_t to_end = cap_ - pos;
    std::size_t pad = to_end < need ? to_end : 0;
    // An empty ring starts again from its beginning once past kRewindAt: request/response traffic
    // then keeps touching the same few pages instead of walking through (and keeping resident)
    // the whole ring, which is sized for a full window of bulk data.  The skipped bytes hold no
    // record and take no room: everything before them was released, and `skipped` (published
    // before head) tells the consumer to jump over them.
    if (head == tail && pos >= kRewindAt && pos >= need) {
        head += to_end;
        pos = 0;
        ctl_->skipped.store(head, std::memory_order_release);
    } else {
        std::uint64_t free_from = std::max(tail, ctl_->skipped.load(std::memory_order_relaxed));
        if (cap_ - (head - free_from) < need + pad) return PostResult::Full;
        if (pad) {
            std::uint32_t h[2] = {static_cast<std::uint32_t>(pad - kRecordHeader) | kPad, 0};
            std::memcpy(data_ + pos, h, sizeof h);
            head += pad;
            pos = 0;
        }
    }
    std::uint32_t h[2] = {static_cast<std::uint32_t>(len), 0};
    std::byte* p = data_ + pos;
    std::memcpy(p, h, sizeof h);
    p += kRecordHeader;
    std::memcpy(p, header.data(), header.size());
    p += header.size();
    for (const iovec& v : payload) {
        std::memcpy(p, v.iov_base, v.iov_len);
        p += v.iov_len;
    }
    // Publish, then look whether the consumer sleeps.  Both are sequentially consistent: with the
    // consumer's "sleeping = 1; re-check head" this is Dekker's pattern, so no wakeup is lost.
    ctl_->head.store(head + need, std::memory_order_seq_cst);
    if (ctl_->sleeping.load(std::memory_order_seq_cst)) ring_doorbell();
    return PostResult::Ok;
}

bool walk_records(const std::byte* data, std::size_t cap, std::uint64_t from, std::uint64_t to, std::uint64_t skipped,
                  const std::function<bool(std::span<const std::byte>)>& f) {
    if (from < skipped && skipped <= to) from = skipped;  // a rewind: no record before it
    if (to < from || to - from > cap) return false;
    while (from != to) {
        std::size_t pos = from & (cap - 1);
        std::uint32_t h[2];
        std::memcpy(h, data + pos, sizeof h);
        std::size_t len = h[0] & ~kPad;
        std::size_t size = (h[0] & kPad) ? kRecordHeader + len : RingProducer::footprint(len);
        if (size > cap - pos || size > to - from) return false;
        if (!(h[0] & kPad) && !f({data + pos + kRecordHeader, len})) return false;
        from += size;
    }
    return true;
}

bool RingProducer::walk_unreleased(const std::function<bool(std::span<const std::byte>)>& f) const {
    std::uint64_t tail = ctl_->tail.load(std::memory_order_acquire), head = ctl_->head.load(std::memory_order_acquire);
    return walk_records(data_, cap_, tail, head, ctl_->skipped.load(std::memory_order_acquire), f);
}

bool RingConsumer::walk_unreleased(const std::function<bool(std::span<const std::byte>)>& f) const {
    std::uint64_t tail = ctl_->tail.load(std::memory_order_acquire), head = ctl_->head.load(std::memory_order_acquire);
    return walk_records(data_, cap_, tail, head, ctl_->skipped.load(std::memory_order_acquire), f);
}

void RingProducer::ring_doorbell() noexcept {
    ctl_->doorbell.fetch_add(1, std::memory_order_seq_cst);
    ::syscall(SYS_futex, &ctl_->doorbell, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

void RingProducer::close() noexcept {
    if (!ctl_) return;
    ctl_->producer_gone.store(1, std::memory_order_seq_cst);
    ctl_->tcp_armed.store(0, std::memory_order_relaxed);
    // As in post(): the consumer re-checks producer_gone after announcing its sleep, so a wake-up
    // is needed (a system call) only when it announced one.
    ctl_->doorbell.fetch_add(1, std::memory_order_seq_cst);
    if (ctl_->sleeping.load(std::memory_order_seq_cst))
        ::syscall(SYS_futex, &ctl_->doorbell, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

int RingConsumer::poll(const Deliver& deliver, int budget) {
    std::uint64_t head = ctl_->head.load(std::memory_order_acquire);
    int n = 0;
    while (read_ != head && n < budget) {
        // A rewind (RingProducer::post): the producer started over at the ring's beginning, all
        // before having been released; the skipped bytes hold no record.
        std::uint64_t skipped = ctl_->skipped.load(std::memory_order_acquire);
        if (read_ < skipped) {
            if (skipped > head) return -1;
            std::uint64_t start = read_;
            read_ = skipped;
            held_.push_back(Held{start, read_, false});
            release(start);
            continue;
        }
        if (head - read_ > cap_) return -1;  // the producer claims more than the ring holds
        std::size_t pos = read_ & (cap_ - 1);
        std::uint32_t h[2];
        std::memcpy(h, data_ + pos, sizeof h);
        std::size_t len = h[0] & ~kPad;
        std::size_t size = (h[0] & kPad) ? kRecordHeader + len : RingProducer::footprint(len);
        if (size > cap_ - pos || size > head - read_ || (h[0] & kPad && len % 8)) return -1;
        std::uint64_t start = read_;
        read_ += size;
        held_.push_back(Held{start, read_, false});
        if (h[0] & kPad) {
            release(start);
            continue;
        }
        deliver(start, {data_ + pos + kRecordHeader, len});
        ++n;
    }
    return n;
}

void RingConsumer::release(std::uint64_t id) noexcept {
    for (Held& h : held_) {
        if (h.start == id) {
            h.released = true;
            break;
        }
    }
    std::uint64_t tail = 0;
    bool moved = false;
    while (!held_.empty() && held_.front().released) {
        tail = held_.front().end;
        held_.pop_front();
        moved = true;
    }
    if (moved) ctl_->tail.store(tail, std::memory_order_release);
}

std::size_t RingConsumer::snapshot(std::span<std::byte> out) const noexcept {
    std::uint64_t n = held_.size();
    std::size_t need = 2 * sizeof(std::uint64_t) + n * sizeof(Held);
    if (need > out.size()) return 0;
    std::byte* p = out.data();
    std::memcpy(p, &read_, sizeof read_);
    std::memcpy(p + 8, &n, sizeof n);
    p += 16;
    for (const Held& h : held_) {
        std::memcpy(p, &h, sizeof h);
        p += sizeof h;
    }
    return need;
}

bool RingConsumer::restore(std::span<const std::byte> in) noexcept {
    if (in.size() < 16) return false;
    std::uint64_t read = 0, n = 0;
    std::memcpy(&read, in.data(), 8);
    std::memcpy(&n, in.data() + 8, 8);
    if (n > (in.size() - 16) / sizeof(Held)) return false;
    try {
        std::deque<Held> held;
        for (std::uint64_t i = 0; i < n; ++i) {
            Held h;
            std::memcpy(&h, in.data() + 16 + i * sizeof(Held), sizeof h);
            held.push_back(h);
        }
        held_ = std::move(held);
    } catch (...) {
        return false;
    }
    read_ = read;
    return true;
}

bool RingConsumer::wait(long long spin_ns, long long timeout_ns, bool* spin_paid) noexcept {
    if (spin_paid) *spin_paid = true;
    if (pending() || producer_gone()) return true;
    long long start = now_ns();
    if (spin_ns > 0) {
        while (now_ns() - start < spin_ns) {
            for (int i = 0; i < 64; ++i) cpu_relax();
            if (pending() || producer_gone()) return true;
        }
    }
    if (spin_paid) *spin_paid = false;
    std::uint32_t seq = ctl_->doorbell.load(std::memory_order_seq_cst);
    ctl_->sleeping.fetch_add(1, std::memory_order_seq_cst);
    bool ok = true;
    if (!pending() && !producer_gone()) {  // after arming, look once more: the drain of the race
        timespec ts{}, *tsp = nullptr;
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
            tsp = &ts;
        }
        long r = ::syscall(SYS_futex, &ctl_->doorbell, FUTEX_WAIT, seq, tsp, nullptr, 0);
        if (r < 0 && errno == EINTR) ok = false;
    }
    ctl_->sleeping.fetch_sub(1, std::memory_order_relaxed);
    return ok;
}

}  // namespace sdx::shm
