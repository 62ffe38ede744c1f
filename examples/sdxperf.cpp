// sdxperf — an iperf-style throughput and latency tool, with byte-exact verification of the data.
//
//   sdxperf -s [-p PORT] [-B ADDR] [-1]                       server
//   sdxperf -c HOST [-m stream|pingpong] [-t|-n|-k] ...       client (see usage() for every option)
//
// Plain POSIX sockets and the C++ standard library only, so it runs the same with and without sdx.
//
// The protocol, per stream (one TCP connection; the -P streams of one client run share a session id):
//   1. client -> server: a 64-byte header (what to do: mode, direction, sizes, seed, limit);
//   2. server -> client: an 8-byte acknowledgement (accepted, or why not);
//   3. the data: client -> server, server -> client (-R), or request/reply messages (pingpong);
//   4. the data sender ends with shutdown(SHUT_WR); the receiver reads to EOF and answers with a
//      24-byte result record (bytes received, verification outcome, first bad offset), so the sending
//      end learns how its stream went too.
// All numbers on the wire are big-endian.
//
// With --verify every data byte is a function of (seed, stream, byte offset) (class Pattern), so the
// receiver checks every byte however the sender's writes and its own reads happened to chunk the stream.
//
// Known limits, inherent in ending a stream with EOF: with -t only the sender knows how long the stream
// is, so a sender that dies looks to the receiver like one that finished (its kernel sends the FIN);
// the sender's verdict (its count against the receiver's result) is the reliable one, and with -n or
// -k both ends know the length. A -1 server waits for every stream its first session announced: if
// one never connects, it keeps waiting (stop it with SIGINT or SIGTERM).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kDefaultPort = "5301";
constexpr std::uint64_t kMaxSize = 1ull << 30;        // largest -l / --sizes value (one buffer per stream)
constexpr std::uint32_t kMaxStreams = 1024;           // -P; stream numbers must stay below kReplyStream
constexpr std::uint32_t kReplyStream = 0x8000;        // pattern "stream" of pingpong replies: stream | this
constexpr std::uint64_t kMaxCount = 1ull << 40;       // -k
constexpr double kMaxSeconds = 1e6;                   // -t

// ---- small utilities --------------------------------------------------------------------------------

// A failed stream or set-up step; the message says what failed and why (with the errno text).
struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A bad command line: exit status 2 and the usage text.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

__attribute__((format(printf, 1, 2))) std::string strf(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = std::vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return fmt;
    if (static_cast<std::size_t>(n) < sizeof small) return std::string(small, static_cast<std::size_t>(n));
    std::string big(static_cast<std::size_t>(n) + 1, '\0');
    va_start(ap, fmt);
    std::vsnprintf(big.data(), big.size(), fmt, ap);
    va_end(ap);
    big.resize(static_cast<std::size_t>(n));
    return big;
}

// glibc's strerror is thread-safe (a thread-local buffer for unknown numbers).
[[noreturn]] void fail_errno(const std::string& what) { throw Failure(what + ": " + std::strerror(errno)); }

// Lines from several server threads must not interleave; flushed at once so a redirected log is
// complete even if the process is killed.
std::mutex g_out_mutex;
void say(std::FILE* f, const std::string& line) {
    std::lock_guard lock(g_out_mutex);
    std::fputs(line.c_str(), f);
    std::fputc('\n', f);
    std::fflush(f);
}

// 131072 -> "128K", 1000 -> "1000": sizes as the user would type them.
std::string size_text(std::uint64_t n) {
    static constexpr const char* kUnits[] = {"", "K", "M", "G", "T"};
    int u = 0;
    while (u < 4 && n >= 1024 && n % 1024 == 0) n /= 1024, ++u;
    return std::to_string(n) + kUnits[u];
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

double gbit_per_s(std::uint64_t bytes, double seconds) { return seconds > 0 ? bytes * 8.0 / seconds / 1e9 : 0.0; }

// Owns a file descriptor.
class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    // No retry of close() on EINTR: on Linux the descriptor is gone either way.
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_;
};

void set_nonblock(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) fail_errno("fcntl(O_NONBLOCK)");
}

// Pingpong measures latency: a message must leave at once, not wait for Nagle's algorithm.
void set_nodelay(int fd) {
    int one = 1;
    if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) fail_errno("setsockopt(TCP_NODELAY)");
}

// ---- the data: a pattern every byte of which can be computed on its own ------------------------------

