// The SDP engine for one connection, sans-I/O: it consumes received messages, completions of the
// remote-memory operations it asked for, and the application's calls, and emits what must happen
// through the Port it is given.  It owns no thread, fd or syscall; it is not thread-safe (the caller
// serialises calls into one connection).  See protocol/README.md for the protocol it speaks.
//
// The application-facing calls never block.  A blocking send or recv is an *operation*: start it,
// and while it reports Status::Pending, feed the engine events (on_message, on_rdma_done, ...) and
// call the same operation's progress function again.  A signal during the wait turns into
// interrupt_send()/interrupt_recv(), which cancels zero-copy transfers and finishes the operation
// with the partial count or EINTR exactly as the kernel would.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "protocol/wire.hpp"

namespace sdx::proto {

using RecvId = std::uint64_t;  // a transport's name for one received message's buffer
using OpId = std::uint64_t;    // a remote-memory operation the engine asked for

// Port::reclaim's answer.
enum class Reclaim : std::uint8_t {
    Unsupported,  // only the peer's SinkCancelAck ends the advertisement (RDMA)
    Busy,         // the peer is copying it at this very moment: ask again
    Done,         // taken back; the peer will never touch it again
};

// What the engine needs from the transport.  Implementations must not call back into the engine
// from these functions: completions come later, through Engine::on_rdma_done.
// Bytes in a gather list.
inline std::size_t iov_total(std::span<const iovec> iov) noexcept {
    std::size_t t = 0;
    for (const iovec& v : iov) t += v.iov_len;
    return t;
}

class Port {
public:
    virtual ~Port() = default;
    // Posts one message: header bytes followed by the gathered payload.  The engine only calls
    // this within its credits, so the peer always has a buffer for it.  The payload memory is only
    // valid during the call.
    virtual void post_send(std::span<const std::byte> header, std::span<const iovec> payload) = 0;
    // The engine is done with a received message's buffer; the transport may reuse it.
    virtual void release_recv(RecvId id) = 0;
    // Copies `len` bytes from the peer's advertised buffer (at `offset` into it) into `local`
    // (RDMA Read), or from `local` into it (RDMA Write).  Completion: Engine::on_rdma_done(op).
    // `consume`: the read takes the bytes from the stream (a peek does not): see reclaim.
    virtual void rdma_read(OpId op, void* local, std::size_t len, const Advert& remote, std::uint64_t offset,
                           bool consume = true) = 0;
    virtual void rdma_write(OpId op, const void* local, std::size_t len, const Advert& remote, std::uint64_t offset) = 0;
    // Makes [addr, addr+len) available to the peer (for reading, or writing when `peer_writes`).
    // Returns the key to advertise, or nothing when registration is impossible (then bcopy).
    virtual std::optional<std::uint32_t> expose(void* addr, std::size_t len, bool peer_writes) = 0;
    // The advertised memory is no longer available to the peer.
    virtual void revoke(std::uint32_t key) = 0;
    // Takes an advertisement of ours back without the peer's help, where the transport can (shared
    // memory: a word both sides change by compare-and-swap).  On Done, `*taken` is how far the
    // peer consumed it (bytes it read with `consume`, or wrote): exactly what its RdmaRdCompl /
    // RdmaWrCompl messages, still on their way, will report.  A peer that is not running (an
    // application busy elsewhere) then cannot hold up a signal or a stalled send.
    virtual Reclaim reclaim(std::uint32_t /*key*/, std::size_t* /*taken*/) { return Reclaim::Unsupported; }
    // Whether a SrcAvail now will be read without this send having to return first.  A SrcAvail
    // completes only when the peer reads it; a peer that is this very thread (a program that
    // writes, then reads the other end) never would: the transport says no, and the engine
    // copies instead.
    virtual bool peer_receiving() const noexcept { return true; }
};

struct Params {
    std::uint16_t recv_bufs = 16;          // receive buffers we post: the credits we grant
    std::uint32_t buf_size = 64 * 1024;    // bytes per receive buffer, headers included
    std::size_t send_zcopy_threshold = 64 * 1024;  // 0: never SrcAvail
    std::size_t recv_zcopy_threshold = 64 * 1024;  // 0: never SinkAvail
    std::size_t zcopy_max_chunk = 1 << 20; // largest single advertisement
    std::uint8_t max_adverts = 4;          // SrcAvails we accept outstanding from the peer
    std::uint8_t caps = kCapSrcAvail | kCapSinkAvail | kCapOob;  // what we can do for the peer
    bool rdma_sync = false;                // the transport completes rdma_read/write before on_rdma_done
                                           // can be fed (shared memory): nonblocking and peek may use them
    bool oob_inline = false;               // SO_OOBINLINE
};

// Why a connection ended abortively (for stats and logs).
enum class AbortReason : std::uint8_t {
    None,
    PeerAbort,        // the peer sent AbortConn
    ProtocolError,    // a malformed or out-of-order message
    TransportDown,    // the transport reported the peer gone
    CancelTimeout,    // a cancellation was not acknowledged in time
    LocalAbort,       // close with unread data, SO_LINGER 0
    RdmaError,        // a remote-memory operation failed and could not be recovered
};
const char* abort_reason_name(AbortReason r) noexcept;

enum class Status : std::uint8_t {
    Done,     // the operation finished: see `result`
    Pending,  // feed events, then call the operation's progress function again
};

struct OpResult {
    Status status = Status::Done;
    long result = 0;  // bytes (>= 0) or -errno, when Done
};

struct Counters {
    std::uint64_t tx_bcopy_bytes = 0, rx_bcopy_bytes = 0;
    std::uint64_t tx_zcopy_read_bytes = 0;   // our SrcAvail data read by the peer
    std::uint64_t rx_zcopy_read_bytes = 0;   // peer's SrcAvail data we read
    std::uint64_t tx_zcopy_write_bytes = 0;  // written into the peer's SinkAvail
    std::uint64_t rx_zcopy_write_bytes = 0;  // the peer wrote into our SinkAvail
    std::uint64_t tx_msgs = 0, rx_msgs = 0;
    std::uint64_t credit_stalls = 0;         // a send had to wait for credits
    std::uint64_t credit_updates = 0;        // zero-length Data sent only to return credits
    std::uint64_t src_avails = 0, sink_avails = 0;
    std::uint64_t sendsm_tx = 0, sendsm_rx = 0;
    std::uint64_t cancels_tx = 0;            // SrcAvailCancel / SinkAvailCancel sent
    std::uint64_t zcopy_fallbacks = 0;       // registration failed: bcopy instead
};

class Engine {
public:
    Engine(const Params& params, Port& port);
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // --- Connection set-up.  Hello and HelloAck travel outside the transport (sdx carries them
    // in its handshake on the kernel TCP connection, as SDP carries them in CM private data).
    std::vector<std::byte> hello() const;                  // active side
    // The Hello an engine with `params` sends, before the engine exists (the peer is not known yet).
    static std::vector<std::byte> hello_for(const Params& params);
    // Passive side: consumes the peer's Hello; returns the HelloAck to send back, or nothing
    // when the Hello is unacceptable (then the connection stays on TCP).
    std::optional<std::vector<std::byte>> accept_hello(std::span<const std::byte> hello);
    // Active side: consumes the HelloAck.  False when unacceptable (stay on TCP).
    bool accept_hello_ack(std::span<const std::byte> ack);
    // Active side, before the HelloAck, when our Hello offered kCapEarly: sending may start at
    // once within the early limits (wire.hpp), bcopy only.  The HelloAck then brings the real
    // credits and capabilities.
    void start_early();
    bool early() const noexcept { return early_; }
    // Payload bytes one nonblocking send could hand over now without waiting (0: none).
    std::size_t send_room() const noexcept;
    bool established() const noexcept { return established_; }

