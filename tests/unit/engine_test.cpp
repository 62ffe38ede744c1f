// The protocol engine, byte for byte, through the strict fake transport of engine_harness.hpp.
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include <optional>

#include "tests/unit/engine_harness.hpp"

using namespace sdx::proto;
using namespace sdx::proto::testing;

namespace {

// Two applications: one sends `src` in operations of random sizes, the other receives into `dst`
// with operations of random sizes, both interleaved with message delivery.
struct Stream {
    Pair& p;
    Side& tx;
    Side& rx;
    std::vector<std::byte> src, dst;
    std::size_t sent = 0, recvd = 0;
    std::mt19937_64 g;
    std::size_t min_op, max_op;
    bool tx_nb = false, rx_nb = false;
    int rx_flags = 0;
    std::optional<Op> sop, rop;
    iovec siov{}, riov{};
    std::size_t sops = 0, rops = 0;

    Stream(Pair& pair, Side& t, Side& r, std::size_t bytes, std::size_t lo, std::size_t hi, std::uint64_t seed)
        : p(pair), tx(t), rx(r), src(pattern(bytes, seed)), dst(bytes), g(seed), min_op(lo), max_op(hi) {}

    std::size_t pick() {
        // Log-uniform: tiny and huge operations both occur.
        double lo = std::log(static_cast<double>(min_op)), hi = std::log(static_cast<double>(max_op) + 1);
        std::uniform_real_distribution<double> d(lo, hi);
        return std::max<std::size_t>(1, static_cast<std::size_t>(std::exp(d(g))));
    }
    void step() {
        if (!sop && sent < src.size()) {
            siov = iov_of(src, sent, pick());
            sop = Op{tx.eng.get(), true, tx.eng->start_send({&siov, 1}, 0, tx_nb)};
            ++sops;
        } else if (sop) {
            sop->step();
        }
        if (sop && sop->done()) {
            if (sop->r.result > 0) {
                ASSERT_LE(static_cast<std::size_t>(sop->r.result), siov.iov_len);
                if (!tx_nb) {
                    ASSERT_EQ(static_cast<std::size_t>(sop->r.result), siov.iov_len) << "blocking send came back short";
                }
                sent += static_cast<std::size_t>(sop->r.result);
            } else {
                ASSERT_EQ(sop->r.result, -EAGAIN) << "send failed";
                ASSERT_TRUE(tx_nb);
            }
            sop.reset();
        }
        if (!rop && recvd < dst.size()) {
            riov = iov_of(dst, recvd, pick());
            rop = Op{rx.eng.get(), false, rx.eng->start_recv({&riov, 1}, rx_flags, rx_nb)};
            ++rops;
        } else if (rop) {
            rop->step();
        }
        if (rop && rop->done()) {
            if (rop->r.result > 0) {
                recvd += static_cast<std::size_t>(rop->r.result);
            } else {
                ASSERT_EQ(rop->r.result, -EAGAIN) << "recv failed";
                ASSERT_TRUE(rx_nb);
            }
            rop.reset();
        }
    }
    void run() {
        for (int i = 0; i < 2000000 && (sent < src.size() || recvd < dst.size() || sop || rop); ++i) {
            p.settle([&] { step(); }, 1);
            step();
            if (::testing::Test::HasFatalFailure()) return;
        }
        ASSERT_EQ(sent, src.size());
        ASSERT_EQ(recvd, dst.size());
        ASSERT_TRUE(src == dst) << "received bytes differ from the bytes sent";
    }
};

// Side b reads into out[from..] until it is full, one receive operation at a time, while `other`
// (the peer's pending send) progresses in between.  With `eagain_ok` a nonblocking read may find
// nothing yet and try again; otherwise every read must bring bytes.
void read_all(Pair& p, std::vector<std::byte>& out, std::size_t from, bool nonblocking, bool eagain_ok, Op& other) {
    std::size_t got = from;
    for (int reads = 0; got < out.size(); ++reads) {
        ASSERT_LT(reads, 100000) << "the receiver stopped making progress at byte " << got;
        iovec rv = iov_of(out, got);
        OpResult rr = run_op(p, *p.b.eng, p.b.eng->start_recv({&rv, 1}, 0, nonblocking), false);
        if (eagain_ok) {
            ASSERT_TRUE(rr.result > 0 || rr.result == -EAGAIN);
        } else {
            ASSERT_GT(rr.result, 0);
        }
        if (rr.result > 0) got += static_cast<std::size_t>(rr.result);
        p.settle([&] { other.step(); });
    }
}

}  // namespace

TEST(Engine, HelloGrantsCredits) {
    Params pa = small_bufs(), pb = small_bufs();
    pb.recv_bufs = 12;
    Pair p(pa, pb);
    EXPECT_TRUE(p.a.eng->established());
    EXPECT_TRUE(p.b.eng->established());
    EXPECT_EQ(p.a.eng->credits(), 12u);
    EXPECT_EQ(p.b.eng->credits(), 8u);
    EXPECT_EQ(Engine::hello_for(pa), p.a.eng->hello()) << "the Hello is known before the engine exists";
    pa.recv_bufs = 1;
    EXPECT_EQ(Engine::hello_for(pa)[3], std::byte{4}) << "and grants what the engine will post (at least 4)";
}

TEST(Engine, RefusesAnUnacceptableHello) {
    Params pa = small_bufs();
    Side a(pa), b(pa);
    auto h = a.eng->hello();
    h[16] = std::byte{0x90};  // another major version
    EXPECT_FALSE(b.eng->accept_hello(h).has_value());
    auto good = a.eng->hello();
    EXPECT_FALSE(b.eng->accept_hello({good.data(), 10}).has_value());
    EXPECT_FALSE(a.eng->accept_hello_ack(good)) << "a Hello is not a HelloAck";
}

