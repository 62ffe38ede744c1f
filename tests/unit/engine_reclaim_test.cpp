// Port::reclaim: a cancellation that ends without the peer's answer, as over shared memory, where
// the peer may be an application busy elsewhere that will not read its socket for a long time.
// The peer's completion messages and its SinkCancelAck still come later and must be absorbed:
// nothing lost, nothing counted twice, no protocol error.
#include <errno.h>
#include <sys/socket.h>

#include "tests/unit/engine_harness.hpp"

using namespace sdx::proto;
using namespace sdx::proto::testing;

namespace {

// Sends `data[from..]` from a and receives it at b into `out[from..]` with MSG_WAITALL.
void finish_stream(Pair& p, std::vector<std::byte>& data, std::vector<std::byte>& out, std::size_t from) {
    iovec s = iov_of(data, from), r = iov_of(out, from);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.settle([&] { send.step(); recv.step(); });
    ASSERT_TRUE(send.done() && recv.done());
    EXPECT_EQ(send.r.result, static_cast<long>(data.size() - from));
    EXPECT_EQ(recv.r.result, static_cast<long>(data.size() - from));
}

void expect_healthy(Pair& p) {
    EXPECT_FALSE(p.a.eng->aborted()) << abort_reason_name(p.a.eng->abort_reason());
    EXPECT_FALSE(p.b.eng->aborted()) << abort_reason_name(p.b.eng->abort_reason());
    EXPECT_TRUE(p.a.exposed.empty());
    EXPECT_TRUE(p.b.exposed.empty());
}

}  // namespace

TEST(Reclaim, InterruptedSendEndsAtOnceWithWhatThePeerHadRead) {
    Pair p(small_bufs());
    p.a.reclaimable = true;
    std::vector<std::byte> data = pattern(60000, 51), out(60000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    ASSERT_FALSE(send.done());
    // The sink reads 10000 bytes of the SrcAvail; its RdmaRdCompl has not reached the source yet.
    p.b.deliver();
    iovec r1 = iov_of(out, 0, 10000);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r1, 1}, 0, false)};
    p.b.complete();
    recv.step();
    ASSERT_TRUE(recv.done());
    ASSERT_EQ(recv.r.result, 10000);
    // A signal: the send ends now, with no message from the (idle) sink.
    send.r = p.a.eng->interrupt_send();
    ASSERT_TRUE(send.done()) << "the source took its advertisement back itself";
    EXPECT_EQ(send.r.result, 10000);
    EXPECT_EQ(p.a.reclaims, 2) << "both advertisements (32 KiB each at most)";
    // Later the sink runs: its RdmaRdCompl and SinkCancelAck are absorbed.
    p.settle();
    expect_healthy(p);
    EXPECT_EQ(p.b.eng->bytes_readable(), 0u);
    EXPECT_EQ(p.a.eng->counters().tx_zcopy_read_bytes, 10000u) << "counted once";
    finish_stream(p, data, out, 10000);
    EXPECT_EQ(data, out);
    expect_healthy(p);
}

TEST(Reclaim, SinkReadingAReclaimedAdvertDropsItWithoutSendSm) {
    Pair p(small_bufs());
    p.a.reclaimable = true;
    std::vector<std::byte> data = pattern(20000, 52), out(20000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.b.deliver(1);  // the SrcAvail only; the cancellation stays in flight
    send.r = p.a.eng->interrupt_send();
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, -Engine::kErestart) << "nothing was read: the call may restart";
    // The sink now tries to read the advertisement it still holds: the read fails as reclaimed.
    iovec r = iov_of(out);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.b.complete();
    recv.step();
    EXPECT_FALSE(recv.done());
    EXPECT_EQ(p.b.eng->bytes_readable(), 0u);
    // The application restarts the send; the receiver gets exactly one copy of the stream.
    Op again{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.settle([&] { again.step(); recv.step(); });
    ASSERT_TRUE(again.done() && recv.done());
    EXPECT_EQ(again.r.result, 20000);
    EXPECT_EQ(recv.r.result, 20000);
    EXPECT_EQ(data, out);
    EXPECT_EQ(p.b.eng->counters().sendsm_tx, 0u);
    expect_healthy(p);
}

TEST(Reclaim, AnAdvertBeingCopiedIsWaitedFor) {
    Pair p(small_bufs());
    p.a.reclaimable = true;
    std::vector<std::byte> data = pattern(20000, 53), out(20000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    ASSERT_EQ(p.a.exposed.size(), 1u);
    p.a.busy.insert(p.a.exposed.begin()->first);
    send.r = p.a.eng->interrupt_send();
    EXPECT_FALSE(send.done()) << "the peer is copying: no answer yet";
    send.step();
    EXPECT_FALSE(send.done());
    p.a.busy.clear();
    send.step();
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, -Engine::kErestart);
    p.settle();
    finish_stream(p, data, out, 0);
    EXPECT_EQ(data, out);
    expect_healthy(p);
}

TEST(Reclaim, WithoutReclaimTheSinkCancelAckStillDecides) {
    Pair p(small_bufs());  // the default Port: RDMA's behaviour
    std::vector<std::byte> data = pattern(20000, 54);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    send.r = p.a.eng->interrupt_send();
    EXPECT_FALSE(send.done());
    p.settle([&] { send.step(); });
    ASSERT_TRUE(send.done());
    EXPECT_EQ(send.r.result, -Engine::kErestart);
    EXPECT_EQ(p.a.reclaims, 0);
}

TEST(Reclaim, StalledSendGoesOnWithBcopyWhileThePeerIsAway) {
    Pair p(small_bufs());
    p.a.reclaimable = true;
    std::vector<std::byte> data = pattern(50000, 55), out(50000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.a.eng->stall_send();
    send.step();
    EXPECT_GT(p.a.eng->counters().tx_bcopy_bytes, 0u) << "bcopy went on without the peer";
    iovec r = iov_of(out);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, MSG_WAITALL, false)};
    p.settle([&] { send.step(); recv.step(); });
    ASSERT_TRUE(send.done() && recv.done());
    EXPECT_EQ(send.r.result, 50000);
    EXPECT_EQ(recv.r.result, 50000);
    EXPECT_EQ(data, out);
    expect_healthy(p);
}

