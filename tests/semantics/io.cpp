// Data path: every read and write entry point moving checksummed pseudo-random streams of up to a
// few MiB over loopback TCP, plus MSG_PEEK, MSG_WAITALL, MSG_DONTWAIT, MSG_TRUNC, MSG_OOB with
// SIOCATMARK and SO_OOBINLINE, EPIPE/SIGPIPE, sendfile/sendfile64 and splice, and the error paths.
#include "check.hpp"

#include <limits.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/uio.h>

#include <string>
#include <vector>

using namespace sem;

namespace {

// ---------------------------------------------------------------- transfers

enum class Tx { write, writev, send, sendto, sendmsg, sendmmsg, sendfile, sendfile64 };
enum class Rx { read, readv, recv, recvfrom, recvmsg, recvmmsg, splice };

const char* tx_name(Tx t) {
    switch (t) {
        case Tx::write: return "write";
        case Tx::writev: return "writev";
        case Tx::send: return "send";
        case Tx::sendto: return "sendto";
        case Tx::sendmsg: return "sendmsg";
        case Tx::sendmmsg: return "sendmmsg";
        case Tx::sendfile: return "sendfile";
        case Tx::sendfile64: return "sendfile64";
    }
    return "?";
}
const char* rx_name(Rx r) {
    switch (r) {
        case Rx::read: return "read";
        case Rx::readv: return "readv";
        case Rx::recv: return "recv";
        case Rx::recvfrom: return "recvfrom";
        case Rx::recvmsg: return "recvmsg";
        case Rx::recvmmsg: return "recvmmsg";
        case Rx::splice: return "splice";
    }
    return "?";
}

struct Sender {
    Tx kind;
    int fd;
    int file;  // sendfile source (same bytes as data)
    const unsigned char* data;
    size_t size;
    uint64_t seed;
    std::string error;  // empty when every byte went out
};

void* send_thread(void* arg) {
    auto* s = static_cast<Sender*>(arg);
    Rng rng(s->seed);
    size_t pos = 0;
    while (pos < s->size) {
        size_t chunk = rng.range(1, 256 * 1024);
        if (chunk > s->size - pos) chunk = s->size - pos;
        const unsigned char* p = s->data + pos;
        ssize_t n = -1;
        switch (s->kind) {
            case Tx::write: n = ::write(s->fd, p, chunk); break;
            case Tx::send: n = ::send(s->fd, p, chunk, 0); break;
            case Tx::sendto: n = ::sendto(s->fd, p, chunk, 0, nullptr, 0); break;
            case Tx::writev:
            case Tx::sendmsg: {
                iovec iov[4];
                int cnt = 0;
                size_t left = chunk;
                const unsigned char* q = p;
                while (left && cnt < 4) {
                    size_t piece = cnt == 3 ? left : rng.range(0, left);
                    iov[cnt++] = {const_cast<unsigned char*>(q), piece};
                    q += piece;
                    left -= piece;
                }
                if (s->kind == Tx::writev) {
                    n = ::writev(s->fd, iov, cnt);
                } else {
                    msghdr m{};
                    m.msg_iov = iov;
                    m.msg_iovlen = size_t(cnt);
                    n = ::sendmsg(s->fd, &m, 0);
                }
                break;
            }
            case Tx::sendmmsg: {
                mmsghdr v[4]{};
                iovec iov[4];
                unsigned cnt = 0;
                size_t left = chunk;
                const unsigned char* q = p;
                while (left && cnt < 4) {
                    size_t piece = cnt == 3 ? left : rng.range(1, left);
                    iov[cnt] = {const_cast<unsigned char*>(q), piece};
                    v[cnt].msg_hdr.msg_iov = &iov[cnt];
                    v[cnt].msg_hdr.msg_iovlen = 1;
                    ++cnt;
                    q += piece;
                    left -= piece;
                }
                int m = ::sendmmsg(s->fd, v, cnt, 0);
                if (m < 0) break;
                n = 0;
                for (int i = 0; i < m; ++i) n += v[i].msg_len;
                break;
            }
            case Tx::sendfile: {
                off_t off = off_t(pos);
                n = ::sendfile(s->fd, s->file, &off, chunk);
                if (n >= 0 && off != off_t(pos) + n) s->error = "sendfile offset not advanced by the count";
                break;
            }
            case Tx::sendfile64: {
                off64_t off = off64_t(pos);
                n = ::sendfile64(s->fd, s->file, &off, chunk);
                if (n >= 0 && off != off64_t(pos) + n) s->error = "sendfile64 offset not advanced by the count";
                break;
            }
        }
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            s->error = std::string(tx_name(s->kind)) + " returned " + (n < 0 ? errname(errno) : "0");
            break;
        }
        pos += size_t(n);
    }
    ::shutdown(s->fd, SHUT_WR);
    return nullptr;
}

