// The shared-memory transport for one connection: a memfd segment holding two rings (one per
// direction), and cross-memory attach (process_vm_readv/writev) standing in for RDMA Read and
// Write.  It implements the protocol engine's Port.
//
// The segment is anonymous (memfd): it lives exactly as long as some process maps it or holds its
// fd, so a killed peer leaves nothing behind in /dev/shm.  The active side creates it; the passive
// side attaches to it by opening /proc/<pid>/fd/<fd> of the creator during the handshake.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "protocol/engine.hpp"
#include "verbs/shm_ring.hpp"

namespace sdx::shm {

struct SegmentHeader;

// Where the two ends of a connection agree on it, in the segment's first page.  The active side
// fills it in and announces; the passive side accepts or declines.
//
// `state` holds the phase and, above it, the segment's generation: a segment is reused for later
// connections of the same pair of processes (verbs/shm_pool.hpp), and a passive side that looked
// at an earlier connection's announcement must not be able to claim a later one.  Every phase
// change is a compare-and-swap against the exact word seen, so a stale generation always fails.
// `state` is also a futex word.
struct Rendezvous {
    enum : std::uint32_t { Empty = 0, Announced = 1, Accepted = 2, Withdrawn = 3, Declined = 4, Claiming = 5 };
    static constexpr std::uint32_t kPhaseBits = 4;
    static constexpr std::uint32_t phase_of(std::uint32_t word) noexcept { return word & ((1u << kPhaseBits) - 1); }
    static constexpr std::uint32_t with_phase(std::uint32_t word, std::uint32_t phase) noexcept {
        return (word & ~((1u << kPhaseBits) - 1)) | phase;
    }
    std::uint32_t phase() const noexcept { return phase_of(state.load(std::memory_order_acquire)); }
    // From `seen` (the whole word: generation and phase) to `phase` of the same generation.
    bool move(std::uint32_t seen, std::uint32_t phase) noexcept {
        return state.compare_exchange_strong(seen, with_phase(seen, phase), std::memory_order_acq_rel);
    }

    std::atomic<std::uint32_t> state{Empty};
    std::atomic<std::uint32_t> addr_ready{0};  // the active side's address is filled in
    std::int32_t active_pid = 0;
    std::int32_t passive_pid = 0;
    std::uint32_t addr_len = 0;
    std::uint8_t addr[28] = {};                // the active side's local address (sockaddr_in/in6)
    std::uint8_t hello[24] = {};               // the active side's Hello
    std::uint8_t hello_ack[24] = {};           // the passive side's HelloAck
    std::atomic<std::int32_t> holders[2] = {};  // processes holding each side (fork adds one)
    std::atomic<std::uint32_t> reverted{0};     // the stream went back to kernel TCP (exec): preload/accel.cpp
    std::atomic<std::uint32_t> ringing{0};      // socket doorbells being sent right now
    std::atomic<std::uint64_t> bells[2] = {};   // doorbell bytes each side sent on its kernel socket
    std::atomic<std::uint64_t> drained[2] = {}; // doorbell bytes each side took off its kernel socket
    // Handoffs between processes of one side (fork): which use of the connection is the latest,
    // and which one's state is published in the segment's state area.
    std::atomic<std::uint64_t> epoch[2] = {};
    std::atomic<std::uint64_t> published[2] = {};
    // Each side sets its flag as the very last thing it does with a connection that ended
    // normally; only then may the creator reuse the segment for another connection.
    std::atomic<std::uint32_t> finished[2] = {};
    // The advertisements each side exposed to the other (SrcAvail, SinkAvail), one word per slot
    // (key modulo kLeases): Lease below.
    static constexpr std::uint32_t kLeases = 16;
    std::atomic<std::uint64_t> leases[2][kLeases] = {};
};

// One advertisement's word: its key, who may touch it, and how far the peer consumed it.  The
// copier moves it Lent -> Copying and back (adding what it consumed); the owner takes it back by
// moving it Lent -> Reclaimed, and so knows the exact count without waiting for the peer's
// completion message (Port::reclaim).
struct Lease {
    enum State : std::uint64_t { Free = 0, Lent = 1, Copying = 2, Reclaimed = 3 };
    static constexpr std::uint64_t kKeyMask = (1u << 30) - 1;
    static constexpr std::uint64_t pack(std::uint32_t key, State st, std::uint64_t taken) noexcept {
        return (key & kKeyMask) | (static_cast<std::uint64_t>(st) << 30) | (taken << 32);
    }
    static constexpr bool is(std::uint64_t w, std::uint32_t key) noexcept { return (w & kKeyMask) == (key & kKeyMask); }
    static constexpr State state(std::uint64_t w) noexcept { return static_cast<State>((w >> 30) & 3); }
    static constexpr std::uint64_t taken(std::uint64_t w) noexcept { return w >> 32; }
};

// A mapped segment.  Move-only; unmaps and closes on destruction.
class Segment {
public:
    // Creates a segment whose rings each hold `ring_capacity` bytes (a power of two).
    static std::optional<Segment> create(std::size_t ring_capacity, std::string* err);
    // Maps the segment behind `fd` (taking ownership of it), checking its header.
    static std::optional<Segment> attach(int fd, std::string* err);
    // Maps the segment that process `pid` holds as its fd `fd`.
    static std::optional<Segment> attach_pid(pid_t pid, int fd, std::string* err);

