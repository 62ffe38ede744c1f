// Signals against large blocking transfers, the sizes sdx moves by zero copy (a blocking send of at
// least send_zcopy_threshold, 64 KiB by default; every call here moves MiBs):
//   - 1 GiB under a storm of signals to the sending and the receiving thread, once with handlers
//     installed with SA_RESTART and once without: every byte arrives once and in order, then EOF;
//     with SA_RESTART no call fails with EINTR;
//   - one blocking send of 64 MiB, far more than the connection holds, interrupted: it returns the
//     count already taken (with SA_RESTART too), and exactly those bytes arrive; also while the
//     send's buffer is lent to the receiver (zero copy) and the receiver is not in a call;
//   - a blocking receive of 8 MiB interrupted with nothing to read (EINTR, or restarted with
//     SA_RESTART), and an 8 MiB MSG_WAITALL receive interrupted part way (the partial count).
// How many signals land, how many calls they cut short and the partial counts depend on timing,
// so the transcript names only properties of them, never the numbers.
#include "check.hpp"

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

using namespace sem;

namespace {

constexpr size_t kMiB = size_t(1) << 20;
constexpr uint64_t kStormBytes = uint64_t(1) << 30;  // per storm
constexpr size_t kBigSend = 64 * kMiB;               // the single interrupted send
constexpr size_t kBigRecv = 8 * kMiB;                // the interrupted receives
constexpr int kStormPeriodUs = 200;                  // one signal to each thread per period
constexpr int kStormMinSignals = 100;                // a storm that delivered fewer did not happen

// The stream's byte i is g_pat[i % kPeriod].  The period is odd, so no power-of-two sized call,
// ring buffer or zero-copy chunk ever lines up with it and a dropped or repeated block shows; the
// table runs kBigSend bytes past one period so that any send or comparison of up to kBigSend
// bytes, starting anywhere, is one contiguous range (and the receiver can check with memcmp,
// fast enough for 2 GiB even in the -O0 build).
constexpr size_t kPeriod = 16 * kMiB - 3;
unsigned char* g_pat = nullptr;

void make_pattern() {
    g_pat = new unsigned char[kPeriod + kBigSend];
    Rng(0x5705).fill(g_pat, kPeriod);
    for (size_t done = kPeriod; done < kPeriod + kBigSend;) {
        size_t n = std::min(kPeriod, kPeriod + kBigSend - done);
        memcpy(g_pat + done, g_pat, n);
        done += n;
    }
}
const unsigned char* pat_at(uint64_t off) { return g_pat + off % kPeriod; }
bool matches(const unsigned char* p, size_t n, uint64_t off) { return memcmp(p, pat_at(off), n) == 0; }

// Watchdog per part: start() armed 30 s for the whole program; each part re-arms it for itself.
void watchdog() { alarm(40); }

// The two ways a run is made: the signal, its counter and the name the checks carry.
struct Mode {
    int sig;
    std::atomic<int>* handled;
    const char* tag;
};
const Mode kNoRestart{SIGUSR1, &g_usr1, "no SA_RESTART"};
const Mode kRestart{SIGUSR2, &g_usr2, "SA_RESTART"};

// Reads exactly n bytes (fewer only at EOF or an error) and says whether they are the pattern
// from offset `off`.
bool recv_pattern(int fd, size_t n, uint64_t off) {
    std::vector<unsigned char> buf(n);
    size_t got = 0;
    while (got < n) {
        ssize_t r = ::recv(fd, buf.data() + got, n - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += size_t(r);
    }
    return got == n && matches(buf.data(), n, off);
}

// A look for more: -1 EAGAIN when nothing more is readable and the connection is still open, so
// the bytes checked before were all there was.
R look_for_more(int fd) {
    char b;
    return SEM_CALL(::recv(fd, &b, 1, MSG_DONTWAIT));
}

// ---------------------------------------------------------------- the storm

// Both ends pick a new size for every call, so the calls' boundaries never line up with each
// other, and handle what a signal does to a blocking call: -1 EINTR (only without SA_RESTART, and
// only when the call had moved nothing yet) or a short count (continue from there).
struct StormSender {
    int fd;
    pthread_t th{};
    std::atomic<bool> done{false};
    uint64_t sent = 0;
    long eintr = 0, short_sends = 0;
    int err = 0;  // errno of a failure other than EINTR
};

void* storm_send(void* a) {
    auto* s = static_cast<StormSender*>(a);
    Rng rng(0x5e4d);
    while (s->sent < kStormBytes) {
        size_t n = size_t(std::min<uint64_t>(rng.range(kMiB, 8 * kMiB), kStormBytes - s->sent));
        ssize_t w = ::send(s->fd, pat_at(s->sent), n, 0);
        if (w < 0 && errno == EINTR) {
            ++s->eintr;
            continue;
        }
        if (w <= 0) {
            s->err = w < 0 ? errno : EIO;
            break;
        }
        if (size_t(w) < n) ++s->short_sends;
        s->sent += uint64_t(w);
    }
    ::shutdown(s->fd, SHUT_WR);  // the receiver's EOF marks the end of the stream
    s->done = true;
    return nullptr;
}

struct StormReceiver {
    int fd;
    pthread_t th{};
    std::atomic<bool> done{false};
    uint64_t received = 0;
    long eintr = 0;
    bool intact = true;  // every byte so far matched the pattern at its offset
    bool eof = false;
    int err = 0;
    unsigned char* buf = nullptr;  // 8 MiB
};

void* storm_recv(void* a) {
    auto* r = static_cast<StormReceiver*>(a);
    Rng rng(0x7ec7);
    for (;;) {
        size_t n = rng.range(kMiB, 8 * kMiB);
        ssize_t got = ::recv(r->fd, r->buf, n, 0);
        if (got < 0 && errno == EINTR) {
            ++r->eintr;
            continue;
        }
        if (got < 0) {
            r->err = errno;
            break;
        }
        if (got == 0) {
            r->eof = true;
            break;
        }
        // After a mismatch keep reading (without comparing): a receiver that stopped would leave
        // the sender blocked for good.
        if (r->intact && (r->received + uint64_t(got) > kStormBytes || !matches(r->buf, size_t(got), r->received)))
            r->intact = false;
        r->received += uint64_t(got);
    }
    r->done = true;
    return nullptr;
}

void storm(const Mode& m) {
    watchdog();
    const std::string t = std::string("storm (") + m.tag + "): ";
    int c, s;
    tcp_pair(c, s);
    StormSender snd{c};
    StormReceiver rcv{s};
    std::vector<unsigned char> rbuf(8 * kMiB);
    rcv.buf = rbuf.data();
    int before = m.handled->load();

    pthread_create(&snd.th, nullptr, storm_send, &snd);
    pthread_create(&rcv.th, nullptr, storm_recv, &rcv);
    // The main thread is the storm: a signal to each thread that is still moving data, every
    // kStormPeriodUs, until both are done (the sleep paces the storm, it orders nothing).  A
    // transfer that stalls is cut off by shutting the sockets down, which wakes both threads.
    bool stalled = false;
    const int64_t end = now_ms() + 3 * kWaitMs;
    while (!(snd.done && rcv.done)) {
        if (!snd.done) pthread_kill(snd.th, m.sig);
        if (!rcv.done) pthread_kill(rcv.th, m.sig);
        timespec ts{0, kStormPeriodUs * 1000L};
        nanosleep(&ts, nullptr);
        if (!stalled && now_ms() > end) {
            stalled = true;
            ::shutdown(c, SHUT_RDWR);
            ::shutdown(s, SHUT_RDWR);
        }
    }
    pthread_join(snd.th, nullptr);
    pthread_join(rcv.th, nullptr);
    int signals = m.handled->load() - before;

    expect(t + "the transfer ended in time", !stalled, "ended", "cut off after " + std::to_string(3 * kWaitMs) + " ms");
    expect(t + "every send completed", snd.err == 0 && snd.sent == kStormBytes, "1 GiB sent",
           errname(snd.err) + " after " + std::to_string(snd.sent) + " bytes");
    expect(t + "1 GiB arrived intact, in order", rcv.intact && rcv.received >= kStormBytes, "intact",
           std::string(rcv.intact ? "" : "wrong bytes, ") + std::to_string(rcv.received) + " bytes");
    expect(t + "no byte lost or duplicated: EOF after exactly the bytes sent", rcv.err == 0 && rcv.eof && rcv.received == snd.sent,
           "EOF at 1 GiB", errname(rcv.err) + (rcv.eof ? ", EOF" : "") + " at " + std::to_string(rcv.received));
    expect(t + "signals were delivered during the transfer", signals > kStormMinSignals,
           "more than " + std::to_string(kStormMinSignals), std::to_string(signals));
    if (&m == &kRestart) {
        // SA_RESTART: a call interrupted before it moved a byte is restarted, one that moved some
        // returns the short count; neither surfaces EINTR.
        expect(t + "no call failed with EINTR", snd.eintr == 0 && rcv.eintr == 0, "none",
               std::to_string(snd.eintr) + " sends, " + std::to_string(rcv.eintr) + " recvs");
    } else {
        // Without SA_RESTART the storm must have cut blocking sends short (EINTR or a short count):
        // otherwise this run tested nothing the SA_RESTART one did not.
        expect(t + "signals cut sends short (EINTR or a short count)", snd.eintr + snd.short_sends > 0, "some", "none");
    }
    close_all({c, s});
}

// ---------------------------------------------------------------- one interrupted send

// After an interrupted send whose count was `taken`: nothing beyond it arrived; the application
// sends the rest of the 64 MiB itself, which follows in order, then EOF.  Closes both ends.
void nothing_more_then_the_rest(const std::string& t, int c, int s, size_t taken) {
    expect_ret(t + "nothing more arrived", look_for_more(s), -1, EAGAIN);
    Blocked rest([&] {
        bool ok = send_all(c, g_pat + taken, kBigSend - taken);
        ::shutdown(c, SHUT_WR);
        return R{ok ? 0 : -1, ok ? 0 : errno};
    });
    rest.start();
    expect(t + "the rest, sent again, follows in order", recv_pattern(s, kBigSend - taken, taken), "intact");
    rest.join();
    expect_ret(t + "the rest was sent", rest.r, 0);
    char b1;
    expect_ret(t + "then EOF", SEM_CALL(::recv(s, &b1, 1, 0)), 0);
    close_all({c, s});
}

// 64 MiB in one blocking send to a peer that does not read: the call takes what the connection
// holds, then blocks; the signal ends it with the count taken so far.  With SA_RESTART too: the
// kernel restarts only a call that moved nothing, and this one had.  (sdx copies here: a peer in
// this process that is not receiving is never lent the buffer; the next case has zero copy.)
void interrupted_send(const Mode& m) {
    watchdog();
    const std::string t = std::string("send 64 MiB (") + m.tag + "): ";
    int c, s;
    tcp_pair(c, s);
    int before = m.handled->load();

    Blocked b([&] { return SEM_CALL(::send(c, g_pat, kBigSend, 0)); });
    b.start();
    expect(t + "blocked, the peer not reading", b.in({SYS_sendto}), "in sendto");
    pthread_kill(b.th, m.sig);
    b.join();
    expect_eq(t + "handler ran once", m.handled->load() - before, 1);
    bool partial = b.r.ret > 0 && size_t(b.r.ret) < kBigSend;
    expect(t + "interrupted send returned a partial count", partial, "0 < count < 64 MiB", show(b.r));
    size_t taken = partial ? size_t(b.r.ret) : 0;

    // The peer now reads exactly that many: they are the first bytes of the send, and there is
    // nothing after them (the interrupted rest was not sent anyway).
    expect(t + "the partial count's bytes arrived, in order", recv_pattern(s, taken, 0), "intact");
    // The application sends the rest itself: the stream continues exactly where the count said.
    nothing_more_then_the_rest(t, c, s, taken);
}

// The same with zero copy under way.  The receiver waits in a blocking recv when the send starts:
// a peer in a blocking receive is what lets sdx lend it the send's buffer (SrcAvail; a peer in
// the same process that is not receiving gets copies instead, see Port::peer_receiving).  It
// takes up to 64 KiB and then does something else.  The signal must still end the send at once,
// with the count taken, while the receiver is not in any call (TCP never waits for its peer to
// return a count), and the stream must go on from there.
void interrupted_send_peer_away(const Mode& m) {
    watchdog();
    const std::string t = std::string("send 64 MiB, the peer read once then stopped (") + m.tag + "): ";
    int c, s;
    tcp_pair(c, s);
    int before = m.handled->load();
    std::vector<unsigned char> small(64 * 1024);

    Blocked rd([&] { return SEM_CALL(::recv(s, small.data(), small.size(), 0)); });
    rd.start();
    expect(t + "the peer waits in recv", rd.in({SYS_recvfrom}), "in recvfrom");
    Blocked b([&] { return SEM_CALL(::send(c, g_pat, kBigSend, 0)); });
    b.start();
    rd.join();
    size_t first = rd.r.ret > 0 ? size_t(rd.r.ret) : 0;
    expect(t + "the peer's recv returned the first bytes", rd.r.ret > 0 && matches(small.data(), first, 0), "intact", show(rd.r));
    expect(t + "send blocked", b.in({SYS_sendto}), "in sendto");
    pthread_kill(b.th, m.sig);
    b.join();  // before the peer reads again: nothing but the signal may end the call
    expect_eq(t + "handler ran once", m.handled->load() - before, 1);
    bool partial = b.r.ret > 0 && size_t(b.r.ret) >= first && size_t(b.r.ret) < kBigSend;
    expect(t + "interrupted send returned a partial count", partial, "0 < count < 64 MiB", show(b.r));
    size_t taken = partial ? size_t(b.r.ret) : first;

    expect(t + "the partial count's bytes arrived, in order", recv_pattern(s, taken - first, first), "intact");
    nothing_more_then_the_rest(t, c, s, taken);
}

// ---------------------------------------------------------------- interrupted receives

// An 8 MiB receive blocked with nothing to read: without SA_RESTART the signal ends it with
// EINTR; with SA_RESTART the call goes on waiting and returns the data that comes afterwards
// (what has arrived by then, up to 8 MiB: only its correctness is checked, not its size).
void interrupted_recv(const Mode& m) {
    watchdog();
    const std::string t = std::string("recv 8 MiB, nothing to read (") + m.tag + "): ";
    int c, s;
    tcp_pair(c, s);
    std::vector<unsigned char> buf(kBigRecv);
    int before = m.handled->load();

    Blocked b([&] { return SEM_CALL(::recv(s, buf.data(), kBigRecv, 0)); });
    b.start();
    expect(t + "blocked", b.in({SYS_recvfrom}), "in recvfrom");
    pthread_kill(b.th, m.sig);
    if (&m == &kNoRestart) {
        b.join();
        expect_ret(t + "interrupted", b.r, -1, EINTR);
        expect_eq(t + "handler ran once", m.handled->load() - before, 1);
        // The interruption took nothing from the connection: 4 MiB sent now arrive whole.
        Blocked snd([&] {
            bool ok = send_all(c, g_pat, 4 * kMiB);
            return R{ok ? 0 : -1, ok ? 0 : errno};
        });
        snd.start();
        expect(t + "afterwards the connection carries 4 MiB intact", recv_pattern(s, 4 * kMiB, 0), "intact");
        snd.join();
        expect_ret(t + "4 MiB sent", snd.r, 0);
        close_all({c, s});
        return;
    }
    expect(t + "handler ran", wait_flag_value(g_usr2, before + 1), "ran");
    expect(t + "restarted after the handler", b.in({SYS_recvfrom}) && !b.done, "blocked in recvfrom again");
    // 4 MiB from another thread, in one zero-copy send: it may need the receiver to drain it.
    Blocked snd([&] {
        bool ok = send_all(c, g_pat, 4 * kMiB);
        return R{ok ? 0 : -1, ok ? 0 : errno};
    });
    snd.start();
    b.join();
    size_t got = b.r.ret > 0 ? size_t(b.r.ret) : 0;
    expect(t + "the restarted recv returns data", b.r.ret > 0 && size_t(b.r.ret) <= 4 * kMiB, "0 < count <= 4 MiB", show(b.r));
    expect(t + "the first bytes sent", matches(buf.data(), got, 0), "intact");
    expect(t + "the rest follows in order", recv_pattern(s, 4 * kMiB - got, got), "intact");
    snd.join();
    expect_ret(t + "4 MiB sent", snd.r, 0);
    expect_ret(t + "nothing more arrived", look_for_more(s), -1, EAGAIN);
    close_all({c, s});
}

// An 8 MiB MSG_WAITALL receive that got 4 MiB and waits for the rest: the signal ends the wait
// with the count received (with or without SA_RESTART: a call that moved data is not restarted).
// Whether all 4 MiB had reached it by then is timing, so the check is a count in (0, 4 MiB] and
// the remainder arriving after it.
void interrupted_waitall(const Mode& m) {
    watchdog();
    const std::string t = std::string("recv 8 MiB MSG_WAITALL, 4 MiB sent (") + m.tag + "): ";
    int c, s;
    tcp_pair(c, s);
    std::vector<unsigned char> buf(kBigRecv);
    int before = m.handled->load();

    Blocked b([&] { return SEM_CALL(::recv(s, buf.data(), kBigRecv, MSG_WAITALL)); });
    b.start();
    expect(t + "blocked", b.in({SYS_recvfrom}), "in recvfrom");
    expect(t + "4 MiB sent", send_all(c, g_pat, 4 * kMiB), "sent");
    expect(t + "still blocked, waiting for the rest", b.in({SYS_recvfrom}) && !b.done, "in recvfrom");
    pthread_kill(b.th, m.sig);
    b.join();
    expect_eq(t + "handler ran once", m.handled->load() - before, 1);
    size_t got = b.r.ret > 0 ? size_t(b.r.ret) : 0;
    expect(t + "interrupted recv returned a partial count", b.r.ret > 0 && size_t(b.r.ret) <= 4 * kMiB, "0 < count <= 4 MiB", show(b.r));
    expect(t + "the first bytes sent", matches(buf.data(), got, 0), "intact");
    expect(t + "the rest follows in order", recv_pattern(s, 4 * kMiB - got, got), "intact");
    expect_ret(t + "nothing more arrived", look_for_more(s), -1, EAGAIN);
    close_all({c, s});
}

}  // namespace

int main() {
    start();
    install_usr_handlers();
    make_pattern();
    storm(kRestart);
    storm(kNoRestart);
    for (const Mode* m : {&kNoRestart, &kRestart}) interrupted_send(*m);
    // The receiver in no call at all: sdx cannot wait for its answer to the cancellation (the
    // lent buffer is taken back through shared memory: Port::reclaim).
    for (const Mode* m : {&kNoRestart, &kRestart}) interrupted_send_peer_away(*m);
    for (const Mode* m : {&kNoRestart, &kRestart}) interrupted_recv(*m);
    for (const Mode* m : {&kNoRestart, &kRestart}) interrupted_waitall(*m);
    return finish();
}
