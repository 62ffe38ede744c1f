#include "protocol/engine.hpp"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace sdx::proto {

namespace {

// Credits a message needs (SDP, CA4-82): the last two buffers are kept for control messages, and
// the very last one for a message that only returns credits.  The peer's engine frees control
// messages as soon as it sees them, so these reserves can never be held hostage by an application
// that does not read.
constexpr std::uint32_t kDataCredits = 3;
constexpr std::uint32_t kCtrlCredits = 2;
constexpr std::uint32_t kUpdateCredits = 1;
constexpr std::uint16_t kMinRecvBufs = 4;
constexpr std::size_t kMaxGather = 16;  // iovec pieces in one Data message

// Sequence-number comparisons that survive wrap-around.
bool seq_ge(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b) >= 0; }

// Where byte `pos` of a gather list lives, and how many contiguous bytes follow it (*room).
std::byte* iov_ptr(std::span<const iovec> iov, std::size_t pos, std::size_t* room) noexcept {
    for (const iovec& v : iov) {
        if (pos < v.iov_len) {
            *room = v.iov_len - pos;
            return static_cast<std::byte*>(v.iov_base) + pos;
        }
        pos -= v.iov_len;
    }
    *room = 0;
    return nullptr;
}

}  // namespace

const char* abort_reason_name(AbortReason r) noexcept {
    switch (r) {
        case AbortReason::None: return "none";
        case AbortReason::PeerAbort: return "peer abort";
        case AbortReason::ProtocolError: return "protocol error";
        case AbortReason::TransportDown: return "transport down";
        case AbortReason::CancelTimeout: return "cancel timeout";
        case AbortReason::LocalAbort: return "local abort";
        case AbortReason::RdmaError: return "rdma error";
    }
    return "unknown";
}

namespace {

// What the engine really runs with: enough buffers for the credit reserves, room for a header.
Params normalized(Params p) noexcept {
    p.recv_bufs = std::max(p.recv_bufs, kMinRecvBufs);
    p.buf_size = std::max<std::uint32_t>(p.buf_size, static_cast<std::uint32_t>(kMaxHeader + 1));
    p.zcopy_max_chunk = std::clamp<std::size_t>(p.zcopy_max_chunk, 4096, std::numeric_limits<std::uint32_t>::max());
    return p;
}

// Hello and HelloAck carry the same fields: our receive buffers and what we can do.
std::vector<std::byte> greeting(Mid mid, const Params& p) {
    std::vector<std::byte> out(kHelloSize);
    encode_hello(Bsdh{mid, 0, p.recv_bufs, 0, 0, 0}, HelloHeader{kVersion, p.caps, p.max_adverts, p.buf_size}, out.data());
    return out;
}

}  // namespace

Engine::Engine(const Params& params, Port& port) : params_(normalized(params)), port_(port) {}

// --- set-up ------------------------------------------------------------------------------------

std::vector<std::byte> Engine::hello() const { return greeting(Mid::Hello, params_); }

std::vector<std::byte> Engine::hello_for(const Params& params) { return greeting(Mid::Hello, normalized(params)); }

namespace {
// A Hello or HelloAck we can work with: our major version, buffers we can fill, enough credits.
bool acceptable(const Message& m, Mid want) {
    return m.h.mid == want && (m.hello.version >> 4) == (kVersion >> 4) && m.h.bufs >= kMinRecvBufs &&
           m.hello.buf_size > kMaxHeader && m.hello.max_adverts >= 1;
}
}  // namespace

std::optional<std::vector<std::byte>> Engine::accept_hello(std::span<const std::byte> bytes) {
    Message m;
    if (decode(bytes, m) != DecodeError::None || !acceptable(m, Mid::Hello)) return std::nullopt;
    peer_caps_ = m.hello.caps;
    peer_max_adverts_ = m.hello.max_adverts;
    peer_buf_size_ = m.hello.buf_size;
    tx_credits_ = m.h.bufs;
    peer_bufs_ = m.h.bufs;
    std::vector<std::byte> out = greeting(Mid::HelloAck, params_);
    adv_bufs_ = params_.recv_bufs;
    established_ = true;
    return out;
}

bool Engine::accept_hello_ack(std::span<const std::byte> bytes) {
    Message m;
    if (decode(bytes, m) != DecodeError::None || !acceptable(m, Mid::HelloAck)) return false;
    peer_caps_ = m.hello.caps;
    peer_max_adverts_ = m.hello.max_adverts;
    peer_buf_size_ = m.hello.buf_size;
    peer_bufs_ = m.h.bufs;
    if (!early_) {
        tx_credits_ = m.h.bufs;
        adv_bufs_ = params_.recv_bufs;
    } else if (rx_mseq_ == 0) {
        // Our early messages are all unacknowledged: they used up credits of this grant.  (Once a
        // message of the peer's arrived, tx_credits_ is already exact: it carried the ack.)
        tx_credits_ = m.h.bufs > tx_mseq_ ? m.h.bufs - tx_mseq_ : 0;
    }
    early_ = false;
    established_ = true;
    return true;
}

void Engine::start_early() {
    if (established_) return;
    early_ = true;
    established_ = true;
    peer_caps_ = 0;  // no zero copy, no urgent data until the peer says what it can do
    peer_max_adverts_ = 1;
    peer_buf_size_ = std::min<std::uint32_t>(params_.buf_size, kEarlyBufSize);
    tx_credits_ = kEarlyMessages;
    peer_bufs_ = kEarlyMessages;
    adv_bufs_ = params_.recv_bufs;
}

std::size_t Engine::send_room() const noexcept {
    if (!established_ || tx_shut_ || reset_ || aborted() || tx_op_.active || !ctrl_.empty() || tx_credits_ < kDataCredits) return 0;
    return static_cast<std::size_t>(tx_credits_ - kDataCredits + 1) * (peer_buf_size_ - kBsdhSize);
}

// --- messages out ------------------------------------------------------------------------------