// splitmix64's output function: nearby inputs give unrelated-looking outputs.
constexpr std::uint64_t mix64(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Byte o of stream s is byte (o % 8), little-endian, of mix64(seed ^ s << 48 ^ o / 8): 8 bytes per
// mix, and any offset can be checked without knowing how the stream was cut into calls.
class Pattern {
public:
    Pattern(std::uint64_t seed, std::uint32_t stream) : key_(seed ^ (std::uint64_t{stream} << 48)) {}

    void fill(std::uint8_t* dst, std::uint64_t off, std::size_t len) const {
        // The bytes up to the next word boundary, whole words, then the tail.
        if (unsigned skip = static_cast<unsigned>(off % 8); skip != 0 && len != 0) {
            std::size_t n = std::min<std::size_t>(8 - skip, len);
            put_bytes(dst, word(off / 8), skip, n);
            dst += n, off += n, len -= n;
        }
        for (; len >= 8; dst += 8, off += 8, len -= 8) {
            std::uint64_t w = word(off / 8);
            if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap64(w);
            std::memcpy(dst, &w, 8);
        }
        if (len != 0) put_bytes(dst, word(off / 8), 0, len);
    }

    // The stream offset of the first wrong byte of got[0, len) (which starts at stream offset off),
    // if any. scratch: len bytes of working space.
    std::optional<std::uint64_t> first_mismatch(const std::uint8_t* got, std::uint64_t off, std::size_t len,
                                                std::uint8_t* scratch) const {
        fill(scratch, off, len);
        if (std::memcmp(got, scratch, len) == 0) return std::nullopt;
        const std::uint8_t* bad = std::mismatch(got, got + len, scratch).first;
        return off + static_cast<std::uint64_t>(bad - got);
    }

private:
    std::uint64_t word(std::uint64_t index) const { return mix64(key_ ^ index); }
    static void put_bytes(std::uint8_t* dst, std::uint64_t w, unsigned from, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<std::uint8_t>(w >> (8 * (from + i)));
    }
    std::uint64_t key_;
};

// What a size sequence is for: the sender's writes, the receiver's reads, pingpong messages. Each has
// its own sequence, so write and read sizes are drawn independently.
enum class SizesFor : std::uint64_t { writes = 1, reads = 2, messages = 3 };

// Call or message sizes in [lo, hi], uniform in log scale so that 1-byte and multi-MiB calls both
// occur, from a seeded sequence. Integer arithmetic only: both ends of a pingpong stream draw the same
// message sizes, whatever their libm.
class SizeDraw {
public:
    SizeDraw(std::uint64_t seed, std::uint32_t stream, SizesFor what, std::uint64_t lo, std::uint64_t hi)
        : state_(mix64(mix64(seed ^ (std::uint64_t{stream} << 48)) ^ static_cast<std::uint64_t>(what))),
          lo_(lo), hi_(hi) {}

    std::uint64_t next() {
        if (lo_ == hi_) return lo_;
        // A bit length uniform in [width(lo), width(hi)], then a value of that length within [lo, hi].
        int wlo = static_cast<int>(std::bit_width(lo_)), whi = static_cast<int>(std::bit_width(hi_));
        int w = wlo + static_cast<int>(random() % static_cast<std::uint64_t>(whi - wlo + 1));
        std::uint64_t a = std::max(lo_, std::uint64_t{1} << (w - 1));
        std::uint64_t b = std::min(hi_, (std::uint64_t{1} << w) - 1);  // w <= 31: hi <= kMaxSize
        return a + random() % (b - a + 1);
    }

private:
    std::uint64_t random() { return mix64(state_++); }
    std::uint64_t state_, lo_, hi_;
};

// ---- wire format ----------------------------------------------------------------------------------

constexpr std::uint32_t kMagic = 0x53445850;        // "SDXP": header and acknowledgement
constexpr std::uint32_t kResultMagic = 0x53445852;  // "SDXR": result record
constexpr std::uint16_t kVersion = 1;
constexpr std::size_t kHeaderSize = 64, kAckSize = 8, kResultSize = 24;

enum class Mode : std::uint8_t { stream = 0, pingpong = 1 };
enum class Limit : std::uint8_t { bytes = 0, duration = 1, count = 2 };
enum class AckStatus : std::uint16_t { ok = 0, bad_magic = 1, bad_version = 2, bad_field = 3 };
enum class Check : std::uint8_t { not_asked = 0, ok = 1, mismatch = 2 };

constexpr std::uint8_t kFlagReverse = 1, kFlagVerify = 2, kFlagNonblock = 4;

// What the client asks of one stream.
struct Header {
    Mode mode = Mode::stream;
    bool reverse = false;   // stream mode: the server sends
    bool verify = false;
    bool nonblock = false;  // the server uses O_NONBLOCK and poll() on this connection too
    std::uint32_t stream = 0, nstreams = 1;
    std::uint64_t session = 0, seed = 0;
    std::uint64_t size_min = 1, size_max = 1;  // write/read sizes (stream) or message sizes (pingpong)
    Limit limit = Limit::bytes;
    std::uint64_t amount = 0;  // this stream's share: bytes, microseconds, or count (writes / round trips)
};

// The receiver's account of a stream, sent to the other end after EOF.
struct Result {
    std::uint64_t bytes = 0;
    Check check = Check::not_asked;
    std::uint64_t first_bad = 0;  // with Check::mismatch: the stream offset of the first wrong byte
};

class Put {
public:
    explicit Put(std::uint8_t* p) : p_(p) {}
    Put& u8(std::uint8_t v) { return be(v, 1); }
    Put& u16(std::uint16_t v) { return be(v, 2); }
    Put& u32(std::uint32_t v) { return be(v, 4); }
    Put& u64(std::uint64_t v) { return be(v, 8); }
    Put& zeros(std::size_t n) {
        std::memset(p_, 0, n);
        p_ += n;
        return *this;
    }

private:
    Put& be(std::uint64_t v, int n) {
        for (int i = n - 1; i >= 0; --i) *p_++ = static_cast<std::uint8_t>(v >> (8 * i));
        return *this;
    }
    std::uint8_t* p_;
};

class Get {
public:
    explicit Get(const std::uint8_t* p) : p_(p) {}
    std::uint8_t u8() { return static_cast<std::uint8_t>(be(1)); }
    std::uint16_t u16() { return static_cast<std::uint16_t>(be(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(be(4)); }
    std::uint64_t u64() { return be(8); }
    void skip(std::size_t n) { p_ += n; }

private:
    std::uint64_t be(int n) {
        std::uint64_t v = 0;
        for (int i = 0; i < n; ++i) v = v << 8 | *p_++;
        return v;
    }
    const std::uint8_t* p_;
};

void encode_header(const Header& h, std::uint8_t* buf) {
    std::uint8_t flags = static_cast<std::uint8_t>((h.reverse ? kFlagReverse : 0) | (h.verify ? kFlagVerify : 0) |
                                                   (h.nonblock ? kFlagNonblock : 0));
    Put(buf)
        .u32(kMagic)
        .u16(kVersion)
        .u8(static_cast<std::uint8_t>(h.mode))
        .u8(flags)
        .u32(h.stream)
        .u32(h.nstreams)
        .u64(h.session)
        .u64(h.seed)
        .u64(h.size_min)
        .u64(h.size_max)
        .u8(static_cast<std::uint8_t>(h.limit))
        .zeros(7)
        .u64(h.amount);
}

// Decodes and validates a header from the network: nothing in it is trusted (sizes become buffer
// sizes, the count a loop bound). why: the reason for a rejection.
AckStatus decode_header(const std::uint8_t* buf, Header& h, std::string& why) {
    Get g(buf);
    if (g.u32() != kMagic) {
        why = "not an sdxperf client (bad magic)";
        return AckStatus::bad_magic;
    }
    if (std::uint16_t v = g.u16(); v != kVersion) {
        why = strf("protocol version %u, this server speaks %u", v, kVersion);
        return AckStatus::bad_version;
    }
    std::uint8_t mode = g.u8(), flags = g.u8();
    h.stream = g.u32();
    h.nstreams = g.u32();
    h.session = g.u64();
    h.seed = g.u64();
    h.size_min = g.u64();
    h.size_max = g.u64();
    std::uint8_t limit = g.u8();
    g.skip(7);
    h.amount = g.u64();
    h.mode = static_cast<Mode>(mode);
    h.limit = static_cast<Limit>(limit);
    h.reverse = flags & kFlagReverse;
    h.verify = flags & kFlagVerify;
    h.nonblock = flags & kFlagNonblock;
    why.clear();
    if (mode > 1) why = strf("unknown mode %u", mode);
    else if (limit > 2) why = strf("unknown limit kind %u", limit);
    else if (flags & ~(kFlagReverse | kFlagVerify | kFlagNonblock)) why = strf("unknown flags 0x%x", flags);
    else if (h.mode == Mode::pingpong && h.reverse) why = "reverse pingpong";
    else if (h.nstreams < 1 || h.nstreams > kMaxStreams || h.stream >= h.nstreams)
        why = strf("stream %" PRIu32 " of %" PRIu32, h.stream, h.nstreams);
    else if (h.size_min < 1 || h.size_min > h.size_max || h.size_max > kMaxSize)
        why = strf("sizes %" PRIu64 "-%" PRIu64, h.size_min, h.size_max);
    else if (h.limit == Limit::duration && h.amount > static_cast<std::uint64_t>(kMaxSeconds * 1e6))
        why = strf("duration %" PRIu64 " us", h.amount);
    else if (h.limit == Limit::count && h.amount > kMaxCount)
        why = strf("count %" PRIu64, h.amount);
    return why.empty() ? AckStatus::ok : AckStatus::bad_field;
}

void encode_result(const Result& r, std::uint8_t* buf) {
    Put(buf).u32(kResultMagic).u8(static_cast<std::uint8_t>(r.check)).zeros(3).u64(r.bytes).u64(r.first_bad);
}

// ---- socket I/O -----------------------------------------------------------------------------------

// I/O on one connected socket, blocking or O_NONBLOCK. On a non-blocking socket EAGAIN waits in
// poll() (counted, to show the path was taken); on a blocking one it does not happen. Every call is
// retried on EINTR, and the _all/_full helpers continue partial transfers. Errors throw Failure.
// Data goes through send()/recv() with MSG_NOSIGNAL: a vanished peer is EPIPE, not SIGPIPE.
class Conn {
public:
    explicit Conn(int fd) : fd_(fd) {}

    std::size_t send_some(const std::uint8_t* p, std::size_t n) {
        for (;;) {
            ssize_t k = ::send(fd_, p, n, MSG_NOSIGNAL);
            if (k >= 0) return static_cast<std::size_t>(k);
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) fail_errno("send");
            wait(POLLOUT);
        }
    }

    // 0: end of file.
    std::size_t recv_some(std::uint8_t* p, std::size_t n) {
        for (;;) {
            ssize_t k = ::recv(fd_, p, n, 0);
            if (k >= 0) return static_cast<std::size_t>(k);
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) fail_errno("recv");
            wait(POLLIN);
        }
    }

    void send_all(const std::uint8_t* p, std::size_t n) {
        while (n != 0) {
            std::size_t k = send_some(p, n);
            p += k, n -= k;
        }
    }

    // Fewer than n bytes only at end of file.
    std::size_t recv_full(std::uint8_t* p, std::size_t n) {
        std::size_t got = 0;
        while (got < n) {
            std::size_t k = recv_some(p + got, n - got);
            if (k == 0) break;
            got += k;
        }
        return got;
    }

    // The end of this side's data: the peer reads EOF, and can still answer.
    void shutdown_write() {
        if (::shutdown(fd_, SHUT_WR) < 0) fail_errno("shutdown(SHUT_WR)");
    }

    std::uint64_t would_block() const { return would_block_; }

private:
    void wait(short events) {
        ++would_block_;
        pollfd p{fd_, events, 0};
        while (::poll(&p, 1, -1) < 0)
            if (errno != EINTR) fail_errno("poll");
        // POLLERR / POLLHUP: the retried send() or recv() reports what happened.
    }

    int fd_;
    std::uint64_t would_block_ = 0;
};

void send_header(Conn& c, const Header& h) {
    std::uint8_t buf[kHeaderSize];
    encode_header(h, buf);
    c.send_all(buf, sizeof buf);
}

// The client's side of the handshake: the server's acknowledgement of the header.
void expect_ack(Conn& c) {
    std::uint8_t buf[kAckSize];
    if (c.recv_full(buf, sizeof buf) < sizeof buf)
        throw Failure("the server closed the connection before acknowledging");
    Get g(buf);
    std::uint32_t magic = g.u32();
    std::uint16_t version = g.u16(), status = g.u16();
    if (magic != kMagic) throw Failure("the peer is not an sdxperf server (bad magic in its answer)");
    switch (static_cast<AckStatus>(status)) {
    case AckStatus::ok: return;
    case AckStatus::bad_version:
        throw Failure(strf("the server speaks protocol version %u, not %u", version, kVersion));
    default: throw Failure(strf("the server rejected the request (status %u; its log says why)", status));
    }
}

// The server's side of the handshake: reads, validates and acknowledges the header.
Header accept_header(Conn& c) {
    std::uint8_t buf[kHeaderSize];
    if (std::size_t got = c.recv_full(buf, sizeof buf); got < sizeof buf)
        throw Failure(strf("connection closed after %zu of the %zu header bytes", got, kHeaderSize));
    Header h;
    std::string why;
    AckStatus status = decode_header(buf, h, why);
    std::uint8_t ack[kAckSize];
    Put(ack).u32(kMagic).u16(kVersion).u16(static_cast<std::uint16_t>(status));
    c.send_all(ack, sizeof ack);
    if (status != AckStatus::ok) throw Failure("rejected header: " + why);
    return h;
}

void send_result(Conn& c, const Result& r) {
    std::uint8_t buf[kResultSize];
    encode_result(r, buf);
    c.send_all(buf, sizeof buf);
}

Result recv_result(Conn& c) {
    std::uint8_t buf[kResultSize];
    if (c.recv_full(buf, sizeof buf) < sizeof buf)
        throw Failure("the peer closed the connection without sending its result");
    Get g(buf);
    if (g.u32() != kResultMagic) throw Failure("bad result record from the peer (data after the stream?)");
    Result r;
    std::uint8_t check = g.u8();
    g.skip(3);
    r.bytes = g.u64();
    r.first_bad = g.u64();
    if (check > 2) throw Failure(strf("bad result record from the peer (check %u)", check));
    r.check = static_cast<Check>(check);
    return r;
}

// ---- the data phases, shared by client and server ------------------------------------------------

Clock::time_point deadline_of(const Header& h) {
    if (h.limit != Limit::duration) return Clock::time_point::max();
    return Clock::now() + std::chrono::microseconds(h.amount);
}

// The size of the next pingpong message: both ends call this once per message, in the same order.
std::uint64_t next_message_size(SizeDraw& sizes, const Header& h, std::uint64_t off) {
    std::uint64_t n = sizes.next();
    return h.limit == Limit::bytes ? std::min(n, h.amount - off) : n;
}

// How many bytes the receiver must see, when the header fixes it (-n; -k, as the receiver can replay
// the sender's size sequence). With -t only the sender knows.
std::optional<std::uint64_t> expected_bytes(const Header& h) {
    switch (h.limit) {
    case Limit::bytes: return h.amount;
    case Limit::duration: return std::nullopt;
    case Limit::count: break;
    }
    if (h.size_min == h.size_max) return h.amount * h.size_min;
    SizeDraw sizes(h.seed, h.stream, h.mode == Mode::stream ? SizesFor::writes : SizesFor::messages, h.size_min,
                   h.size_max);
    std::uint64_t total = 0;
    for (std::uint64_t i = 0; i < h.amount; ++i) total += sizes.next();
    return total;
}

// Stream mode, sending side: writes until the limit, then shutdown(SHUT_WR). Returns the bytes sent.
std::uint64_t send_stream(Conn& c, const Header& h) {
    const Pattern pattern(h.seed, h.stream);
    SizeDraw sizes(h.seed, h.stream, SizesFor::writes, h.size_min, h.size_max);
    std::vector<std::uint8_t> buf(h.size_max);
    // Unverified data is still not all zeros, in case something along the way treats zeros specially.
    if (!h.verify) pattern.fill(buf.data(), 0, buf.size());
    const auto deadline = deadline_of(h);
    std::uint64_t off = 0;
    for (std::uint64_t writes = 0;; ++writes) {
        if (h.limit == Limit::bytes && off >= h.amount) break;
        if (h.limit == Limit::count && writes >= h.amount) break;
        if (h.limit == Limit::duration && Clock::now() >= deadline) break;
        std::uint64_t n = sizes.next();
        if (h.limit == Limit::bytes) n = std::min(n, h.amount - off);
        if (h.verify) pattern.fill(buf.data(), off, n);
        c.send_all(buf.data(), n);  // one "write" of the sequence, however many send() calls it takes
        off += n;
    }
    c.shutdown_write();
    return off;
}

// Stream mode, receiving side: reads (sizes drawn independently of the writes) until EOF, checking
// every byte with --verify. Returns the result record to send back.
Result recv_stream(Conn& c, const Header& h) {
    const Pattern pattern(h.seed, h.stream);
    SizeDraw sizes(h.seed, h.stream, SizesFor::reads, h.size_min, h.size_max);
    std::vector<std::uint8_t> buf(h.size_max), scratch(h.verify ? h.size_max : 0);
    Result r;
    r.check = h.verify ? Check::ok : Check::not_asked;
    for (;;) {
        std::size_t got = c.recv_some(buf.data(), sizes.next());
        if (got == 0) break;
        // After the first bad byte keep reading to EOF (so the sender gets a result), but stop checking.
        if (r.check == Check::ok) {
            if (auto bad = pattern.first_mismatch(buf.data(), r.bytes, got, scratch.data())) {
                r.check = Check::mismatch;
                r.first_bad = *bad;
            }
        }
        r.bytes += got;
    }
    return r;
}

struct PingResult {
    std::uint64_t bytes = 0;   // sent, and (when complete) received back
    std::uint64_t rounds = 0;
    Check check = Check::not_asked;  // the replies
    std::uint64_t first_bad = 0;
    std::vector<double> half_rtt_us;
};

// Pingpong, client side: a request, then the whole reply, until the limit; then shutdown(SHUT_WR).
// Fills p as it goes, so a failed run still shows the round trips it made.
void ping(Conn& c, const Header& h, PingResult& p) {
    const Pattern request(h.seed, h.stream), reply(h.seed, h.stream | kReplyStream);
    SizeDraw sizes(h.seed, h.stream, SizesFor::messages, h.size_min, h.size_max);
    std::vector<std::uint8_t> out(h.size_max), in(h.size_max), scratch(h.verify ? h.size_max : 0);
    const auto deadline = deadline_of(h);
    p.check = h.verify ? Check::ok : Check::not_asked;
    if (h.limit == Limit::count) p.half_rtt_us.reserve(h.amount);
    for (;;) {
        if (h.limit == Limit::bytes && p.bytes >= h.amount) break;
        if (h.limit == Limit::count && p.rounds >= h.amount) break;
        if (h.limit == Limit::duration && Clock::now() >= deadline) break;
        std::uint64_t n = next_message_size(sizes, h, p.bytes);
        if (h.verify) request.fill(out.data(), p.bytes, n);
        auto t0 = Clock::now();
        c.send_all(out.data(), n);
        std::size_t got = c.recv_full(in.data(), n);
        auto t1 = Clock::now();
        if (got < n)
            throw Failure(strf("the server closed the connection during reply %" PRIu64 " (%zu of %" PRIu64 " bytes)",
                               p.rounds + 1, got, n));
        if (p.check == Check::ok) {
            if (auto bad = reply.first_mismatch(in.data(), p.bytes, n, scratch.data())) {
                p.check = Check::mismatch;
                p.first_bad = *bad;
            }
        }
        p.bytes += n;
        ++p.rounds;
        p.half_rtt_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / 2);
    }
    c.shutdown_write();
}