    // --- Transport input.
    // One received message in buffer `id`.  The engine keeps the buffer until it releases it
    // through Port::release_recv.  A malformed message aborts the connection (AbortConn).
    void on_message(RecvId id, std::span<const std::byte> msg);
    // `reclaimed`: the read failed because the peer took its advertisement back (Port::reclaim);
    // its SrcAvailCancel follows.
    void on_rdma_done(OpId op, bool ok, bool reclaimed = false);
    // The transport is gone (the peer process died or closed without a word).  `orderly`: the
    // peer had taken every message we sent (on TCP its close would have been a FIN, not a RST):
    // what it sent stays readable, then end of file.  Otherwise the connection is reset.
    void on_transport_down(bool orderly = false);

    // --- Application calls.  `iov` must stay valid until the operation is Done.
    OpResult start_send(std::span<const iovec> iov, int flags, bool nonblocking);
    OpResult progress_send();
    // A signal arrived while a blocking send was Pending: cancel what can be cancelled.  Returns
    // Done (partial count, or -EINTR when nothing was sent) or Pending while a cancellation is
    // being acknowledged.  `may_restart`: SA_RESTART with nothing sent returns -ERESTART_ (the
    // caller restarts the call).
    // The transport is being given up (the stream returns to kernel TCP): ends the send in
    // progress without any message and returns how many of its bytes were handed to the transport.
    std::size_t abandon_send() noexcept;
    void abandon_recv() noexcept;  // likewise for a receive (nothing of it is reported)
    OpResult interrupt_send();
    // Stalled: a zero-copy advertisement went unanswered for too long.  Cancels it and finishes
    // the operation with bcopy (no bytes lost, none sent twice).
    void stall_send();