std::uint16_t Engine::posted_bufs() const noexcept {
    return static_cast<std::uint16_t>(params_.recv_bufs - std::min(held_, params_.recv_bufs));
}

Bsdh Engine::next_header(Mid mid, std::uint8_t flags) noexcept {
    Bsdh h;
    h.mid = mid;
    h.flags = flags;
    h.bufs = posted_bufs();
    h.mseq = ++tx_mseq_;
    h.mseq_ack = rx_mseq_;
    adv_bufs_ = h.bufs;
    adv_ack_ = rx_mseq_;
    if (tx_credits_ > 0) --tx_credits_;
    ++ctr_.tx_msgs;
    return h;
}

void Engine::queue_ctrl(Ctrl kind, std::uint32_t len) {
    if (kind == Ctrl::SrcAvailCancel) ack_waits_.push_back(AckFor::Send);
    if (kind == Ctrl::SinkAvailCancel) ack_waits_.push_back(AckFor::Recv);
    ctrl_.push_back({kind, len});
    flush_ctrl();
}

void Engine::send_ctrl_now(const PendingCtrl& c) {
    static constexpr Mid kMid[] = {Mid::RdmaRdCompl, Mid::RdmaWrCompl, Mid::SendSm, Mid::SrcAvailCancel,
                                   Mid::SinkAvailCancel, Mid::SinkCancelAck, Mid::DisConn, Mid::AbortConn};
    std::byte buf[kMaxHeader];
    Bsdh h = next_header(kMid[static_cast<int>(c.kind)], 0);
    std::size_t n;
    if (c.kind == Ctrl::RdmaRdCompl || c.kind == Ctrl::RdmaWrCompl) {
        n = encode_compl(h, c.len, buf);
    } else {
        h.len = kBsdhSize;
        n = encode_bsdh(h, buf);
    }
    // Bytes written into the peer's SinkAvail are stream data: a later SinkAvail must follow them.
    if (c.kind == Ctrl::RdmaWrCompl) last_data_mseq_ = tx_mseq_;
    port_.post_send({buf, n}, {});
}

bool Engine::flush_ctrl() {
    if (aborted()) {
        ctrl_.clear();
        return true;
    }
    while (!ctrl_.empty() && tx_credits_ >= kCtrlCredits) {
        PendingCtrl c = ctrl_.front();
        ctrl_.pop_front();
        send_ctrl_now(c);
    }
    return ctrl_.empty();
}

void Engine::maybe_credit_update() {
    // Not held back by queued control messages: they may be waiting for credits that the peer can
    // only grant once it hears of ours (an update needs just the one credit kept for it).
    if (!established_ || aborted() || tx_credits_ < kUpdateCredits) return;
    // What the peer believes it may still send us: our last grant, less what it sent since.
    std::uint32_t since = rx_mseq_ - adv_ack_;
    std::uint32_t peer_view = adv_bufs_ > since ? adv_bufs_ - since : 0;
    std::uint32_t posted = posted_bufs();
    if (posted <= peer_view) return;
    std::uint32_t gain = posted - peer_view;
    std::uint32_t threshold = std::max<std::uint32_t>(2, params_.recv_bufs / 2);
    // Tell the peer when it may be stuck (it cannot send data) or when a good part came free.
    if (peer_view >= kDataCredits && gain < threshold) return;
    std::byte buf[kBsdhSize];
    Bsdh h = next_header(Mid::Data, 0);
    h.len = kBsdhSize;
    encode_bsdh(h, buf);
    port_.post_send({buf, kBsdhSize}, {});
    ++ctr_.credit_updates;
}

// --- messages in -------------------------------------------------------------------------------

void Engine::on_message(RecvId id, std::span<const std::byte> bytes) {
    ++ctr_.rx_msgs;
    if (aborted()) {
        port_.release_recv(id);
        return;
    }
    Message m;
    DecodeError e = decode(bytes, m);
    if (e != DecodeError::None) {
        port_.release_recv(id);
        protocol_error(decode_error_name(e).data());
        return;
    }
    if (!established_ || m.h.mid == Mid::Hello || m.h.mid == Mid::HelloAck) {
        port_.release_recv(id);
        protocol_error("Hello on an established connection, or data before Hello");
        return;
    }
    // An early sender's first messages may be larger than our buffers (wire.hpp: kCapEarly).
    std::uint32_t max_len = (peer_caps_ & kCapEarly) && m.h.mseq <= kEarlyMessages ? std::max(params_.buf_size, kEarlyBufSize) : params_.buf_size;
    if (m.h.mseq != rx_mseq_ + 1 || !seq_ge(tx_mseq_, m.h.mseq_ack) || m.h.len > max_len) {
        port_.release_recv(id);
        protocol_error("sequence number, acknowledgement or length out of range");
        return;
    }
    rx_mseq_ = m.h.mseq;
    std::uint32_t in_flight = tx_mseq_ - m.h.mseq_ack;
    tx_credits_ = m.h.bufs > in_flight ? m.h.bufs - in_flight : 0;
    handle(id, m);
    flush_ctrl();
    check_deadlock();
    maybe_credit_update();
}