// Pingpong, server side: reads each whole request (the sizes come from the shared sequence), checks
// it, answers, until the client's EOF between two messages. Returns the result record to send back.
Result pong(Conn& c, const Header& h) {
    const Pattern request(h.seed, h.stream), reply(h.seed, h.stream | kReplyStream);
    SizeDraw sizes(h.seed, h.stream, SizesFor::messages, h.size_min, h.size_max);
    std::vector<std::uint8_t> in(h.size_max), out(h.size_max), scratch(h.verify ? h.size_max : 0);
    Result r;
    r.check = h.verify ? Check::ok : Check::not_asked;
    for (std::uint64_t message = 1;; ++message) {
        // With -n, once the client has sent its bytes, its EOF must come next.
        std::uint64_t n = h.limit == Limit::bytes && r.bytes >= h.amount ? 0 : next_message_size(sizes, h, r.bytes);
        std::size_t got = n != 0 ? c.recv_full(in.data(), n) : c.recv_some(in.data(), 1);
        if (got == 0) break;
        if (n == 0) throw Failure("the client sent more than the bytes it announced");
        if (got < n)
            throw Failure(strf("the client closed the connection in the middle of message %" PRIu64
                               " (%zu of %" PRIu64 " bytes)",
                               message, got, n));
        if (r.check == Check::ok) {
            if (auto bad = request.first_mismatch(in.data(), r.bytes, n, scratch.data())) {
                r.check = Check::mismatch;
                r.first_bad = *bad;
            }
        }
        if (h.verify) reply.fill(out.data(), r.bytes, n);
        c.send_all(out.data(), n);
        r.bytes += n;
    }
    return r;
}