    OpResult start_recv(std::span<const iovec> iov, int flags, bool nonblocking);
    OpResult progress_recv();
    OpResult interrupt_recv();

    // The cancellation of an interrupted operation was not acknowledged in time.
    void cancel_timed_out();

    void shutdown_send();                 // SHUT_WR: DisConn after the data already sent
    void shutdown_recv();                 // SHUT_RD
    void close(bool linger_zero);         // DisConn, or AbortConn with unread data / SO_LINGER 0
    void set_oob_inline(bool on) noexcept { params_.oob_inline = on; }

    // --- Readiness and queries (what poll and ioctl report).
    bool readable() const noexcept;       // POLLIN: data, EOF or an error to report
    bool writable() const noexcept;       // POLLOUT: a Data message can go now
    bool peer_shut() const noexcept { return rx_eof_; }  // POLLRDHUP
    unsigned poll_mask() const noexcept;  // POLL* bits, computed as the kernel's tcp_poll does
    int take_error() noexcept;            // SO_ERROR
    std::size_t bytes_readable() const noexcept;  // FIONREAD
    bool at_mark() const noexcept;        // SIOCATMARK
    bool aborted() const noexcept { return abort_reason_ != AbortReason::None; }
    AbortReason abort_reason() const noexcept { return abort_reason_; }
    std::uint32_t credits() const noexcept { return tx_credits_; }
    const Counters& counters() const noexcept { return ctr_; }

    // Another process of this side continues the connection (fork, then a handoff: sshd's
    // privilege separation, prefork servers): the whole state of a quiescent engine (no send or
    // receive in progress) as bytes, and back.  Positions in the receive ring are kept as
    // addresses: valid in every process forked from the one that mapped the segment.
    // snapshot returns the bytes written, or 0 when the engine is busy or `out` too small.
    std::size_t snapshot(std::span<std::byte> out) const noexcept;
    bool restore(std::span<const std::byte> in) noexcept;  // false: not a snapshot of this layout
    // A send waits for the peer to read its SrcAvails (see stall_send).
    bool send_lent() const noexcept { return tx_op_.active && !tx_op_.adverts.empty() && !tx_op_.cancelling; }
    bool quiescent() const noexcept { return !tx_op_.active && !rx_op_.active && due_acks_.empty(); }