void Engine::handle(RecvId id, const Message& m) {
    // Everything but payload-carrying Data is done with its buffer once decoded.
    bool keep = m.h.mid == Mid::Data && !m.payload.empty();
    if (!keep) port_.release_recv(id);
    if (sendsm_out_ && seq_ge(m.h.mseq_ack, sendsm_mseq_)) sendsm_out_ = false;  // the peer saw it

    switch (m.h.mid) {
        case Mid::Data: {
            if (m.payload.empty()) return;  // credit update
            if (closed_) {                  // data for a closed socket: TCP answers with RST
                port_.release_recv(id);
                abort_conn(AbortReason::LocalAbort, true);
                return;
            }
            if (m.h.flags & kOobPres) {
                std::uint64_t seq = rx_stream_end_ + m.payload.size() - 1;
                // A new urgent byte replaces an unread one; if we stand right at the old one (not
                // inline), it is skipped as the kernel does.
                if (urg_state_ != UrgState::None && urg_seq_ == rx_stream_ && !params_.oob_inline &&
                    rx_stream_ < rx_stream_end_)
                    consume(1);
                urg_seq_ = seq;
                urg_byte_ = static_cast<std::uint8_t>(m.payload.back());
                urg_state_ = UrgState::Valid;
            }
            ++held_;
            rxq_.push_back(Segment{false, id, m.payload.data(), m.payload.size(), 0, {}, 0});
            rxq_bytes_ += m.payload.size();
            rx_stream_end_ += m.payload.size();
            ctr_.rx_bcopy_bytes += m.payload.size();
            return;
        }
        case Mid::SrcAvail: {
            if (!(params_.caps & kCapSrcAvail)) return protocol_error("SrcAvail not offered");
            if (sendsm_out_) return;  // sent before the peer saw our SendSm: it comes again as Data
            std::size_t adverts = std::count_if(rxq_.begin(), rxq_.end(), [](const Segment& s) { return s.zcopy; });
            if (adverts >= params_.max_adverts) return protocol_error("more SrcAvails than max_adverts");
            if (closed_) return abort_conn(AbortReason::LocalAbort, true);
            rxq_.push_back(Segment{true, 0, nullptr, m.advert.len, 0, m.advert, m.h.mseq_ack});
            rxq_bytes_ += m.advert.len;
            rx_stream_end_ += m.advert.len;
            return;
        }
        case Mid::SinkAvail:
            if (!(params_.caps & kCapSinkAvail)) return protocol_error("SinkAvail not offered");
            if (peer_sink_.valid) return protocol_error("second SinkAvail outstanding");
            peer_sink_ = PeerSink{true, m.advert, m.h.mseq_ack};
            return;
        case Mid::RdmaRdCompl: {
            if (ghost_rd_bytes_ > 0) {  // for advertisements we reclaimed: already counted
                if (m.compl_len > ghost_rd_bytes_) return protocol_error("RdmaRdCompl beyond what was read");
                ghost_rd_bytes_ -= m.compl_len;
                return;
            }
            if (tx_op_.adverts.empty()) return protocol_error("RdmaRdCompl without SrcAvail");
            TxAdvert& a = tx_op_.adverts.front();
            if (m.compl_len > a.adv.len - a.done) return protocol_error("RdmaRdCompl beyond the advertisement");
            a.done += m.compl_len;
            ctr_.tx_zcopy_read_bytes += m.compl_len;
            if (a.done == a.adv.len) {
                sendsm_streak_ = 0;
                port_.revoke(a.adv.rkey);
                tx_op_.adverts.pop_front();
            }
            return;
        }
        case Mid::RdmaWrCompl:
            if (ghost_wr_bytes_ > 0) {  // into a SinkAvail we reclaimed: already counted
                if (m.compl_len > ghost_wr_bytes_) return protocol_error("RdmaWrCompl beyond what was written");
                ghost_wr_bytes_ -= m.compl_len;
                return;
            }
            if (!rx_op_.active || !rx_op_.sink) return protocol_error("RdmaWrCompl without SinkAvail");
            if (m.compl_len > rx_op_.sink_len) return protocol_error("RdmaWrCompl beyond the SinkAvail");
            port_.revoke(rx_op_.sink_key);
            rx_op_.sink = false;
            rx_op_.got += m.compl_len;
            rx_stream_ += m.compl_len;
            rx_stream_end_ += m.compl_len;
            ctr_.rx_zcopy_write_bytes += m.compl_len;
            return;
        case Mid::SendSm:
            ++ctr_.sendsm_rx;
            // The sink keeps refusing zero copy (a nonblocking reader, say): stop offering it for
            // a growing number of sends instead of paying a round trip each time.
            sendsm_streak_ = std::min<std::uint32_t>(sendsm_streak_ + 1, 6);
            srcavail_skip_ = 1u << sendsm_streak_;
            if (tx_op_.active && !tx_op_.cancelling) {
                convert_adverts_to_bcopy();
                tx_op_.zcopy_off = true;
            }
            return;
        case Mid::SrcAvailCancel:
            return answer_cancel(true);
        case Mid::SinkAvailCancel:
            peer_sink_.valid = false;
            return answer_cancel(false);
        case Mid::SinkCancelAck: {
            // Acknowledgements come in the order our cancellations went out.
            if (ack_waits_.empty()) return protocol_error("SinkCancelAck without a cancellation");
            AckFor who = ack_waits_.front();
            ack_waits_.pop_front();
            if (who == AckFor::Send && tx_op_.active && tx_op_.cancelling) {
                end_send_cancel(confirmed_send_bytes());
            } else if (who == AckFor::Recv && rx_op_.active && rx_op_.sink_cancelling) {
                if (rx_op_.sink) port_.revoke(rx_op_.sink_key);
                rx_op_.sink = false;
                rx_op_.sink_cancelling = false;
            }
            return;
        }
        case Mid::DisConn:
            rx_eof_ = true;
            return;
        case Mid::AbortConn:
            return abort_conn(AbortReason::PeerAbort, false);
        default:
            return protocol_error("message id sdx does not use");
    }
}

void Engine::protocol_error(const char*) { abort_conn(AbortReason::ProtocolError, true); }

// The operation that was waiting for acknowledgements of kind `was` no longer is: they are
// dropped when they come.
void Engine::ghost_ack(AckFor was) {
    for (AckFor& w : ack_waits_)
        if (w == was) w = AckFor::Ghost;
}

// The peer cancels its SrcAvails (`src_avail`) or its SinkAvail.  The answer waits while a copy
// of ours is in flight (its completion message must reach the peer first), and answers keep the
// order of the cancellations, which is how the peer matches them.
void Engine::answer_cancel(bool src_avail) {
    if (rx_op_.reading || tx_op_.writing || !due_acks_.empty()) {
        due_acks_.push_back(src_avail);
        return;
    }
    if (src_avail) drop_stale_zcopy();
    queue_ctrl(Ctrl::SinkCancelAck);
}