// What is wrong with a stream, given its receiver's result: "" when nothing. want: the bytes the
// receiver should have got, when known; receiver: "server" or "client".
std::string result_problem(const Result& r, std::optional<std::uint64_t> want, const char* receiver) {
    if (want && r.bytes != *want)
        return strf("%s: the %s received %" PRIu64 " bytes, expected %" PRIu64,
                    r.bytes < *want ? "short transfer" : "too many bytes", receiver, r.bytes, *want);
    if (r.check == Check::mismatch)
        return strf("data mismatch at byte offset %" PRIu64 " (found by the %s)", r.first_bad, receiver);
    return "";
}

// ---- command line ---------------------------------------------------------------------------------

struct Options {
    bool help = false;
    bool server = false;
    std::string host;  // client: -c
    std::string port = kDefaultPort;
    std::string bind;  // server: -B
    bool one_shot = false;
    Mode mode = Mode::stream;
    Limit limit = Limit::duration;
    double seconds = 10;
    std::uint64_t amount = 0;  // -n bytes or -k count, for all streams together
    std::optional<std::uint64_t> size_min, size_max;
    std::uint32_t streams = 1;
    bool reverse = false, verify = false, nonblock = false, json = false;
    std::optional<std::uint64_t> seed;
};

void usage(std::FILE* f) {
    std::fputs(
        "usage: sdxperf -s [-p PORT] [-B ADDR] [-1]\n"
        "       sdxperf -c HOST [-p PORT] [-m stream|pingpong] [-t SECONDS | -n BYTES | -k COUNT]\n"
        "               [-l SIZE] [--sizes MIN-MAX] [-P STREAMS] [-R] [--verify] [--seed N]\n"
        "               [--nonblock] [--json]\n"
        "\n"
        "TCP throughput and latency, every byte optionally verified.\n"
        "\n"
        "server:\n"
        "  -s               serve clients, many at once (a thread per connection)\n"
        "  -p PORT          port to listen on / connect to (default 5301)\n"
        "  -B ADDR          listen on this IPv4 or IPv6 address (default: all, IPv6 and IPv4)\n"
        "  -1               exit after the first client session (all its streams): status 0 only if\n"
        "                   every stream of it went right\n"
        "client:\n"
        "  -c HOST          connect to HOST\n"
        "  -m MODE          stream (default): bulk data; pingpong: messages back and forth, RTT/2 reported\n"
        "  -t SECONDS       run this long (default 10)\n"
        "  -n BYTES         stream: bytes to send in all; pingpong: bytes each way in all\n"
        "  -k COUNT         stream: writes in all; pingpong: round trips in all\n"
        "  -l SIZE          stream: write() and read() size (default 128K); pingpong: message size\n"
        "                   (default 64)\n"
        "  --sizes MIN-MAX  draw every write() and, independently, every read() size (stream) or every\n"
        "                   message size (pingpong) from [MIN, MAX], uniform in log scale, seeded\n"
        "  -P STREAMS       parallel connections (default 1); -n and -k are shared among them\n"
        "  -R               reverse: the server sends (stream mode)\n"
        "  --verify         the receiver checks every byte (data = f(seed, stream, offset))\n"
        "  --seed N         seed of the data and the sizes (default: random, printed)\n"
        "  --nonblock       O_NONBLOCK sockets, waiting in poll(), at both ends\n"
        "  --json           print the result as one JSON object\n"
        "\n"
        "SIZE and BYTES take K, M, G suffixes (powers of 1024). pingpong's bytes count both directions.\n"
        "Exit status: 0 success; 1 data mismatch, short transfer or socket error; 2 bad usage.\n",
        f);
}