TEST(Engine, SmallBcopyIsByteExact) {
    Pair p(small_bufs());
    std::vector<std::byte> msg = pattern(100, 1), out(100);
    iovec s = iov_of(msg), r = iov_of(out);
    OpResult sr = run_op(p, *p.a.eng, p.a.eng->start_send({&s, 1}, 0, false), true);
    ASSERT_EQ(sr.result, 100);
    EXPECT_EQ(p.b.eng->bytes_readable(), 100u);
    EXPECT_TRUE(p.b.eng->poll_mask() & POLLIN);
    OpResult rr = run_op(p, *p.b.eng, p.b.eng->start_recv({&r, 1}, 0, false), false);
    ASSERT_EQ(rr.result, 100);
    EXPECT_EQ(msg, out);
    EXPECT_EQ(p.a.eng->counters().tx_bcopy_bytes, 100u);
    EXPECT_EQ(p.a.eng->counters().src_avails, 0u);
}

TEST(Engine, RandomStreamsAreByteExactEveryWay) {
    struct Case {
        bool tx_nb, rx_nb;
        std::size_t lo, hi;
        bool rdma_sync;
    } cases[] = {
        {false, false, 1, 100000, false}, {true, true, 1, 100000, false}, {false, true, 1, 100000, false},
        {true, false, 1, 100000, false},  {false, false, 1, 100000, true}, {false, true, 1, 100000, true},
        {false, false, 9000, 200000, false},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(::testing::Message() << "tx_nb=" << c.tx_nb << " rx_nb=" << c.rx_nb << " sync=" << c.rdma_sync);
        Params prm = small_bufs();
        prm.rdma_sync = c.rdma_sync;
        Pair p(prm);
        Stream s(p, p.a, p.b, 3 << 20, c.lo, c.hi, 42);
        s.tx_nb = c.tx_nb;
        s.rx_nb = c.rx_nb;
        s.run();
        if (HasFatalFailure()) return;
        const Counters& ca = p.a.eng->counters();
        const Counters& cb = p.b.eng->counters();
        EXPECT_EQ(ca.tx_bcopy_bytes + ca.tx_zcopy_read_bytes + ca.tx_zcopy_write_bytes, s.src.size());
        EXPECT_EQ(cb.rx_bcopy_bytes + cb.rx_zcopy_read_bytes + cb.rx_zcopy_write_bytes, s.src.size());
        if (!c.tx_nb && (!c.rx_nb || c.rdma_sync)) {
            EXPECT_GT(ca.tx_zcopy_read_bytes + ca.tx_zcopy_write_bytes, 0u) << "blocking sends above the threshold use zero copy";
        }
        if (c.tx_nb) {
            EXPECT_EQ(ca.src_avails, 0u) << "nonblocking sends never use SrcAvail";
        }
        EXPECT_TRUE(p.a.exposed.empty()) << "every SrcAvail registration was revoked";
        EXPECT_TRUE(p.b.exposed.empty()) << "every SinkAvail registration was revoked";
        EXPECT_FALSE(p.a.eng->aborted());
        EXPECT_FALSE(p.b.eng->aborted());
    }
}

// `bytes` each way at once, in operations of random sizes, byte-exact.
void both_directions(Pair& p, std::size_t bytes, std::uint64_t seed) {
    Stream ab(p, p.a, p.b, bytes, 1, 70000, seed), ba(p, p.b, p.a, bytes, 1, 70000, seed + 1);
    for (int i = 0; i < 1000000 && (ab.recvd < ab.dst.size() || ba.recvd < ba.dst.size() || ab.sop || ba.sop); ++i) {
        p.settle([&] { ab.step(); ba.step(); }, 1);
        ab.step();
        ba.step();
        if (::testing::Test::HasFatalFailure()) return;
    }
    EXPECT_TRUE(ab.src == ab.dst);
    EXPECT_TRUE(ba.src == ba.dst);
}

TEST(Engine, BothDirectionsAtOnce) {
    Pair p(small_bufs());
    both_directions(p, 1 << 20, 5);
}

// Early data (wire.hpp kCapEarly): the active side sends before the HelloAck, within what any
// acceptable peer takes; the passive side reads it once it accepts; then the stream goes on with
// the real credits, byte-exact both ways.
TEST(Engine, EarlyDataBeforeTheHelloAck) {
    Params pa = small_bufs(), pb = small_bufs();
    pa.caps |= kCapEarly;
    pb.recv_bufs = 5;  // the early messages use up most of the passive side's first grant
    Pair p(pa, pb, Pair::NoHandshake{});
    auto hello = p.a.eng->hello();
    EXPECT_EQ(p.a.eng->send_room(), 0u) << "nothing goes before the Hello is answered or early sending starts";
    p.a.eng->start_early();
    EXPECT_TRUE(p.a.eng->early());
    std::size_t room = p.a.eng->send_room();
    ASSERT_GT(room, 0u);
    std::vector<std::byte> first = pattern(room + 100, 11);
    iovec s = iov_of(first);
    OpResult r = p.a.eng->start_send({&s, 1}, 0, true);
    ASSERT_EQ(r.status, Status::Done);
    ASSERT_EQ(static_cast<std::size_t>(r.result), room) << "a nonblocking early send takes what fits";
    EXPECT_EQ(p.a.eng->send_room(), 0u);
    EXPECT_LE(p.a.sent_mids.size(), kEarlyMessages);
    EXPECT_FALSE(p.a.eng->poll_mask() & POLLOUT) << "nothing more until the peer answers";
    // The listener accepts now and reads the early bytes.
    auto ack = p.b.eng->accept_hello(hello);
    ASSERT_TRUE(ack.has_value());
    p.b.deliver();
    std::vector<std::byte> got(room);
    iovec g = iov_of(got);
    OpResult rr = p.b.eng->start_recv({&g, 1}, 0, true);
    ASSERT_EQ(static_cast<std::size_t>(rr.result), room);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), first.begin()));
    ASSERT_TRUE(p.a.eng->accept_hello_ack(*ack));
    EXPECT_FALSE(p.a.eng->early());
    p.settle();
    // From here on: an ordinary connection with the real credits (the harness fails any overrun).
    both_directions(p, 1 << 18, 12);
}