void Engine::flush_due_acks() {
    if (rx_op_.reading || tx_op_.writing) return;
    while (!due_acks_.empty()) {
        bool src_avail = due_acks_.front();
        due_acks_.pop_front();
        if (src_avail) drop_stale_zcopy();
        queue_ctrl(Ctrl::SinkCancelAck);
    }
}

void Engine::abort_conn(AbortReason why, bool tell_peer) {
    if (aborted()) return;
    if (tell_peer && tx_credits_ >= kUpdateCredits && why != AbortReason::TransportDown) {
        std::byte buf[kBsdhSize];
        Bsdh h = next_header(Mid::AbortConn, 0);
        h.len = kBsdhSize;
        encode_bsdh(h, buf);
        port_.post_send({buf, kBsdhSize}, {});
    }
    abort_reason_ = why;
    pending_error_ = ECONNRESET;
    reset_ = true;
    ctrl_.clear();
    ack_waits_.clear();
    due_acks_.clear();
    ghost_rd_bytes_ = ghost_wr_bytes_ = 0;
    peer_sink_.valid = false;
    // Zero-copy data still advertised by the peer can no longer be fetched; bcopy data already
    // here stays readable (TCP, too, returns queued data before reporting the reset).
    for (auto it = rxq_.begin(); it != rxq_.end();) {
        if (it->zcopy) {
            rxq_bytes_ -= it->len - it->off;
            it = rxq_.erase(it);
        } else {
            ++it;
        }
    }
    if (closed_) {
        for (const Segment& s : rxq_) port_.release_recv(s.id);
        held_ = 0;
        rxq_.clear();
        rxq_bytes_ = 0;
    }
    if (!tx_op_.adverts.empty()) tx_op_.pos = confirmed_send_bytes();  // what the peer took
    for (const TxAdvert& a : tx_op_.adverts) port_.revoke(a.adv.rkey);
    tx_op_.adverts.clear();
    tx_op_.cancelling = false;
    if (rx_op_.sink) port_.revoke(rx_op_.sink_key);
    rx_op_.sink = false;
    rx_op_.sink_cancelling = false;
}

void Engine::on_rdma_done(OpId op, bool ok, bool reclaimed) {
    if (rx_op_.reading && op == rx_op_.read_op) {
        rx_op_.reading = false;
        if (aborted()) return;
        Segment& s = rxq_.front();
        if (!ok && reclaimed) {
            // The source took its SrcAvails back (Port::reclaim): its SrcAvailCancel is on the way
            // and what we did not read of them is not part of the stream.
            drop_stale_zcopy();
        } else if (!ok) {
            // The source finishes this data with bcopy.
            ++ctr_.sendsm_tx;
            queue_ctrl(Ctrl::SendSm);
            sendsm_out_ = true;
            sendsm_mseq_ = tx_mseq_;
            drop_stale_zcopy();
        } else if (rx_op_.peek) {
            rx_op_.got += rx_op_.read_len;
            rx_op_.peek_pos += rx_op_.read_len;
        } else {
            rx_op_.got += rx_op_.read_len;
            s.off += rx_op_.read_len;
            rxq_bytes_ -= rx_op_.read_len;
            rx_stream_ += rx_op_.read_len;
            ctr_.rx_zcopy_read_bytes += rx_op_.read_len;
            queue_ctrl(Ctrl::RdmaRdCompl, rx_op_.read_len);
            if (s.off == s.len) rxq_.pop_front();
        }
        flush_due_acks();
        return;
    }
    if (tx_op_.writing && op == tx_op_.write_op) {
        tx_op_.writing = false;
        if (aborted()) return;
        if (ok) {
            tx_op_.pos += tx_op_.write_len;
            ctr_.tx_zcopy_write_bytes += tx_op_.write_len;
            queue_ctrl(Ctrl::RdmaWrCompl, tx_op_.write_len);
        }
        // A failed write leaves the SinkAvail unused: the sink sees our next Data and cancels it.
        flush_due_acks();
        return;
    }
}

void Engine::on_transport_down(bool orderly) {
    // After the peer's DisConn this is its orderly exit: what it sent stays readable, and a send
    // now fails as a send to a closed TCP peer does.
    if (rx_eof_ || (orderly && !tx_op_.active)) {
        rx_eof_ = true;
        peer_gone_ = true;
        return;
    }
    abort_conn(AbortReason::TransportDown, false);
}

void Engine::cancel_timed_out() {
    abort_conn(AbortReason::CancelTimeout, true);
}

// --- send --------------------------------------------------------------------------------------

OpResult Engine::start_send(std::span<const iovec> iov, int flags, bool nonblocking) {
    if (tx_op_.active) return {Status::Done, -EBUSY};  // the caller serialises senders
    if (reset_) {
        if (pending_error_) return {Status::Done, -take_error()};
        return {Status::Done, -EPIPE};
    }
    if (tx_shut_) return {Status::Done, -EPIPE};
    if (peer_gone_) {
        // The peer closed (its DisConn, then its end went away).  TCP accepts this first send,
        // the peer's kernel answers with RST, and from then on sends fail with EPIPE (the error
        // reported once through SO_ERROR/POLLERR first) while reads see end of file.
        reset_ = true;
        pending_error_ = EPIPE;
        return {Status::Done, static_cast<long>(iov_total(iov))};
    }
    tx_op_ = SendOp{};
    tx_op_.active = true;
    tx_op_.nonblocking = nonblocking || (flags & MSG_DONTWAIT);
    tx_op_.oob = flags & MSG_OOB;
    tx_op_.iov.assign(iov.begin(), iov.end());
    tx_op_.total = iov_total(iov);
    if (tx_op_.oob && !(peer_caps_ & kCapOob)) {
        tx_op_ = SendOp{};
        return {Status::Done, -EOPNOTSUPP};
    }
    if (srcavail_skip_ > 0) {
        --srcavail_skip_;
        tx_op_.zcopy_off = true;
    }
    tx_result_ = 0;
    return progress_send();
}

