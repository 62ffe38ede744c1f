// A single-producer, single-consumer ring of variable-length messages in shared memory, with a
// futex doorbell for a consumer that went to sleep.
//
// Messages are packed back to back (8-byte aligned), so small messages touch little memory and
// stay in cache; a message never wraps: the producer pads to the end of the ring instead.  The
// consumer may release messages out of order (the protocol engine frees control messages at
// once and keeps data until the application reads it); the ring's tail advances over the
// released prefix.
//
// Both indices are free-running byte counts.  Everything the peer wrote is read once into our
// own memory and checked before use: a broken or hostile peer can corrupt its own stream, never
// make us read or write outside the ring.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>

namespace sdx::shm {

// The part of a ring that lives in shared memory.  Producer and consumer fields sit on separate
// cache lines so the two sides do not bounce one line between cores.
struct RingControl {
    alignas(64) std::atomic<std::uint64_t> head{0};      // bytes published by the producer
    std::atomic<std::uint64_t> skipped{0};               // where the producer's last rewind jumped to (post())
    alignas(64) std::atomic<std::uint64_t> tail{0};      // bytes released by the consumer
    alignas(64) std::atomic<std::uint32_t> doorbell{0};  // futex word: bumped to wake the consumer
    std::atomic<std::uint32_t> sleeping{0};              // consumer threads (about to be) asleep
    std::atomic<std::uint32_t> producer_gone{0};         // the producer will publish nothing more
    std::atomic<std::uint32_t> tcp_armed{0};             // the consumer waits in poll/epoll: ring its socket
    std::atomic<std::uint32_t> receiving{0};             // the consumer's threads in a blocking receive
};
static_assert(sizeof(RingControl) == 192);

inline constexpr std::size_t kRecordHeader = 8;
inline constexpr std::size_t kRewindAt = 256 * 1024;  // RingProducer::post: where an empty ring starts over
inline constexpr std::uint32_t kArmRead = 1, kArmWrite = 2;  // RingControl::tcp_armed

enum class PostResult { Ok, Full, TooLarge };

class RingProducer {
public:
    RingProducer() = default;
    RingProducer(RingControl* ctl, std::byte* data, std::size_t capacity) : ctl_(ctl), data_(data), cap_(capacity) {}
    // Appends one message made of `header` then the gathered `payload`.
    PostResult post(std::span<const std::byte> header, std::span<const iovec> payload) noexcept;
    // Bytes a message of `len` bytes occupies (without wrap padding).
    static std::size_t footprint(std::size_t len) noexcept { return kRecordHeader + ((len + 7) & ~std::size_t{7}); }
    std::size_t capacity() const noexcept { return cap_; }
    void close() noexcept;  // tell the consumer nothing more will come, and wake it
    // After a post: true once when the consumer armed its socket doorbell (it waits in poll or
    // epoll on the kernel socket, so a byte must go there to wake it).
    // `data`: the message just posted brings something to read (Data, SrcAvail, DisConn, ...);
    // otherwise it only returns credits, which matter to a consumer waiting to write.
    bool take_tcp_arm(bool data) noexcept {
        std::uint32_t cur = ctl_->tcp_armed.load(std::memory_order_seq_cst);
        std::uint32_t want = data ? (kArmRead | kArmWrite) : kArmWrite;
        while (cur & want)
            if (ctl_->tcp_armed.compare_exchange_weak(cur, 0, std::memory_order_seq_cst)) return true;
        return false;
    }
    void wake() noexcept { ring_doorbell(); }  // wakes a sleeping consumer with nothing new
    bool consumer_receiving() const noexcept { return ctl_->receiving.load(std::memory_order_acquire) != 0; }
    // Calls f(message) for each message published and not yet released by the consumer, in
    // order, without touching the ring.  False when f refused one or the records do not parse.
    bool walk_unreleased(const std::function<bool(std::span<const std::byte>)>& f) const;
    bool nothing_published() const noexcept { return ctl_->head.load(std::memory_order_acquire) == 0; }
    bool all_released() const noexcept {
        return ctl_->tail.load(std::memory_order_acquire) == ctl_->head.load(std::memory_order_acquire);
    }

private:
    void ring_doorbell() noexcept;
    RingControl* ctl_ = nullptr;
    std::byte* data_ = nullptr;
    std::size_t cap_ = 0;
};

class RingConsumer {
public:
    using Deliver = std::function<void(std::uint64_t id, std::span<const std::byte> msg)>;
    RingConsumer() = default;
    RingConsumer(RingControl* ctl, const std::byte* data, std::size_t capacity) : ctl_(ctl), data_(data), cap_(capacity) {}

