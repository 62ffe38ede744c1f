#include "preload/accel.hpp"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "preload/real.hpp"
#include "preload/rendezvous.hpp"
#include "preload/restart.hpp"
#include "preload/runtime.hpp"
#include "preload/revert.hpp"
#include "verbs/shm_pool.hpp"

namespace sdx::accel {

namespace {

long long opt(conf::Opt o) noexcept { return g_rt.config->number(o); }

proto::Params params() noexcept {
    proto::Params p;
    p.recv_bufs = static_cast<std::uint16_t>(std::clamp<long long>(opt(conf::Opt::credits), 4, 4096));
    // buf_size is the payload a buffer holds; the message header comes on top, so that writes of
    // 64 KiB multiples fill whole messages (128 KiB in two, not 65,520 + 65,520 + 32 bytes).
    p.buf_size = static_cast<std::uint32_t>(opt(conf::Opt::buf_size) + proto::kBsdhSize);
    p.send_zcopy_threshold = static_cast<std::size_t>(opt(conf::Opt::send_zcopy_threshold));
    p.recv_zcopy_threshold = static_cast<std::size_t>(opt(conf::Opt::recv_zcopy_threshold));
    p.zcopy_max_chunk = static_cast<std::size_t>(opt(conf::Opt::zcopy_max_chunk));
    p.rdma_sync = true;  // cross-memory attach completes inside the call
    if (g_rt.config->flag(conf::Opt::early_data)) p.caps |= proto::kCapEarly;
    return p;
}

std::size_t ring_capacity() noexcept {
    proto::Params p = params();
    return shm::ring_capacity_for(p.recv_bufs, p.buf_size);
}

// A doorbell on the peer's kernel socket: one byte through the real send(), never the shim's.
bool ring_socket(int fd) {
    char b = 0;
    if (g_rt.sandboxed.load(std::memory_order_relaxed)) return real::write(fd, &b, 1) == 1;
    return real::send(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1;
}

void futex_wait(std::atomic<std::uint32_t>* w, std::uint32_t val, long long ns) noexcept {
    timespec ts{static_cast<time_t>(ns / 1000000000LL), static_cast<long>(ns % 1000000000LL)};
    ::syscall(SYS_futex, w, FUTEX_WAIT, val, &ts, nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>* w) noexcept { ::syscall(SYS_futex, w, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }

// The active side gives up on an announcement that was not accepted (yet): false when it was.
bool withdraw(shm::Rendezvous* rv) noexcept {
    for (;;) {
        std::uint32_t seen = rv->state.load(std::memory_order_acquire);
        std::uint32_t ph = shm::Rendezvous::phase_of(seen);
        if (ph != shm::Rendezvous::Announced && ph != shm::Rendezvous::Claiming) return ph != shm::Rendezvous::Accepted;
        if (rv->move(seen, shm::Rendezvous::Withdrawn)) {
            futex_wake(&rv->state);
            return true;
        }
    }
}

// A connection that ended up on kernel TCP gives its segment's pool reservation back at once
// (it would otherwise hold it until closed).
void drop_reservation(Conn* c) noexcept {
    if (!c->poolable) return;
    c->poolable = false;
    shm::SegmentPool::unreserve_fd();
}

void go_accelerated(Conn* c, shm::Segment seg, int side, pid_t peer, int fd) {
    seg.rendezvous()->holders[side].store(1, std::memory_order_relaxed);
    attach_channel(c, std::move(seg), side, peer, fd);
}

// Takes in what the peer posted.  Every message that arrives bumps the connection's event
// generation, which edge-triggered epoll registrations compare (a new message is a new edge, as
// a new segment is on TCP).
int feed(Conn* c) {
    bool was = c->eng->aborted();
    int fed = c->ch->drive(*c->eng);
    if (fed != 0) c->gen.fetch_add(1, std::memory_order_relaxed);
    if (!was && c->eng->aborted())
        log::info("connection aborted: {}", proto::abort_reason_name(c->eng->abort_reason()));
    return fed;
}

// Has the peer ring the kernel socket at its next message (the application is about to wait in
// poll or epoll there), then takes in what arrived before the arming, which rang nothing.  True
// when something did arrive.  The caller holds c->mu.
bool arm_and_take(Conn* c, bool read = true, bool write = true) {
    c->ch->arm_socket_doorbell(read, write);
    return c->ch->incoming() && feed(c) > 0;
}

// The fd a call came in on rings the peer: any fd of this socket will do, and this one is open.
void use_fd(Conn* c, int fd) { c->ch->set_socket_doorbell(ring_socket, fd); }

// --- Handoffs between processes of one side ---
// After fork, parent and child hold the same connection, but the engine's state and where the
// ring is read live in each process's own memory.  So one process at a time uses it: a use first
// claims the connection (epoch[side] := a new value); a process whose claim is not the latest
// continues from the state the latest claimer published (it publishes after every use while
// another process holds the connection, and before fork and exit).  A process that finds the
// connection claimed but not published (used by two processes at once, or its user died mid-way)
// cannot continue: it drops out (mute) and its calls fail with ECONNRESET; the other goes on.

int side_of(const Conn* c) { return c->ch->side(); }
shm::Rendezvous* rv_of(const Conn* c) { return c->ch->segment().rendezvous(); }
bool shared(const Conn* c) { return rv_of(c)->holders[side_of(c)].load(std::memory_order_acquire) > 1; }

bool publish(Conn* c) noexcept {
    shm::Rendezvous* rv = rv_of(c);
    int side = side_of(c);
    if (c->ch->muted() || rv->epoch[side].load(std::memory_order_acquire) != c->epoch) return false;
    std::span<std::byte> area = c->ch->segment().state_area(side);
    std::size_t en = c->eng->snapshot(area.subspan(sizeof(std::uint32_t)));
    if (en == 0) return false;  // an operation is in progress (another thread), or too much state
    std::size_t cn = c->ch->snapshot(area.subspan(sizeof(std::uint32_t) + en));
    if (cn == 0) return false;
    auto len = static_cast<std::uint32_t>(en);
    std::memcpy(area.data(), &len, sizeof len);
    rv->published[side].store(c->epoch, std::memory_order_release);
    return true;
}

bool restore(Conn* c) noexcept {
    std::span<std::byte> area = c->ch->segment().state_area(side_of(c));
    std::uint32_t en = 0;
    std::memcpy(&en, area.data(), sizeof en);
    if (en == 0 || en + sizeof en > area.size()) return false;
    return c->eng->restore(area.subspan(sizeof en, en)) && c->ch->restore(area.subspan(sizeof en + en));
}

// Makes this process the connection's user.  Caller holds c->mu.  False: it cannot be.
bool own(Conn* c, int fd) noexcept {
    if (c->ch->muted()) return false;
    shm::Rendezvous* rv = rv_of(c);
    int side = side_of(c);
    std::uint64_t cur = rv->epoch[side].load(std::memory_order_acquire);
    if (cur == c->epoch) return true;
    if (rv->published[side].load(std::memory_order_acquire) == cur && restore(c) &&
        rv->epoch[side].compare_exchange_strong(cur, cur + 1, std::memory_order_acq_rel)) {
        c->epoch = cur + 1;
        c->gen.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    log::error("fd {}: another process is using this sdx connection at the same time; it is reset here", fd);
    c->ch->mute();
    c->eng->on_transport_down();
    c->gen.fetch_add(1, std::memory_order_relaxed);
    return false;
}

// The socket's `sdx stats` line.
void mark_path(Conn* c, shmstats::Path p) {
    if (shmstats::SocketSlot* sl = c->slot.load(std::memory_order_acquire)) sl->path.store(p, std::memory_order_relaxed);
}

// The connection is decided.  Either way its readiness changed (an epoll edge: `gen`).
void become_accelerated(Conn* c) {
    c->state.store(State::Accelerated, std::memory_order_release);
    c->gen.fetch_add(1, std::memory_order_relaxed);
    totals().sockets_accelerated.fetch_add(1, std::memory_order_relaxed);
    mark_path(c, shmstats::Path::Shm);
}

void stay_on_kernel(Conn* c) {
    c->state.store(State::Kernel, std::memory_order_release);
    c->gen.fetch_add(1, std::memory_order_relaxed);
    drop_reservation(c);
}

// The engine's counters, shown on the socket's `sdx stats` line.
void show_counters(Conn* c) {
    shmstats::SocketSlot* sl = c->slot.load(std::memory_order_relaxed);
    if (!sl || !c->eng) return;
    const proto::Counters& k = c->eng->counters();
    sl->tx_bcopy.store(k.tx_bcopy_bytes, std::memory_order_relaxed);
    sl->rx_bcopy.store(k.rx_bcopy_bytes, std::memory_order_relaxed);
    sl->tx_zcopy.store(k.tx_zcopy_read_bytes + k.tx_zcopy_write_bytes, std::memory_order_relaxed);
    sl->rx_zcopy.store(k.rx_zcopy_read_bytes + k.rx_zcopy_write_bytes, std::memory_order_relaxed);
    sl->credit_stalls.store(k.credit_stalls, std::memory_order_relaxed);
    sl->sendsm.store(k.sendsm_tx + k.sendsm_rx, std::memory_order_relaxed);
    sl->cancels.store(k.cancels_tx, std::memory_order_relaxed);
    sl->aborts.store(c->eng->aborted() ? 1 : 0, std::memory_order_relaxed);
}

// The start and end of every use of the engine (caller holds c->mu).
struct Use {
    Conn* c;
    bool ok;
    Use(Conn* conn, int fd) : c(conn), ok(own(conn, fd)) { use_fd(conn, fd); }
    ~Use() {
        show_counters(c);
        if (ok && shared(c)) publish(c);
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
};

// Whether the peer's kernel socket says it is gone; checked when a wait found nothing to do.
void check_peer(Conn* c, int fd) {
    pollfd p{fd, POLLRDHUP, 0};
    if (real::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        feed(c);  // what it sent before it went (its DisConn, maybe) comes first
        c->eng->on_transport_down(c->ch->peer_took_everything());
        c->gen.fetch_add(1, std::memory_order_relaxed);
    }
}

// Sleeps until the peer posts, a signal arrives (false), or a slice passes.
// The spin budget adapts (option spin_adaptive): spinning pays only when the peer answers within
// it; on a machine whose cores are shared, a spinning waiter takes the CPU its peer needs (measured
// here: a shared-memory stream fell from 54 to 2 Gbit/s with one busy process beside it).  A wait
// that ended while spinning doubles the budget (up to the `spin` option); one that had to sleep
// halves it; at zero, every 32nd wait probes with the full budget again.
long long spin_budget(Conn* c) {
    long long max = opt(conf::Opt::spin);
    if (!g_rt.config->flag(conf::Opt::spin_adaptive)) return max;
    if (c->spin_ns < 0) c->spin_ns = max;
    if (c->spin_ns == 0 && ++c->spin_idle % 32 == 0) return max;
    return c->spin_ns;
}

void spin_learn(Conn* c, long long used, bool paid) {
    long long max = opt(conf::Opt::spin);
    if (used <= 0 || !g_rt.config->flag(conf::Opt::spin_adaptive)) return;
    if (paid) {
        c->spin_ns = std::min(max, std::max<long long>(c->spin_ns * 2, 1000));
        c->spin_idle = 0;
    } else {
        c->spin_ns = c->spin_ns < 2000 ? 0 : c->spin_ns / 2;
    }
}

bool wait_peer(Conn* c, int fd, std::unique_lock<std::mutex>& lk, long long slice_ns = 50000000LL) {
    long long spin = spin_budget(c);
    lk.unlock();
    bool paid = true;
    bool ok = c->ch->wait(spin, slice_ns, &paid);
    lk.lock();
    spin_learn(c, spin, paid);
    if (ok && !c->ch->incoming()) check_peer(c, fd);
    return ok;
}

ssize_t finish(long r, int flags) {
    if (r >= 0) return r;
    if (r == -proto::Engine::kErestart) r = -EINTR;
    // (Under a seccomp filter tgkill may be fatal: such programs ignore SIGPIPE anyway.)
    if (r == -EPIPE && !(flags & MSG_NOSIGNAL) && !g_rt.sandboxed.load(std::memory_order_relaxed))
        ::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGPIPE);
    errno = static_cast<int>(-r);
    return -1;
}

// drive_op's result when the stream went back to kernel TCP under the operation (revert.hpp).
constexpr long kGivenBack = -1000000;

// Runs an engine operation to its end: feed the channel, progress, sleep when nothing moves;
// a signal cancels what can be cancelled and waits at most cancel_timeout for the peer's answer.
// `timeout_ns` > 0 (SO_RCVTIMEO/SO_SNDTIMEO) ends the wait like a signal, with EAGAIN when no byte
// moved; with such a timeout a signal is EINTR even under SA_RESTART, as in the kernel.
// A send whose SrcAvails the peer has not started reading for zcopy_stall goes on with bcopy
// (Engine::stall_send), as a kernel TCP send returns once its data is in the socket buffers.
template <typename Progress, typename Interrupt>
long drive_op(Conn* c, int fd, std::unique_lock<std::mutex>& lk, proto::OpResult r, Progress progress, Interrupt interrupt,
              long long timeout_ns = 0, bool sending = false) {
    long long cancel_deadline = 0;
    long long deadline = timeout_ns > 0 ? now_ns() + timeout_ns : 0;
    bool timed_out = false, signalled = false;
    long long stall_ns = sending ? opt(conf::Opt::zcopy_stall) : 0, stall_at = 0;
    std::uint64_t read_seen = 0;
    // A handler that ran in this thread while it was between two waits (not asleep in the kernel,
    // so no EINTR): the kernel would have seen the signal pending when it went to sleep.
    unsigned sig_mark = sig::mark();
    while (r.status == proto::Status::Pending) {
        if (given_back(c)) return kGivenBack;
        int fed = feed(c);
        r = progress();
        if (r.status == proto::Status::Done) break;
        if (fed > 0) continue;
        if (cancel_deadline && now_ns() > cancel_deadline) {
            c->eng->cancel_timed_out();
            r = progress();
            continue;
        }
        long long slice = 50000000LL;
        if (stall_ns > 0 && c->eng->send_lent() && !given_back(c)) {
            std::uint64_t read = c->eng->counters().tx_zcopy_read_bytes;
            long long now = now_ns();
            if (stall_at == 0 || read != read_seen) {
                read_seen = read;
                stall_at = now + stall_ns;
            } else if (now >= stall_at) {
                c->eng->stall_send();
                stall_at = 0;
                r = progress();
                continue;
            }
            slice = std::min(slice, stall_at - now);
        }
        if (deadline && !cancel_deadline) {
            long long left = deadline - now_ns();
            if (left <= 0) {
                timed_out = true;
                cancel_deadline = now_ns() + opt(conf::Opt::cancel_timeout);
                r = interrupt();
                continue;
            }
            slice = std::min(slice, left);
        }
        if (!cancel_deadline && sig::mark() != sig_mark) {
            signalled = true;
            cancel_deadline = now_ns() + opt(conf::Opt::cancel_timeout);
            r = interrupt();
            continue;
        }
        if (!wait_peer(c, fd, lk, slice) && !cancel_deadline) {
            signalled = true;
            cancel_deadline = now_ns() + opt(conf::Opt::cancel_timeout);
            r = interrupt();
        }
    }
    if (r.result == -proto::Engine::kErestart && deadline) return timed_out && !signalled ? -EAGAIN : -EINTR;
    return r.result;
}

}  // namespace

proto::Params engine_params() noexcept { return params(); }

namespace {
// The engine parameters for the connection on `fd`, with the options the application set on the
// socket before connect/accept (accepted sockets inherit the listener's).
proto::Params socket_params(Conn* c, int fd) noexcept {
    proto::Params p = params();
    if (!c->opts_set) return p;  // nothing set: the kernel's defaults, which are the engine's
    int inl = 0;
    socklen_t len = sizeof inl;
    p.oob_inline = real::getsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &inl, &len) == 0 && inl != 0;
    for (int which : {SO_RCVTIMEO, SO_SNDTIMEO}) {
        timeval tv{};
        socklen_t tl = sizeof tv;
        if (real::getsockopt(fd, SOL_SOCKET, which, &tv, &tl) == 0) set_timeout(c, which, tv);
    }
    return p;
}

// The channel exists: doorbells go through the kernel socket from now on.
void wire_doorbell(Conn* c, int fd) noexcept {
    // The kernel connection now carries only 1-byte doorbells: Nagle would hold each one back
    // until the previous one is acknowledged (40 ms of delayed ACK on loopback).  The application
    // still sees the TCP_NODELAY it set (intercept_socket.cpp).  (Under a seccomp filter
    // setsockopt may be fatal: such a process sets up no connection of its own anyway.)
    if (!g_rt.sandboxed.load(std::memory_order_relaxed)) {
        int one = 1;
        real::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->ch->set_socket_doorbell(ring_socket, fd);
    // Armed from the start, for programs whose first wait the shim does not see arm (measured:
    // without it sockperf's server lost the last message of a stream and ran at half the rate).
    // It costs a short connection one doorbell byte; poll, select and epoll re-arm before sleeping.
    c->ch->arm_socket_doorbell();
}
}  // namespace

void attach_channel(Conn* c, shm::Segment seg, int side, pid_t peer, int fd) {
    c->ch = std::make_unique<shm::Channel>(std::move(seg), side, peer, g_rt.pid);
    wire_doorbell(c, fd);
    c->eng = std::make_unique<proto::Engine>(socket_params(c, fd), *c->ch);
}

std::atomic<int> g_live{0};

Conn::Conn() noexcept { g_live.fetch_add(1, std::memory_order_relaxed); }
Conn::~Conn() {
    if (poolable) shm::SegmentPool::unreserve_fd();  // the segment goes with the connection
    g_live.fetch_sub(1, std::memory_order_relaxed);
}

bool any_live() noexcept { return g_live.load(std::memory_order_relaxed) > 0; }

bool enabled() noexcept {
    return g_rt.active.load(std::memory_order_acquire) && g_rt.config && g_rt.config->flag(conf::Opt::accelerate);
}

Conn* announce(const sockaddr* dst, socklen_t len, shmstats::SocketSlot* slot, bool opts_set) noexcept {
    if (!enabled()) return nullptr;
    if (!rdv::is_local(dst, len)) {
        note_fallback(Fallback::NotLocal, slot);
        return nullptr;
    }
    try {
        // Everything that may throw comes before the announcement: after it, the listener may
        // accept at any moment, so a failure would leave it waiting on a stream that is on TCP.
        auto hello = proto::Engine::hello_for(params());
        rdv::Refusal why{};
        auto ann = rdv::announce(dst, len, ring_capacity(), &why);
        if (!ann) {
            note_fallback(why == rdv::Refusal::OtherUser     ? Fallback::OtherUser
                          : why == rdv::Refusal::SetupFailed ? Fallback::SetupFailed
                                                             : Fallback::NoListener,
                          slot);
            return nullptr;
        }
        shm::Rendezvous* rv = ann->seg.rendezvous();
        std::memcpy(rv->hello, hello.data(), std::min(hello.size(), sizeof rv->hello));
        auto* c = new (std::nothrow) Conn;
        if (!c) {
            if (ann->poolable) shm::SegmentPool::unreserve_fd();
            withdraw(rv);
            note_fallback(Fallback::SetupFailed, slot);
            return nullptr;
        }
        c->active_side = true;
        c->opts_set = opts_set;
        c->slot.store(slot, std::memory_order_relaxed);
        c->poolable = ann->poolable;
        c->seg = std::move(ann->seg);
        c->listener = std::move(ann->listener);
        c->decide_by_ns = now_ns() + opt(conf::Opt::handshake_timeout);
        return c;
    } catch (...) {
        note_fallback(Fallback::SetupFailed, slot);
        return nullptr;
    }
}

void connect_done(Conn* c, int fd, bool ok, bool up) noexcept {
    c->kernel_up = up;
    if (ok) {
        rdv::publish_address(*c->seg, fd);
        return;
    }
    withdraw(c->seg->rendezvous());
    c->seg.reset();
    stay_on_kernel(c);
    note_fallback(Fallback::ConnectFailed, c ? c->slot.load() : nullptr);
}

// --- Early data (protocol/wire.hpp, kCapEarly) ---
// A client's first bytes go into the segment before the listener accepted the connection, as TCP
// Fast Open sends data with the SYN: its first request does not wait until the server process is
// scheduled and accepts.  settle() then completes the engine with the HelloAck (accepted), or
// sends those bytes on TCP itself (declined or withdrawn) before anything else: the peer reads
// the same stream either way.
namespace {
bool early_allowed() noexcept { return g_rt.config->flag(conf::Opt::early_data); }

// The kernel connection is up: early bytes can be replayed on it if need be.
bool kernel_connected(int fd) noexcept {
    pollfd p{fd, POLLOUT, 0};
    return real::poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP));
}

// Whether a pending connection may send early now (it may not yet have its channel).  Caller holds c->mu.
bool early_possible(Conn* c, int fd) noexcept {
    if (c->early) return c->eng->send_room() > 0;
    if (!early_allowed() || !c->seg || c->state.load(std::memory_order_acquire) != State::Pending) return false;
    std::uint32_t ph = c->seg->rendezvous()->phase();
    if ((ph != shm::Rendezvous::Announced && ph != shm::Rendezvous::Claiming) || now_ns() >= c->decide_by_ns) return false;
    return c->kernel_up || (c->kernel_up = kernel_connected(fd));
}

// Gives the pending connection its channel and an engine that sends early.  Caller holds c->mu.
bool start_early(Conn* c, int fd) noexcept {
    if (c->early) return true;
    if (!early_possible(c, fd)) return false;
    proto::Params p = socket_params(c, fd);
    std::unique_ptr<shm::Channel> ch;
    try {
        ch = std::make_unique<shm::Channel>(std::move(*c->seg), 0, 0, g_rt.pid);  // nothing was moved if this throws
    } catch (...) {
        return false;
    }
    c->seg.reset();
    try {
        c->eng = std::make_unique<proto::Engine>(p, *ch);
    } catch (...) {
        c->seg.emplace(ch->give_up_segment());
        return false;
    }
    ch->segment().rendezvous()->holders[0].store(1, std::memory_order_relaxed);
    c->ch = std::move(ch);
    wire_doorbell(c, fd);
    c->eng->start_early();
    c->early = true;
    return true;
}

// The listener accepted: the engine gets the HelloAck, the channel its peer.  Caller holds c->mu.
void finish_early(Conn* c, shm::Rendezvous* rv) noexcept {
    std::byte ack[sizeof rv->hello_ack];
    std::memcpy(ack, rv->hello_ack, sizeof ack);
    c->ch->set_peer(rv->passive_pid);
    if (!c->poolable) c->ch->close_segment_fd();
    if (!c->eng->accept_hello_ack(ack)) c->eng->on_transport_down();  // cannot happen with a sane peer
    c->early = false;
}

// The listener will never read the early bytes: they go on TCP, in order, before anything the
// application sends next.  Caller holds c->mu.
void drop_early(Conn* c, int fd) noexcept {
    std::uint64_t n = c->early_bytes;
    if (!replay_outgoing(*c->ch, fd)) {
        log::warn("fd {}: early data could not be sent on TCP: reset", fd);
        real::shutdown(fd, SHUT_RDWR);
    }
    totals().sdx_tx.fetch_sub(n, std::memory_order_relaxed);
    totals().tcp_tx.fetch_add(n, std::memory_order_relaxed);
    c->eng.reset();
    c->ch.reset();
    c->early = false;
}
}  // namespace

bool settle(Conn* c, int fd, bool may_wait) noexcept {
    State st = c->state.load(std::memory_order_acquire);
    if (st != State::Pending) return st == State::Accelerated;
    std::lock_guard<std::mutex> lk(c->mu);
    if ((st = c->state.load(std::memory_order_acquire)) != State::Pending) return st == State::Accelerated;
    shm::Rendezvous* rv = c->early ? c->ch->segment().rendezvous() : c->seg->rendezvous();
    for (;;) {
        std::uint32_t word = rv->state.load(std::memory_order_acquire);
        std::uint32_t s = shm::Rendezvous::phase_of(word);
        if (s == shm::Rendezvous::Accepted && c->early) {
            finish_early(c, rv);
            become_accelerated(c);
            return true;
        }
        if (s == shm::Rendezvous::Accepted) {
            try {
                pid_t peer = rv->passive_pid;
                std::vector<std::byte> ack(reinterpret_cast<std::byte*>(rv->hello_ack),
                                           reinterpret_cast<std::byte*>(rv->hello_ack) + sizeof rv->hello_ack);
                shm::Segment seg = std::move(*c->seg);
                c->seg.reset();
                if (!c->poolable) seg.close_fd();  // the peer has attached
                go_accelerated(c, std::move(seg), 0, peer, fd);
                if (!c->eng->accept_hello_ack(ack)) c->eng->on_transport_down();  // cannot happen with a sane peer
                become_accelerated(c);
                return true;
            } catch (...) {
                stay_on_kernel(c);
                note_fallback(Fallback::SetupFailed, c ? c->slot.load() : nullptr);
                return false;
            }
        }
        if (s != shm::Rendezvous::Announced && s != shm::Rendezvous::Claiming) {
            note_fallback(s == shm::Rendezvous::Declined ? Fallback::Declined : Fallback::HandshakeTimeout, c ? c->slot.load() : nullptr);
            if (c->early) drop_early(c, fd);
            c->seg.reset();
            stay_on_kernel(c);
            return false;
        }
        long long left = c->decide_by_ns - now_ns();
        if (left <= 0) {
            if (rv->move(word, shm::Rendezvous::Withdrawn)) {
                log::info("fd {}: the sdx listener did not accept in time; staying on TCP", fd);
                rdv::forget_listener(c->listener);
                note_fallback(Fallback::HandshakeTimeout, c ? c->slot.load() : nullptr);
                if (c->early) drop_early(c, fd);
                c->seg.reset();
                stay_on_kernel(c);
                return false;
            }
            continue;  // it was accepted meanwhile
        }
        if (!may_wait) return false;
        futex_wait(&rv->state, word, std::min(left, 10000000LL));
    }
}

void* open_listener(int fd) noexcept {
    if (!enabled()) return nullptr;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (real::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return nullptr;
    return rdv::Listener::open(reinterpret_cast<sockaddr*>(&ss), len);
}

void close_listener(void* l) noexcept { delete static_cast<rdv::Listener*>(l); }

Conn* accept_from(void* listener, int fd, const sockaddr* peer, socklen_t len, shmstats::SocketSlot* slot, bool opts_set) noexcept {
    // Under a seccomp filter the set-up calls (open, mmap, kill) may be forbidden: TCP (the client
    // falls back after handshake_timeout, its early bytes replayed).
    if (!listener || !enabled() || g_rt.sandboxed.load(std::memory_order_relaxed)) return nullptr;
    try {
        pid_t peer_pid = 0;
        std::uint32_t seen = 0;
        auto seg = static_cast<rdv::Listener*>(listener)->claim(peer, len, &peer_pid, &seen, opt(conf::Opt::handshake_timeout));
        if (!seg) {
            note_fallback(Fallback::NotAnnounced, slot);
            return nullptr;
        }
        shm::Rendezvous* rv = seg->rendezvous();
        // Claiming first: from here on the rendezvous is ours to fill in (a peer that withdraws
        // meanwhile makes the last step fail), and no claimer of an older generation can touch it.
        const std::uint32_t claiming = shm::Rendezvous::with_phase(seen, shm::Rendezvous::Claiming);
        if (!rv->move(seen, shm::Rendezvous::Claiming)) {
            note_fallback(Fallback::Late, slot);
            shm::AttachCache::give(std::move(*seg), peer_pid);
            return nullptr;
        }
        std::vector<std::byte> hello(reinterpret_cast<std::byte*>(rv->hello), reinterpret_cast<std::byte*>(rv->hello) + sizeof rv->hello);
        auto* c = new Conn;
        c->active_side = false;
        c->opts_set = opts_set;
        c->slot.store(slot, std::memory_order_relaxed);
        go_accelerated(c, std::move(*seg), 1, peer_pid, fd);
        auto ack = c->eng->accept_hello(hello);
        if (!ack) {
            rv->move(claiming, shm::Rendezvous::Declined);
            futex_wake(&rv->state);
            delete c;
            return nullptr;
        }
        std::memcpy(rv->hello_ack, ack->data(), std::min(ack->size(), sizeof rv->hello_ack));
        rv->passive_pid = g_rt.pid;
        if (!rv->move(claiming, shm::Rendezvous::Accepted)) {  // withdrawn: too late
            note_fallback(Fallback::Late, slot);
            delete c;
            return nullptr;
        }
        futex_wake(&rv->state);
        become_accelerated(c);
        return c;
    } catch (...) {
        note_fallback(Fallback::SetupFailed, slot);
        return nullptr;
    }
}

namespace {
// The common start of send and recv.  False: the call does not go through the engine, either
// because the socket is on kernel TCP (*handled false: pass through) or because a nonblocking call
// met a connection still waiting for its peer's decision (*handled true, EAGAIN: nothing can move).
bool enter(Socket* s, int fd, int flags, Conn** out, bool* nb, bool* handled) noexcept {
    Conn* c = s->conn.load(std::memory_order_acquire);
    *handled = false;
    if (!c) return false;
    *nb = s->nonblocking.load(std::memory_order_relaxed) || (flags & MSG_DONTWAIT);
    if (c->state.load(std::memory_order_acquire) != State::Accelerated && !settle(c, fd, !*nb)) {
        if (c->state.load(std::memory_order_acquire) == State::Kernel) return false;
        *handled = true;
        errno = EAGAIN;
        return false;
    }
    *handled = true;
    *out = c;
    return true;
}
}  // namespace

// The stream went back to kernel TCP (revert.hpp): finish the switch; the call passes through.
ssize_t back_to_kernel(Conn* c, int fd, bool* handled) noexcept {
    take_back(c, fd);
    *handled = false;
    return 0;
}

namespace {
// A send on a connection still waiting for the listener's decision: true when it went as early
// data (*out: its result).  A blocking send goes early only when all of it fits; otherwise it
// waits for the decision as before.  A nonblocking one sends what fits.
bool send_early(Socket* s, Conn* c, int fd, const iovec* iov, int cnt, int flags, ssize_t* out) noexcept {
    if ((flags & MSG_OOB) || cnt <= 0 || cnt > 16 || !early_allowed()) return false;
    bool nb = s->nonblocking.load(std::memory_order_relaxed) || (flags & MSG_DONTWAIT);
    try {
        std::lock_guard<std::mutex> serial(c->send_mu);
        std::unique_lock<std::mutex> lk(c->mu);
        if (c->state.load(std::memory_order_acquire) != State::Pending || !start_early(c, fd)) return false;
        // A socket in an epoll set will be waited for there: its answer must ring (epoll arms
        // only accelerated sockets before sleeping, and this one is still pending).
        if (s->epoll_regs.load(std::memory_order_relaxed) > 0) c->ch->arm_socket_doorbell(true, false);
        std::size_t want = proto::iov_total({iov, static_cast<std::size_t>(cnt)});
        std::size_t room = c->eng->send_room();
        if (want == 0 || room == 0 || (!nb && room < want)) return false;
        Use use(c, fd);
        proto::Engine& e = *c->eng;
        long r = drive_op(c, fd, lk, e.start_send({iov, static_cast<std::size_t>(cnt)}, false, true), [&] { return e.progress_send(); },
                          [&] { return e.interrupt_send(); });
        if (r > 0) {
            c->early_bytes += static_cast<std::uint64_t>(r);
            totals().sdx_tx.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
        }
        *out = finish(r, flags);
        return true;
    } catch (...) {
        return false;
    }
}
}  // namespace

ssize_t send(Socket* s, int fd, const iovec* iov, int cnt, int flags, bool* handled) noexcept {
    if (Conn* pc = s->conn.load(std::memory_order_acquire); pc && pc->state.load(std::memory_order_acquire) == State::Pending) {
        ssize_t r = 0;
        if (send_early(s, pc, fd, iov, cnt, flags, &r)) {
            *handled = true;
            return r;
        }
    }
    Conn* c = nullptr;
    bool nb = false;
    if (!enter(s, fd, flags, &c, &nb, handled)) return *handled ? -1 : 0;
    try {
        std::lock_guard<std::mutex> serial(c->send_mu);
        std::unique_lock<std::mutex> lk(c->mu);
        if (given_back(c)) return back_to_kernel(c, fd, handled);
        Use use(c, fd);
        proto::Engine& e = *c->eng;
        std::size_t want = proto::iov_total({iov, static_cast<std::size_t>(cnt)});
        auto attempt = [&](const iovec* v, int n) {
            return drive_op(c, fd, lk, e.start_send({v, static_cast<std::size_t>(n)}, flags & MSG_OOB, nb),
                            [&] { return e.progress_send(); }, [&] { return e.interrupt_send(); },
                            c->sndtimeo_ns.load(std::memory_order_relaxed), true);
        };
        // Interrupted before any byte went: restarted when the handler asked for SA_RESTART.
        unsigned mark = sig::mark();
        long r = attempt(iov, cnt);
        while (r == -proto::Engine::kErestart && sig::should_restart(mark)) {
            mark = sig::mark();
            r = attempt(iov, cnt);
        }
        while (nb && (r == -EAGAIN || (r >= 0 && static_cast<std::size_t>(r) < want))) {
            // Out of credits: the peer's next message (its credit update) must ring the kernel
            // socket, so that an application waiting in epoll or poll for POLLOUT wakes up.  What
            // came in before the arming would ring nothing: use it now.
            if (!arm_and_take(c, false, true) || !e.writable()) break;
            std::size_t done = r > 0 ? static_cast<std::size_t>(r) : 0;
            std::vector<iovec> rest;
            for (int i = 0, skip = 0; i < cnt; ++i) {
                std::size_t len = iov[i].iov_len;
                if (done >= len && skip == 0) {
                    done -= len;
                    continue;
                }
                skip = 1;
                rest.push_back(iovec{static_cast<char*>(iov[i].iov_base) + done, len - done});
                done = 0;
            }
            long more = attempt(rest.data(), static_cast<int>(rest.size()));
            if (more < 0) {
                if (more == kGivenBack) r = (r > 0 ? r : 0) + static_cast<long>(e.abandon_send());
                break;
            }
            r = (r > 0 ? r : 0) + more;
        }
        if (r == kGivenBack) {
            // What this call handed to the channel is replayed on TCP by take_back; the rest goes
            // through the kernel socket as usual.
            long posted = static_cast<long>(e.abandon_send());
            if (posted == 0) return back_to_kernel(c, fd, handled);
            take_back(c, fd);
            r = posted;
        }
        if (given_back(c)) take_back(c, fd);
        if (r > 0) totals().sdx_tx.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
        return finish(r, flags);
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
}

ssize_t recv(Socket* s, int fd, const iovec* iov, int cnt, int flags, bool* handled) noexcept {
    // TCP semantics the engine does not model: a zero-length read still waits for data (the
    // kernel's target is one byte) and returns 0; MSG_TRUNC discards instead of copying (the
    // buffer may be NULL).
    std::size_t want = proto::iov_total({iov, static_cast<std::size_t>(cnt)});
    if (want == 0 || (flags & MSG_TRUNC)) {
        static thread_local char scratch[64 * 1024];
        iovec v{scratch, want == 0 ? 1 : std::min(want, sizeof scratch)};
        int f = (flags & ~MSG_TRUNC) | (want == 0 ? MSG_PEEK : 0);
        ssize_t r = recv(s, fd, &v, 1, f, handled);
        return want == 0 && r > 0 ? 0 : r;
    }
    Conn* c = nullptr;
    bool nb = false;
    if (!enter(s, fd, flags, &c, &nb, handled)) return *handled ? -1 : 0;
    try {
        std::lock_guard<std::mutex> serial(c->recv_mu);
        std::unique_lock<std::mutex> lk(c->mu);
        if (given_back(c)) return back_to_kernel(c, fd, handled);
        Use use(c, fd);
        proto::Engine& e = *c->eng;
        int eflags = flags & (MSG_PEEK | MSG_WAITALL | MSG_OOB);
        feed(c);
        auto receive = [&] {
            return drive_op(c, fd, lk, e.start_recv({iov, static_cast<std::size_t>(cnt)}, eflags, nb),
                            [&] { return e.progress_recv(); }, [&] { return e.interrupt_recv(); },
                            c->rcvtimeo_ns.load(std::memory_order_relaxed));
        };
        // A sender may advertise zero copy to us only while we wait here (Port::peer_receiving).
        struct Receiving {
            shm::Channel* ch;
            bool on;
            Receiving(shm::Channel* c, bool blocking) : ch(c), on(blocking) {
                if (on) ch->receiving(1);
            }
            ~Receiving() {
                if (on) ch->receiving(-1);
            }
        } receiving(c->ch.get(), !nb && !(flags & MSG_PEEK));
        // Interrupted before any byte came: restarted when the handler asked for SA_RESTART.
        unsigned mark = sig::mark();
        long r = receive();
        while (r == -proto::Engine::kErestart && sig::should_restart(mark)) {
            mark = sig::mark();
            r = receive();
        }
        for (int retry = 0; r == -EAGAIN && retry < 2; ++retry) {
            // Nothing here.  From now on the peer rings the kernel socket (poll and epoll wait
            // there); what raced in before the arming, or a peer that went away, is taken now.
            if (retry == 0) drain_doorbells_locked(c, fd);
            if (!arm_and_take(c, true, false)) check_peer(c, fd);
            if (!e.readable()) break;
            r = drive_op(c, fd, lk, e.start_recv({iov, static_cast<std::size_t>(cnt)}, eflags, nb),
                         [&] { return e.progress_recv(); }, [&] { return e.interrupt_recv(); });
        }
        if (r == kGivenBack) {
            e.abandon_recv();  // the peer sent nothing (revert.hpp): the kernel socket has it all
            return back_to_kernel(c, fd, handled);
        }
        if (r > 0 && !(flags & MSG_PEEK))
            totals().sdx_rx.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
        return finish(r, flags | MSG_NOSIGNAL);
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
}

void shutdown(Conn* c, int fd, int how) noexcept {
    if (!settle(c, fd, true)) return;
    std::lock_guard<std::mutex> lk(c->mu);
    Use use(c, fd);
    if (how == SHUT_WR || how == SHUT_RDWR) c->eng->shutdown_send();
    if (how == SHUT_RD || how == SHUT_RDWR) c->eng->shutdown_recv();
    feed(c);
    c->gen.fetch_add(1, std::memory_order_relaxed);  // readiness changed (POLLOUT, POLLHUP)
}

namespace {
// The end of a connection that ended normally on this side: its segment stays mapped for the
// next connection between these processes (verbs/shm_pool.hpp).  The flag is this side's last
// access to the segment.  Caller holds c->mu.
void keep_segment(Conn* c) noexcept {
    // Under a seccomp filter only the data path's calls are safe (the caches may call kill(2));
    // such a process (sshd's pre-auth child) is short-lived anyway.
    if (g_rt.sandboxed.load(std::memory_order_relaxed)) return;
    shm::Rendezvous* rv = rv_of(c);
    int side = side_of(c);
    if (rv->reverted.load(std::memory_order_acquire) != 0) return;  // the stream went back to TCP: unusual, let it go
    if (c->active_side && (!c->poolable || c->ch->segment().fd() < 0)) return;
    try {
        pid_t peer = c->ch->peer();
        shm::Segment seg = c->ch->give_up_segment();
        seg.rendezvous()->finished[side].store(1, std::memory_order_release);
        if (c->active_side) {
            c->poolable = false;  // the reservation goes with the segment
            shm::SegmentPool::give(std::move(seg), c->listener, peer);
        } else {
            shm::AttachCache::give(std::move(seg), peer);
        }
    } catch (...) {
    }
}
}  // namespace

void release(Conn* c, int fd, bool linger_zero) noexcept {
    if (!c) return;
    // A connection closed before its first call may have been accepted meanwhile: then it ends
    // as an sdx connection does (DisConn), or the peer would take the kernel FIN for a dead peer.
    // With early bytes out, the decision is waited for (at most handshake_timeout): they may have
    // to be sent on TCP before the FIN.
    if (c->state.load(std::memory_order_acquire) == State::Pending) settle(c, fd, c->early);
    State st = c->state.load(std::memory_order_acquire);
    if (st == State::Pending) {
        if (c->seg) withdraw(c->seg->rendezvous());
    } else if (st == State::Accelerated) {
        std::lock_guard<std::mutex> lk(c->mu);
        use_fd(c, fd);
        int side = c->active_side ? 0 : 1;
        if (c->ch->segment().rendezvous()->holders[side].fetch_sub(1, std::memory_order_acq_rel) > 1) {
            // Another process (fork) still holds the connection: it goes on from our state.
            if (!c->ch->muted() && rv_of(c)->epoch[side].load(std::memory_order_acquire) == c->epoch) publish(c);
            c->ch->detach();
            delete c;
            return;
        }
        if (!own(c, fd)) {  // the connection is not ours to end (see own())
            delete c;
            return;
        }
        // The DisConn (or AbortConn) rings like any message, although the kernel FIN follows: with
        // the FIN alone, sockperf's server lost the last message of a stream (it acts on the
        // kernel's hang-up before the engine's data; not understood yet, see the issue notes).
        c->eng->close(linger_zero);
        feed(c);
        c->ch->close();
        drain_doorbells_locked(c, fd);  // unread bytes in the kernel socket would turn its FIN into a RST
        keep_segment(c);
    }
    delete c;
}

bool ioctl(Conn* c, int fd, unsigned long request, int* value) noexcept {
    if (!settle(c, fd, false)) return false;
    std::lock_guard<std::mutex> lk(c->mu);
    Use use(c, fd);
    feed(c);
    if (request == FIONREAD) {
        if (c->eng->bytes_readable() == 0) {
            // An application that asks before it reads (nginx on keep-alive) may go to sleep in
            // epoll right after: have the peer ring the kernel socket, and take what raced in.
            arm_and_take(c, true, false);
        }
        *value = static_cast<int>(std::min<std::size_t>(c->eng->bytes_readable(), INT32_MAX));
    }
    else if (request == SIOCATMARK) *value = c->eng->at_mark() ? 1 : 0;
    else return false;
    return true;
}

void move_fd(Conn* c, int fd) noexcept {
    if (c->state.load(std::memory_order_acquire) != State::Accelerated) return;
    std::lock_guard<std::mutex> lk(c->mu);
    use_fd(c, fd);
}

void set_timeout(Conn* c, int which, const timeval& tv) noexcept {
    long long ns = static_cast<long long>(tv.tv_sec) * 1000000000LL + tv.tv_usec * 1000LL;
    (which == SO_RCVTIMEO ? c->rcvtimeo_ns : c->sndtimeo_ns).store(ns > 0 ? ns : 0, std::memory_order_relaxed);
}

void set_oob_inline(Conn* c, int fd, bool on) noexcept {
    if (!settle(c, fd, false)) {
        // Still undecided: the channel, when it comes, reads the option from the socket; an
        // engine already sending early data takes it now.
        std::lock_guard<std::mutex> lk(c->mu);
        c->opts_set = true;
        if (c->eng && c->state.load(std::memory_order_acquire) == State::Pending) c->eng->set_oob_inline(on);
        return;
    }
    std::lock_guard<std::mutex> lk(c->mu);
    c->eng->set_oob_inline(on);
}

bool take_error(Conn* c, int fd, int* err) noexcept {
    if (!settle(c, fd, false)) return false;
    std::lock_guard<std::mutex> lk(c->mu);
    Use use(c, fd);
    feed(c);
    *err = c->eng->take_error();
    return true;
}

short poll_events(Conn* c, int fd, short want, std::uint64_t* gen) noexcept {
    State st = c->state.load(std::memory_order_acquire);
    if (st == State::Pending && !settle(c, fd, false)) {
        // Undecided: nothing to read yet; writable when early data can go (a nonblocking client
        // writes its request without waiting for the server to accept).
        if (!(want & (POLLOUT | POLLWRNORM)) || c->state.load(std::memory_order_acquire) != State::Pending) return 0;
        std::lock_guard<std::mutex> lk(c->mu);
        if (c->state.load(std::memory_order_acquire) != State::Pending || !early_possible(c, fd)) return 0;
        if (gen) *gen = c->gen.load(std::memory_order_relaxed);  // settle() bumps it: a new edge then
        return static_cast<short>(want & (POLLOUT | POLLWRNORM));
    }
    std::lock_guard<std::mutex> lk(c->mu);
    if (given_back(c)) {
        take_back(c, fd);
        return 0;  // the caller sees State::Kernel and asks the kernel
    }
    Use use(c, fd);
    feed(c);
    if (!c->eng->readable()) check_peer(c, fd);
    unsigned m = c->eng->poll_mask();
    if (gen) *gen = c->gen.load(std::memory_order_relaxed);
    return static_cast<short>(m & (static_cast<unsigned>(want) | POLLERR | POLLHUP));
}

bool arm(Conn* c, int fd, bool read, bool write) noexcept {
    State st = c->state.load(std::memory_order_acquire);
    if (st == State::Pending) {
        // Early data out: the channel exists, and the listener's first answer (after it accepted)
        // must ring a waiter in poll or epoll like any other message.
        std::lock_guard<std::mutex> lk(c->mu);
        if (c->state.load(std::memory_order_acquire) != State::Pending || !c->early) return false;
        c->ch->arm_socket_doorbell(read, write);
        return false;
    }
    if (st != State::Accelerated) return false;
    std::lock_guard<std::mutex> lk(c->mu);
    if (given_back(c)) {
        take_back(c, fd);
        return true;  // look again: the socket is on kernel TCP now
    }
    Use use(c, fd);
    return arm_and_take(c, read, write);
}

void add_holder(Conn* c) noexcept {
    if (c->state.load(std::memory_order_acquire) != State::Accelerated) return;
    std::lock_guard<std::mutex> lk(c->mu);
    shm::Rendezvous* rv = rv_of(c);
    int side = side_of(c);
    rv->holders[side].fetch_add(1, std::memory_order_acq_rel);
    // Parent and child start from the same state: published, and claimed by neither, so that the
    // first to use it claims it and the other continues from what that one publishes.
    if (!c->ch->muted() && rv->epoch[side].load(std::memory_order_acquire) == c->epoch && publish(c)) {
        std::uint64_t cur = c->epoch;
        if (rv->epoch[side].compare_exchange_strong(cur, cur + 1, std::memory_order_acq_rel))
            rv->published[side].store(cur + 1, std::memory_order_release);
    }
}

void publish_shared() noexcept {
    if (!any_live()) return;
    g_fds.for_each(0, ~0u >> 1, [](int, Socket* s) {
        Conn* c = s->conn.load(std::memory_order_acquire);
        if (!c || c->state.load(std::memory_order_acquire) != State::Accelerated) return;
        std::lock_guard<std::mutex> lk(c->mu);
        if (!c->ch->muted() && shared(c)) publish(c);
    });
}

void drain_doorbells_locked(Conn* c, int fd) noexcept {
    // Exact counting is what makes this safe at any time, even while the stream goes back to TCP.
    if (!c->ch) return;
    char buf[256];
    bool sandboxed = g_rt.sandboxed.load(std::memory_order_relaxed);
    for (std::uint64_t owed = c->ch->doorbells_owed(); owed > 0;) {
        std::size_t want = std::min<std::uint64_t>(owed, sizeof buf);
        ssize_t n;
        if (sandboxed) {  // no recvfrom: poll, then a read that cannot block
            pollfd p{fd, POLLIN, 0};
            if (real::poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) break;
            n = real::read(fd, buf, want);
        } else {
            n = real::recv(fd, buf, want, MSG_DONTWAIT);
        }
        if (n <= 0) break;
        c->ch->note_drained(static_cast<std::uint64_t>(n));
        owed -= static_cast<std::uint64_t>(n);
    }
}

void drain_doorbells(Conn* c, int fd) noexcept {
    std::lock_guard<std::mutex> lk(c->mu);
    drain_doorbells_locked(c, fd);
}

}  // namespace sdx::accel