// Early messages may be larger than the passive side's own buffers (up to kEarlyBufSize); later
// ones may not.
TEST(Engine, EarlyMessagesMayExceedThePassiveSidesBuffers) {
    Params pa, pb = small_bufs();  // 64 KiB buffers against 1 KiB ones
    pa.caps |= kCapEarly;
    Side a(pa), b(pb);
    b.params.buf_size = 1 << 20;  // (the harness's own size check is not what is tested here)
    a.peer = &b;
    b.peer = &a;
    auto hello = a.eng->hello();
    a.eng->start_early();
    std::vector<std::byte> msg = pattern(3000, 21);
    iovec s = iov_of(msg);
    ASSERT_EQ(a.eng->start_send({&s, 1}, 0, true).result, 3000);
    EXPECT_EQ(a.sent_mids.size(), 1u) << "one message, larger than the peer's 1 KiB buffers";
    ASSERT_TRUE(b.eng->accept_hello(hello).has_value());
    b.deliver();
    EXPECT_FALSE(b.eng->aborted()) << "an early message up to kEarlyBufSize is accepted";
    EXPECT_EQ(b.eng->bytes_readable(), 3000u);
}

TEST(Engine, SenderWaitsForCreditsAndNeverOverrunsTheReceiver) {
    Pair p(small_bufs());
    std::vector<std::byte> big = pattern(7000, 3), out(7000);  // below the zcopy threshold: bcopy
    iovec s = iov_of(big);
    OpResult r = p.a.eng->start_send({&s, 1}, 0, true);  // nonblocking
    p.settle();
    ASSERT_EQ(r.status, Status::Done);
    ASSERT_GT(r.result, 0);
    EXPECT_LT(r.result, 7000) << "8 buffers of 1 KiB, 3 kept back: the send is partial";
    EXPECT_FALSE(p.a.eng->poll_mask() & POLLOUT) << "EPOLLOUT must not fire while the peer's buffers are full";
    std::size_t first = static_cast<std::size_t>(r.result);
    // A nonblocking retry gets EAGAIN while nobody reads.
    iovec rest = iov_of(big, first);
    EXPECT_EQ(p.a.eng->start_send({&rest, 1}, 0, true).result, -EAGAIN);
    // A blocking send stays pending ...
    Op op{p.a.eng.get(), true, p.a.eng->start_send({&rest, 1}, 0, false)};
    p.settle([&] { op.step(); });
    EXPECT_FALSE(op.done());
    EXPECT_GT(p.a.eng->counters().credit_stalls, 0u);
    // ... until the receiver reads, which returns credits.
    read_all(p, out, 0, true, true, op);
    if (HasFatalFailure()) return;
    EXPECT_TRUE(op.done());
    EXPECT_EQ(op.r.result, static_cast<long>(7000 - first));
    EXPECT_EQ(big, out);
    EXPECT_GT(p.b.eng->counters().credit_updates + p.b.eng->counters().tx_msgs, 0u);
}

TEST(Engine, PollOutWaitsForAThirdOfThePeersBuffers) {
    Params prm = small_bufs();
    prm.recv_bufs = 30;  // POLLOUT from 10 free buffers on, as tcp_poll's free >= queued / 2
    Pair p(prm);
    std::vector<std::byte> big = pattern(40000, 4), out(40000);
    iovec s = iov_of(big);
    OpResult r = p.a.eng->start_send({&s, 1}, 0, true);
    p.settle();
    ASSERT_GT(r.result, 0);
    ASSERT_LT(r.result, 40000);
    bool saw_credits_without_pollout = false;
    std::size_t got = 0;
    while (got < static_cast<std::size_t>(r.result)) {
        iovec rv = iov_of(out, got, 500);
        OpResult rr = run_op(p, *p.b.eng, p.b.eng->start_recv({&rv, 1}, 0, true), false);
        ASSERT_GT(rr.result, 0);
        got += static_cast<std::size_t>(rr.result);
        p.settle();
        std::uint32_t credits = p.a.eng->credits();
        bool pollout = p.a.eng->poll_mask() & POLLOUT;
        EXPECT_EQ(pollout, credits >= 10) << "credits " << credits;
        if (credits >= 3 && credits < 10) saw_credits_without_pollout = true;
    }
    EXPECT_TRUE(saw_credits_without_pollout) << "the case where one message could go but POLLOUT waits never came";
    EXPECT_TRUE(p.a.eng->poll_mask() & POLLOUT);
    EXPECT_TRUE(std::equal(out.begin(), out.begin() + static_cast<long>(got), big.begin()));
}