    Segment(Segment&& o) noexcept;
    Segment& operator=(Segment&& o) noexcept;
    Segment(const Segment&) = delete;
    Segment& operator=(const Segment&) = delete;
    ~Segment();

    int fd() const noexcept { return fd_; }
    void* base() const noexcept { return base_; }
    std::size_t size() const noexcept { return size_; }
    std::size_t ring_capacity() const noexcept { return ring_cap_; }
    // Side 0 (the active side) produces into ring 0 and consumes ring 1; side 1 the reverse.
    RingProducer producer(int side) const noexcept;
    RingConsumer consumer(int side) const noexcept;
    void close_fd() noexcept;  // keep the mapping, drop the fd (once the peer attached)
    // A random number fixed at creation: with the creator's pid it names the segment for the
    // passive side's cache of attached segments (verbs/shm_pool.hpp).
    std::uint64_t id() const noexcept;
    // Makes a segment whose connection ended on both sides ready for the next connection: a
    // fresh rendezvous of the next generation, empty rings, nothing published.
    void renew() noexcept;
    Rendezvous* rendezvous() const noexcept;
    // Where a side publishes its connection state for another process of that side (a handoff
    // after fork: preload/accel.cpp).
    static constexpr std::size_t kStateBytes = 32 * 1024;
    std::span<std::byte> state_area(int side) const noexcept;

private:
    Segment() = default;
    Segment(int fd, void* base, std::size_t size, std::size_t ring_cap) noexcept
        : fd_(fd), base_(base), size_(size), ring_cap_(ring_cap) {}
    RingControl* control(int ring) const noexcept;
    std::byte* ring_data(int ring) const noexcept;
    int fd_ = -1;
    void* base_ = nullptr;
    std::size_t size_ = 0;
    std::size_t ring_cap_ = 0;
};

// The engine's Port over a segment and cross-memory attach to the peer process.
class Channel final : public proto::Port {
public:
    // `self`: this process's id when the caller knows it (0: ask the kernel).
    Channel(Segment seg, int side, pid_t peer_pid, pid_t self = 0);
    ~Channel() override;

    // From now on no channel in this process uses process_vm_readv/writev (a seccomp filter would
    // kill the process for them): reads and writes of the peer's memory fail at once, and the
    // engine has the peer copy instead (SendSm).
    static void forbid_cross_memory() noexcept;

    // proto::Port
    void post_send(std::span<const std::byte> header, std::span<const iovec> payload) override;
    void release_recv(proto::RecvId id) override;
    void rdma_read(proto::OpId op, void* local, std::size_t len, const proto::Advert& remote, std::uint64_t offset,
                   bool consume) override;
    void rdma_write(proto::OpId op, const void* local, std::size_t len, const proto::Advert& remote, std::uint64_t offset) override;
    std::optional<std::uint32_t> expose(void* addr, std::size_t len, bool peer_writes) override;
    void revoke(std::uint32_t key) override;
    proto::Reclaim reclaim(std::uint32_t key, std::size_t* taken) override;
    // Whether our advertisement `key` was taken back (Port::reclaim): its bytes are not the peer's.
    bool reclaimed(std::uint32_t key) const noexcept {
        std::uint64_t w = lease(side_, key).load(std::memory_order_acquire);
        return Lease::is(w, key) && Lease::state(w) == Lease::Reclaimed;
    }
    // Only a peer in this very process can be unable to read until our send returns (it is our own
    // thread): another process reads when it gets to it, as TCP's receiver would.
    bool peer_receiving() const noexcept override { return peer_ != self_ || out_.consumer_receiving(); }
    void receiving(int delta) noexcept { in_.receiving(delta); }