std::uint64_t parse_u64(std::string_view opt, std::string_view s) {
    std::uint64_t v = 0;
    if (s.empty()) throw UsageError(std::string(opt) + ": a number is missing");
    for (char ch : s) {
        if (ch < '0' || ch > '9') throw UsageError(std::string(opt) + ": not a number: '" + std::string(s) + "'");
        std::uint64_t d = static_cast<std::uint64_t>(ch - '0');
        if (v > (UINT64_MAX - d) / 10) throw UsageError(std::string(opt) + ": too large: " + std::string(s));
        v = v * 10 + d;
    }
    return v;
}

// "128K", "8M", "1G", "1000": binary suffixes, at least 1.
std::uint64_t parse_size(std::string_view opt, std::string_view s, std::uint64_t max) {
    int shift = 0;
    if (!s.empty()) {
        switch (s.back()) {
        case 'K': case 'k': shift = 10; break;
        case 'M': case 'm': shift = 20; break;
        case 'G': case 'g': shift = 30; break;
        default: break;
        }
        if (shift) s.remove_suffix(1);
    }
    std::uint64_t v = parse_u64(opt, s);
    if (v > (max >> shift) || (v << shift) > max)
        throw UsageError(strf("%.*s: at most %s", static_cast<int>(opt.size()), opt.data(), size_text(max).c_str()));
    v <<= shift;
    if (v == 0) throw UsageError(std::string(opt) + ": must be at least 1");
    return v;
}

double parse_seconds(std::string_view opt, std::string_view s) {
    std::string text(s);
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(v) || v <= 0 || v > kMaxSeconds)
        throw UsageError(std::string(opt) + ": seconds, more than 0 and at most 1000000: '" + text + "'");
    return v;
}