    // Hands each newly published message to `deliver`, at most `budget` of them.  Returns how
    // many were delivered, or -1 when the ring's contents are corrupt (the connection must abort).
    int poll(const Deliver& deliver, int budget = 64);
    // The message `id` (from poll) may be overwritten now.
    void release(std::uint64_t id) noexcept;
    bool pending() const noexcept { return ctl_->head.load(std::memory_order_acquire) != read_; }
    bool producer_gone() const noexcept { return ctl_->producer_gone.load(std::memory_order_acquire) != 0; }
    // Asks the producer for a byte on the kernel socket at its next post.  Check pending() after
    // arming: what was published just before is not announced.
    // What the consumer waits for: kArmRead (something to read), kArmWrite (credits), or both.
    void arm_tcp(std::uint32_t what) noexcept { ctl_->tcp_armed.fetch_or(what, std::memory_order_seq_cst); }
    // A thread of ours enters (+1) or leaves (-1) a blocking receive.
    void receiving(int delta) noexcept { ctl_->receiving.fetch_add(static_cast<std::uint32_t>(delta), std::memory_order_acq_rel); }
    // Withdraws the request; true when the producer had not taken it yet (no byte is coming).
    bool disarm_tcp() noexcept { return ctl_->tcp_armed.exchange(0, std::memory_order_seq_cst) != 0; }
    bool nothing_released() const noexcept { return ctl_->tail.load(std::memory_order_acquire) == 0; }
    // Like RingProducer::walk_unreleased, from the consumer's side.
    bool walk_unreleased(const std::function<bool(std::span<const std::byte>)>& f) const;
    // Sleeps until a message is published, the producer rings or `timeout_ns` passes (< 0: no
    // limit).  Spins first for `spin_ns`.  Returns false on a signal (EINTR), true otherwise.
    // *spin_paid: whether the wait ended while still spinning (no sleep was needed).
    bool wait(long long spin_ns, long long timeout_ns, bool* spin_paid = nullptr) noexcept;
    // Where this consumer stands (what it read, what it holds), as bytes, and back.
    std::size_t snapshot(std::span<std::byte> out) const noexcept;  // 0: too small
    bool restore(std::span<const std::byte> in) noexcept;

private:
    struct Held {
        std::uint64_t start, end;
        bool released;
    };
    RingControl* ctl_ = nullptr;
    const std::byte* data_ = nullptr;
    std::size_t cap_ = 0;
    std::uint64_t read_ = 0;     // next byte to look at
    std::deque<Held> held_;      // delivered, in ring order
};

// Walks the records in [from, to) of a ring's data area (see walk_unreleased); `skipped`: the
// ring's RingControl::skipped (a rewind holds no record).
bool walk_records(const std::byte* data, std::size_t cap, std::uint64_t from, std::uint64_t to, std::uint64_t skipped,
                  const std::function<bool(std::span<const std::byte>)>& f);

// Sizes a ring so that `credits` messages of at most `max_msg` bytes always fit, padding included.
std::size_t ring_capacity_for(std::size_t credits, std::size_t max_msg) noexcept;

}  // namespace sdx::shm
