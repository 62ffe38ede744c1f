// Engine::snapshot and Engine::restore: a quiescent engine's state as plain bytes.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "protocol/engine.hpp"

namespace sdx::proto {

// Everything but the queues, the operations (inactive) and the parameters (the same on both
// ends of a handoff: one configuration, forked).
struct Engine::Scalars {
    bool established;
    std::uint8_t peer_caps, peer_max_adverts;
    std::uint32_t peer_buf_size, peer_bufs;
    std::uint32_t tx_mseq, rx_mseq, tx_credits, last_data_mseq;
    std::uint16_t adv_bufs;
    std::uint32_t adv_ack;
    std::uint16_t held;
    std::uint32_t next_op;
    PeerSink peer_sink;
    std::size_t rxq_bytes;
    bool sendsm_out;
    std::uint32_t sendsm_mseq, sendsm_streak, srcavail_skip;
    std::uint32_t ghost_acks;  // a quiescent engine waits for no acknowledgement but ghosts
    std::uint64_t ghost_rd_bytes, ghost_wr_bytes;
    std::uint64_t rx_stream, rx_stream_end, urg_seq;
    UrgState urg_state;
    std::uint8_t urg_byte;
    long tx_result, rx_result;
    bool disconn_sent, tx_shut, rx_shut, rx_eof, peer_gone, closed;
    AbortReason abort_reason;
    int pending_error;
    bool reset;
    Counters ctr;
    bool oob_inline;
};

namespace {

struct Header {
    std::uint32_t magic;
    std::uint32_t scalars;   // sizeof(Scalars): a different build does not restore
    std::uint32_t n_ctrl;
    std::uint32_t n_rxq;
};
constexpr std::uint32_t kMagic = 0x53445853;  // "SDXS"

template <typename T>
void put(std::byte*& p, const T& v) noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    std::memcpy(p, &v, sizeof v);
    p += sizeof v;
}

template <typename T>
void get(const std::byte*& p, T& v) noexcept {
    std::memcpy(&v, p, sizeof v);
    p += sizeof v;
}

}  // namespace

std::size_t Engine::snapshot(std::span<std::byte> out) const noexcept {
    if (!quiescent()) return 0;
    std::size_t need = sizeof(Header) + sizeof(Scalars) + ctrl_.size() * sizeof(PendingCtrl) + rxq_.size() * sizeof(Segment);
    if (need > out.size()) return 0;
    Scalars s{established_, peer_caps_, peer_max_adverts_, peer_buf_size_, peer_bufs_, tx_mseq_, rx_mseq_, tx_credits_,
              last_data_mseq_, adv_bufs_, adv_ack_, held_, next_op_, peer_sink_, rxq_bytes_, sendsm_out_,
              sendsm_mseq_, sendsm_streak_, srcavail_skip_, static_cast<std::uint32_t>(ack_waits_.size()),
              ghost_rd_bytes_, ghost_wr_bytes_, rx_stream_, rx_stream_end_,
              urg_seq_, urg_state_, urg_byte_, tx_result_, rx_result_, disconn_sent_, tx_shut_, rx_shut_,
              rx_eof_, peer_gone_, closed_, abort_reason_, pending_error_, reset_, ctr_, params_.oob_inline};
    std::byte* p = out.data();
    put(p, Header{kMagic, sizeof(Scalars), static_cast<std::uint32_t>(ctrl_.size()), static_cast<std::uint32_t>(rxq_.size())});
    put(p, s);
    for (const PendingCtrl& c : ctrl_) put(p, c);
    for (const Segment& g : rxq_) put(p, g);
    return need;
}

bool Engine::restore(std::span<const std::byte> in) noexcept {
    if (!quiescent() || in.size() < sizeof(Header)) return false;
    const std::byte* p = in.data();
    Header h;
    get(p, h);
    if (h.magic != kMagic || h.scalars != sizeof(Scalars) ||
        in.size() < sizeof(Header) + sizeof(Scalars) + std::size_t{h.n_ctrl} * sizeof(PendingCtrl) + std::size_t{h.n_rxq} * sizeof(Segment))
        return false;
    Scalars s;
    get(p, s);
    try {
        std::deque<PendingCtrl> ctrl;
        std::deque<Segment> rxq;
        for (std::uint32_t i = 0; i < h.n_ctrl; ++i) {
            PendingCtrl c;
            get(p, c);
            ctrl.push_back(c);
        }
        for (std::uint32_t i = 0; i < h.n_rxq; ++i) {
            Segment g;
            get(p, g);
            rxq.push_back(g);
        }
        if (s.ghost_acks > (1u << 20)) return false;  // not a state this engine could be in
        std::deque<AckFor> waits(s.ghost_acks, AckFor::Ghost);
        ctrl_ = std::move(ctrl);
        rxq_ = std::move(rxq);
        ack_waits_ = std::move(waits);
    } catch (...) {
        return false;
    }
    established_ = s.established;
    peer_caps_ = s.peer_caps;
    peer_max_adverts_ = s.peer_max_adverts;
    peer_buf_size_ = s.peer_buf_size;
    peer_bufs_ = s.peer_bufs;
    tx_mseq_ = s.tx_mseq;
    rx_mseq_ = s.rx_mseq;
    tx_credits_ = s.tx_credits;
    last_data_mseq_ = s.last_data_mseq;
    adv_bufs_ = s.adv_bufs;
    adv_ack_ = s.adv_ack;
    held_ = s.held;
    next_op_ = s.next_op;
    peer_sink_ = s.peer_sink;
    rxq_bytes_ = s.rxq_bytes;
    sendsm_out_ = s.sendsm_out;
    sendsm_mseq_ = s.sendsm_mseq;
    ghost_rd_bytes_ = s.ghost_rd_bytes;
    ghost_wr_bytes_ = s.ghost_wr_bytes;
    sendsm_streak_ = s.sendsm_streak;
    srcavail_skip_ = s.srcavail_skip;
    rx_stream_ = s.rx_stream;
    rx_stream_end_ = s.rx_stream_end;
    urg_seq_ = s.urg_seq;
    urg_state_ = s.urg_state;
    urg_byte_ = s.urg_byte;
    tx_result_ = s.tx_result;
    rx_result_ = s.rx_result;
    disconn_sent_ = s.disconn_sent;
    tx_shut_ = s.tx_shut;
    rx_shut_ = s.rx_shut;
    rx_eof_ = s.rx_eof;
    peer_gone_ = s.peer_gone;
    closed_ = s.closed;
    abort_reason_ = s.abort_reason;
    pending_error_ = s.pending_error;
    reset_ = s.reset;
    ctr_ = s.ctr;
    params_.oob_inline = s.oob_inline;
    return true;
}

}  // namespace sdx::proto
