#include "verbs/shm_channel.hpp"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>

namespace sdx::shm {

// The first page of a segment.
struct SegmentHeader {
    char magic[8];                 // "SDXSHM01"
    std::uint32_t version;
    std::uint32_t header_bytes;    // bytes before ring 0's data
    std::uint64_t ring_capacity;   // bytes of data per ring (a power of two)
    std::uint64_t total_bytes;
    std::uint64_t id;              // random, fixed for the segment's life (Segment::id)
};

namespace {

constexpr char kMagic[8] = {'S', 'D', 'X', 'S', 'H', 'M', '0', '1'};
constexpr std::uint32_t kSegVersion = 3;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kControlOffset = kPage;         // two RingControl blocks
constexpr std::size_t kStateOffset = 2 * kPage;       // side 0's published state, then side 1's
constexpr std::size_t kDataOffset = kStateOffset + 2 * Segment::kStateBytes;  // ring 0 data, then ring 1 data
constexpr std::size_t kRendezvousOffset = 256;        // in the header page
static_assert(sizeof(SegmentHeader) <= kRendezvousOffset);
static_assert(kRendezvousOffset + sizeof(Rendezvous) <= kPage);

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

std::uint64_t random_id() noexcept {
    std::uint64_t v = 0;
    if (::getrandom(&v, sizeof v, GRND_NONBLOCK) != sizeof v) {
        timespec ts{};
        ::clock_gettime(CLOCK_MONOTONIC, &ts);
        v = (static_cast<std::uint64_t>(ts.tv_nsec) << 20) ^ static_cast<std::uint64_t>(ts.tv_sec) ^
            (static_cast<std::uint64_t>(::getpid()) << 44);
    }
    return v;
}

// Every failed create/attach: say why, close the fd it owned, no segment.
std::optional<Segment> refuse(int fd, std::string* err, std::string why) {
    if (err) *err = std::move(why);
    if (fd >= 0) ::close(fd);
    return std::nullopt;
}

}  // namespace

std::optional<Segment> Segment::create(std::size_t ring_capacity, std::string* err) {
    if (ring_capacity < kPage || (ring_capacity & (ring_capacity - 1))) {
        return refuse(-1, err, "ring capacity must be a power of two of at least 4096");
    }
    int fd = ::memfd_create("sdx", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        return refuse(-1, err, errno_text("memfd_create"));
    }
    std::size_t total = kDataOffset + 2 * ring_capacity;
    if (::ftruncate(fd, static_cast<off_t>(total)) != 0) {
        return refuse(fd, err, errno_text("ftruncate"));
    }
    // The size is fixed for good: a peer cannot shrink it under our mapping (SIGBUS).
    ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        return refuse(fd, err, errno_text("mmap"));
    }
    auto* h = static_cast<SegmentHeader*>(base);
    std::memcpy(h->magic, kMagic, sizeof kMagic);
    h->version = kSegVersion;
    h->header_bytes = kDataOffset;
    h->ring_capacity = ring_capacity;
    h->total_bytes = total;
    h->id = random_id();
    new (static_cast<std::byte*>(base) + kRendezvousOffset) Rendezvous{};
    new (static_cast<std::byte*>(base) + kControlOffset) RingControl{};
    new (static_cast<std::byte*>(base) + kControlOffset + sizeof(RingControl)) RingControl{};
    return Segment(fd, base, total, ring_capacity);
}

std::optional<Segment> Segment::attach(int fd, std::string* err) {
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < kDataOffset + 2 * kPage) {
        return refuse(fd, err, "not an sdx segment (too small)");
    }
    // The seals guarantee the size we map stays valid; without them the peer could truncate the
    // file and make our next access fault.
    int seals = ::fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_SEAL)) != (F_SEAL_SHRINK | F_SEAL_SEAL)) {
        return refuse(fd, err, "segment is not sealed against shrinking");
    }
    std::size_t total = static_cast<std::size_t>(st.st_size);
    void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        return refuse(fd, err, errno_text("mmap"));
    }
    SegmentHeader h;
    std::memcpy(&h, base, sizeof h);
    std::size_t cap = h.ring_capacity;
    bool ok = std::memcmp(h.magic, kMagic, sizeof kMagic) == 0 && h.version == kSegVersion && h.header_bytes == kDataOffset &&
              cap >= kPage && (cap & (cap - 1)) == 0 && cap <= (total - kDataOffset) / 2 && h.total_bytes == total;
    if (!ok) {
        ::munmap(base, total);
        return refuse(fd, err, "not an sdx segment (bad header)");
    }
    return Segment(fd, base, total, cap);
}