    static constexpr int kErestart = 512;  // -kErestart: interrupted before any byte, SA_RESTART may restart

private:
    struct Scalars;
    // One advertisement of ours (SrcAvail) that the peer is reading.
    struct TxAdvert {
        std::size_t op_offset = 0;  // where its bytes start in the send operation
        Advert adv;
        std::uint32_t done = 0;     // bytes the peer reported read (RdmaRdCompl)
        bool reclaimed = false;     // taken back (Port::reclaim): the peer read `taken` of it
        std::uint32_t taken = 0;
    };
    struct SendOp {
        bool active = false;
        bool nonblocking = false;
        bool oob = false;
        bool zcopy_off = false;      // SendSm, stall or no registration: bcopy for the rest
        bool cancelling = false;     // SrcAvailCancel sent, waiting for SinkCancelAck
        bool cancel_for_stall = false;
        bool interrupted = false;    // a signal: finish with what went, cancel the rest
        bool writing = false;        // an RDMA Write into the peer's SinkAvail is in flight
        std::uint32_t write_len = 0;
        OpId write_op = 0;
        std::vector<iovec> iov;
        std::size_t total = 0;
        std::size_t pos = 0;         // bytes handed to the transport (Data, SrcAvail or Write)
        std::deque<TxAdvert> adverts;
    };
    // One piece of the received stream, in order.
    struct Segment {
        bool zcopy = false;
        RecvId id = 0;               // Data: the buffer holding it
        const std::byte* data = nullptr;
        std::size_t len = 0;         // Data: payload bytes; SrcAvail: advertised bytes
        std::size_t off = 0;         // consumed so far
        Advert adv;                  // SrcAvail
        std::uint32_t mseq_ack = 0;  // SrcAvail: the peer's mseq_ack when it sent it
    };
    struct RecvOp {
        bool active = false;
        bool nonblocking = false;
        bool peek = false;
        bool waitall = false;
        std::vector<iovec> iov;
        std::size_t total = 0;
        std::size_t got = 0;
        std::size_t peek_pos = 0;    // MSG_PEEK: how far into the queue we have looked
        // Our SinkAvail, when one is outstanding.
        bool sink = false;
        bool sink_cancelling = false;
        std::uint32_t sink_key = 0;
        std::uint32_t sink_len = 0;
        // An RDMA Read of the peer's SrcAvail into our buffer, when one is in flight.
        bool reading = false;
        OpId read_op = 0;
        std::uint32_t read_len = 0;
        bool interrupted = false;
    };
    // The peer's SinkAvail, as seen by us as the data source.
    struct PeerSink {
        bool valid = false;
        Advert adv;
        std::uint32_t mseq_ack = 0;
    };
    enum class UrgState : std::uint8_t { None, Valid, Read };
    // Who waits for each SinkCancelAck, in the order the cancellations went out.  A cancellation
    // finished by reclaiming leaves a Ghost: its acknowledgement still comes and is dropped.
    enum class AckFor : std::uint8_t { Send, Recv, Ghost };
    enum class Ctrl : std::uint8_t { RdmaRdCompl, RdmaWrCompl, SendSm, SrcAvailCancel, SinkAvailCancel, SinkCancelAck, DisConn, AbortConn };
    struct PendingCtrl {
        Ctrl kind;
        std::uint32_t len;
    };

    // Messages out.
    std::uint16_t posted_bufs() const noexcept;
    Bsdh next_header(Mid mid, std::uint8_t flags) noexcept;
    void queue_ctrl(Ctrl kind, std::uint32_t len = 0);
    bool flush_ctrl();  // true when the queue is empty afterwards
    void send_ctrl_now(const PendingCtrl& c);
    void maybe_credit_update();
    // Messages in.
    void handle(RecvId id, const Message& m);
    void abort_conn(AbortReason why, bool tell_peer);
    void protocol_error(const char* what);
    // Send operation steps.
    void pump_send();
    bool try_peer_sink();
    bool try_src_avail();
    bool try_bcopy();
    void finish_send(long result);
    bool reclaim_adverts();
    void end_send_cancel(std::size_t confirmed);
    void ghost_ack(AckFor was);
    void convert_adverts_to_bcopy();
    std::size_t confirmed_send_bytes() const noexcept;
    // Receive operation steps.
    void pump_recv();
    std::size_t copy_out(std::size_t want_from_queue_pos, std::size_t n);
    void consume(std::size_t n);
    void drop_stale_zcopy();
    void post_sink_avail();
    bool reclaim_sink();
    void finish_recv(long result);
    void check_deadlock();
    void answer_cancel(bool src_avail);
    void flush_due_acks();