bool is_ip_address(const std::string& s) {
    in6_addr a6;
    in_addr a4;
    return ::inet_pton(AF_INET, s.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

Options parse_args(int argc, char** argv) {
    Options o;
    std::vector<std::string_view> args(argv + 1, argv + argc);
    std::string client_only, server_only;  // the last option of each kind seen, for the error message
    bool saw_c = false, saw_l = false, saw_sizes = false;
    int limits = 0;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view opt = args[i], attached;
        bool has_attached = false;
        if (opt.starts_with("--") && opt.find('=') != std::string_view::npos) {  // --sizes=1-8M
            attached = opt.substr(opt.find('=') + 1);
            opt = opt.substr(0, opt.find('='));
            has_attached = true;
        }
        auto value = [&]() -> std::string_view {
            if (has_attached) return attached;
            if (i + 1 >= args.size()) throw UsageError(std::string(opt) + " needs a value");
            return args[++i];
        };
        auto for_client = [&] { client_only = opt; };
        if (opt == "-h" || opt == "--help") {
            o.help = true;
        } else if (opt == "-s") {
            o.server = true;
        } else if (opt == "-c") {
            o.host = value(), saw_c = true;
            if (o.host.empty()) throw UsageError("-c: empty host");
        } else if (opt == "-p") {
            std::uint64_t p = parse_u64(opt, value());
            if (p < 1 || p > 65535) throw UsageError("-p: a port is 1 to 65535");
            o.port = std::to_string(p);
        } else if (opt == "-B") {
            o.bind = value(), server_only = opt;
            if (!is_ip_address(o.bind)) throw UsageError("-B: not an IPv4 or IPv6 address: '" + o.bind + "'");
        } else if (opt == "-1") {
            o.one_shot = true, server_only = opt;
        } else if (opt == "-m") {
            std::string_view m = value();
            if (m == "stream") o.mode = Mode::stream;
            else if (m == "pingpong") o.mode = Mode::pingpong;
            else throw UsageError("-m: stream or pingpong, not '" + std::string(m) + "'");
            for_client();
        } else if (opt == "-t") {
            o.limit = Limit::duration, o.seconds = parse_seconds(opt, value()), ++limits, for_client();
        } else if (opt == "-n") {
            o.limit = Limit::bytes, o.amount = parse_size(opt, value(), UINT64_MAX), ++limits, for_client();
        } else if (opt == "-k") {
            o.limit = Limit::count, o.amount = parse_u64(opt, value()), ++limits, for_client();
            if (o.amount < 1 || o.amount > kMaxCount) throw UsageError("-k: 1 to " + std::to_string(kMaxCount));
        } else if (opt == "-l") {
            o.size_min = o.size_max = parse_size(opt, value(), kMaxSize), saw_l = true, for_client();
        } else if (opt == "--sizes") {
            std::string_view v = value();
            std::size_t dash = v.find('-');
            if (dash == std::string_view::npos) throw UsageError("--sizes: MIN-MAX, e.g. 1-8M");
            o.size_min = parse_size(opt, v.substr(0, dash), kMaxSize);
            o.size_max = parse_size(opt, v.substr(dash + 1), kMaxSize);
            if (*o.size_min > *o.size_max) throw UsageError("--sizes: MIN is larger than MAX");
            saw_sizes = true, for_client();
        } else if (opt == "-P") {
            std::uint64_t p = parse_u64(opt, value());
            if (p < 1 || p > kMaxStreams) throw UsageError("-P: 1 to " + std::to_string(kMaxStreams) + " streams");
            o.streams = static_cast<std::uint32_t>(p), for_client();
        } else if (opt == "-R") {
            o.reverse = true, for_client();
        } else if (opt == "--verify") {
            o.verify = true, for_client();
        } else if (opt == "--seed") {
            o.seed = parse_u64(opt, value()), for_client();
        } else if (opt == "--nonblock") {
            o.nonblock = true, for_client();
        } else if (opt == "--json") {
            o.json = true, for_client();
        } else {
            throw UsageError("unknown option '" + std::string(opt) + "'");
        }
        if (has_attached && (opt == "-s" || opt == "-1" || opt == "-R" || opt == "--verify" || opt == "--nonblock" ||
                             opt == "--json" || opt == "--help"))
            throw UsageError(std::string(opt) + " takes no value");
    }
    if (o.help) return o;
    if (o.server == saw_c) throw UsageError("give either -s (server) or -c HOST (client)");
    if (o.server && !client_only.empty()) throw UsageError(client_only + " is a client option");
    if (!o.server && !server_only.empty()) throw UsageError(server_only + " is a server option");
    if (limits > 1) throw UsageError("-t, -n and -k exclude each other");
    if (saw_l && saw_sizes) throw UsageError("-l and --sizes exclude each other");
    if (o.reverse && o.mode == Mode::pingpong) throw UsageError("-R is for stream mode");
    if (!o.size_min) o.size_min = o.size_max = o.mode == Mode::stream ? 128 * 1024 : 64;
    return o;
}

// ---- server ---------------------------------------------------------------------------------------

// Written by the session tracker and the signal handlers, read by the accept loop: the self-pipe that
// wakes poll(). 'S': the first session is over (-1). 'Q': SIGINT/SIGTERM.
int g_wake_fd = -1;

void on_quit_signal(int) {
    int saved = errno;  // the handler must not disturb the interrupted code's errno
    char c = 'Q';
    [[maybe_unused]] ssize_t n = ::write(g_wake_fd, &c, 1);
    errno = saved;
}

// -1 bookkeeping: the first session seen (the first accepted header) and how its streams ended.
class Sessions {
public:
    explicit Sessions(bool one_shot) : one_shot_(one_shot) {}

    void claim(const Header& h) {
        std::lock_guard lock(mutex_);
        if (have_first_) return;
        have_first_ = true;
        first_ = h.session;
        expected_ = h.nstreams;
    }

    void finished(std::uint64_t session, bool ok) {
        std::lock_guard lock(mutex_);
        if (!have_first_ || session != first_) return;
        all_ok_ = all_ok_ && ok;
        if (++done_ == expected_ && one_shot_) {  // -1: tell the accept loop to finish
            char c = 'S';
            [[maybe_unused]] ssize_t n = ::write(g_wake_fd, &c, 1);
        }
    }

    // "session ID: N of M streams finished, ..." and whether all went right.
    std::pair<std::string, bool> summary() {
        std::lock_guard lock(mutex_);
        if (!have_first_) return {"no client session", false};
        bool ok = all_ok_ && done_ == expected_;
        return {strf("session %016" PRIx64 ": %" PRIu32 " of %" PRIu32 " streams finished, %s", first_, done_,
                     expected_, ok ? "all ok" : "NOT all ok"),
                ok};
    }

private:
    std::mutex mutex_;
    const bool one_shot_;
    bool have_first_ = false, all_ok_ = true;
    std::uint64_t first_ = 0;
    std::uint32_t expected_ = 0, done_ = 0;
};

// One accepted connection and the thread serving it. The accept loop owns the descriptor and closes
// it only after the thread is joined, so shutting it down to cut a thread off can never hit a reused fd.
struct Worker {
    Fd fd;
    std::string peer;
    std::thread thread;
    std::atomic<bool> done{false};
};

std::string address_text(const sockaddr* sa, socklen_t len) {
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (::getnameinfo(sa, len, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return "?";
    return sa->sa_family == AF_INET6 ? strf("[%s]:%s", host, serv) : strf("%s:%s", host, serv);
}

std::string stream_title(const Header& h) {
    const char* what = h.mode == Mode::pingpong ? "pingpong"
                       : h.reverse              ? "stream server->client"
                                                : "stream client->server";
    return strf("session %016" PRIx64 " stream %" PRIu32 "/%" PRIu32 " %s", h.session, h.stream + 1, h.nstreams, what);
}

// Serves one connection; returns whether the stream went right. Lines go to stdout (result) or
// stderr (failure).
bool serve_stream(Worker& w, Sessions& sessions) {
    Conn c(w.fd.get());
    Header h;
    bool claimed = false, ok = false;
    try {
        h = accept_header(c);
        sessions.claim(h);
        claimed = true;
        if (h.nonblock) set_nonblock(w.fd.get());
        if (h.mode == Mode::pingpong) set_nodelay(w.fd.get());
        const auto t0 = Clock::now();
        Result r;
        std::string problem;
        if (h.mode == Mode::pingpong) {
            r = pong(c, h);
            send_result(c, r);
            problem = result_problem(r, expected_bytes(h), "server");
        } else if (!h.reverse) {
            r = recv_stream(c, h);
            send_result(c, r);
            problem = result_problem(r, expected_bytes(h), "server");
        } else {
            std::uint64_t sent = send_stream(c, h);
            r = recv_result(c);
            problem = result_problem(r, sent, "client");
        }
        double secs = seconds_between(t0, Clock::now());
        std::string verdict = !problem.empty()           ? problem
                              : r.check == Check::ok     ? "verified"
                                                         : "not verified (no --verify)";
        std::string line = strf("%s %s: %" PRIu64 " bytes in %.3f s, %.2f Gbit/s, %s", w.peer.c_str(),
                                stream_title(h).c_str(), r.bytes, secs, gbit_per_s(r.bytes, secs), verdict.c_str());
        if (h.nonblock) line += strf(" (nonblock: %" PRIu64 " waits in poll)", c.would_block());
        say(problem.empty() ? stdout : stderr, "sdxperf: " + line);
        ok = problem.empty();
    } catch (const std::exception& e) {
        say(stderr, strf("sdxperf: %s%s%s: %s", w.peer.c_str(), claimed ? " " : "",
                         claimed ? stream_title(h).c_str() : "", e.what()));
    }
    if (claimed) sessions.finished(h.session, ok);
    return ok;
}

// A listening socket: -B's address, else dual-stack IPv6 (IPv4 clients appear as ::ffff:a.b.c.d), or
// IPv4 where the host has no IPv6.
Fd open_listener(const Options& o) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    std::uint16_t port = static_cast<std::uint16_t>(std::stoi(o.port));
    auto use_v4 = [&](const in_addr& a) {
        auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
        s4->sin_family = AF_INET, s4->sin_port = htons(port), s4->sin_addr = a;
        len = sizeof *s4;
    };
    auto use_v6 = [&](const in6_addr& a) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6, s6->sin6_port = htons(port), s6->sin6_addr = a;
        len = sizeof *s6;
    };
    in_addr a4{};
    in6_addr a6{};
    if (o.bind.empty()) use_v6(in6addr_any);
    else if (::inet_pton(AF_INET, o.bind.c_str(), &a4) == 1) use_v4(a4);
    else if (::inet_pton(AF_INET6, o.bind.c_str(), &a6) == 1) use_v6(a6);

    // Non-blocking: poll() said readable, but the connection may be gone by accept() time.
    const int type = SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK;
    Fd fd(::socket(ss.ss_family, type, 0));
    if (fd.get() < 0 && o.bind.empty() && errno == EAFNOSUPPORT) {
        a4.s_addr = htonl(INADDR_ANY);
        use_v4(a4);
        fd = Fd(::socket(AF_INET, type, 0));
    }
    if (fd.get() < 0) fail_errno("socket");
    int zero = 0, one = 1;
    if (ss.ss_family == AF_INET6 && o.bind.empty() &&
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) < 0)
        fail_errno("setsockopt(IPV6_V6ONLY)");
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        fail_errno("setsockopt(SO_REUSEADDR)");
    const std::string where = address_text(reinterpret_cast<sockaddr*>(&ss), len);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0) fail_errno("bind to " + where);
    if (::listen(fd.get(), SOMAXCONN) < 0) fail_errno("listen on " + where);
    say(stdout, "sdxperf: listening on " + where);
    return fd;
}