TEST(Engine, SrcAvailSendReturnsOnlyAfterThePeerRead) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(100000, 9), out(100000);
    iovec s = iov_of(data), r = iov_of(out);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    EXPECT_FALSE(send.done()) << "the buffer is still advertised";
    EXPECT_EQ(p.b.eng->bytes_readable(), 3u * 32768) << "three advertisements of zcopy_max_chunk bytes wait";
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.settle([&] { send.step(); recv.step(); });
    ASSERT_TRUE(send.done());
    ASSERT_TRUE(recv.done());
    EXPECT_EQ(send.r.result, 100000);
    EXPECT_EQ(recv.r.result, 100000);
    EXPECT_EQ(data, out);
    EXPECT_GE(p.a.eng->counters().src_avails, 3u) << "split at zcopy_max_chunk";
    EXPECT_GT(p.a.eng->counters().tx_zcopy_read_bytes, 90000u);
    EXPECT_TRUE(p.a.exposed.empty());
}

TEST(Engine, SinkAvailLetsTheSourceWriteIntoThePostedBuffer) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(20000, 11), out(30000);
    iovec r = iov_of(out), s = iov_of(data);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, 0, false)};
    p.settle([&] { recv.step(); });
    EXPECT_EQ(p.b.eng->counters().sink_avails, 1u);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); recv.step(); });
    ASSERT_TRUE(send.done() && recv.done());
    EXPECT_EQ(send.r.result, 20000);
    EXPECT_EQ(recv.r.result, 20000) << "a stream read may come back short";
    EXPECT_TRUE(std::equal(data.begin(), data.end(), out.begin()));
    EXPECT_EQ(p.a.eng->counters().tx_zcopy_write_bytes, 20000u);
    EXPECT_EQ(p.a.eng->counters().src_avails, 0u);
    EXPECT_TRUE(p.b.exposed.empty());
}

TEST(Engine, StaleSinkAvailIsCancelledAndDataStaysInOrder) {
    Pair p(small_bufs());
    std::vector<std::byte> first = pattern(300, 12), second = pattern(20000, 13), out(20300);
    iovec s1 = iov_of(first), s2 = iov_of(second);
    // The source's bcopy data is in flight when the sink posts SinkAvail (crossing).
    ASSERT_EQ(p.a.eng->start_send({&s1, 1}, 0, false).result, 300);
    iovec r = iov_of(out);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, 0, false)};
    ASSERT_EQ(p.b.eng->counters().sink_avails, 1u);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s2, 1}, 0, false)};
    p.settle([&] { send.step(); recv.step(); });
    ASSERT_TRUE(recv.done());
    ASSERT_GE(recv.r.result, 300) << "the bcopy data that was first comes first";
    EXPECT_EQ(p.a.eng->counters().tx_zcopy_write_bytes, 0u) << "a stale SinkAvail is never written";
    EXPECT_GE(p.b.eng->counters().cancels_tx, 1u);
    read_all(p, out, static_cast<std::size_t>(recv.r.result), false, false, send);
    if (HasFatalFailure()) return;
    EXPECT_TRUE(send.done());
    EXPECT_TRUE(std::equal(first.begin(), first.end(), out.begin()));
    EXPECT_TRUE(std::equal(second.begin(), second.end(), out.begin() + 300));
    EXPECT_TRUE(p.b.exposed.empty());
}

TEST(Engine, CrossingSrcAvailsResolveWithSendSm) {
    Pair p(small_bufs());
    std::vector<std::byte> da = pattern(50000, 21), db = pattern(50000, 22), oa(50000), ob(50000);
    iovec sa = iov_of(da), sb = iov_of(db);
    // Both applications send first and read afterwards: each waits on its SrcAvail.
    Op send_a{p.a.eng.get(), true, p.a.eng->start_send({&sa, 1}, 0, false)};
    Op send_b{p.b.eng.get(), true, p.b.eng->start_send({&sb, 1}, 0, false)};
    p.settle([&] { send_a.step(); send_b.step(); });
    EXPECT_GE(p.a.eng->counters().sendsm_tx + p.b.eng->counters().sendsm_tx, 1u);
    // Both ends can now finish with bcopy as far as buffers allow; reading drains the rest.
    std::size_t ga = 0, gb = 0;
    for (int i = 0; i < 100000 && (ga < oa.size() || gb < ob.size()); ++i) {
        if (ga < oa.size()) {
            iovec r = iov_of(oa, ga);
            OpResult rr = p.a.eng->start_recv({&r, 1}, 0, true);
            Op o{p.a.eng.get(), false, rr};
            p.settle([&] { o.step(); send_a.step(); send_b.step(); });
            if (o.r.result > 0) ga += static_cast<std::size_t>(o.r.result);
        }
        if (gb < ob.size()) {
            iovec r = iov_of(ob, gb);
            Op o{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, 0, true)};
            p.settle([&] { o.step(); send_a.step(); send_b.step(); });
            if (o.r.result > 0) gb += static_cast<std::size_t>(o.r.result);
        }
    }
    EXPECT_TRUE(send_a.done() && send_b.done());
    EXPECT_EQ(da, ob);
    EXPECT_EQ(db, oa);
    EXPECT_TRUE(p.a.exposed.empty() && p.b.exposed.empty());
}

TEST(Engine, PeekOverZcopyUsesSendSmOnAnAsyncTransport) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(20000, 31), peek(100), out(20000);
    iovec s = iov_of(data), pk = iov_of(peek);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    Op op{p.b.eng.get(), false, p.b.eng->start_recv({&pk, 1}, MSG_PEEK, false)};
    p.settle([&] { send.step(); op.step(); });
    ASSERT_TRUE(op.done());
    EXPECT_EQ(op.r.result, 100);
    EXPECT_TRUE(std::equal(peek.begin(), peek.end(), data.begin()));
    EXPECT_EQ(p.b.eng->counters().sendsm_tx, 1u);
    read_all(p, out, 0, false, false, send);
    if (HasFatalFailure()) return;
    EXPECT_TRUE(send.done());
    EXPECT_EQ(data, out);
}

