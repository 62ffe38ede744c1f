// The sdx wire format: SDP's Base Sockets Direct Header (BSDH) and the extended headers of the
// messages sdx uses (InfiniBand Architecture Annex A4, see protocol/README.md for where sdx differs).
//
// Every field is big-endian on the wire.  Decoding copies every header field out of the message
// before anything looks at it: on shared memory the peer can still write the buffer while we read
// it, so a value must be checked once, in our own memory, and never re-read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace sdx::proto {

enum class Mid : std::uint8_t {
    Hello = 0x00,
    HelloAck = 0x01,
    DisConn = 0x02,
    AbortConn = 0x03,
    SendSm = 0x04,
    RdmaWrCompl = 0x05,
    RdmaRdCompl = 0x06,
    ModeChange = 0x07,
    SrcAvailCancel = 0x08,
    SinkAvailCancel = 0x09,
    SinkCancelAck = 0x0A,
    ChRcvBuf = 0x0B,
    ChRcvBufAck = 0x0C,
    SuspComm = 0x0D,
    SuspCommAck = 0x0E,
    SinkAvail = 0xFD,
    SrcAvail = 0xFE,
    Data = 0xFF,
};
std::string_view mid_name(Mid m) noexcept;

// BSDH flags.
inline constexpr std::uint8_t kOobPres = 0x01;  // the last payload byte of this Data message is urgent
inline constexpr std::uint8_t kOobPend = 0x02;  // urgent data is pending at the source
inline constexpr std::uint8_t kReqPipe = 0x04;  // (SDP pipelined mode; sdx never sets it)

inline constexpr std::size_t kBsdhSize = 16;
inline constexpr std::uint8_t kVersion = 0x10;  // sdx protocol 1.0 (SDP itself is 0x22)

// Capabilities in Hello/HelloAck.
inline constexpr std::uint8_t kCapSrcAvail = 0x01;   // may be sent SrcAvail (can RDMA Read the peer)
inline constexpr std::uint8_t kCapSinkAvail = 0x02;  // may be sent SinkAvail (can RDMA Write the peer)
inline constexpr std::uint8_t kCapOob = 0x04;        // understands OOB_PRES
// In a Hello: the sender may start sending before the HelloAck ("early data", as TCP Fast Open
// and TLS 0-RTT do), within what every acceptable peer takes: the first kEarlyMessages messages,
// Data only, each at most kEarlyBufSize bytes.  The passive side accepts them even if its own
// buffers are smaller.  A peer that does not accept the connection never reads them, so the
// sender replays their payload on TCP.
inline constexpr std::uint8_t kCapEarly = 0x08;
inline constexpr std::uint32_t kEarlyMessages = 4;     // the fewest buffers an acceptable peer posts
inline constexpr std::uint32_t kEarlyBufSize = 8192;

struct Bsdh {
    Mid mid = Mid::Data;
    std::uint8_t flags = 0;
    std::uint16_t bufs = 0;      // receive buffers the sender has posted now (its credit grant)
    std::uint32_t len = 0;       // whole message, headers included
    std::uint32_t mseq = 0;      // this message's sequence number
    std::uint32_t mseq_ack = 0;  // last sequence number received from the peer
};

// Hello and HelloAck share one extended header in sdx (SDP's HH carries IP addresses and ports
// too: sdx keeps those on the kernel TCP connection, which stays open underneath).
struct HelloHeader {
    std::uint8_t version = kVersion;
    std::uint8_t caps = 0;
    std::uint8_t max_adverts = 1;  // zero-copy advertisements the sender accepts outstanding
    std::uint32_t buf_size = 0;    // size of each receive buffer the sender posts (bytes, headers included)
};
inline constexpr std::size_t kHelloSize = kBsdhSize + 8;

// SrcAvail and SinkAvail advertise a remote buffer.  `rkey` and `vaddr` mean what the transport
// makes of them (an RDMA key and address; a cookie and address for cross-memory attach).
struct Advert {
    std::uint32_t len = 0;
    std::uint32_t rkey = 0;
    std::uint64_t vaddr = 0;
};
inline constexpr std::size_t kSrcAvailSize = kBsdhSize + 16;   // len, rkey, vaddr
inline constexpr std::size_t kSinkAvailSize = kBsdhSize + 20;  // len, rkey, vaddr, non_disc
inline constexpr std::size_t kComplSize = kBsdhSize + 4;       // RdmaWrCompl / RdmaRdCompl: len

// One decoded message.  `payload` points into the caller's buffer (Data only).
struct Message {
    Bsdh h;
    HelloHeader hello;           // Hello, HelloAck
    Advert advert;               // SrcAvail, SinkAvail
    std::uint32_t compl_len = 0; // RdmaWrCompl, RdmaRdCompl
    std::span<const std::byte> payload;
};

enum class DecodeError {
    None,
    Short,          // fewer bytes than a BSDH, or than the message's extended header
    LengthMismatch, // BSDH len differs from the bytes received
    UnknownMid,     // a message id sdx does not speak
    BadField,       // a field out of range (zero-length advert, payload where none may be, ...)
};
std::string_view decode_error_name(DecodeError e) noexcept;

// Decodes one received message.  Never reads outside `bytes`.
DecodeError decode(std::span<const std::byte> bytes, Message& out) noexcept;

// Encoders write into `out` (which must hold the returned size) and return the bytes written.
// Data's payload is not copied here: the caller gathers it after the header.
std::size_t encode_bsdh(const Bsdh& h, std::byte* out) noexcept;
std::size_t encode_hello(const Bsdh& h, const HelloHeader& hh, std::byte* out) noexcept;
std::size_t encode_advert(const Bsdh& h, const Advert& a, std::byte* out) noexcept;
std::size_t encode_compl(const Bsdh& h, std::uint32_t len, std::byte* out) noexcept;

// The largest header any message has (buffers for encoders).
inline constexpr std::size_t kMaxHeader = kSinkAvailSize;

}  // namespace sdx::proto