constexpr size_t kRxBuf = 65536;

// One receive of at most `want` (<= kRxBuf) bytes, hashed into `h`.  Returns bytes, 0 at EOF, -1
// with errno.  The buffer is a local fixed-size array so that the fortify build can see its size:
// there read/recv/recvfrom become __read_chk/__recv_chk/__recvfrom_chk.
ssize_t receive(Rx kind, int fd, int pipe_r, int pipe_w, size_t want, Rng& rng, Fnv& h) {
    unsigned char buf[kRxBuf];
    want = opaque(want);  // the compiler would otherwise prove want <= kRxBuf and skip the check
    ssize_t n = -1;
    switch (kind) {
        case Rx::read: n = ::read(fd, buf, want); break;
        case Rx::recv: n = ::recv(fd, buf, want, 0); break;
        case Rx::recvfrom: {
            sockaddr_storage from;
            socklen_t fl = sizeof from;
            n = ::recvfrom(fd, buf, want, 0, reinterpret_cast<sockaddr*>(&from), &fl);
            if (n > 0 && fl != 0) {
                errno = EPROTO;  // TCP reports no source address: addrlen comes back 0
                return -1;
            }
            break;
        }
        case Rx::readv:
        case Rx::recvmsg: {
            size_t a = rng.range(0, want), b = rng.range(0, want - a);
            iovec iov[3] = {{buf, a}, {buf + a, b}, {buf + a + b, want - a - b}};
            if (kind == Rx::readv) {
                n = ::readv(fd, iov, 3);
                break;
            }
            msghdr m{};
            m.msg_iov = iov;
            m.msg_iovlen = 3;
            n = ::recvmsg(fd, &m, 0);
            if (n >= 0 && (m.msg_flags != 0 || m.msg_namelen != 0)) {
                errno = EPROTO;
                return -1;
            }
            break;
        }
        case Rx::recvmmsg: {
            mmsghdr v[4]{};
            iovec iov[4];
            size_t per = want / 4 ? want / 4 : 1;
            unsigned cnt = 0;
            for (size_t off = 0; off < want && cnt < 4; ++cnt) {
                size_t piece = cnt == 3 ? want - off : std::min(per, want - off);
                iov[cnt] = {buf + off, piece};
                v[cnt].msg_hdr.msg_iov = &iov[cnt];
                v[cnt].msg_hdr.msg_iovlen = 1;
                off += piece;
            }
            int m = ::recvmmsg(fd, v, cnt, MSG_WAITFORONE, nullptr);
            if (m < 0) return -1;
            // Each message is one stream read: a short one may be followed by a longer one when more
            // bytes arrived in between, so the stream continues in the next message's buffer.
            n = 0;
            for (int i = 0; i < m; ++i) {
                if (v[i].msg_len > iov[i].iov_len || v[i].msg_hdr.msg_flags != 0) {
                    errno = EPROTO;
                    return -1;
                }
                h.add(iov[i].iov_base, v[i].msg_len);
                n += v[i].msg_len;
            }
            return n;
        }
        case Rx::splice: {
            n = ::splice(fd, nullptr, pipe_w, nullptr, want, SPLICE_F_MOVE);
            if (n <= 0) return n;
            size_t got = 0;
            while (got < size_t(n)) {
                ssize_t r = ::read(pipe_r, buf + got, size_t(n) - got);
                if (r <= 0) return -1;
                got += size_t(r);
            }
            break;
        }
    }
    if (n > 0) h.add(buf, size_t(n));
    return n;
}