TEST(Engine, PeekAndNonblockingReadZcopyDirectlyOnASyncTransport) {
    Params prm = small_bufs();
    prm.rdma_sync = true;
    Pair p(prm);
    std::vector<std::byte> data = pattern(20000, 32), peek(100), out(20000);
    iovec s = iov_of(data), pk = iov_of(peek);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    Op op{p.b.eng.get(), false, p.b.eng->start_recv({&pk, 1}, MSG_PEEK, true)};
    p.settle([&] { op.step(); });
    ASSERT_TRUE(op.done());
    EXPECT_EQ(op.r.result, 100);
    EXPECT_TRUE(std::equal(peek.begin(), peek.end(), data.begin()));
    EXPECT_EQ(p.b.eng->bytes_readable(), 20000u) << "a peek consumes nothing";
    read_all(p, out, 0, true, false, send);
    if (HasFatalFailure()) return;
    EXPECT_TRUE(send.done());
    EXPECT_EQ(send.r.result, 20000);
    EXPECT_EQ(data, out);
    EXPECT_EQ(p.b.eng->counters().sendsm_tx, 0u);
    EXPECT_EQ(p.b.eng->counters().rx_zcopy_read_bytes, 20000u);
}

TEST(Engine, InterruptedZcopySendReturnsThePartialCountAndNothingIsLostOrDoubled) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(60000, 41), out(60000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    // The receiver reads 10000 bytes of the advertised buffer, then the sender gets a signal.
    iovec r1 = iov_of(out, 0, 10000);
    ASSERT_EQ(run_op(p, *p.b.eng, p.b.eng->start_recv({&r1, 1}, 0, false), false).result, 10000);
    send.r = p.a.eng->interrupt_send();
    p.settle([&] { send.step(); });
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, 10000) << "a send interrupted after some bytes returns their count";
    EXPECT_TRUE(p.a.exposed.empty()) << "the cancelled advertisement was revoked";
    EXPECT_EQ(p.b.eng->bytes_readable(), 0u) << "the sink dropped the cancelled advertisement";
    // The application sends the rest again; the receiver sees one exact stream.
    iovec rest = iov_of(data, 10000), r2 = iov_of(out, 10000);
    Op again{p.a.eng.get(), true, p.a.eng->start_send({&rest, 1}, 0, false)};
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r2, 1}, MSG_WAITALL, false)};
    p.settle([&] { again.step(); recv.step(); });
    EXPECT_EQ(again.r.result, 50000);
    EXPECT_EQ(recv.r.result, 50000);
    EXPECT_EQ(data, out);
}

TEST(Engine, InterruptBeforeAnyByteMayRestart) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(20000, 42);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    send.r = p.a.eng->interrupt_send();
    p.settle([&] { send.step(); });
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, -Engine::kErestart);
    EXPECT_EQ(p.b.eng->bytes_readable(), 0u);
    // Restarting the call delivers everything once.
    std::vector<std::byte> out(20000);
    iovec r = iov_of(out);
    Op again{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.settle([&] { again.step(); recv.step(); });
    EXPECT_EQ(again.r.result, 20000);
    EXPECT_EQ(recv.r.result, 20000);
    EXPECT_EQ(data, out);
}

TEST(Engine, InterruptedSinkAvailRecvIsCancelledThenDataArrivesByCopy) {
    Pair p(small_bufs());
    std::vector<std::byte> out(30000), data = pattern(500, 43);
    iovec r = iov_of(out), s = iov_of(data);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, 0, false)};
    p.settle([&] { recv.step(); });
    ASSERT_EQ(p.b.eng->counters().sink_avails, 1u);
    recv.r = p.b.eng->interrupt_recv();
    p.settle([&] { recv.step(); });
    ASSERT_TRUE(recv.done());
    EXPECT_EQ(recv.r.result, -Engine::kErestart);
    EXPECT_TRUE(p.b.exposed.empty());
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s, 1}, 0, false), true).result, 500);
    EXPECT_EQ(p.a.eng->counters().tx_zcopy_write_bytes, 0u) << "the cancelled SinkAvail is never written";
    OpResult rr = run_op(p, *p.b.eng, p.b.eng->start_recv({&r, 1}, 0, true), false);
    ASSERT_EQ(rr.result, 500);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), out.begin()));
}

TEST(Engine, UnansweredCancelAbortsTheConnection) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(20000, 44);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    send.r = p.a.eng->interrupt_send();
    EXPECT_FALSE(send.done()) << "waiting for SinkCancelAck";
    p.b.inbox.clear();  // the cancellation is lost: the peer never answers
    p.a.eng->cancel_timed_out();
    send.step();
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, -ECONNRESET);
    EXPECT_EQ(p.a.eng->abort_reason(), AbortReason::CancelTimeout);
    EXPECT_TRUE(p.a.exposed.empty());
}

TEST(Engine, StalledSrcAvailFinishesWithBcopy) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(50000, 45), out(50000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    p.a.eng->stall_send();
    p.settle([&] { send.step(); });
    EXPECT_GE(p.a.eng->counters().cancels_tx, 1u);
    read_all(p, out, 0, true, true, send);
    if (HasFatalFailure()) return;
    EXPECT_TRUE(send.done());
    EXPECT_EQ(send.r.result, 50000);
    EXPECT_EQ(data, out);
    EXPECT_EQ(p.a.eng->counters().tx_zcopy_read_bytes, 0u);
}