OpResult Engine::progress_send() {
    if (tx_op_.active) pump_send();
    if (tx_op_.active) return {Status::Pending, 0};
    return {Status::Done, tx_result_};
}

std::size_t Engine::confirmed_send_bytes() const noexcept {
    if (tx_op_.adverts.empty()) return tx_op_.pos;
    return tx_op_.adverts.front().op_offset + tx_op_.adverts.front().done;
}

void Engine::convert_adverts_to_bcopy() {
    if (tx_op_.adverts.empty()) return;
    std::size_t confirmed = confirmed_send_bytes();
    for (const TxAdvert& a : tx_op_.adverts) port_.revoke(a.adv.rkey);
    tx_op_.adverts.clear();
    tx_op_.pos = confirmed;
}

void Engine::finish_send(long result) {
    // A cancellation of this operation still unacknowledged: its answer is dropped when it comes.
    ghost_ack(AckFor::Send);
    tx_result_ = result;
    tx_op_ = SendOp{};
    if (tx_shut_ && !disconn_sent_) {
        disconn_sent_ = true;
        queue_ctrl(Ctrl::DisConn);
    }
}

void Engine::pump_send() {
    SendOp& op = tx_op_;
    if (reset_) {
        std::size_t c = confirmed_send_bytes();
        if (op.writing) return;  // its completion comes (as a failure) first
        finish_send(c > 0 ? static_cast<long>(c) : -(pending_error_ ? take_error() : EPIPE));
        return;
    }
    flush_ctrl();
    bool stalled = false;
    while (op.active) {
        if (op.cancelling) {
            if (!reclaim_adverts()) return;
            continue;
        }
        if (op.writing) return;
        if (op.interrupted && op.adverts.empty()) {
            finish_send(op.pos > 0 ? static_cast<long>(op.pos) : -kErestart);
            return;
        }
        if (op.pos == op.total || tx_shut_) {
            if (op.adverts.empty()) finish_send(tx_shut_ && op.pos < op.total && op.pos == 0 ? -EPIPE : static_cast<long>(op.pos));
            return;
        }
        if (!ctrl_.empty()) break;
        if (try_peer_sink() || try_src_avail() || try_bcopy()) continue;
        stalled = true;
        break;
    }
    if (!op.active) return;
    if (op.nonblocking && op.adverts.empty() && !op.writing) {
        finish_send(op.pos > 0 ? static_cast<long>(op.pos) : -EAGAIN);
        return;
    }
    if (stalled && tx_credits_ < kDataCredits) ++ctr_.credit_stalls;
}

bool Engine::try_peer_sink() {
    SendOp& op = tx_op_;
    if (!peer_sink_.valid || op.oob || !op.adverts.empty()) return false;
    if (op.nonblocking && !params_.rdma_sync) return false;
    // The sink posted its buffer before it saw data of ours that is still in flight: that data
    // must come first, so this SinkAvail is stale; the sink cancels it when the data arrives.
    if (!seq_ge(peer_sink_.mseq_ack, last_data_mseq_)) return false;
    std::size_t room = 0;
    std::byte* base = iov_ptr(op.iov, op.pos, &room);
    std::size_t n = std::min<std::size_t>(room, peer_sink_.adv.len);
    if (n == 0) return false;
    op.writing = true;
    op.write_len = static_cast<std::uint32_t>(n);
    op.write_op = next_op_++;
    Advert adv = peer_sink_.adv;
    peer_sink_.valid = false;
    port_.rdma_write(op.write_op, base, n, adv, 0);
    return true;
}

bool Engine::try_src_avail() {
    SendOp& op = tx_op_;
    if (op.nonblocking || op.oob || op.zcopy_off || op.interrupted || params_.send_zcopy_threshold == 0) return false;
    if (!(peer_caps_ & kCapSrcAvail) || op.adverts.size() >= peer_max_adverts_) return false;
    if (tx_credits_ < kDataCredits) return false;
    if (op.total - op.pos < params_.send_zcopy_threshold) return false;
    if (op.adverts.empty() && !port_.peer_receiving()) return false;  // see Port::peer_receiving
    std::size_t room = 0;
    std::byte* base = iov_ptr(op.iov, op.pos, &room);
    if (room < params_.send_zcopy_threshold) return false;
    std::size_t n = std::min(room, params_.zcopy_max_chunk);
    auto key = port_.expose(base, n, false);
    if (!key) {
        op.zcopy_off = true;
        ++ctr_.zcopy_fallbacks;
        return false;
    }
    Advert adv{static_cast<std::uint32_t>(n), *key, reinterpret_cast<std::uint64_t>(base)};
    std::byte buf[kMaxHeader];
    std::size_t hn = encode_advert(next_header(Mid::SrcAvail, 0), adv, buf);
    last_data_mseq_ = tx_mseq_;
    op.adverts.push_back(TxAdvert{op.pos, adv, 0});
    op.pos += n;
    ++ctr_.src_avails;
    port_.post_send({buf, hn}, {});
    return true;
}

bool Engine::try_bcopy() {
    SendOp& op = tx_op_;
    if (tx_credits_ < kDataCredits) return false;
    // With SrcAvails outstanding, later bytes may not overtake them; bcopy resumes after them.
    if (!op.adverts.empty()) return false;
    if (op.interrupted) return false;
    std::size_t max = std::min<std::size_t>(peer_buf_size_ - kBsdhSize, op.total - op.pos);
    iovec gather[kMaxGather];
    std::size_t pieces = 0, n = 0, pos = op.pos;
    while (n < max && pieces < kMaxGather) {
        std::size_t room = 0;
        std::byte* p = iov_ptr(op.iov, pos, &room);
        if (!p) break;
        std::size_t take = std::min(room, max - n);
        gather[pieces++] = iovec{p, take};
        n += take;
        pos += take;
    }
    if (n == 0) return false;
    std::uint8_t flags = (op.oob && op.pos + n == op.total) ? kOobPres : 0;
    std::byte buf[kBsdhSize];
    Bsdh h = next_header(Mid::Data, flags);
    h.len = static_cast<std::uint32_t>(kBsdhSize + n);
    encode_bsdh(h, buf);
    last_data_mseq_ = tx_mseq_;
    op.pos += n;
    ctr_.tx_bcopy_bytes += n;
    port_.post_send({buf, kBsdhSize}, {gather, pieces});
    return true;
}