// accept() errors that concern one connection only (accept(2): pending network errors are reported
// by accept on Linux): try the next one.
bool transient_accept_error(int err) {
    switch (err) {
    case EINTR: case EAGAIN: case ECONNABORTED: case EPROTO: case EPERM: case ENETDOWN: case ENOPROTOOPT:
    case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

// Joins the threads that are done and closes their connections.
void reap(std::list<Worker>& workers) {
    for (auto it = workers.begin(); it != workers.end();) {
        if (it->done.load(std::memory_order_acquire)) {
            it->thread.join();
            it = workers.erase(it);
        } else {
            ++it;
        }
    }
}

int run_server(const Options& o) {
    Fd listener = open_listener(o);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) < 0) fail_errno("pipe");
    Fd wake_r(pipe_fds[0]), wake_w(pipe_fds[1]);
    g_wake_fd = wake_w.get();
    // SIGINT/SIGTERM end the server through the loop below, so it exits normally (joined threads,
    // exit handlers run) rather than dying mid-write.
    struct sigaction sa{};
    sa.sa_handler = on_quit_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);

    Sessions sessions(o.one_shot);
    std::list<Worker> workers;
    int status = 0;
    bool first_session_over = false;
    for (;;) {
        pollfd p[2] = {{listener.get(), POLLIN, 0}, {wake_r.get(), POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            say(stderr, strf("sdxperf: poll: %s", std::strerror(errno)));
            status = 1;
            break;
        }
        reap(workers);
        if (p[1].revents != 0) {
            char why = 0;
            [[maybe_unused]] ssize_t n = ::read(wake_r.get(), &why, 1);
            first_session_over = why == 'S';
            break;
        }
        if (p[0].revents == 0) continue;
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        int cfd = ::accept4(listener.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
        if (cfd < 0) {
            if (transient_accept_error(errno)) continue;
            say(stderr, strf("sdxperf: accept: %s", std::strerror(errno)));
            status = 1;
            break;
        }
        Worker& w = workers.emplace_back();
        w.fd = Fd(cfd);
        w.peer = address_text(reinterpret_cast<sockaddr*>(&ss), len);
        try {
            w.thread = std::thread([&w, &sessions] {
                serve_stream(w, sessions);
                w.done.store(true, std::memory_order_release);
            });
        } catch (const std::system_error& e) {  // out of threads: refuse this client, serve the others
            say(stderr, strf("sdxperf: %s: cannot start a thread: %s", w.peer.c_str(), e.what()));
            workers.pop_back();
        }
    }
    // New clients are refused from here on; streams still running (other sessions, or all of them on
    // SIGINT) are cut off: shutdown() wakes their threads out of recv/send/poll with an error.
    listener.reset();
    for (auto& w : workers)
        if (!w.done.load(std::memory_order_acquire)) ::shutdown(w.fd.get(), SHUT_RDWR);
    for (auto& w : workers) w.thread.join();
    workers.clear();
    g_wake_fd = -1;
    if (o.one_shot && status == 0) {
        auto [text, ok] = sessions.summary();
        say(ok ? stdout : stderr, "sdxperf: " + text);
        if (!first_session_over || !ok) status = 1;
    }
    return status;
}

// ---- client ---------------------------------------------------------------------------------------

// What the client learnt about one stream.
struct StreamReport {
    std::string error;         // empty: the stream went right
    std::uint64_t bytes = 0;   // payload bytes the receiving end(s) got
    Check check = Check::not_asked;
    bool started = false;
    Clock::time_point start, end;
    std::uint64_t round_trips = 0;
    std::vector<double> half_rtt_us;
    std::uint64_t would_block = 0;
};

// 0 or an errno. A non-blocking connect (or one interrupted by a signal, which carries on in the
// background) is complete when the socket turns writable; SO_ERROR then holds its outcome.
int connect_fd(int fd, const sockaddr* sa, socklen_t len) {
    if (::connect(fd, sa, len) == 0) return 0;
    if (errno != EINPROGRESS && errno != EINTR) return errno;
    pollfd p{fd, POLLOUT, 0};
    while (::poll(&p, 1, -1) < 0)
        if (errno != EINTR) return errno;
    int err = 0;
    socklen_t l = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) return errno;
    return err;
}

// Tries each address of the host in turn, like any well-behaved client.
Fd connect_to(const addrinfo* addrs, const Options& o) {
    std::string last = "no address for " + o.host;
    for (const addrinfo* a = addrs; a; a = a->ai_next) {
        Fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | (o.nonblock ? SOCK_NONBLOCK : 0),
                       a->ai_protocol));
        if (fd.get() < 0) {
            last = strf("socket: %s", std::strerror(errno));
            continue;
        }
        int err = connect_fd(fd.get(), a->ai_addr, a->ai_addrlen);
        if (err == 0) return fd;
        last = strf("connect to %s: %s", address_text(a->ai_addr, a->ai_addrlen).c_str(), std::strerror(err));
    }
    throw Failure(last);
}

// An even share of total for stream i of n (the first streams take the remainder).
std::uint64_t share(std::uint64_t total, std::uint32_t n, std::uint32_t i) {
    return total / n + (i < total % n ? 1 : 0);
}

Header stream_header(const Options& o, std::uint64_t session, std::uint64_t seed, std::uint32_t i) {
    Header h;
    h.mode = o.mode;
    h.reverse = o.reverse;
    h.verify = o.verify;
    h.nonblock = o.nonblock;
    h.stream = i;
    h.nstreams = o.streams;
    h.session = session;
    h.seed = seed;
    h.size_min = *o.size_min;
    h.size_max = *o.size_max;
    h.limit = o.limit;
    h.amount = o.limit == Limit::duration ? static_cast<std::uint64_t>(std::llround(o.seconds * 1e6))
                                          : share(o.amount, o.streams, i);
    return h;
}

// One stream of the client: connect, handshake, wait for the other streams, run, judge.
void run_stream(const Options& o, const addrinfo* addrs, const Header& h, std::barrier<>& start, StreamReport& r) {
    bool arrived = false;
    PingResult p;
    try {
        Fd fd = connect_to(addrs, o);
        Conn c(fd.get());
        if (h.mode == Mode::pingpong) set_nodelay(fd.get());
        send_header(c, h);
        expect_ack(c);
        // All streams start together, so the run's time span is the data's, not the connects'.
        start.arrive_and_wait();
        arrived = true;
        r.start = Clock::now();
        r.started = true;
        if (h.mode == Mode::pingpong) {
            ping(c, h, p);
            Result theirs = recv_result(c);
            r.end = Clock::now();
            r.bytes = p.bytes + theirs.bytes;
            r.error = result_problem(theirs, p.bytes, "server");
            if (r.error.empty() && p.check == Check::mismatch)
                r.error = strf("reply data mismatch at byte offset %" PRIu64 " (found by the client)", p.first_bad);
            r.check = theirs.check == Check::mismatch || p.check == Check::mismatch ? Check::mismatch : p.check;
        } else if (!h.reverse) {
            std::uint64_t sent = send_stream(c, h);
            Result theirs = recv_result(c);
            r.end = Clock::now();
            r.bytes = theirs.bytes;
            r.check = theirs.check;
            r.error = result_problem(theirs, sent, "server");
        } else {
            Result mine = recv_stream(c, h);
            r.end = Clock::now();
            send_result(c, mine);  // the server learns how its stream went
            r.bytes = mine.bytes;
            r.check = mine.check;
            r.error = result_problem(mine, expected_bytes(h), "client");
        }
        r.would_block = c.would_block();
    } catch (const std::exception& e) {
        r.error = e.what();
        if (!arrived) start.arrive_and_drop();  // the other streams must not wait for this one
        if (r.started) r.end = Clock::now();
    }
    r.round_trips = p.rounds;
    r.half_rtt_us = std::move(p.half_rtt_us);
}

