#include "protocol/wire.hpp"

#include <cstring>

namespace sdx::proto {

namespace {

// Big-endian loads and stores through memcpy: no alignment assumptions, one read per field.
template <typename T>
T load_be(const std::byte* p) noexcept {
    T v{};
    unsigned char b[sizeof(T)];
    std::memcpy(b, p, sizeof(T));
    for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>((v << 8) | b[i]);
    return v;
}

template <typename T>
void store_be(std::byte* p, T v) noexcept {
    for (std::size_t i = sizeof(T); i-- > 0;) {
        p[i] = static_cast<std::byte>(v & 0xff);
        if constexpr (sizeof(T) > 1) v = static_cast<T>(v >> 8);
    }
}

// The fixed size of each message id's headers; 0 for ids sdx does not speak.
std::size_t header_size(Mid m) noexcept {
    switch (m) {
        case Mid::Hello:
        case Mid::HelloAck: return kHelloSize;
        case Mid::SrcAvail: return kSrcAvailSize;
        case Mid::SinkAvail: return kSinkAvailSize;
        case Mid::RdmaWrCompl:
        case Mid::RdmaRdCompl: return kComplSize;
        case Mid::Data:
        case Mid::DisConn:
        case Mid::AbortConn:
        case Mid::SendSm:
        case Mid::SrcAvailCancel:
        case Mid::SinkAvailCancel:
        case Mid::SinkCancelAck: return kBsdhSize;
        default: return 0;  // ModeChange, ChRcvBuf*, SuspComm*: not used by sdx 1.0
    }
}

}  // namespace

std::string_view mid_name(Mid m) noexcept {
    switch (m) {
        case Mid::Hello: return "Hello";
        case Mid::HelloAck: return "HelloAck";
        case Mid::DisConn: return "DisConn";
        case Mid::AbortConn: return "AbortConn";
        case Mid::SendSm: return "SendSm";
        case Mid::RdmaWrCompl: return "RdmaWrCompl";
        case Mid::RdmaRdCompl: return "RdmaRdCompl";
        case Mid::ModeChange: return "ModeChange";
        case Mid::SrcAvailCancel: return "SrcAvailCancel";
        case Mid::SinkAvailCancel: return "SinkAvailCancel";
        case Mid::SinkCancelAck: return "SinkCancelAck";
        case Mid::ChRcvBuf: return "ChRcvBuf";
        case Mid::ChRcvBufAck: return "ChRcvBufAck";
        case Mid::SuspComm: return "SuspComm";
        case Mid::SuspCommAck: return "SuspCommAck";
        case Mid::SinkAvail: return "SinkAvail";
        case Mid::SrcAvail: return "SrcAvail";
        case Mid::Data: return "Data";
    }
    return "unknown";
}

std::string_view decode_error_name(DecodeError e) noexcept {
    switch (e) {
        case DecodeError::None: return "none";
        case DecodeError::Short: return "message shorter than its headers";
        case DecodeError::LengthMismatch: return "BSDH length differs from the message received";
        case DecodeError::UnknownMid: return "unknown message id";
        case DecodeError::BadField: return "field out of range";
    }
    return "unknown";
}

DecodeError decode(std::span<const std::byte> bytes, Message& out) noexcept {
    if (bytes.size() < kBsdhSize) return DecodeError::Short;
    const std::byte* p = bytes.data();
    Bsdh h;
    h.mid = static_cast<Mid>(static_cast<std::uint8_t>(p[0]));
    h.flags = static_cast<std::uint8_t>(p[1]);
    h.bufs = load_be<std::uint16_t>(p + 2);
    h.len = load_be<std::uint32_t>(p + 4);
    h.mseq = load_be<std::uint32_t>(p + 8);
    h.mseq_ack = load_be<std::uint32_t>(p + 12);
    std::size_t hs = header_size(h.mid);
    if (hs == 0) return DecodeError::UnknownMid;
    if (h.len != bytes.size()) return DecodeError::LengthMismatch;
    if (bytes.size() < hs) return DecodeError::Short;
    if (h.mid != Mid::Data && bytes.size() != hs) return DecodeError::BadField;  // payload only on Data
    if ((h.flags & ~(kOobPres | kOobPend)) != 0) return DecodeError::BadField;
    if ((h.flags & kOobPres) && (h.mid != Mid::Data || bytes.size() == hs)) return DecodeError::BadField;

    out = Message{};
    out.h = h;
    switch (h.mid) {
        case Mid::Hello:
        case Mid::HelloAck:
            out.hello.version = static_cast<std::uint8_t>(p[16]);
            out.hello.caps = static_cast<std::uint8_t>(p[17]);
            out.hello.max_adverts = static_cast<std::uint8_t>(p[18]);
            out.hello.buf_size = load_be<std::uint32_t>(p + 20);
            break;
        case Mid::SrcAvail:
        case Mid::SinkAvail:
            out.advert.len = load_be<std::uint32_t>(p + 16);
            out.advert.rkey = load_be<std::uint32_t>(p + 20);
            out.advert.vaddr = load_be<std::uint64_t>(p + 24);
            if (out.advert.len == 0) return DecodeError::BadField;
            if (out.advert.vaddr + out.advert.len < out.advert.vaddr) return DecodeError::BadField;  // wraps
            break;
        case Mid::RdmaWrCompl:
        case Mid::RdmaRdCompl:
            out.compl_len = load_be<std::uint32_t>(p + 16);
            if (out.compl_len == 0) return DecodeError::BadField;
            break;
        case Mid::Data:
            out.payload = bytes.subspan(kBsdhSize);
            break;
        default:
            break;
    }
    return DecodeError::None;
}

std::size_t encode_bsdh(const Bsdh& h, std::byte* out) noexcept {
    out[0] = static_cast<std::byte>(h.mid);
    out[1] = static_cast<std::byte>(h.flags);
    store_be<std::uint16_t>(out + 2, h.bufs);
    store_be<std::uint32_t>(out + 4, h.len);
    store_be<std::uint32_t>(out + 8, h.mseq);
    store_be<std::uint32_t>(out + 12, h.mseq_ack);
    return kBsdhSize;
}

std::size_t encode_hello(const Bsdh& h, const HelloHeader& hh, std::byte* out) noexcept {
    Bsdh b = h;
    b.len = kHelloSize;
    encode_bsdh(b, out);
    out[16] = static_cast<std::byte>(hh.version);
    out[17] = static_cast<std::byte>(hh.caps);
    out[18] = static_cast<std::byte>(hh.max_adverts);
    out[19] = std::byte{0};
    store_be<std::uint32_t>(out + 20, hh.buf_size);
    return kHelloSize;
}

std::size_t encode_advert(const Bsdh& h, const Advert& a, std::byte* out) noexcept {
    Bsdh b = h;
    std::size_t n = h.mid == Mid::SinkAvail ? kSinkAvailSize : kSrcAvailSize;
    b.len = static_cast<std::uint32_t>(n);
    encode_bsdh(b, out);
    store_be<std::uint32_t>(out + 16, a.len);
    store_be<std::uint32_t>(out + 20, a.rkey);
    store_be<std::uint64_t>(out + 24, a.vaddr);
    if (h.mid == Mid::SinkAvail) store_be<std::uint32_t>(out + 32, 0);  // non_disc: unused
    return n;
}

std::size_t encode_compl(const Bsdh& h, std::uint32_t len, std::byte* out) noexcept {
    Bsdh b = h;
    b.len = kComplSize;
    encode_bsdh(b, out);
    store_be<std::uint32_t>(out + 16, len);
    return kComplSize;
}

}  // namespace sdx::proto