TEST(Engine, RegistrationFailureFallsBackToBcopy) {
    Pair p(small_bufs());
    p.a.refuse_expose = true;
    std::vector<std::byte> data = pattern(50000, 46), out(50000);
    iovec s = iov_of(data), r = iov_of(out);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.settle([&] { send.step(); recv.step(); });
    EXPECT_EQ(send.r.result, 50000);
    EXPECT_EQ(recv.r.result, 50000);
    EXPECT_EQ(data, out);
    EXPECT_EQ(p.a.eng->counters().tx_bcopy_bytes, 50000u);
    EXPECT_GE(p.a.eng->counters().zcopy_fallbacks, 1u);
}

TEST(Engine, FailedRdmaReadFallsBackToBcopy) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(20000, 47), out(20000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { send.step(); });
    p.b.fail_rdma = true;
    iovec r = iov_of(out);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.settle([&] { send.step(); recv.step(); });
    p.b.fail_rdma = false;
    p.settle([&] { send.step(); recv.step(); });
    ASSERT_TRUE(recv.done() && send.done());
    EXPECT_EQ(recv.r.result, 20000);
    EXPECT_EQ(data, out);
    EXPECT_EQ(p.b.eng->counters().sendsm_tx, 1u);
}

TEST(Engine, ShutdownSendIsAnOrderlyEof) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(3000, 51), out(4000);
    iovec s = iov_of(data), r = iov_of(out);
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s, 1}, 0, false), true).result, 3000);
    p.a.eng->shutdown_send();
    p.settle();
    EXPECT_TRUE(p.b.eng->peer_shut());
    EXPECT_TRUE(p.b.eng->poll_mask() & POLLRDHUP);
    EXPECT_FALSE(p.b.eng->poll_mask() & POLLHUP);
    OpResult rr = run_op(p, *p.b.eng, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false), false);
    EXPECT_EQ(rr.result, 3000) << "WAITALL returns what there is at EOF";
    EXPECT_EQ(run_op(p, *p.b.eng, p.b.eng->start_recv({&r, 1}, 0, false), false).result, 0);
    EXPECT_EQ(p.a.eng->start_send({&s, 1}, 0, false).result, -EPIPE);
    // The other direction still works.
    ASSERT_EQ(run_op(p, *p.b.eng, p.b.eng->start_send({&s, 1}, 0, false), true).result, 3000);
    EXPECT_EQ(run_op(p, *p.a.eng, p.a.eng->start_recv({&r, 1}, 0, false), false).result, 3000);
    p.b.eng->shutdown_send();
    p.settle();
    EXPECT_TRUE(p.a.eng->poll_mask() & POLLHUP) << "both directions shut";
}

TEST(Engine, CloseWithUnreadDataResetsThePeer) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(100, 52), out(100);
    iovec s = iov_of(data), r = iov_of(out);
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s, 1}, 0, false), true).result, 100);
    ASSERT_EQ(run_op(p, *p.b.eng, p.b.eng->start_send({&s, 1}, 0, false), true).result, 100);
    p.b.eng->close(false);  // b never read a's 100 bytes
    EXPECT_EQ(p.b.eng->abort_reason(), AbortReason::LocalAbort);
    p.settle();
    EXPECT_EQ(p.a.eng->abort_reason(), AbortReason::PeerAbort);
    EXPECT_TRUE(p.a.eng->poll_mask() & POLLERR);
    EXPECT_TRUE(p.a.eng->poll_mask() & POLLHUP);
    // Data that arrived before the reset is still read first, then ECONNRESET once, then EOF.
    EXPECT_EQ(run_op(p, *p.a.eng, p.a.eng->start_recv({&r, 1}, 0, false), false).result, 100);
    EXPECT_EQ(p.a.eng->start_recv({&r, 1}, 0, false).result, -ECONNRESET);
    EXPECT_EQ(p.a.eng->start_recv({&r, 1}, 0, false).result, 0);
    EXPECT_EQ(p.a.eng->start_send({&s, 1}, 0, false).result, -EPIPE);
    EXPECT_TRUE(p.b.held.empty()) << "a closed connection holds no buffers";
}

TEST(Engine, LingerZeroAborts) {
    Pair p(small_bufs());
    p.a.eng->close(true);
    p.settle();
    EXPECT_EQ(p.b.eng->abort_reason(), AbortReason::PeerAbort);
    std::vector<std::byte> data(10);
    iovec s = iov_of(data);
    EXPECT_EQ(p.b.eng->start_send({&s, 1}, 0, false).result, -ECONNRESET) << "first send after RST: ECONNRESET";
    EXPECT_EQ(p.b.eng->start_send({&s, 1}, 0, false).result, -EPIPE) << "then EPIPE";
}

TEST(Engine, MalformedMessageAbortsOnlyThisConnection) {
    Pair p(small_bufs());
    std::vector<std::byte> junk = {std::byte{0x42}, std::byte{0}, std::byte{0}, std::byte{1}, std::byte{0},
                                   std::byte{0},    std::byte{0}, std::byte{16}, std::byte{0}, std::byte{0},
                                   std::byte{0},    std::byte{1}, std::byte{0},  std::byte{0}, std::byte{0}, std::byte{0}};
    p.b.held.insert(999);
    p.b.eng->on_message(999, junk);
    EXPECT_EQ(p.b.eng->abort_reason(), AbortReason::ProtocolError);
    p.settle();
    EXPECT_EQ(p.a.eng->abort_reason(), AbortReason::PeerAbort) << "the peer was told with AbortConn";
    // Out-of-order sequence numbers are also protocol errors.
    Pair q(small_bufs());
    std::vector<std::byte> msg(kBsdhSize);
    encode_bsdh(Bsdh{Mid::Data, 0, 8, kBsdhSize, 5, 0}, msg.data());
    q.b.held.insert(998);
    q.b.eng->on_message(998, msg);
    EXPECT_EQ(q.b.eng->abort_reason(), AbortReason::ProtocolError);
}