// Linear rank: the smallest sample with at least q of all samples at or below it.
double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) return 0;
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

struct Summary {
    std::uint64_t bytes = 0, round_trips = 0, would_block = 0;
    double seconds = 0;
    unsigned errors = 0;
    bool verified = true;  // with --verify: every stream checked and right
    std::vector<double> half_rtt_us;  // all streams, sorted
};

Summary summarize(const std::vector<StreamReport>& reports) {
    Summary s;
    std::optional<Clock::time_point> first, last;
    for (const auto& r : reports) {
        s.bytes += r.bytes;
        s.round_trips += r.round_trips;
        s.would_block += r.would_block;
        if (!r.error.empty()) ++s.errors;
        if (!r.error.empty() || r.check != Check::ok) s.verified = false;
        if (r.started) {
            first = first ? std::min(*first, r.start) : r.start;
            last = last ? std::max(*last, r.end) : r.end;
        }
        s.half_rtt_us.insert(s.half_rtt_us.end(), r.half_rtt_us.begin(), r.half_rtt_us.end());
    }
    if (first) s.seconds = seconds_between(*first, *last);
    std::sort(s.half_rtt_us.begin(), s.half_rtt_us.end());
    return s;
}

std::string sizes_text(const Options& o) {
    return *o.size_min == *o.size_max ? size_text(*o.size_min)
                                      : size_text(*o.size_min) + "-" + size_text(*o.size_max);
}

void print_text(const Options& o, std::uint64_t seed, const std::vector<StreamReport>& reports, const Summary& s) {
    const bool ping_mode = o.mode == Mode::pingpong;
    std::printf("sdxperf: %s, %" PRIu32 " stream%s, %s %s, seed %" PRIu64 "%s%s\n",
                ping_mode ? "pingpong" : o.reverse ? "stream server->client" : "stream client->server", o.streams,
                o.streams == 1 ? "" : "s", ping_mode ? "messages of" : "calls of", sizes_text(o).c_str(), seed,
                o.verify ? ", verify" : "", o.nonblock ? ", nonblock" : "");
    if (reports.size() > 1) {
        for (std::size_t i = 0; i < reports.size(); ++i) {
            const auto& r = reports[i];
            std::printf("  stream %zu: %" PRIu64 " bytes, %s\n", i + 1, r.bytes,
                        !r.error.empty()         ? "FAILED"
                        : r.check == Check::ok   ? "verified"
                                                 : "ok");
        }
    }
    if (ping_mode)
        std::printf("round trips %" PRIu64 ", RTT/2 us: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", s.round_trips,
                    percentile(s.half_rtt_us, 0.50), percentile(s.half_rtt_us, 0.90), percentile(s.half_rtt_us, 0.99),
                    s.half_rtt_us.empty() ? 0.0 : s.half_rtt_us.back());
    std::printf("total: %" PRIu64 " bytes in %.3f s = %.2f Gbit/s, %s\n", s.bytes, s.seconds,
                gbit_per_s(s.bytes, s.seconds),
                s.errors      ? "FAILED"
                : !o.verify   ? "not verified"
                : s.verified  ? "verified"
                              : "NOT verified");
    if (o.nonblock) std::printf("nonblock: %" PRIu64 " waits in poll()\n", s.would_block);
}

void print_json(const Options& o, std::uint64_t seed, const Summary& s) {
    std::string j = strf("{\"mode\":\"%s\",\"reverse\":%s,\"streams\":%" PRIu32 ",\"bytes\":%" PRIu64
                         ",\"seconds\":%.6f,\"gbit_per_s\":%.4f",
                         o.mode == Mode::pingpong ? "pingpong" : "stream", o.reverse ? "true" : "false", o.streams,
                         s.bytes, s.seconds, gbit_per_s(s.bytes, s.seconds));
    if (o.mode == Mode::pingpong)
        j += strf(",\"round_trips\":%" PRIu64 ",\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,\"max_us\":%.3f",
                  s.round_trips, percentile(s.half_rtt_us, 0.50), percentile(s.half_rtt_us, 0.90),
                  percentile(s.half_rtt_us, 0.99), s.half_rtt_us.empty() ? 0.0 : s.half_rtt_us.back());
    j += strf(",\"verified\":%s,\"errors\":%u,\"seed\":%" PRIu64 ",\"size_min\":%" PRIu64 ",\"size_max\":%" PRIu64
              ",\"nonblock\":%s,\"would_block\":%" PRIu64 "}",
              !o.verify ? "null" : s.verified ? "true" : "false", s.errors, seed, *o.size_min, *o.size_max,
              o.nonblock ? "true" : "false", s.would_block);
    std::puts(j.c_str());
}

std::uint64_t random_u64() {
    std::random_device rd;
    return (std::uint64_t{rd()} << 32 | rd()) ^
           static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
}

int run_client(const Options& o) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* addrs = nullptr;
    if (int rc = ::getaddrinfo(o.host.c_str(), o.port.c_str(), &hints, &addrs); rc != 0)
        throw Failure(strf("cannot resolve %s: %s", o.host.c_str(),
                           rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc)));
    const std::uint64_t seed = o.seed ? *o.seed : random_u64();
    const std::uint64_t session = random_u64();

    std::vector<StreamReport> reports(o.streams);
    {
        std::barrier<> start(o.streams);
        std::vector<std::thread> threads;
        for (std::uint32_t i = 0; i < o.streams; ++i) {
            try {
                threads.emplace_back(run_stream, std::cref(o), addrs, stream_header(o, session, seed, i),
                                     std::ref(start), std::ref(reports[i]));
            } catch (const std::system_error& e) {
                // Out of threads: this stream fails, and the started ones must not wait for it.
                reports[i].error = strf("cannot start a thread: %s", e.what());
                start.arrive_and_drop();
            }
        }
        for (auto& t : threads) t.join();
    }
    ::freeaddrinfo(addrs);

    for (std::size_t i = 0; i < reports.size(); ++i)
        if (!reports[i].error.empty())
            std::fprintf(stderr, "sdxperf: stream %zu of %" PRIu32 ": %s\n", i + 1, o.streams,
                         reports[i].error.c_str());
    Summary s = summarize(reports);
    if (o.json) print_json(o, seed, s);
    else print_text(o, seed, reports, s);
    std::fflush(stdout);
    return s.errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    // A peer that goes away must be an error return (EPIPE), never a signal that kills the tool: belt
    // and braces with MSG_NOSIGNAL.
    ::signal(SIGPIPE, SIG_IGN);
    Options o;
    try {
        o = parse_args(argc, argv);
    } catch (const UsageError& e) {
        std::fprintf(stderr, "sdxperf: %s\n\n", e.what());
        usage(stderr);
        return 2;
    }
    if (o.help) {
        usage(stdout);
        return 0;
    }
    try {
        return o.server ? run_server(o) : run_client(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sdxperf: %s\n", e.what());
        return 1;
    }
}