// Streams a pseudo-random payload (size and chunking from `seed`) from one end of a fresh TCP
// connection to the other and compares length and FNV-1a of what arrived.
void transfer(Tx tx, Rx rx, uint64_t seed, size_t max_size, int family = AF_INET) {
    Rng rng(seed);
    size_t size = rng.range(max_size / 2, max_size);
    std::vector<unsigned char> data(size);
    rng.fill(data.data(), size);
    Fnv want;
    want.add(data.data(), size);

    int c, s;
    tcp_pair(c, s, family);
    int file = -1;
    if (tx == Tx::sendfile || tx == Tx::sendfile64) {
        char path[] = "/tmp/sdx-sem-XXXXXX";
        file = int(must(::mkstemp(path), "mkstemp"));
        ::unlink(path);
        size_t done = 0;
        while (done < size) done += size_t(must(::write(file, data.data() + done, size - done), "write file"));
    }
    int pp[2] = {-1, -1};
    if (rx == Rx::splice) must(::pipe(pp), "pipe");

    Sender snd{tx, c, file, data.data(), size, seed ^ 0x5555, {}};
    pthread_t th;
    pthread_create(&th, nullptr, send_thread, &snd);

    Fnv got;
    size_t total = 0;
    std::string rx_error;
    Rng rr(seed ^ 0xaaaa);
    for (;;) {
        size_t want_n = rr.range(1, kRxBuf);
        ssize_t n = receive(rx, s, pp[0], pp[1], want_n, rr, got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rx_error = std::string(rx_name(rx)) + " returned " + errname(errno);
            ::close(s);  // with unread data: RST, so a sender blocked in a write gives up
            s = -1;
            break;
        }
        if (n == 0) break;
        total += size_t(n);
    }
    pthread_join(th, nullptr);
    std::string name = std::string("transfer ") + (family == AF_INET6 ? "[::1] " : "") + tx_name(tx) + " -> " + rx_name(rx) + " " +
                       std::to_string(size) + " bytes";
    if (!snd.error.empty()) fail(name, "sender: " + snd.error);
    else if (!rx_error.empty()) fail(name, "receiver: " + rx_error);
    else if (total != size) fail(name, "received " + std::to_string(total) + " bytes");
    else expect(name, got.h == want.h, "fnv " + hex(want.h) + ", then EOF", "fnv " + hex(got.h));
    close_all({c, s, file, pp[0], pp[1]});
}

void test_transfers() {
    // A sender that fails (after a receiver error) must not be killed by SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    const size_t MiB = 1 << 20;
    transfer(Tx::write, Rx::read, 1, 3 * MiB);
    transfer(Tx::writev, Rx::readv, 2, 3 * MiB);
    transfer(Tx::send, Rx::recv, 3, 3 * MiB);
    transfer(Tx::sendto, Rx::recvfrom, 4, 2 * MiB);
    transfer(Tx::sendmsg, Rx::recvmsg, 5, 3 * MiB);
    transfer(Tx::sendmmsg, Rx::recvmmsg, 6, 2 * MiB);
    transfer(Tx::sendfile, Rx::recv, 7, 3 * MiB);
    transfer(Tx::sendfile64, Rx::read, 8, 2 * MiB);
    transfer(Tx::send, Rx::splice, 9, 2 * MiB);
    transfer(Tx::write, Rx::recvmmsg, 10, 1 * MiB);
    transfer(Tx::sendmmsg, Rx::read, 11, 1 * MiB);
    transfer(Tx::writev, Rx::recvfrom, 12, 1 * MiB, AF_INET6);
    transfer(Tx::sendmsg, Rx::splice, 13, 1 * MiB, AF_INET6);
    // Tiny transfers: chunking edge cases near 1 byte.
    transfer(Tx::send, Rx::read, 14, 2);
    transfer(Tx::write, Rx::recvmsg, 15, 17);
}

// ---------------------------------------------------------------- flags