TEST(Engine, RandomMessagesNeverCrashTheEngine) {
    std::mt19937 g(99);
    for (int round = 0; round < 300; ++round) {
        Pair p(small_bufs());
        for (int i = 0; i < 50 && !p.b.eng->aborted(); ++i) {
            std::vector<std::byte> m(16 + g() % 40);
            for (auto& b : m) b = static_cast<std::byte>(g());
            m[0] = std::byte(std::array<int, 8>{0xff, 0xfe, 0xfd, 0x02, 0x04, 0x05, 0x06, 0x0a}[g() % 8]);
            std::uint32_t len = static_cast<std::uint32_t>(m.size());
            if (g() % 4) m[4] = std::byte(0), m[5] = std::byte(0), m[6] = std::byte(len >> 8), m[7] = std::byte(len);
            if (g() % 2) m[8] = std::byte(0), m[9] = std::byte(0), m[10] = std::byte(0), m[11] = std::byte(i + 1);
            if (g() % 2) std::memset(&m[12], 0, 4);
            m[1] = std::byte(g() % 2);
            p.b.held.insert(10000 + i);
            p.b.storage.push_back(m);
            p.b.eng->on_message(10000 + i, p.b.storage.back());
        }
        std::vector<std::byte> out(100);
        iovec r = iov_of(out);
        OpResult rr = p.b.eng->start_recv({&r, 1}, 0, true);
        EXPECT_EQ(rr.status, Status::Done);
        p.b.eng->close(false);
    }
}

TEST(Engine, UrgentByteIsOutOfBandAtTheMark) {
    Pair p(small_bufs());
    std::vector<std::byte> one = {std::byte{'a'}, std::byte{'b'}}, urg = {std::byte{'c'}, std::byte{'!'}},
                           after = {std::byte{'d'}}, out(10), oob(1);
    iovec s1 = iov_of(one), s2 = iov_of(urg), s3 = iov_of(after), r = iov_of(out), o = iov_of(oob);
    ASSERT_EQ(p.b.eng->start_recv({&o, 1}, MSG_OOB, true).result, -EINVAL) << "no urgent data yet";
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s1, 1}, 0, false), true).result, 2);
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s2, 1}, MSG_OOB, false), true).result, 2);
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s3, 1}, 0, false), true).result, 1);
    p.settle();
    EXPECT_TRUE(p.b.eng->poll_mask() & POLLPRI);
    EXPECT_FALSE(p.b.eng->at_mark());
    // A read stops in front of the mark: "abc" (the urgent byte is '!').
    EXPECT_EQ(p.b.eng->start_recv({&r, 1}, 0, true).result, 3);
    EXPECT_EQ(std::string(reinterpret_cast<char*>(out.data()), 3), "abc");
    EXPECT_TRUE(p.b.eng->at_mark());
    EXPECT_EQ(p.b.eng->start_recv({&o, 1}, MSG_OOB | MSG_PEEK, true).result, 1);
    EXPECT_EQ(p.b.eng->start_recv({&o, 1}, MSG_OOB, true).result, 1);
    EXPECT_EQ(static_cast<char>(oob[0]), '!');
    EXPECT_EQ(p.b.eng->start_recv({&o, 1}, MSG_OOB, true).result, -EINVAL) << "read once";
    EXPECT_FALSE(p.b.eng->poll_mask() & POLLPRI);
    // The next read skips the urgent byte.
    EXPECT_EQ(p.b.eng->start_recv({&r, 1}, 0, true).result, 1);
    EXPECT_EQ(static_cast<char>(out[0]), 'd');
    EXPECT_FALSE(p.b.eng->at_mark());
}

TEST(Engine, UrgentByteInlineStaysInTheStream) {
    Params prm = small_bufs();
    prm.oob_inline = true;
    Pair p(prm);
    std::vector<std::byte> a = {std::byte{'x'}, std::byte{'y'}}, b = {std::byte{'z'}}, out(10), oob(1);
    iovec s1 = iov_of(a), s2 = iov_of(b), r = iov_of(out), o = iov_of(oob);
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s1, 1}, MSG_OOB, false), true).result, 2);
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s2, 1}, 0, false), true).result, 1);
    p.settle();
    EXPECT_EQ(p.b.eng->start_recv({&o, 1}, MSG_OOB, true).result, -EINVAL) << "SO_OOBINLINE: no out-of-band read";
    EXPECT_EQ(p.b.eng->start_recv({&r, 1}, 0, true).result, 1) << "stops in front of the mark";
    EXPECT_TRUE(p.b.eng->at_mark());
    EXPECT_EQ(p.b.eng->start_recv({&r, 1}, 0, true).result, 2) << "the urgent byte is read inline";
    EXPECT_EQ(static_cast<char>(out[0]), 'y');
    EXPECT_EQ(static_cast<char>(out[1]), 'z');
}