    // Feeds everything that arrived, and the completions of the copies done for it, into `eng`.
    // Returns how many events were fed, or -1 when the ring is corrupt (the engine was told).
    int drive(proto::Engine& eng, int budget = 64);
    // Waits for the peer: spin, then sleep on the doorbell.  False when a signal interrupted it.
    bool wait(long long spin_ns, long long timeout_ns, bool* spin_paid = nullptr) noexcept {
        if (!done_.empty()) {  // completions to feed: no sleep
            if (spin_paid) *spin_paid = true;
            return true;
        }
        return in_.wait(spin_ns, timeout_ns, spin_paid);
    }
    void close() noexcept { out_.close(); }  // we will send nothing more: wake the peer
    void detach() noexcept { detached_ = true; }  // another process goes on with it: leave it open
    // The connection is over on this side (close() was called): the segment, to be kept for
    // another connection.  The channel must not be used afterwards.
    Segment give_up_segment() noexcept {
        detached_ = muted_ = true;
        return std::move(seg_);
    }
    // This process lost the connection to another process of its side (preload/accel.cpp): from
    // now on it neither reads nor writes the rings.
    void mute() noexcept { muted_ = detached_ = true; }
    bool muted() const noexcept { return muted_; }
    // How to ring the peer's kernel socket when it waits in poll/epoll (the shim passes a function
    // that writes one byte with the real send(), never the interposed one, and says if it went).
    void set_socket_doorbell(bool (*ring)(int fd), int fd) noexcept {
        ring_socket_ = ring;
        socket_fd_ = fd;
    }
    // The application is about to wait on the kernel socket for something to read and/or room to
    // write: the peer's next message that brings it also rings the socket.
    void arm_socket_doorbell(bool read = true, bool write = true) noexcept {
        in_.arm_tcp((read ? kArmRead : 0) | (write ? kArmWrite : 0));
    }
    bool incoming() const noexcept { return in_.pending() || !done_.empty(); }

    // Returning the stream to kernel TCP (before exec; the protocol is in preload/accel.cpp).
    int side() const noexcept { return side_; }
    pid_t peer() const noexcept { return peer_; }
    // The peer process became known (early data starts before it accepts: preload/accel.cpp).
    void set_peer(pid_t pid) noexcept { peer_ = pid; }
    void close_segment_fd() noexcept { seg_.close_fd(); }
    std::uint32_t revert_state() const noexcept { return seg_.rendezvous()->reverted.load(std::memory_order_seq_cst); }
    void set_revert_state(std::uint32_t v) noexcept { seg_.rendezvous()->reverted.store(v, std::memory_order_seq_cst); }
    bool sent_nothing() const noexcept { return out_.nothing_published(); }
    bool took_nothing() const noexcept { return in_.nothing_released(); }
    bool peer_gone() const noexcept { return in_.producer_gone(); }
    // Whether the peer's application consumed every byte we sent (no Data or SrcAvail of ours is
    // still unreleased): a dead peer then closed as TCP does with an empty receive queue (FIN).
    bool peer_took_everything() const noexcept;
    // True when the peer had not yet taken the request, so no doorbell byte is on its way.
    bool disarm_socket_doorbell() noexcept { return in_.disarm_tcp(); }
    bool socket_doorbell_in_flight() const noexcept { return seg_.rendezvous()->ringing.load(std::memory_order_seq_cst) != 0; }
    bool walk_incoming(const std::function<bool(std::span<const std::byte>)>& f) const { return in_.walk_unreleased(f); }
    bool walk_outgoing(const std::function<bool(std::span<const std::byte>)>& f) const { return out_.walk_unreleased(f); }
    void wake_peer() noexcept { out_.wake(); }
    // Doorbell bytes the peer sent that are not yet taken off our kernel socket (some may still be
    // on their way).  Reading no more than this never eats a byte of application data.
    std::uint64_t doorbells_owed() const noexcept {
        Rendezvous* rv = seg_.rendezvous();
        return rv->bells[1 - side_].load(std::memory_order_seq_cst) - rv->drained[side_].load(std::memory_order_seq_cst);
    }
    void note_drained(std::uint64_t n) noexcept { seg_.rendezvous()->drained[side_].fetch_add(n, std::memory_order_seq_cst); }
    const Segment& segment() const noexcept { return seg_; }
    // This process's part of the channel state (where it reads the ring), for a handoff to
    // another process of the same side; with the engine's snapshot it is the whole connection.
    std::size_t snapshot(std::span<std::byte> out) const noexcept;  // 0: busy or too small
    bool restore(std::span<const std::byte> in) noexcept;

private:
    Segment seg_;
    RingProducer out_;
    RingConsumer in_;
    pid_t peer_;
    pid_t self_;
    int side_;
    enum class Copy : std::uint8_t { Ok, Failed, Reclaimed };
    // Copies [local, +len) from/to the peer's advertisement under its lease.
    Copy copy_leased(bool write, void* local, std::size_t len, const proto::Advert& remote, std::uint64_t offset,
                     bool consume) noexcept;
    std::atomic<std::uint64_t>& lease(int owner, std::uint32_t key) const noexcept {
        return seg_.rendezvous()->leases[owner][key % Rendezvous::kLeases];
    }
    std::vector<std::pair<proto::OpId, Copy>> done_;  // completions of the synchronous copies
    std::uint32_t next_key_ = 1;
    bool failed_ = false;  // a post found no room: the engine broke its credits (never expected)
    bool detached_ = false;
    bool muted_ = false;
    bool (*ring_socket_)(int) = nullptr;
    int socket_fd_ = -1;
};

}  // namespace sdx::shm