void test_flags() {
    int c, s;
    tcp_pair(c, s);
    char b[64];
    expect_ret("recv MSG_DONTWAIT on empty blocking socket", SEM_CALL(::recv(s, b, sizeof b, MSG_DONTWAIT)), -1, EAGAIN);
    expect_ret("recvfrom MSG_DONTWAIT empty", SEM_CALL(::recvfrom(s, b, sizeof b, MSG_DONTWAIT, nullptr, nullptr)), -1, EAGAIN);
    expect_ret("recv MSG_PEEK|MSG_DONTWAIT empty", SEM_CALL(::recv(s, b, sizeof b, MSG_PEEK | MSG_DONTWAIT)), -1, EAGAIN);
    // TCP: a zero-length recv still waits for data (the kernel's target is at least 1 byte).
    expect_ret("recv length 0 MSG_DONTWAIT on empty socket", SEM_CALL(::recv(s, b, 0, MSG_DONTWAIT)), -1, EAGAIN);
    expect_ret("send length 0", SEM_CALL(::send(c, b, 0, 0)), 0);
    expect_ret("write length 0", SEM_CALL(::write(c, b, 0)), 0);

    expect_ret("send hello", SEM_CALL(::send(c, "hello", 5, 0)), 5);
    wait_events(s, POLLIN);
    expect_ret("recv length 0 with data queued", SEM_CALL(::recv(s, b, 0, 0)), 0);
    expect_ret("read length 0 with data queued", SEM_CALL(::read(s, b, 0)), 0);
    expect_ret("recv MSG_PEEK", SEM_CALL(::recv(s, b, sizeof b, MSG_PEEK)), 5);
    expect_str("MSG_PEEK data", std::string(b, 5), "hello");
    expect_ret("recv MSG_PEEK again (not consumed)", SEM_CALL(::recv(s, b, 3, MSG_PEEK)), 3);
    expect_ret("recvfrom MSG_PEEK", SEM_CALL(::recvfrom(s, b, sizeof b, MSG_PEEK, nullptr, nullptr)), 5);
    expect_ret("read after peek", SEM_CALL(::read(s, b, sizeof b)), 5);
    expect_str("read after peek data", std::string(b, 5), "hello");
    expect_ret("recv MSG_DONTWAIT after draining", SEM_CALL(::recv(s, b, sizeof b, MSG_DONTWAIT)), -1, EAGAIN);

    // Without MSG_WAITALL a recv returns what is there; with it, it waits for the rest.
    expect_ret("send 4", SEM_CALL(::send(c, "abcd", 4, 0)), 4);
    wait_events(s, POLLIN);
    expect_ret("recv 8 with 4 available", SEM_CALL(::recv(s, b, 8, 0)), 4);

    struct W {
        int fd;
        pid_t tid;
        std::atomic<bool> started{false};
        R r{0, 0};
        char buf[16];
    } w;
    w.fd = s;
    expect_ret("send first half", SEM_CALL(::send(c, "0123", 4, 0)), 4);
    wait_events(s, POLLIN);
    pthread_t th;
    pthread_create(&th, nullptr, [](void* a) -> void* {
        auto* x = static_cast<W*>(a);
        x->tid = tid();
        x->started = true;
        x->r = SEM_CALL(::recv(x->fd, x->buf, 8, MSG_WAITALL));
        return nullptr;
    }, &w);
    wait_flag(w.started);
    expect("MSG_WAITALL: receiver blocked in recvfrom with half the data", wait_in_syscall(w.tid, SYS_recvfrom), "blocked");
    expect_ret("send second half", SEM_CALL(::send(c, "4567", 4, 0)), 4);
    pthread_join(th, nullptr);
    expect_ret("recv MSG_WAITALL 8", w.r, 8);
    expect_str("MSG_WAITALL data", std::string(w.buf, 8), "01234567");

    // MSG_WAITALL returns short at EOF.
    expect_ret("send 3 then shutdown", SEM_CALL(::send(c, "xyz", 3, 0)), 3);
    ::shutdown(c, SHUT_WR);
    expect_ret("recv MSG_WAITALL 8 at EOF", SEM_CALL(::recv(s, b, 8, MSG_WAITALL)), 3);
    expect_ret("recv at EOF", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    expect_ret("recv MSG_DONTWAIT at EOF", SEM_CALL(::recv(s, b, sizeof b, MSG_DONTWAIT)), 0);
    close_all({c, s});

    // MSG_TRUNC on TCP discards the bytes instead of copying them.
    tcp_pair(c, s);
    send_all(c, "discard-keep", 12);
    wait_events(s, POLLIN);
    expect_ret("recv MSG_TRUNC 8 (TCP: discard)", SEM_CALL(::recv(s, nullptr, 8, MSG_TRUNC)), 8);
    expect_str("data after MSG_TRUNC", recv_exact(s, 4), "keep");

    // MSG_DONTWAIT send fills the socket buffers, then EAGAIN; everything accepted arrives.
    size_t sent = 0;
    std::vector<char> chunk(65536, 'f');
    R r{0, 0};
    for (int i = 0; i < 4096; ++i) {
        r = SEM_CALL(::send(c, chunk.data(), chunk.size(), MSG_DONTWAIT));
        if (r.ret < 0) break;
        sent += size_t(r.ret);
    }
    expect_ret("send MSG_DONTWAIT until the buffers are full", r, -1, EAGAIN);
    ::shutdown(c, SHUT_WR);
    size_t drained = 0;
    for (;;) {
        ssize_t n = ::recv(s, b, sizeof b, 0);
        if (n <= 0) break;
        drained += size_t(n);
    }
    expect("everything accepted by MSG_DONTWAIT sends arrives", drained == sent, "equal byte counts",
           std::to_string(drained) + " of " + std::to_string(sent));
    close_all({c, s});
}

// ---------------------------------------------------------------- urgent data

void test_oob() {
    int c, s;
    tcp_pair(c, s);
    int mark = -1;
    char b[16];
    expect_ret("send abc", SEM_CALL(::send(c, "abc", 3, 0)), 3);
    expect_ret("send ! MSG_OOB", SEM_CALL(::send(c, "!", 1, MSG_OOB)), 1);
    expect("POLLPRI once urgent data arrived", (wait_events(s, POLLPRI) & POLLPRI) != 0, "POLLPRI");
    ::ioctl(s, SIOCATMARK, &mark);
    expect_eq("SIOCATMARK before the mark", mark, 0);
    expect_ret("recv stops at the mark", SEM_CALL(::recv(s, b, sizeof b, 0)), 3);
    expect_str("data before the mark", std::string(b, 3), "abc");
    expect_ret("ioctl SIOCATMARK", SEM_CALL(::ioctl(s, SIOCATMARK, &mark)), 0);
    expect_eq("SIOCATMARK at the mark", mark, 1);
    expect_ret("recv MSG_OOB", SEM_CALL(::recv(s, b, sizeof b, MSG_OOB)), 1);
    expect_str("urgent byte", std::string(b, 1), "!");
    expect_ret("recv MSG_OOB again", SEM_CALL(::recv(s, b, sizeof b, MSG_OOB)), -1, EINVAL);
    expect_ret("urgent byte is not inline", SEM_CALL(::recv(s, b, sizeof b, MSG_DONTWAIT)), -1, EAGAIN);
    expect_ret("send def", SEM_CALL(::send(c, "def", 3, 0)), 3);
    expect_str("normal data after the urgent byte", recv_exact(s, 3), "def");
    expect_ret("recv MSG_OOB with no urgent data", SEM_CALL(::recv(s, b, sizeof b, MSG_OOB | MSG_DONTWAIT)), -1, EINVAL);
    close_all({c, s});

    // SO_OOBINLINE: the urgent byte stays in the stream; MSG_OOB is refused.
    tcp_pair(c, s);
    int on = 1;
    expect_ret("setsockopt SO_OOBINLINE", SEM_CALL(::setsockopt(s, SOL_SOCKET, SO_OOBINLINE, &on, sizeof on)), 0);
    send_all(c, "abc", 3);
    expect_ret("send ! MSG_OOB (inline receiver)", SEM_CALL(::send(c, "!", 1, MSG_OOB)), 1);
    send_all(c, "def", 3);
    expect("inline: POLLPRI", (wait_events(s, POLLPRI) & POLLPRI) != 0, "POLLPRI");
    expect_ret("inline: recv stops at the mark", SEM_CALL(::recv(s, b, sizeof b, 0)), 3);
    ::ioctl(s, SIOCATMARK, &mark);
    expect_eq("inline: SIOCATMARK at the mark", mark, 1);
    expect_ret("inline: recv MSG_OOB", SEM_CALL(::recv(s, b, sizeof b, MSG_OOB)), -1, EINVAL);
    expect_ret("inline: recv MSG_WAITALL 4", SEM_CALL(::recv(s, b, 4, MSG_WAITALL)), 4);
    expect_str("inline: urgent byte in the stream", std::string(b, 4), "!def");
    ::ioctl(s, SIOCATMARK, &mark);
    expect_eq("inline: SIOCATMARK past the mark", mark, 0);
    close_all({c, s});
}

// ---------------------------------------------------------------- EPIPE and SIGPIPE

std::atomic<int> g_sigpipes{0};
void on_sigpipe(int) { g_sigpipes.fetch_add(1); }

void test_epipe() {
    struct sigaction sa{}, old{};
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, &old);

    int c, s;
    tcp_pair(c, s);
    ::shutdown(c, SHUT_WR);
    expect_ret("send after SHUT_WR with MSG_NOSIGNAL", SEM_CALL(::send(c, "x", 1, MSG_NOSIGNAL)), -1, EPIPE);
    expect_eq("MSG_NOSIGNAL: no SIGPIPE", g_sigpipes.load(), 0);
    expect_ret("send after SHUT_WR without MSG_NOSIGNAL", SEM_CALL(::send(c, "x", 1, 0)), -1, EPIPE);
    expect_eq("SIGPIPE delivered", g_sigpipes.load(), 1);
    expect_ret("write after SHUT_WR", SEM_CALL(::write(c, "x", 1)), -1, EPIPE);
    expect_eq("write: SIGPIPE delivered", g_sigpipes.load(), 2);
    iovec iov{const_cast<char*>("x"), 1};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    expect_ret("sendmsg after SHUT_WR MSG_NOSIGNAL", SEM_CALL(::sendmsg(c, &m, MSG_NOSIGNAL)), -1, EPIPE);
    expect_ret("writev after SHUT_WR", SEM_CALL(::writev(c, &iov, 1)), -1, EPIPE);
    expect_eq("writev: SIGPIPE delivered", g_sigpipes.load(), 3);
    close_all({c, s});

    // Peer closed: the first send is accepted, the peer answers with RST, then EPIPE.
    tcp_pair(c, s);
    ::close(s);
    expect("peer closed: POLLRDHUP", (wait_events(c, POLLRDHUP) & POLLRDHUP) != 0, "POLLRDHUP");
    expect_ret("send to closed peer (accepted)", SEM_CALL(::send(c, "x", 1, MSG_NOSIGNAL)), 1);
    expect("peer's RST: POLLERR", (wait_events(c, POLLERR) & POLLERR) != 0, "POLLERR");
    expect_ret("send after RST in CLOSE_WAIT, MSG_NOSIGNAL", SEM_CALL(::send(c, "x", 1, MSG_NOSIGNAL)), -1, EPIPE);
    expect_ret("send again, MSG_NOSIGNAL", SEM_CALL(::send(c, "x", 1, MSG_NOSIGNAL)), -1, EPIPE);
    expect_eq("still no SIGPIPE for MSG_NOSIGNAL", g_sigpipes.load(), 3);
    char b[8];
    expect_ret("recv after RST", SEM_CALL(::recv(c, b, sizeof b, 0)), 0);
    ::close(c);

    // A peer that closes with unread data resets the connection.
    tcp_pair(c, s);
    send_all(c, "unread", 6);
    wait_events(s, POLLIN);
    ::close(s);
    expect("close with unread data: POLLERR", (wait_events(c, POLLERR) & POLLERR) != 0, "POLLERR");
    expect_ret("recv after reset", SEM_CALL(::recv(c, b, sizeof b, 0)), -1, ECONNRESET);
    expect_ret("send after reset, MSG_NOSIGNAL", SEM_CALL(::send(c, "x", 1, MSG_NOSIGNAL)), -1, EPIPE);
    ::close(c);
    sigaction(SIGPIPE, &old, nullptr);
}