// Ends a cancellation of our SrcAvails, the peer having consumed the first `confirmed` bytes of
// the operation: an interrupted send returns them, a stalled one goes on from there with bcopy.
void Engine::end_send_cancel(std::size_t confirmed) {
    for (const TxAdvert& a : tx_op_.adverts) port_.revoke(a.adv.rkey);
    tx_op_.adverts.clear();
    tx_op_.cancelling = false;
    if (tx_op_.cancel_for_stall) {
        tx_op_.pos = confirmed;
        tx_op_.zcopy_off = true;
        ghost_ack(AckFor::Send);
    } else {
        finish_send(confirmed > 0 ? static_cast<long>(confirmed) : -kErestart);
    }
}

// A cancellation in progress: take the SrcAvails back without the peer's answer where the
// transport can (Port::reclaim).  True when that ended the cancellation.
bool Engine::reclaim_adverts() {
    SendOp& op = tx_op_;
    for (TxAdvert& a : op.adverts) {
        if (a.reclaimed) continue;
        std::size_t taken = 0;
        if (port_.reclaim(a.adv.rkey, &taken) != Reclaim::Done) return false;
        // The peer wrote `taken` into shared memory: it is checked like a message.
        if (taken > a.adv.len || taken < a.done) {
            protocol_error("reclaimed advertisement read beyond its length");
            return true;
        }
        a.reclaimed = true;
        a.taken = static_cast<std::uint32_t>(taken);
    }
    // The peer reads the advertisements in order: a later one touched means the earlier ones were
    // read in full.
    std::size_t confirmed = op.adverts.empty() ? op.pos : op.adverts.front().op_offset;
    bool short_seen = false;
    for (const TxAdvert& a : op.adverts) {
        if (short_seen && a.taken > 0) {
            protocol_error("reclaimed advertisements read out of order");
            return true;
        }
        confirmed += a.taken;
        short_seen = a.taken < a.adv.len;
        ghost_rd_bytes_ += a.taken - a.done;
        ctr_.tx_zcopy_read_bytes += a.taken - a.done;
    }
    if (!op.adverts.empty()) sendsm_streak_ = 0;
    end_send_cancel(confirmed);
    return true;
}

OpResult Engine::interrupt_send() {
    SendOp& op = tx_op_;
    if (!op.active) return {Status::Done, tx_result_};
    op.interrupted = true;
    op.cancel_for_stall = false;
    if (!op.adverts.empty() && !op.cancelling) {
        op.cancelling = true;
        ++ctr_.cancels_tx;
        queue_ctrl(Ctrl::SrcAvailCancel);
    }
    return progress_send();
}

std::size_t Engine::abandon_send() noexcept {
    std::size_t n = tx_op_.active ? tx_op_.pos : 0;
    tx_op_ = SendOp{};
    return n;
}

void Engine::abandon_recv() noexcept { rx_op_ = RecvOp{}; }

void Engine::stall_send() {
    SendOp& op = tx_op_;
    if (!op.active || op.adverts.empty() || op.cancelling) return;
    op.cancelling = true;
    op.cancel_for_stall = true;
    ++ctr_.cancels_tx;
    queue_ctrl(Ctrl::SrcAvailCancel);
}

// --- receive -----------------------------------------------------------------------------------

OpResult Engine::start_recv(std::span<const iovec> iov, int flags, bool nonblocking) {
    if (rx_op_.active) return {Status::Done, -EBUSY};
    if (flags & MSG_OOB) {
        if (params_.oob_inline || urg_state_ != UrgState::Valid) {
            if (urg_state_ == UrgState::None && (rx_eof_ || reset_)) return {Status::Done, 0};
            return {Status::Done, -EINVAL};
        }
        std::size_t total = iov_total(iov);
        if (total == 0) return {Status::Done, -EINVAL};  // the kernel's answer too (no room for the byte)
        std::size_t room = 0;
        std::byte* p = iov_ptr(iov, 0, &room);
        *p = static_cast<std::byte>(urg_byte_);
        if (!(flags & MSG_PEEK)) urg_state_ = UrgState::Read;
        return {Status::Done, 1};
    }
    rx_op_ = RecvOp{};
    rx_op_.active = true;
    rx_op_.nonblocking = nonblocking || (flags & MSG_DONTWAIT);
    rx_op_.peek = flags & MSG_PEEK;
    rx_op_.waitall = (flags & MSG_WAITALL) && !rx_op_.nonblocking;
    rx_op_.iov.assign(iov.begin(), iov.end());
    rx_op_.total = iov_total(iov);
    rx_result_ = 0;
    return progress_recv();
}

OpResult Engine::progress_recv() {
    if (rx_op_.active) pump_recv();
    maybe_credit_update();  // consuming freed buffers: the peer may be waiting for them
    if (rx_op_.active) return {Status::Pending, 0};
    return {Status::Done, rx_result_};
}

OpResult Engine::interrupt_recv() {
    if (!rx_op_.active) return {Status::Done, rx_result_};
    rx_op_.interrupted = true;
    if (rx_op_.sink && !rx_op_.sink_cancelling) {
        rx_op_.sink_cancelling = true;
        ++ctr_.cancels_tx;
        queue_ctrl(Ctrl::SinkAvailCancel);
    }
    return progress_recv();
}

void Engine::finish_recv(long result) {
    ghost_ack(AckFor::Recv);
    rx_result_ = result;
    rx_op_ = RecvOp{};
    check_deadlock();
    maybe_credit_update();
}