TEST(Reclaim, InterruptedRecvTakesItsSinkAvailBack) {
    Pair p(small_bufs());
    p.b.reclaimable = true;
    std::vector<std::byte> out(30000), data = pattern(500, 56);
    iovec r = iov_of(out), s = iov_of(data);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, 0, false)};
    ASSERT_EQ(p.b.eng->counters().sink_avails, 1u);
    recv.r = p.b.eng->interrupt_recv();
    ASSERT_TRUE(recv.done()) << "no answer needed from the (idle) source";
    EXPECT_EQ(recv.r.result, -Engine::kErestart);
    p.settle();
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&s, 1}, 0, false), true).result, 500);
    EXPECT_EQ(p.a.eng->counters().tx_zcopy_write_bytes, 0u) << "the reclaimed SinkAvail is never written";
    ASSERT_EQ(run_op(p, *p.b.eng, p.b.eng->start_recv({&r, 1}, 0, false), false).result, 500);
    EXPECT_TRUE(std::equal(data.begin(), data.end(), out.begin()));
    expect_healthy(p);
}

TEST(Reclaim, InterruptedRecvKeepsWhatTheSourceAlreadyWrote) {
    Pair p(small_bufs());
    p.b.reclaimable = true;
    std::vector<std::byte> out(30000), data = pattern(20000, 57), more = pattern(700, 58);
    iovec r = iov_of(out), s = iov_of(data), m = iov_of(more);
    Op recv{p.b.eng.get(), false, p.b.eng->start_recv({&r, 1}, 0, false)};
    p.a.deliver();  // the SinkAvail
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    p.a.complete();
    send.step();
    ASSERT_TRUE(send.done());
    ASSERT_EQ(send.r.result, 20000);
    ASSERT_EQ(p.a.eng->counters().tx_zcopy_write_bytes, 20000u);
    // The RdmaWrCompl is still in flight when the receiver is interrupted.
    recv.r = p.b.eng->interrupt_recv();
    ASSERT_TRUE(recv.done());
    EXPECT_EQ(recv.r.result, 20000) << "the bytes written into the buffer are returned";
    EXPECT_TRUE(std::equal(data.begin(), data.end(), out.begin()));
    p.settle();
    EXPECT_EQ(p.b.eng->counters().rx_zcopy_write_bytes, 20000u) << "counted once";
    ASSERT_EQ(run_op(p, *p.a.eng, p.a.eng->start_send({&m, 1}, 0, false), true).result, 700);
    ASSERT_EQ(run_op(p, *p.b.eng, p.b.eng->start_recv({&r, 1}, 0, false), false).result, 700);
    EXPECT_TRUE(std::equal(more.begin(), more.end(), out.begin()));
    expect_healthy(p);
}

TEST(Reclaim, GhostAcknowledgementsSurviveAHandoff) {
    Pair p(small_bufs());
    p.a.reclaimable = true;
    std::vector<std::byte> data = pattern(20000, 59), out(20000);
    iovec s = iov_of(data);
    Op send{p.a.eng.get(), true, p.a.eng->start_send({&s, 1}, 0, false)};
    send.r = p.a.eng->interrupt_send();
    ASSERT_TRUE(send.done());
    // Another process of side a continues the connection before the SinkCancelAck comes.
    std::vector<std::byte> snap(64 * 1024);
    std::size_t n = p.a.eng->snapshot(snap);
    ASSERT_GT(n, 0u);
    auto next = std::make_unique<Engine>(p.a.params, p.a);
    ASSERT_TRUE(next->restore({snap.data(), n}));
    p.a.eng = std::move(next);
    p.settle();
    finish_stream(p, data, out, 0);
    EXPECT_EQ(data, out);
    expect_healthy(p);
}