// ---------------------------------------------------------------- sendfile and splice

void test_sendfile_splice() {
    char path[] = "/tmp/sdx-sem-XXXXXX";
    int file = int(must(::mkstemp(path), "mkstemp"));
    ::unlink(path);
    std::string text = "0123456789abcdefghijklmnopqrstuvwxyz";
    must(::write(file, text.data(), text.size()), "write file");
    ::lseek(file, 0, SEEK_SET);
    int c, s;
    tcp_pair(c, s);

    off_t off = 10;
    expect_ret("sendfile 6 bytes at offset 10", SEM_CALL(::sendfile(c, file, &off, 6)), 6);
    expect_eq("sendfile: offset advanced", off, 16);
    expect_eq("sendfile with offset: file position unchanged", ::lseek(file, 0, SEEK_CUR), 0);
    expect_str("sendfile data", recv_exact(s, 6), "abcdef");
    expect_ret("sendfile NULL offset 4", SEM_CALL(::sendfile(c, file, nullptr, 4)), 4);
    expect_eq("sendfile NULL offset: file position advanced", ::lseek(file, 0, SEEK_CUR), 4);
    expect_str("sendfile NULL offset data", recv_exact(s, 4), "0123");
    off64_t off64 = 30;
    expect_ret("sendfile64 at offset 30, count past EOF", SEM_CALL(::sendfile64(c, file, &off64, 100)), 6);
    expect_eq("sendfile64: offset at EOF", off64, 36);
    expect_str("sendfile64 data", recv_exact(s, 6), "uvwxyz");
    expect_ret("sendfile64 at EOF", SEM_CALL(::sendfile64(c, file, &off64, 10)), 0);
    expect_ret("sendfile64 NULL offset", SEM_CALL(::sendfile64(c, file, nullptr, 2)), 2);
    expect_str("sendfile64 NULL offset data", recv_exact(s, 2), "45");
    expect_ret("sendfile count 0", SEM_CALL(::sendfile(c, file, &off, 0)), 0);
    expect_ret("sendfile bad out fd", SEM_CALL(::sendfile(-1, file, &off, 4)), -1, EBADF);
    expect_ret("sendfile bad in fd", SEM_CALL(::sendfile(c, -1, &off, 4)), -1, EBADF);
    expect_ret("sendfile64 bad out fd", SEM_CALL(::sendfile64(900, file, &off64, 4)), -1, EBADF);
    off = -1;
    expect_ret("sendfile negative offset", SEM_CALL(::sendfile(c, file, &off, 4)), -1, EINVAL);
    int wo = int(must(::open("/dev/null", O_WRONLY | O_CLOEXEC), "open"));
    off = 0;
    expect_ret("sendfile from a write-only fd", SEM_CALL(::sendfile(c, wo, &off, 4)), -1, EBADF);
    ::close(wo);
    int sd = ::shutdown(c, SHUT_WR);
    (void)sd;
    off = 0;
    expect_ret("sendfile after SHUT_WR", SEM_CALL(::sendfile(c, file, &off, 4)), -1, EPIPE);
    close_all({c, s});

    // splice: socket -> pipe.
    tcp_pair(c, s);
    int pp[2];
    must(::pipe(pp), "pipe");
    send_all(c, "spliced-bytes", 13);
    wait_events(s, POLLIN);
    expect_ret("splice socket -> pipe", SEM_CALL(::splice(s, nullptr, pp[1], nullptr, 13, 0)), 13);
    char b[32];
    expect_ret("read the pipe", SEM_CALL(::read(pp[0], b, sizeof b)), 13);
    expect_str("spliced data", std::string(b, 13), "spliced-bytes");
    // SPLICE_F_NONBLOCK concerns the pipe; the TCP side blocks unless the socket is O_NONBLOCK.
    struct Sp {
        int s, pw;
        pid_t tid;
        std::atomic<bool> started{false};
        R r{0, 0};
    } sp;
    sp.s = s;
    sp.pw = pp[1];
    pthread_t th;
    pthread_create(&th, nullptr, [](void* a) -> void* {
        auto* x = static_cast<Sp*>(a);
        x->tid = tid();
        x->started = true;
        x->r = SEM_CALL(::splice(x->s, nullptr, x->pw, nullptr, 13, SPLICE_F_NONBLOCK));
        return nullptr;
    }, &sp);
    wait_flag(sp.started);
    expect("splice SPLICE_F_NONBLOCK on an empty blocking socket blocks", wait_in_syscall(sp.tid, SYS_splice), "blocked in splice");
    send_all(c, "late", 4);
    pthread_join(th, nullptr);
    expect_ret("blocked splice returns the data sent afterwards", sp.r, 4);
    expect_ret("read the pipe again", SEM_CALL(::read(pp[0], b, sizeof b)), 4);
    ::fcntl(s, F_SETFL, O_NONBLOCK);
    expect_ret("splice from an O_NONBLOCK empty socket", SEM_CALL(::splice(s, nullptr, pp[1], nullptr, 13, 0)), -1, EAGAIN);
    ::fcntl(s, F_SETFL, 0);
    loff_t lo = 0;
    expect_ret("splice with an offset on the socket", SEM_CALL(::splice(s, &lo, pp[1], nullptr, 13, 0)), -1, EINVAL);
    expect_ret("splice socket -> socket (no pipe)", SEM_CALL(::splice(s, nullptr, c, nullptr, 13, 0)), -1, EINVAL);
    expect_ret("splice bad fd", SEM_CALL(::splice(-1, nullptr, pp[1], nullptr, 13, 0)), -1, EBADF);
    // pipe -> socket works too.
    must(::write(pp[1], "back", 4), "write pipe");
    expect_ret("splice pipe -> socket", SEM_CALL(::splice(pp[0], nullptr, s, nullptr, 4, 0)), 4);
    expect_str("pipe -> socket data", recv_exact(c, 4), "back");
    ::shutdown(c, SHUT_WR);
    expect_ret("splice at EOF", SEM_CALL(::splice(s, nullptr, pp[1], nullptr, 13, 0)), 0);
    close_all({c, s, pp[0], pp[1], file});
}