    Params params_;
    Port& port_;
    bool established_ = false;
    bool early_ = false;  // sending early, before the HelloAck (active side; never snapshotted: fork settles first)
    // Peer's Hello.
    std::uint8_t peer_caps_ = 0;
    std::uint8_t peer_max_adverts_ = 1;
    std::uint32_t peer_buf_size_ = 0;
    std::uint32_t peer_bufs_ = 0;        // the receive buffers the peer granted at set-up (writable())

    // Sequence numbers and credits.
    std::uint32_t tx_mseq_ = 0;          // last mseq we sent
    std::uint32_t rx_mseq_ = 0;          // last mseq we received
    std::uint32_t tx_credits_ = 0;
    std::uint32_t last_data_mseq_ = 0;   // last message of ours that carried stream data
    std::uint16_t adv_bufs_ = 0;         // bufs in the last message we sent
    std::uint32_t adv_ack_ = 0;          // and its mseq_ack
    std::uint16_t held_ = 0;             // received Data buffers not yet released
    std::uint32_t next_op_ = 1;

    std::deque<PendingCtrl> ctrl_;
    SendOp tx_op_;
    RecvOp rx_op_;
    PeerSink peer_sink_;
    std::deque<Segment> rxq_;
    std::size_t rxq_bytes_ = 0;          // unread bytes in rxq_ (Data and SrcAvail)

    // SendSm we sent: SrcAvails sent before the peer saw it are void.
    bool sendsm_out_ = false;
    std::uint32_t sendsm_mseq_ = 0;
    // SinkCancelAcks we owe once our copy in flight is accounted for, in the order the
    // cancellations came (true: for a SrcAvailCancel, which also drops the peer's SrcAvails).
    std::deque<bool> due_acks_;
    std::deque<AckFor> ack_waits_;
    // Reclaimed advertisements: the completion bytes the peer will still report for them.
    std::uint64_t ghost_rd_bytes_ = 0;   // RdmaRdCompl, for our SrcAvails
    std::uint64_t ghost_wr_bytes_ = 0;   // RdmaWrCompl, into our SinkAvail
    std::uint32_t sendsm_streak_ = 0;    // SendSms received since a SrcAvail was last read in full
    std::uint32_t srcavail_skip_ = 0;    // sends left that use bcopy because of them

    // Urgent data (stream offsets count every byte, the urgent one included).
    std::uint64_t rx_stream_ = 0;        // bytes consumed by the application (incl. skipped urgent)
    std::uint64_t rx_stream_end_ = 0;    // bytes received
    std::uint64_t urg_seq_ = 0;
    UrgState urg_state_ = UrgState::None;
    std::uint8_t urg_byte_ = 0;

    long tx_result_ = 0;                 // result of the last finished send operation
    long rx_result_ = 0;
    bool disconn_sent_ = false;
    bool tx_shut_ = false;               // SHUT_WR: DisConn queued (or due after the send in progress)
    bool rx_shut_ = false;               // SHUT_RD
    bool rx_eof_ = false;                // DisConn received
    bool peer_gone_ = false;             // and then the transport closed
    bool closed_ = false;
    AbortReason abort_reason_ = AbortReason::None;
    int pending_error_ = 0;              // reported once by recv/send/SO_ERROR
    bool reset_ = false;                 // connection reset: sends fail with EPIPE
    Counters ctr_;
};

}  // namespace sdx::proto