// Consumes n bytes from the head of the queue (after they were copied, or skipped).
void Engine::consume(std::size_t n) {
    while (n > 0 && !rxq_.empty()) {
        Segment& s = rxq_.front();
        std::size_t take = std::min(n, s.len - s.off);
        s.off += take;
        n -= take;
        rxq_bytes_ -= take;
        rx_stream_ += take;
        if (s.off == s.len) {
            if (!s.zcopy) {
                port_.release_recv(s.id);
                --held_;
            }
            rxq_.pop_front();
        }
    }
    if (urg_state_ != UrgState::None && rx_stream_ > urg_seq_) urg_state_ = UrgState::None;
}

void Engine::drop_stale_zcopy() {
    for (auto it = rxq_.begin(); it != rxq_.end();) {
        if (it->zcopy) {
            std::size_t unread = it->len - it->off;
            rxq_bytes_ -= unread;
            rx_stream_end_ -= unread;
            it = rxq_.erase(it);
        } else {
            ++it;
        }
    }
}

void Engine::post_sink_avail() {
    RecvOp& op = rx_op_;
    if (op.peek || op.waitall || op.nonblocking || op.interrupted || params_.recv_zcopy_threshold == 0) return;
    if (!(peer_caps_ & kCapSinkAvail) || tx_credits_ < kDataCredits || rx_eof_ || rx_shut_) return;
    std::size_t want = op.total - op.got;
    if (want < params_.recv_zcopy_threshold) return;
    std::size_t room = 0;
    std::byte* base = iov_ptr(op.iov, op.got, &room);
    room = std::min(room, params_.zcopy_max_chunk);
    if (room < params_.recv_zcopy_threshold) return;
    auto key = port_.expose(base, room, true);
    if (!key) {
        ++ctr_.zcopy_fallbacks;
        return;
    }
    Advert adv{static_cast<std::uint32_t>(room), *key, reinterpret_cast<std::uint64_t>(base)};
    std::byte buf[kMaxHeader];
    std::size_t hn = encode_advert(next_header(Mid::SinkAvail, 0), adv, buf);
    op.sink = true;
    op.sink_key = *key;
    op.sink_len = adv.len;
    ++ctr_.sink_avails;
    port_.post_send({buf, hn}, {});
}

// Our SinkAvail is being cancelled: take it back without the source's answer where the
// transport can (Port::reclaim).  What the source already wrote into it is ours (its RdmaWrCompl
// follows).  True when that ended the cancellation.
bool Engine::reclaim_sink() {
    RecvOp& op = rx_op_;
    std::size_t taken = 0;
    if (port_.reclaim(op.sink_key, &taken) != Reclaim::Done) return false;
    // A write comes before any later data of the source's (its RdmaWrCompl first): with data
    // queued here, nothing can have been written.
    if (taken > op.sink_len || (taken > 0 && !rxq_.empty())) {
        protocol_error("reclaimed SinkAvail written beyond its length or out of order");
        return true;
    }
    port_.revoke(op.sink_key);
    op.sink = false;
    op.sink_cancelling = false;
    op.got += taken;
    rx_stream_ += taken;
    rx_stream_end_ += taken;
    ctr_.rx_zcopy_write_bytes += taken;
    ghost_wr_bytes_ += taken;
    ghost_ack(AckFor::Recv);
    return true;
}

void Engine::pump_recv() {
    RecvOp& op = rx_op_;
    flush_ctrl();
    while (op.active) {
        if (op.reading) return;
        if (op.sink) {
            if (op.sink_cancelling) {
                if (!reclaim_sink()) return;
                continue;
            }
            if (rx_eof_ && rxq_.empty()) {
                // DisConn: the source will never write into it (a write would have come first).
                port_.revoke(op.sink_key);
                op.sink = false;
                continue;
            }
            if (!rxq_.empty() || aborted()) {
                // Data reached us the other way (sent before the source saw our SinkAvail): the
                // buffer must be taken back before this call may return.
                if (aborted()) {
                    port_.revoke(op.sink_key);
                    op.sink = false;
                    continue;
                }
                op.sink_cancelling = true;
                ++ctr_.cancels_tx;
                queue_ctrl(Ctrl::SinkAvailCancel);
            }
            return;
        }
        if (op.interrupted) {
            finish_recv(op.got > 0 ? static_cast<long>(op.got) : -kErestart);
            return;
        }
        if (op.got == op.total) {
            finish_recv(static_cast<long>(op.got));
            return;
        }
        // Walk the queue; a peek looks without consuming, starting after what it already copied.
        std::size_t skip = op.peek ? op.peek_pos : 0;
        std::uint64_t stream = rx_stream_ + skip;
        auto it = rxq_.begin();
        std::size_t seg_off = 0;
        while (it != rxq_.end()) {
            std::size_t left = it->len - it->off;
            if (skip < left) {
                seg_off = it->off + skip;
                break;
            }
            skip -= left;
            ++it;
        }
        if (it == rxq_.end()) {
            bool done_waiting = rx_eof_ || rx_shut_ || reset_;
            if (op.got > 0 && (!op.waitall || done_waiting || op.peek)) {
                finish_recv(static_cast<long>(op.got));
                return;
            }
            if (op.got == 0 && pending_error_) {
                finish_recv(-take_error());
                return;
            }
            if (done_waiting) {
                finish_recv(static_cast<long>(op.got));
                return;
            }
            if (op.nonblocking) {
                finish_recv(op.got > 0 ? static_cast<long>(op.got) : -EAGAIN);
                return;
            }
            post_sink_avail();
            return;
        }
        // The urgent mark: a read stops in front of it; at it, a non-inline urgent byte is skipped.
        if (urg_state_ != UrgState::None && stream == urg_seq_) {
            if (op.got > 0) {
                finish_recv(static_cast<long>(op.got));
                return;
            }
            if (!params_.oob_inline && !it->zcopy) {
                if (op.peek) {
                    ++op.peek_pos;  // a peek steps over it too, without consuming
                    continue;
                } else {
                    consume(1);
                    continue;
                }
            }
        }
        std::size_t limit = op.total - op.got;
        if (urg_state_ != UrgState::None && urg_seq_ > stream) limit = std::min<std::size_t>(limit, urg_seq_ - stream);
        if (!it->zcopy) {
            // Copy from this segment and the ones after it, up to the mark.
            std::size_t copied = 0;
            auto cur = it;
            std::size_t off = seg_off;
            while (copied < limit && cur != rxq_.end() && !cur->zcopy) {
                std::size_t chunk = std::min(limit - copied, cur->len - off);
                std::size_t done = 0;
                while (done < chunk) {
                    std::size_t room = 0;
                    std::byte* dst = iov_ptr(op.iov, op.got + copied + done, &room);
                    std::size_t k = std::min(room, chunk - done);
                    std::memcpy(dst, cur->data + off + done, k);
                    done += k;
                }
                copied += chunk;
                ++cur;
                if (cur != rxq_.end()) off = cur->off;
            }
            if (op.peek) op.peek_pos += copied;
            else consume(copied);
            op.got += copied;
            continue;
        }
        // A SrcAvail: fetch it straight into the application's buffer.
        bool can_fetch = !op.nonblocking || params_.rdma_sync;
        if (op.peek && !params_.rdma_sync) can_fetch = false;
        if (!can_fetch) {
            if (!sendsm_out_) {
                ++ctr_.sendsm_tx;
                queue_ctrl(Ctrl::SendSm);
                sendsm_out_ = true;
                sendsm_mseq_ = tx_mseq_;
                drop_stale_zcopy();
            }
            if (op.got > 0 || op.nonblocking) {
                finish_recv(op.got > 0 ? static_cast<long>(op.got) : -EAGAIN);
                return;
            }
            return;  // the data comes again as bcopy
        }
        std::size_t room = 0;
        std::byte* base = iov_ptr(op.iov, op.got, &room);
        std::size_t n = std::min({room, limit, it->len - seg_off});
        if (op.peek && it != rxq_.begin()) {
            // Only the head SrcAvail is read for a peek; later ones wait for a real read.
            finish_recv(static_cast<long>(op.got));
            return;
        }
        op.reading = true;
        op.read_len = static_cast<std::uint32_t>(n);
        op.read_op = next_op_++;
        port_.rdma_read(op.read_op, base, n, it->adv, seg_off, !op.peek);
        return;
    }
}