// ---------------------------------------------------------------- error paths

void test_errors() {
    char b[16];
    int p[2];
    must(::pipe(p), "pipe");
    int u = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    iovec iov{b, sizeof b};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    mmsghdr mm{};
    mm.msg_hdr = m;

    expect_ret("read(-1)", SEM_CALL(::read(-1, b, sizeof b)), -1, EBADF);
    expect_ret("read(pipe write end)", SEM_CALL(::read(p[1], b, sizeof b)), -1, EBADF);
    expect_ret("read unconnected TCP", SEM_CALL(::read(u, b, sizeof b)), -1, ENOTCONN);
    expect_ret("readv(-1)", SEM_CALL(::readv(-1, &iov, 1)), -1, EBADF);
    volatile int minus_one = -1;  // hidden from the compiler's own argument checks
    expect_ret("readv iovcnt -1", SEM_CALL(::readv(u, &iov, minus_one)), -1, EINVAL);
    expect_ret("recv(-1)", SEM_CALL(::recv(-1, b, sizeof b, 0)), -1, EBADF);
    expect_ret("recv(pipe)", SEM_CALL(::recv(p[0], b, sizeof b, 0)), -1, ENOTSOCK);
    expect_ret("recv unconnected TCP", SEM_CALL(::recv(u, b, sizeof b, 0)), -1, ENOTCONN);
    expect_ret("recvfrom(pipe)", SEM_CALL(::recvfrom(p[0], b, sizeof b, 0, nullptr, nullptr)), -1, ENOTSOCK);
    expect_ret("recvmsg(-1)", SEM_CALL(::recvmsg(-1, &m, 0)), -1, EBADF);
    expect_ret("recvmsg unconnected TCP", SEM_CALL(::recvmsg(u, &m, 0)), -1, ENOTCONN);
    expect_ret("recvmmsg(pipe)", SEM_CALL(::recvmmsg(p[0], &mm, 1, 0, nullptr)), -1, ENOTSOCK);
    expect_ret("recvmmsg unconnected TCP", SEM_CALL(::recvmmsg(u, &mm, 1, 0, nullptr)), -1, ENOTCONN);
    expect_ret("write(-1)", SEM_CALL(::write(-1, b, sizeof b)), -1, EBADF);
    expect_ret("send unconnected TCP (MSG_NOSIGNAL)", SEM_CALL(::send(u, b, sizeof b, MSG_NOSIGNAL)), -1, EPIPE);
    expect_ret("write unconnected TCP (SIGPIPE ignored)", SEM_CALL(::write(u, b, sizeof b)), -1, EPIPE);
    std::vector<iovec> many(IOV_MAX + 1, iov);
    expect_ret("writev iovcnt IOV_MAX+1", SEM_CALL(::writev(u, many.data(), IOV_MAX + 1)), -1, EINVAL);
    expect_ret("send(-1)", SEM_CALL(::send(-1, b, sizeof b, 0)), -1, EBADF);
    expect_ret("send(pipe)", SEM_CALL(::send(p[1], b, sizeof b, 0)), -1, ENOTSOCK);
    expect_ret("sendto(pipe)", SEM_CALL(::sendto(p[1], b, sizeof b, 0, nullptr, 0)), -1, ENOTSOCK);
    expect_ret("sendmsg(pipe)", SEM_CALL(::sendmsg(p[1], &m, 0)), -1, ENOTSOCK);
    expect_ret("sendmmsg(-1)", SEM_CALL(::sendmmsg(-1, &mm, 1, 0)), -1, EBADF);
    expect_ret("sendmmsg unconnected TCP", SEM_CALL(::sendmmsg(u, &mm, 1, MSG_NOSIGNAL)), -1, EPIPE);

    int c, s;
    tcp_pair(c, s);
    sockaddr_storage other;
    socklen_t ol = loopback(other, AF_INET, htons(9));
    expect_ret("sendto with an address on connected TCP (ignored)",
               SEM_CALL(::sendto(c, "to", 2, 0, reinterpret_cast<sockaddr*>(&other), ol)), 2);
    expect_str("sendto with address: data to the peer", recv_exact(s, 2), "to");
    expect_ret("recvmmsg vlen 0", SEM_CALL(::recvmmsg(s, &mm, 0, MSG_DONTWAIT, nullptr)), 0);
    expect_ret("recvmmsg nonblocking empty", SEM_CALL(::recvmmsg(s, &mm, 1, MSG_DONTWAIT, nullptr)), -1, EAGAIN);
    expect_ret("recvmsg MSG_DONTWAIT empty", SEM_CALL(::recvmsg(s, &m, MSG_DONTWAIT)), -1, EAGAIN);
    expect_ret("sendmmsg vlen 0", SEM_CALL(::sendmmsg(c, &mm, 0, 0)), 0);
    ::shutdown(c, SHUT_WR);
    mmsghdr two[2]{};
    char b1[4], b2[4];
    iovec i1{b1, sizeof b1}, i2{b2, sizeof b2};
    two[0].msg_hdr.msg_iov = &i1;
    two[0].msg_hdr.msg_iovlen = 1;
    two[1].msg_hdr.msg_iov = &i2;
    two[1].msg_hdr.msg_iovlen = 1;
    R r = SEM_CALL(::recvmmsg(s, two, 2, 0, nullptr));
    expect("recvmmsg at EOF: every message empty", r.ret == 2 && two[0].msg_len == 0 && two[1].msg_len == 0, "2 messages of 0 bytes",
           show(r));
    close_all({c, s, u, p[0], p[1]});
}

}  // namespace

int main() {
    start();
    test_transfers();
    test_flags();
    test_oob();
    test_epipe();
    test_sendfile_splice();
    test_errors();
    return finish();
}