TEST(Engine, PeekDoesNotConsumeAndWaitallFills) {
    Pair p(small_bufs());
    std::vector<std::byte> data = pattern(5000, 61), out(5000), pk(5000);
    iovec s = iov_of(data), r = iov_of(out), k = iov_of(pk);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    Op peek{p.b.eng.get(), false, p.b.eng->start_recv({&k, 1}, MSG_PEEK | MSG_WAITALL, false)};
    p.settle([&] { send.step(); peek.step(); });
    // 8 buffers of 1 KiB cannot hold 5000 bytes: the peek returns what fits, as the kernel's
    // peek returns at most the receive queue.
    ASSERT_TRUE(peek.done());
    ASSERT_GT(peek.r.result, 0);
    EXPECT_TRUE(std::equal(pk.begin(), pk.begin() + peek.r.result, data.begin()));
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.settle([&] { send.step(); recv.step(); });
    EXPECT_EQ(recv.r.result, 5000);
    EXPECT_EQ(data, out);
}

TEST(Engine, EofEndsARecvWaitingOnItsSinkAvail) {
    Pair p(small_bufs());
    std::vector<std::byte> out(30000);
    iovec r = iov_of(out);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, 0, false)};
    p.settle([&] { recv.step(); });
    ASSERT_EQ(p.b.eng->counters().sink_avails, 1u);
    p.a.eng->shutdown_send();
    p.settle([&] { recv.step(); });
    ASSERT_TRUE(recv.done()) << "DisConn must end a receive whose SinkAvail is outstanding";
    EXPECT_EQ(recv.r.result, 0);
    EXPECT_TRUE(p.b.exposed.empty());
}

// A handoff after fork: another engine (another process of the same side) restores the snapshot
// and continues the stream exactly where the first one stopped, in both directions.
TEST(Engine, SnapshotLetsAnotherEngineContinueTheStream) {
    Pair p(small_bufs());
    std::vector<std::byte> msg = pattern(3000, 7), out(3000);
    iovec s = iov_of(msg);
    // b sends all; a (the receiver) reads only the first 1000 bytes.
    Op send{p.b.eng.get(), true, p.b.eng->start_send({&s, 1}, 0, true)};
    p.settle([&] { send.step(); });
    iovec r1 = iov_of(out, 0);
    r1.iov_len = 1000;
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_recv({&r1, 1}, MSG_WAITALL, false), false).result, 1000);
    std::vector<std::byte> blob(32768);
    std::size_t n = p.a.eng->snapshot(blob);
    ASSERT_GT(n, 0u);
    // The other process's engine: same parameters, restored from the bytes.
    auto other = std::make_unique<Engine>(p.a.params, p.a);
    ASSERT_TRUE(other->restore({blob.data(), n}));
    EXPECT_EQ(other->bytes_readable(), p.a.eng->bytes_readable());
    p.a.eng = std::move(other);
    for (std::size_t got = 1000; got < out.size();) {
        iovec rv = iov_of(out, got);
        OpResult rr = run_op(p, *p.a.eng, p.a.eng->start_recv({&rv, 1}, 0, false), false);
        ASSERT_GT(rr.result, 0);
        got += static_cast<std::size_t>(rr.result);
        p.settle([&] { send.step(); });
    }
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, 3000);
    EXPECT_EQ(msg, out);
    // And it sends on from the right sequence numbers: the peer accepts what it sends.
    std::vector<std::byte> back = pattern(500, 9), got(500);
    iovec bs = iov_of(back), br = iov_of(got);
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&bs, 1}, 0, false), true).result, 500);
    ASSERT_EQ(run_op(p, *p.b.eng, p.b.eng->start_recv({&br, 1}, MSG_WAITALL, false), false).result, 500);
    EXPECT_EQ(back, got);
    EXPECT_FALSE(p.b.eng->aborted());
    EXPECT_FALSE(p.a.eng->aborted());
}

TEST(Engine, SnapshotOfABusyEngineIsRefused) {
    Pair p(small_bufs());
    std::vector<std::byte> out(100), blob(32768);
    iovec r = iov_of(out);
    OpResult rr = p.a.eng->start_recv({&r, 1}, 0, false);  // blocking receive, nothing there
    ASSERT_EQ(rr.status, Status::Pending);
    EXPECT_EQ(p.a.eng->snapshot(blob), 0u);
    EXPECT_FALSE(p.a.eng->restore(blob));
}

// A sender advertises zero copy only to a peer that waits in a receive: with no progress thread,
// a SrcAvail to a peer that is not receiving could block the send until the peer calls again.
TEST(Engine, NoSrcAvailToAPeerThatIsNotReceiving) {
    struct Idle : Side {
        using Side::Side;
        bool peer_receiving() const noexcept override { return false; }
    };
    Params prm = small_bufs();
    Pair p(prm);
    Idle a(prm);
    a.peer = &p.b;
    p.b.peer = &a;
    auto ack = p.b.eng->accept_hello(a.eng->hello());
    ASSERT_TRUE(ack.has_value());
    ASSERT_TRUE(a.eng->accept_hello_ack(*ack));
    std::vector<std::byte> msg = pattern(prm.send_zcopy_threshold * 2, 3), out(msg.size());
    iovec s = iov_of(msg);
    Op send{a.eng.get(), true, a.eng->start_send({&s, 1}, 0, false)};
    auto settle = [&] {
        for (int i = 0; i < 100000; ++i) {
            bool any = a.deliver() | p.b.deliver() | a.complete() | p.b.complete();
            send.step();
            if (!any) break;
        }
    };
    settle();
    for (std::size_t got = 0; got < out.size();) {
        iovec r = iov_of(out, got);
        OpResult rr = p.b.eng->start_recv({&r, 1}, 0, true);
        settle();
        if (rr.result > 0) got += static_cast<std::size_t>(rr.result);
    }
    settle();
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, static_cast<long>(msg.size()));
    EXPECT_EQ(msg, out);
    EXPECT_EQ(a.eng->counters().src_avails, 0u);
}