std::optional<Segment> Segment::attach_pid(pid_t pid, int fd, std::string* err) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/fd/%d", static_cast<int>(pid), fd);
    int mine = ::open(path, O_RDWR | O_CLOEXEC);
    if (mine < 0) {
        return refuse(-1, err, errno_text(path));
    }
    return attach(mine, err);
}

Segment::Segment(Segment&& o) noexcept { *this = std::move(o); }

Segment& Segment::operator=(Segment&& o) noexcept {
    if (this != &o) {
        this->~Segment();
        fd_ = std::exchange(o.fd_, -1);
        base_ = std::exchange(o.base_, nullptr);
        size_ = std::exchange(o.size_, 0);
        ring_cap_ = std::exchange(o.ring_cap_, 0);
    }
    return *this;
}

Segment::~Segment() {
    if (base_) ::munmap(base_, size_);
    if (fd_ >= 0) ::close(fd_);
    base_ = nullptr;
    fd_ = -1;
}

void Segment::close_fd() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

std::uint64_t Segment::id() const noexcept { return static_cast<const SegmentHeader*>(base_)->id; }

void Segment::renew() noexcept {
    Rendezvous* rv = rendezvous();
    // The next generation's Empty first, so a passive side still holding the old word fails its
    // compare-and-swap; then the rest, which nobody reads before the next announcement.
    std::uint32_t next = (rv->state.load(std::memory_order_acquire) >> Rendezvous::kPhaseBits) + 1;
    rv->state.store(next << Rendezvous::kPhaseBits | Rendezvous::Empty, std::memory_order_seq_cst);
    rv->addr_ready.store(0, std::memory_order_relaxed);
    rv->active_pid = rv->passive_pid = 0;
    rv->addr_len = 0;
    std::memset(rv->addr, 0, sizeof rv->addr);
    std::memset(rv->hello, 0, sizeof rv->hello);
    std::memset(rv->hello_ack, 0, sizeof rv->hello_ack);
    for (int s = 0; s < 2; ++s) {
        rv->holders[s].store(0, std::memory_order_relaxed);
        rv->bells[s].store(0, std::memory_order_relaxed);
        rv->drained[s].store(0, std::memory_order_relaxed);
        rv->epoch[s].store(0, std::memory_order_relaxed);
        rv->published[s].store(0, std::memory_order_relaxed);
        rv->finished[s].store(0, std::memory_order_relaxed);
        for (auto& l : rv->leases[s]) l.store(0, std::memory_order_relaxed);
        std::memset(state_area(s).data(), 0, sizeof(std::uint32_t));  // no published state
        new (control(s)) RingControl{};
    }
    rv->reverted.store(0, std::memory_order_relaxed);
    rv->ringing.store(0, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
}

Rendezvous* Segment::rendezvous() const noexcept {
    return reinterpret_cast<Rendezvous*>(static_cast<std::byte*>(base_) + kRendezvousOffset);
}

RingControl* Segment::control(int ring) const noexcept {
    return reinterpret_cast<RingControl*>(static_cast<std::byte*>(base_) + kControlOffset + ring * sizeof(RingControl));
}

std::byte* Segment::ring_data(int ring) const noexcept {
    return static_cast<std::byte*>(base_) + kDataOffset + ring * ring_cap_;
}

std::span<std::byte> Segment::state_area(int side) const noexcept {
    return {static_cast<std::byte*>(base_) + kStateOffset + static_cast<std::size_t>(side) * kStateBytes, kStateBytes};
}

RingProducer Segment::producer(int side) const noexcept { return RingProducer(control(side), ring_data(side), ring_cap_); }

RingConsumer Segment::consumer(int side) const noexcept { return RingConsumer(control(1 - side), ring_data(1 - side), ring_cap_); }

// --- Channel -----------------------------------------------------------------------------------

Channel::Channel(Segment seg, int side, pid_t peer_pid, pid_t self)
    : seg_(std::move(seg)), out_(seg_.producer(side)), in_(seg_.consumer(side)), peer_(peer_pid), self_(self > 0 ? self : ::getpid()), side_(side) {}

Channel::~Channel() {
    if (!detached_) out_.close();
}

void Channel::post_send(std::span<const std::byte> header, std::span<const iovec> payload) {
    if (muted_) return;
    if (out_.post(header, payload) != PostResult::Ok) {
        failed_ = true;
        return;
    }
    // Data, SrcAvail, DisConn, AbortConn and urgent data wake a reader; every message returns
    // credits to a writer (wire.hpp: the message id is the first header byte).
    auto mid = header.empty() ? proto::Mid::Data : static_cast<proto::Mid>(header[0]);
    bool readable = mid == proto::Mid::Data ? (header.size() + proto::iov_total(payload) > proto::kBsdhSize)
                                            : (mid == proto::Mid::SrcAvail || mid == proto::Mid::DisConn || mid == proto::Mid::AbortConn);
    if (ring_socket_ && out_.take_tcp_arm(readable)) {
        // A peer returning the stream to TCP waits until no doorbell is in flight, then takes the
        // bytes away: from then on every byte on the kernel socket is application data.
        Rendezvous* rv = seg_.rendezvous();
        rv->ringing.fetch_add(1, std::memory_order_seq_cst);
        if (rv->reverted.load(std::memory_order_seq_cst) == 0 && ring_socket_(socket_fd_))
            rv->bells[side_].fetch_add(1, std::memory_order_seq_cst);
        rv->ringing.fetch_sub(1, std::memory_order_seq_cst);
    }
}

void Channel::release_recv(proto::RecvId id) {
    if (!muted_) in_.release(id);
}

namespace {
std::atomic<bool> g_no_cross_memory{false};
}

void Channel::forbid_cross_memory() noexcept { g_no_cross_memory.store(true, std::memory_order_release); }

Channel::Copy Channel::copy_leased(bool write, void* local, std::size_t len, const proto::Advert& remote,
                                   std::uint64_t offset, bool consume) noexcept {
    if (g_no_cross_memory.load(std::memory_order_acquire)) return Copy::Failed;
    std::atomic<std::uint64_t>& w = lease(1 - side_, remote.rkey);
    std::uint64_t cur = w.load(std::memory_order_acquire);
    do {
        if (!Lease::is(cur, remote.rkey) || Lease::state(cur) != Lease::Lent) return Copy::Reclaimed;
    } while (!w.compare_exchange_weak(cur, Lease::pack(remote.rkey, Lease::Copying, Lease::taken(cur)),
                                      std::memory_order_acq_rel, std::memory_order_acquire));
    iovec l{local, len};
    iovec r{reinterpret_cast<void*>(remote.vaddr + offset), len};
    // process_vm_readv/writev may copy less than asked only at an unmapped page: a failure.
    ssize_t n = write ? ::process_vm_writev(peer_, &l, 1, &r, 1, 0) : ::process_vm_readv(peer_, &l, 1, &r, 1, 0);
    bool ok = n == static_cast<ssize_t>(len);
    std::uint64_t taken = Lease::taken(cur);
    if (ok && consume) taken = std::max<std::uint64_t>(taken, offset + len);
    w.store(Lease::pack(remote.rkey, Lease::Lent, taken), std::memory_order_release);
    return ok ? Copy::Ok : Copy::Failed;
}

void Channel::rdma_read(proto::OpId op, void* local, std::size_t len, const proto::Advert& remote, std::uint64_t offset,
                        bool consume) {
    done_.emplace_back(op, copy_leased(false, local, len, remote, offset, consume));
}

void Channel::rdma_write(proto::OpId op, const void* local, std::size_t len, const proto::Advert& remote, std::uint64_t offset) {
    done_.emplace_back(op, copy_leased(true, const_cast<void*>(local), len, remote, offset, true));
}

// Cross-memory attach needs no registration: the key names the advertisement and its lease.
std::optional<std::uint32_t> Channel::expose(void*, std::size_t, bool) {
    std::uint32_t key = next_key_++;
    std::atomic<std::uint64_t>& w = lease(side_, key);
    std::uint64_t cur = w.load(std::memory_order_acquire);
    do {
        // An advertisement of 16 keys ago still out (more outstanding than slots) or being copied:
        // copy instead.
        if (Lease::state(cur) == Lease::Copying || Lease::state(cur) == Lease::Lent) return std::nullopt;
    } while (!w.compare_exchange_weak(cur, Lease::pack(key, Lease::Lent, 0), std::memory_order_acq_rel,
                                      std::memory_order_acquire));
    return key;
}

// Ends the lease.  A copy in progress (only on abortive paths: normally the peer's completion
// came first) is waited for, briefly, so that no write lands in a buffer the application got back.
void Channel::revoke(std::uint32_t key) {
    std::atomic<std::uint64_t>& w = lease(side_, key);
    std::uint64_t cur = w.load(std::memory_order_acquire);
    for (int spins = 0; Lease::is(cur, key);) {
        Lease::State st = Lease::state(cur);
        if (st == Lease::Free || st == Lease::Reclaimed) return;
        if (st == Lease::Copying) {
            if (++spins > 100000) return;  // a peer that died mid-copy writes nothing more
            ::sched_yield();
            cur = w.load(std::memory_order_acquire);
            continue;
        }
        if (w.compare_exchange_weak(cur, Lease::pack(key, Lease::Reclaimed, Lease::taken(cur)), std::memory_order_acq_rel,
                                    std::memory_order_acquire))
            return;
    }
}

proto::Reclaim Channel::reclaim(std::uint32_t key, std::size_t* taken) {
    std::atomic<std::uint64_t>& w = lease(side_, key);
    std::uint64_t cur = w.load(std::memory_order_acquire);
    for (;;) {
        if (!Lease::is(cur, key)) return proto::Reclaim::Unsupported;  // not ours to judge: wait for the peer
        switch (Lease::state(cur)) {
            case Lease::Copying:
                return proto::Reclaim::Busy;
            case Lease::Reclaimed:
                *taken = Lease::taken(cur);
                return proto::Reclaim::Done;
            case Lease::Free:
                return proto::Reclaim::Unsupported;
            case Lease::Lent:
                if (w.compare_exchange_weak(cur, Lease::pack(key, Lease::Reclaimed, Lease::taken(cur)),
                                            std::memory_order_acq_rel, std::memory_order_acquire)) {
                    *taken = Lease::taken(cur);
                    return proto::Reclaim::Done;
                }
                break;
        }
    }
}

bool Channel::peer_took_everything() const noexcept {
    if (out_.all_released()) return true;
    try {
        return out_.walk_unreleased([](std::span<const std::byte> m) {
            proto::Message msg;
            if (proto::decode(m, msg) != proto::DecodeError::None) return false;
            if (msg.h.mid == proto::Mid::SrcAvail) return false;
            return msg.h.mid != proto::Mid::Data || msg.payload.empty();
        });
    } catch (...) {
        return false;
    }
}

std::size_t Channel::snapshot(std::span<std::byte> out) const noexcept {
    if (!done_.empty() || out.size() < sizeof next_key_) return 0;
    std::memcpy(out.data(), &next_key_, sizeof next_key_);
    std::size_t n = in_.snapshot(out.subspan(sizeof next_key_));
    return n ? n + sizeof next_key_ : 0;
}

bool Channel::restore(std::span<const std::byte> in) noexcept {
    if (in.size() < sizeof next_key_) return false;
    std::memcpy(&next_key_, in.data(), sizeof next_key_);
    done_.clear();
    return in_.restore(in.subspan(sizeof next_key_));
}

int Channel::drive(proto::Engine& eng, int budget) {
    if (muted_) return 0;
    int fed = 0;
    for (;;) {
        while (!done_.empty()) {
            auto [op, st] = done_.front();
            done_.erase(done_.begin());
            eng.on_rdma_done(op, st == Copy::Ok, st == Copy::Reclaimed);
            ++fed;
        }
        int n = in_.poll([&](std::uint64_t id, std::span<const std::byte> msg) { eng.on_message(id, msg); }, budget);
        if (n < 0) {
            eng.on_transport_down();
            return -1;
        }
        fed += n;
        if (failed_) {
            eng.on_transport_down();
            return -1;
        }
        if (n == 0 && done_.empty()) break;
    }
    if (in_.producer_gone() && !in_.pending()) eng.on_transport_down();
    return fed;
}

}  // namespace sdx::shm