// SDP's deadlock rule, widened: a SrcAvail from the peer waits, nobody here is receiving, and our
// own send is stuck (its SrcAvail outstanding, or out of credits).  Ask the peer for bcopy.
void Engine::check_deadlock() {
    if (sendsm_out_ || rx_op_.active || !tx_op_.active || aborted()) return;
    bool peer_zcopy_waiting = std::any_of(rxq_.begin(), rxq_.end(), [](const Segment& s) { return s.zcopy; });
    if (!peer_zcopy_waiting) return;
    bool stuck = !tx_op_.adverts.empty() || tx_credits_ < kDataCredits;
    if (!stuck) return;
    ++ctr_.sendsm_tx;
    queue_ctrl(Ctrl::SendSm);
    sendsm_out_ = true;
    sendsm_mseq_ = tx_mseq_;
    drop_stale_zcopy();
}

// --- shutdown and close ------------------------------------------------------------------------

void Engine::shutdown_send() {
    if (tx_shut_ || aborted()) return;
    tx_shut_ = true;
    if (!tx_op_.active) {
        disconn_sent_ = true;
        queue_ctrl(Ctrl::DisConn);
    }
}

void Engine::shutdown_recv() { rx_shut_ = true; }

void Engine::close(bool linger_zero) {
    if (closed_) return;
    closed_ = true;
    if (aborted()) {
        for (const Segment& s : rxq_) if (!s.zcopy) port_.release_recv(s.id);
        rxq_.clear();
        held_ = 0;
        rxq_bytes_ = 0;
        return;
    }
    if (linger_zero || rxq_bytes_ > 0) {
        abort_conn(AbortReason::LocalAbort, true);
        return;
    }
    shutdown_send();
}

// --- readiness ---------------------------------------------------------------------------------

bool Engine::readable() const noexcept {
    std::size_t need = 1;
    if (urg_state_ == UrgState::Valid && urg_seq_ == rx_stream_ && !params_.oob_inline) need = 2;
    return rxq_bytes_ >= need || rx_eof_ || rx_shut_ || reset_ || pending_error_;
}

// As tcp_poll: writable once the free send space is at least half of what is queued, i.e. a third
// of the peer's buffers are free, not at the first free one.  A program that writes a block per
// POLLOUT then writes it whole, as on TCP, instead of getting a short count every time.
bool Engine::writable() const noexcept {
    std::uint32_t need = std::max<std::uint32_t>(kDataCredits, peer_bufs_ / 3);
    return tx_shut_ || reset_ || (established_ && tx_credits_ >= need && ctrl_.empty());
}

unsigned Engine::poll_mask() const noexcept {
    unsigned mask = 0;
    bool rcv_shut = rx_eof_ || rx_shut_ || reset_;
    bool snd_shut = tx_shut_ || reset_;
    if (rcv_shut && snd_shut) mask |= POLLHUP;
    if (rcv_shut) mask |= POLLIN | POLLRDNORM | POLLRDHUP;
    if (readable()) mask |= POLLIN | POLLRDNORM;
    if (snd_shut || writable()) mask |= POLLOUT | POLLWRNORM;
    if (urg_state_ == UrgState::Valid) mask |= POLLPRI;
    if (pending_error_) mask |= POLLERR;
    return mask;
}

int Engine::take_error() noexcept {
    int e = pending_error_;
    pending_error_ = 0;
    return e;
}

std::size_t Engine::bytes_readable() const noexcept { return rxq_bytes_; }

bool Engine::at_mark() const noexcept { return urg_state_ != UrgState::None && urg_seq_ == rx_stream_; }

}  // namespace sdx::proto
