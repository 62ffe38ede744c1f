// The shared-memory transport between two real processes: rings in a memfd segment, the peer
// attached through /proc/PID/fd, zero copy by cross-memory attach, the protocol engine on top.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "verbs/shm_channel.hpp"
#include "verbs/shm_pool.hpp"

using namespace sdx;
using namespace sdx::shm;

namespace {

// Runs an engine operation to completion the way the shim will: feed the channel, progress,
// sleep on the doorbell when nothing moves.
long run(proto::Engine& e, Channel& ch, proto::OpResult r, bool send) {
    while (r.status == proto::Status::Pending) {
        int fed = ch.drive(e);
        r = send ? e.progress_send() : e.progress_recv();
        if (r.status == proto::Status::Done) break;
        if (fed == 0) ch.wait(20000, 1000000000LL);
    }
    return r.result;
}

std::uint8_t byte_at(std::uint64_t seed, std::uint64_t off) {
    std::uint64_t z = seed + (off >> 3) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<std::uint8_t>(z >> ((off & 7) * 8));
}

struct Result {
    double seconds;
    std::uint64_t bytes;
};

// Parent sends `total` bytes (the pattern costs more than the transfer: speed is for bench/) with random write sizes; the child receives with random read sizes
// and checks every byte.  Returns the child's verdict and the parent's timing.
Result transfer(std::uint64_t total, std::size_t max_op, proto::Params prm, bool rx_nonblocking, proto::Counters* tx_ctr) {
    std::string err;
    auto seg = Segment::create(ring_capacity_for(prm.recv_bufs, prm.buf_size), &err);
    EXPECT_TRUE(seg) << err;
    int hello_pipe[2], ack_pipe[2];
    EXPECT_EQ(::pipe(hello_pipe), 0);
    EXPECT_EQ(::pipe(ack_pipe), 0);
    pid_t parent = ::getpid();
    int seg_fd = seg->fd();
    pid_t child = ::fork();
    if (child == 0) {
        // The passive side: attach by /proc, as an unrelated process would.
        std::string e2;
        auto mine = Segment::attach_pid(parent, seg_fd, &e2);
        if (!mine) _exit(10);
        Channel ch(std::move(*mine), 1, parent);
        if (!rx_nonblocking) ch.receiving(1);  // this process only ever waits in receives
        proto::Engine eng(prm, ch);
        std::vector<std::byte> hello(proto::kHelloSize);
        if (::read(hello_pipe[0], hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) _exit(11);
        auto ack = eng.accept_hello(hello);
        if (!ack || ::write(ack_pipe[1], ack->data(), ack->size()) != static_cast<ssize_t>(ack->size())) _exit(12);
        std::vector<std::uint8_t> buf(max_op);
        std::mt19937_64 g(7);
        std::uint64_t got = 0;
        while (got < total) {
            std::size_t want = 1 + g() % max_op;
            iovec v{buf.data(), want};
            long n = run(eng, ch, eng.start_recv({&v, 1}, 0, rx_nonblocking), false);
            if (n == -EAGAIN) {
                // What the drive brings in may already be readable: sleep only when nothing came.
                if (ch.drive(eng) == 0) ch.wait(20000, 1000000000LL);
                continue;
            }
            if (n <= 0) _exit(13);
            for (long i = 0; i < n; ++i)
                if (buf[i] != byte_at(99, got + i)) _exit(14);
            got += static_cast<std::uint64_t>(n);
        }
        iovec v{buf.data(), 1};
        if (run(eng, ch, eng.start_recv({&v, 1}, 0, false), false) != 0) _exit(15);  // DisConn: EOF
        _exit(0);
    }
    Channel ch(std::move(*seg), 0, child);
    proto::Engine eng(prm, ch);
    auto hello = eng.hello();
    EXPECT_EQ(::write(hello_pipe[1], hello.data(), hello.size()), static_cast<ssize_t>(hello.size()));
    std::vector<std::byte> ack(proto::kHelloSize);
    EXPECT_EQ(::read(ack_pipe[0], ack.data(), ack.size()), static_cast<ssize_t>(ack.size()));
    EXPECT_TRUE(eng.accept_hello_ack(ack));
    std::vector<std::uint8_t> src(max_op + 8);
    std::mt19937_64 g(3);
    std::uint64_t sent = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (sent < total) {
        std::size_t n = std::min<std::uint64_t>(1 + g() % max_op, total - sent);
        for (std::size_t i = 0; i < n; ++i) src[i] = byte_at(99, sent + i);
        iovec v{src.data(), n};
        long r = run(eng, ch, eng.start_send({&v, 1}, 0, false), true);
        EXPECT_EQ(r, static_cast<long>(n));
        if (r <= 0) break;
        sent += static_cast<std::uint64_t>(r);
    }
    eng.shutdown_send();
    ch.drive(eng);
    int status = 0;
    // Keep serving the peer (its reads of our memory need us alive, not active) until it exits.
    while (::waitpid(child, &status, WNOHANG) == 0) {
        ch.drive(eng);
        ch.wait(0, 10000000);
    }
    auto t1 = std::chrono::steady_clock::now();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "receiver exit status " << WEXITSTATUS(status);
    if (tx_ctr) *tx_ctr = eng.counters();
    for (int fd : {hello_pipe[0], hello_pipe[1], ack_pipe[0], ack_pipe[1]}) ::close(fd);
    return {std::chrono::duration<double>(t1 - t0).count(), sent};
}

}  // namespace

TEST(ShmRing, PacksWrapsAndReleasesOutOfOrder) {
    std::vector<std::byte> mem(4096 + sizeof(RingControl));
    auto* ctl = new (mem.data()) RingControl{};
    std::byte* data = mem.data() + sizeof(RingControl);
    RingProducer p(ctl, data, 4096);
    RingConsumer c(ctl, data, 4096);
    std::vector<std::uint64_t> ids;
    std::vector<std::byte> msg(1000, std::byte{7});
    for (int i = 0; i < 4; ++i) ASSERT_EQ(p.post(msg, {}), PostResult::Ok);
    EXPECT_EQ(p.post(msg, {}), PostResult::Full) << "4 x 1008 of 4096 used";
    ASSERT_EQ(c.poll([&](std::uint64_t id, std::span<const std::byte> m) { ids.push_back(id); EXPECT_EQ(m.size(), 1000u); }), 4);
    c.release(ids[1]);  // out of order: the tail cannot move yet
    EXPECT_EQ(p.post(msg, {}), PostResult::Full);
    c.release(ids[0]);
    ASSERT_EQ(p.post(msg, {}), PostResult::Ok) << "the first two came free: pad to the end, then wrap";
    EXPECT_EQ(p.post(msg, {}), PostResult::Ok);
    EXPECT_EQ(p.post(std::vector<std::byte>(3000), {}), PostResult::TooLarge);
    int n = c.poll([&](std::uint64_t id, std::span<const std::byte> m) { ids.push_back(id); EXPECT_EQ(m.size(), 1000u); });
    EXPECT_EQ(n, 2) << "the padding record is skipped";
}

TEST(ShmRing, AnEmptyRingStartsOverPastTheRewindMark) {
    constexpr std::size_t cap = 1 << 20;
    std::vector<std::byte> mem(cap + sizeof(RingControl));
    auto* ctl = new (mem.data()) RingControl{};
    std::byte* data = mem.data() + sizeof(RingControl);
    RingProducer p(ctl, data, cap);
    RingConsumer c(ctl, data, cap);
    std::vector<std::byte> msg(4000, std::byte{9});
    std::size_t highest = 0;
    // Request/response: each message is consumed before the next one is posted.
    for (int i = 0; i < 1000; ++i) {
        ASSERT_EQ(p.post(msg, {}), PostResult::Ok);
        int n = c.poll([&](std::uint64_t id, std::span<const std::byte> m) {
            ASSERT_EQ(m.size(), 4000u);
            ASSERT_EQ(m[3999], std::byte{9});
            highest = std::max<std::size_t>(highest, static_cast<std::size_t>(m.data() - data));
            c.release(id);
        });
        ASSERT_EQ(n, 1);
    }
    EXPECT_LT(highest, kRewindAt + 8192) << "4 MB went through, always within the first pages";
    // Walk the producer just past the mark, the ring empty: the next post rewinds, and although
    // the consumer has not seen that pad yet, the whole ring is usable.
    while ((ctl->head.load() & (cap - 1)) < kRewindAt) {
        ASSERT_EQ(p.post(msg, {}), PostResult::Ok);
        c.poll([&](std::uint64_t id, std::span<const std::byte>) { c.release(id); });
    }
    int posted = 0;
    for (std::byte tag{0}; p.post(std::vector<std::byte>(4000, tag), {}) == PostResult::Ok; tag = std::byte(++posted & 0xff)) {}
    EXPECT_GT(posted * 4008, static_cast<int>(cap) - 8192);
    // The consumer gets every one of them, in order: the jump is taken from `skipped`, not from a
    // record the producer may have overwritten meanwhile.
    int got = 0;
    while (got < posted) {
        int n = c.poll([&](std::uint64_t id, std::span<const std::byte> m) {
            ASSERT_EQ(m.size(), 4000u);
            EXPECT_EQ(m[0], std::byte(got & 0xff));
            EXPECT_EQ(m[3999], std::byte(got & 0xff));
            ++got;
            c.release(id);
        });
        ASSERT_GT(n, 0) << "after " << got << " of " << posted;
    }
    EXPECT_TRUE(p.post(msg, {}) == PostResult::Ok);
}

TEST(ShmRing, CorruptIndicesAreDetected) {
    std::vector<std::byte> mem(4096 + sizeof(RingControl));
    auto* ctl = new (mem.data()) RingControl{};
    std::byte* data = mem.data() + sizeof(RingControl);
    RingConsumer c(ctl, data, 4096);
    ctl->head.store(1 << 20);  // a hostile peer claims a megabyte in a 4 KiB ring
    EXPECT_EQ(c.poll([](std::uint64_t, std::span<const std::byte>) { FAIL(); }), -1);
    RingConsumer c2(ctl, data, 4096);
    ctl->head.store(64);
    std::uint32_t h[2] = {5000, 0};  // a record longer than the ring
    std::memcpy(data, h, sizeof h);
    EXPECT_EQ(c2.poll([](std::uint64_t, std::span<const std::byte>) { FAIL(); }), -1);
}

TEST(ShmChannel, AttachRefusesWhatIsNotASealedSegment) {
    std::string err;
    int fd = ::memfd_create("x", MFD_CLOEXEC);
    ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
    EXPECT_FALSE(Segment::attach(fd, &err));
    EXPECT_NE(err.find("sealed"), std::string::npos) << err;
    EXPECT_FALSE(Segment::attach_pid(::getpid(), 9999, &err));
}

TEST(ShmChannel, BcopyBetweenProcessesIsByteExact) {
    proto::Params prm;
    prm.recv_bufs = 16;
    prm.buf_size = 16384;
    prm.send_zcopy_threshold = 0;
    prm.recv_zcopy_threshold = 0;
    prm.rdma_sync = true;
    proto::Counters c;
    Result r = transfer(64ull << 20, 200000, prm, false, &c);
    EXPECT_EQ(r.bytes, 64ull << 20);
    EXPECT_EQ(c.tx_bcopy_bytes, 64ull << 20);
}

TEST(ShmChannel, ZeroCopyByCrossMemoryAttachIsByteExact) {
    proto::Params prm;
    prm.recv_bufs = 16;
    prm.buf_size = 16384;
    prm.send_zcopy_threshold = 32768;
    prm.recv_zcopy_threshold = 32768;
    prm.rdma_sync = true;
    proto::Counters c;
    Result r = transfer(256ull << 20, 4 << 20, prm, false, &c);
    EXPECT_EQ(r.bytes, 256ull << 20);
    EXPECT_GT(c.tx_zcopy_read_bytes + c.tx_zcopy_write_bytes, 128ull << 20) << "most bytes went by zero copy";
}

TEST(ShmChannel, NonblockingReceiverWithSmallMessages) {
    proto::Params prm;
    prm.recv_bufs = 8;
    prm.buf_size = 4096;
    prm.rdma_sync = true;
    proto::Counters c;
    transfer(8ull << 20, 3000, prm, true, &c);
    EXPECT_EQ(c.tx_bcopy_bytes, 8ull << 20);
}

// A reused segment starts a new generation: a passive side that looked at the previous
// connection's announcement cannot claim the new one.
TEST(ShmSegment, RenewStartsAGenerationOldClaimsCannotTouch) {
    std::string err;
    auto seg = sdx::shm::Segment::create(1 << 16, &err);
    ASSERT_TRUE(seg) << err;
    using RV = sdx::shm::Rendezvous;
    RV* rv = seg->rendezvous();
    std::uint64_t id = seg->id();
    rv->state.store(RV::with_phase(rv->state.load(), RV::Announced));
    std::uint32_t old = rv->state.load();
    rv->finished[0].store(1);
    rv->holders[1].store(1);
    seg->renew();
    EXPECT_EQ(rv->phase(), RV::Empty);
    EXPECT_EQ(rv->finished[0].load(), 0u);
    EXPECT_EQ(rv->holders[1].load(), 0);
    EXPECT_EQ(seg->id(), id) << "the id names the memory, not the connection";
    rv->state.store(RV::with_phase(rv->state.load(), RV::Announced));
    EXPECT_FALSE(rv->move(old, RV::Claiming)) << "a claim on the previous generation fails";
    EXPECT_TRUE(rv->move(rv->state.load(), RV::Claiming));
    std::uint32_t claiming = rv->state.load();
    EXPECT_EQ(RV::phase_of(claiming), RV::Claiming);
    EXPECT_TRUE(rv->move(claiming, RV::Accepted));
    EXPECT_FALSE(rv->move(claiming, RV::Withdrawn)) << "the word moved on: a second decision fails";
}

// The connecting side reuses a segment only for the same listener, with the same ring size, and
// only once the passive side finished with it (or died).
TEST(ShmPool, ReusesOnlyWhatThePassiveSideIsDoneWith) {
    using sdx::shm::SegmentPool;
    std::string err;
    ASSERT_TRUE(SegmentPool::reserve_fd());
    auto seg = sdx::shm::Segment::create(1 << 16, &err);
    ASSERT_TRUE(seg) << err;
    std::uint64_t id = seg->id();
    sdx::shm::Rendezvous* rv = seg->rendezvous();  // stays mapped while pooled
    SegmentPool::give(std::move(*seg), "listener-a", ::getpid());
    EXPECT_FALSE(SegmentPool::take("listener-a", 1 << 16)) << "the passive side (alive) has not finished";
    rv->finished[1].store(1);
    EXPECT_FALSE(SegmentPool::take("listener-b", 1 << 16)) << "another listener never gets it";
    EXPECT_FALSE(SegmentPool::take("listener-a", 1 << 17)) << "nor a connection with other ring sizes";
    auto again = SegmentPool::take("listener-a", 1 << 16);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->id(), id);
    EXPECT_EQ(again->rendezvous()->finished[1].load(), 0u) << "renewed";
    EXPECT_FALSE(SegmentPool::take("listener-a", 1 << 16)) << "taken once";
    // A passive side that died without finishing releases it too.
    pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    ASSERT_GT(child, 0);
    ::waitpid(child, nullptr, 0);
    SegmentPool::give(std::move(*again), "listener-a", child);
    auto third = SegmentPool::take("listener-a", 1 << 16);
    ASSERT_TRUE(third);
    EXPECT_EQ(third->id(), id);
    SegmentPool::unreserve_fd();
}

// The accepting side finds a segment it mapped before by creator and id.
TEST(ShmPool, AttachCacheKeysByCreatorAndId) {
    using sdx::shm::AttachCache;
    std::string err;
    auto seg = sdx::shm::Segment::create(1 << 16, &err);
    ASSERT_TRUE(seg) << err;
    std::uint64_t id = seg->id();
    seg->close_fd();
    AttachCache::give(std::move(*seg), 4242);
    EXPECT_FALSE(AttachCache::take(4243, id));
    EXPECT_FALSE(AttachCache::take(4242, id + 1));
    auto back = AttachCache::take(4242, id);
    ASSERT_TRUE(back);
    EXPECT_EQ(back->id(), id);
    EXPECT_FALSE(AttachCache::take(4242, id));
}
