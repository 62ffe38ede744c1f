#include "preload/accel.hpp"

#include <errno.h>
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

#include "common/log.hpp"
#include "preload/real.hpp"
#include "preload/rendezvous.hpp"
#include "preload/runtime.hpp"

namespace sdx::accel {

namespace {

long long now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

long long opt(conf::Opt o) noexcept { return g_rt.config->number(o); }

proto::Params params() noexcept {
    proto::Params p;
    p.recv_bufs = static_cast<std::uint16_t>(std::clamp<long long>(opt(conf::Opt::credits), 4, 4096));
    p.buf_size = static_cast<std::uint32_t>(opt(conf::Opt::buf_size));
    p.send_zcopy_threshold = static_cast<std::size_t>(opt(conf::Opt::send_zcopy_threshold));
    p.recv_zcopy_threshold = static_cast<std::size_t>(opt(conf::Opt::recv_zcopy_threshold));
    p.zcopy_max_chunk = static_cast<std::size_t>(opt(conf::Opt::zcopy_max_chunk));
    p.rdma_sync = true;  // cross-memory attach completes inside the call
    return p;
}

std::size_t ring_capacity() noexcept {
    proto::Params p = params();
    return shm::ring_capacity_for(p.recv_bufs, p.buf_size);
}

// A doorbell on the peer's kernel socket: one byte through the real send(), never the shim's.
void ring_socket(int fd) { char b = 0; real::send(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL); }

void futex_wait(std::atomic<std::uint32_t>* w, std::uint32_t val, long long ns) noexcept {
    timespec ts{static_cast<time_t>(ns / 1000000000LL), static_cast<long>(ns % 1000000000LL)};
    ::syscall(SYS_futex, w, FUTEX_WAIT, val, &ts, nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>* w) noexcept { ::syscall(SYS_futex, w, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }

void go_accelerated(Conn* c, shm::Segment seg, int side, pid_t peer, int fd) {
    // The kernel connection now carries only 1-byte doorbells: Nagle would hold each one back
    // until the previous one is acknowledged (40 ms of delayed ACK on loopback).  The application
    // still sees the TCP_NODELAY it set (intercept_socket.cpp).
    int one = 1;
    real::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    seg.rendezvous()->holders[side].store(1, std::memory_order_relaxed);
    c->ch = std::make_unique<shm::Channel>(std::move(seg), side, peer);
    c->ch->set_socket_doorbell(ring_socket, fd);
    c->ch->arm_socket_doorbell();  // an application may wait in poll/epoll before its first read
    c->eng = std::make_unique<proto::Engine>(params(), *c->ch);
}

// Has the peer ring the kernel socket at its next message (the application is about to wait in
// poll or epoll there), then takes in what arrived before the arming, which rang nothing.  True
// when something did arrive.  The caller holds c->mu.
bool arm_and_take(Conn* c) {
    c->ch->arm_socket_doorbell();
    return c->ch->incoming() && c->ch->drive(*c->eng) > 0;
}

// The fd a call came in on rings the peer: any fd of this socket will do, and this one is open.
void use_fd(Conn* c, int fd) { c->ch->set_socket_doorbell(ring_socket, fd); }

// Whether the peer's kernel socket says it is gone; checked when a wait found nothing to do.
void check_peer(Conn* c, int fd) {
    pollfd p{fd, POLLRDHUP, 0};
    if (real::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
        c->ch->drive(*c->eng);  // what it sent before it went (its DisConn, maybe) comes first
        c->eng->on_transport_down();
    }
}

// Sleeps until the peer posts, a signal arrives (false), or a slice passes.
bool wait_peer(Conn* c, int fd, std::unique_lock<std::mutex>& lk) {
    long long spin = opt(conf::Opt::spin);
    lk.unlock();
    bool ok = c->ch->wait(spin, 50000000LL);
    lk.lock();
    if (ok && !c->ch->incoming()) check_peer(c, fd);
    return ok;
}

std::size_t iov_bytes(const iovec* iov, int cnt) noexcept {
    std::size_t n = 0;
    for (int i = 0; i < cnt; ++i) n += iov[i].iov_len;
    return n;
}

ssize_t finish(long r, int flags) {
    if (r >= 0) return r;
    if (r == -proto::Engine::kErestart) r = -EINTR;
    if (r == -EPIPE && !(flags & MSG_NOSIGNAL)) ::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGPIPE);
    errno = static_cast<int>(-r);
    return -1;
}

// Runs an engine operation to its end: feed the channel, progress, sleep when nothing moves;
// a signal cancels what can be cancelled and waits at most cancel_timeout for the peer's answer.
template <typename Progress, typename Interrupt>
long drive_op(Conn* c, int fd, std::unique_lock<std::mutex>& lk, proto::OpResult r, Progress progress, Interrupt interrupt) {
    long long cancel_deadline = 0;
    while (r.status == proto::Status::Pending) {
        int fed = c->ch->drive(*c->eng);
        r = progress();
        if (r.status == proto::Status::Done) break;
        if (fed > 0) continue;
        if (cancel_deadline && now_ns() > cancel_deadline) {
            c->eng->cancel_timed_out();
            r = progress();
            continue;
        }
        if (!wait_peer(c, fd, lk) && !cancel_deadline) {
            cancel_deadline = now_ns() + opt(conf::Opt::cancel_timeout);
            r = interrupt();
        }
    }
    return r.result;
}

}  // namespace

std::atomic<int> g_live{0};

Conn::Conn() noexcept { g_live.fetch_add(1, std::memory_order_relaxed); }
Conn::~Conn() { g_live.fetch_sub(1, std::memory_order_relaxed); }

bool any_live() noexcept { return g_live.load(std::memory_order_relaxed) > 0; }

bool enabled() noexcept {
    return g_rt.active.load(std::memory_order_acquire) && g_rt.config && g_rt.config->flag(conf::Opt::accelerate);
}

Conn* announce(const sockaddr* dst, socklen_t len) noexcept {
    if (!enabled() || !rdv::is_local(dst, len)) return nullptr;
    try {
        auto seg = rdv::announce(dst, len, ring_capacity());
        if (!seg) return nullptr;
        auto hello = proto::Engine::hello_for(params());
        std::memcpy(seg->rendezvous()->hello, hello.data(), std::min(hello.size(), sizeof seg->rendezvous()->hello));
        auto* c = new Conn;
        c->active_side = true;
        c->seg = std::move(seg);
        c->decide_by_ns = now_ns() + opt(conf::Opt::handshake_timeout);
        return c;
    } catch (...) {
        return nullptr;
    }
}

void connect_done(Conn* c, int fd, bool ok) noexcept {
    if (ok) {
        rdv::publish_address(*c->seg, fd);
        return;
    }
    std::uint32_t expect = shm::Rendezvous::Announced;
    c->seg->rendezvous()->state.compare_exchange_strong(expect, shm::Rendezvous::Withdrawn);
    c->seg.reset();
    c->state.store(State::Kernel, std::memory_order_release);
}

bool settle(Conn* c, int fd, bool may_wait) noexcept {
    State st = c->state.load(std::memory_order_acquire);
    if (st != State::Pending) return st == State::Accelerated;
    std::lock_guard<std::mutex> lk(c->mu);
    if ((st = c->state.load(std::memory_order_acquire)) != State::Pending) return st == State::Accelerated;
    shm::Rendezvous* rv = c->seg->rendezvous();
    for (;;) {
        std::uint32_t s = rv->state.load(std::memory_order_acquire);
        if (s == shm::Rendezvous::Accepted) {
            try {
                pid_t peer = rv->passive_pid;
                std::vector<std::byte> ack(reinterpret_cast<std::byte*>(rv->hello_ack),
                                           reinterpret_cast<std::byte*>(rv->hello_ack) + sizeof rv->hello_ack);
                shm::Segment seg = std::move(*c->seg);
                c->seg.reset();
                seg.close_fd();  // the peer has attached
                go_accelerated(c, std::move(seg), 0, peer, fd);
                if (!c->eng->accept_hello_ack(ack)) c->eng->on_transport_down();  // cannot happen with a sane peer
                c->state.store(State::Accelerated, std::memory_order_release);
                g_rt.stats.sockets_accelerated.fetch_add(1, std::memory_order_relaxed);
                return true;
            } catch (...) {
                c->state.store(State::Kernel, std::memory_order_release);
                return false;
            }
        }
        if (s != shm::Rendezvous::Announced) {
            c->seg.reset();
            c->state.store(State::Kernel, std::memory_order_release);
            return false;
        }
        long long left = c->decide_by_ns - now_ns();
        if (left <= 0) {
            std::uint32_t expect = shm::Rendezvous::Announced;
            if (rv->state.compare_exchange_strong(expect, shm::Rendezvous::Withdrawn)) {
                log::info("fd {}: the sdx listener did not accept in time; staying on TCP", fd);
                c->seg.reset();
                c->state.store(State::Kernel, std::memory_order_release);
                return false;
            }
            continue;  // it was accepted meanwhile
        }
        if (!may_wait) return false;
        futex_wait(&rv->state, shm::Rendezvous::Announced, std::min(left, 10000000LL));
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

Conn* accept_from(void* listener, int fd, const sockaddr* peer, socklen_t len) noexcept {
    if (!listener || !enabled()) return nullptr;
    try {
        pid_t peer_pid = 0;
        auto seg = static_cast<rdv::Listener*>(listener)->claim(peer, len, &peer_pid, opt(conf::Opt::handshake_timeout));
        if (!seg) return nullptr;
        shm::Rendezvous* rv = seg->rendezvous();
        std::vector<std::byte> hello(reinterpret_cast<std::byte*>(rv->hello), reinterpret_cast<std::byte*>(rv->hello) + sizeof rv->hello);
        auto* c = new Conn;
        c->active_side = false;
        go_accelerated(c, std::move(*seg), 1, peer_pid, fd);
        auto ack = c->eng->accept_hello(hello);
        if (!ack) {
            std::uint32_t expect = shm::Rendezvous::Announced;
            rv->state.compare_exchange_strong(expect, shm::Rendezvous::Declined);
            futex_wake(&rv->state);
            delete c;
            return nullptr;
        }
        std::memcpy(rv->hello_ack, ack->data(), std::min(ack->size(), sizeof rv->hello_ack));
        rv->passive_pid = ::getpid();
        std::uint32_t expect = shm::Rendezvous::Announced;
        if (!rv->state.compare_exchange_strong(expect, shm::Rendezvous::Accepted)) {  // withdrawn: too late
            delete c;
            return nullptr;
        }
        futex_wake(&rv->state);
        c->state.store(State::Accelerated, std::memory_order_release);
        g_rt.stats.sockets_accelerated.fetch_add(1, std::memory_order_relaxed);
        return c;
    } catch (...) {
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

ssize_t send(Socket* s, int fd, const iovec* iov, int cnt, int flags, bool* handled) noexcept {
    Conn* c = nullptr;
    bool nb = false;
    if (!enter(s, fd, flags, &c, &nb, handled)) return *handled ? -1 : 0;
    try {
        std::lock_guard<std::mutex> serial(c->send_mu);
        std::unique_lock<std::mutex> lk(c->mu);
        use_fd(c, fd);
        proto::Engine& e = *c->eng;
        std::size_t want = iov_bytes(iov, cnt);
        auto attempt = [&](const iovec* v, int n) {
            return drive_op(c, fd, lk, e.start_send({v, static_cast<std::size_t>(n)}, flags & MSG_OOB, nb),
                            [&] { return e.progress_send(); }, [&] { return e.interrupt_send(); });
        };
        long r = attempt(iov, cnt);
        while (nb && (r == -EAGAIN || (r >= 0 && static_cast<std::size_t>(r) < want))) {
            // Out of credits: the peer's next message (its credit update) must ring the kernel
            // socket, so that an application waiting in epoll or poll for POLLOUT wakes up.  What
            // came in before the arming would ring nothing: use it now.
            if (!arm_and_take(c) || !e.writable()) break;
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
            if (more < 0) break;
            r = (r > 0 ? r : 0) + more;
        }
        if (r > 0) g_rt.stats.bytes_accelerated_tx.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
        return finish(r, flags);
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
}

ssize_t recv(Socket* s, int fd, const iovec* iov, int cnt, int flags, bool* handled) noexcept {
    Conn* c = nullptr;
    bool nb = false;
    if (!enter(s, fd, flags, &c, &nb, handled)) return *handled ? -1 : 0;
    try {
        std::lock_guard<std::mutex> serial(c->recv_mu);
        std::unique_lock<std::mutex> lk(c->mu);
        use_fd(c, fd);
        proto::Engine& e = *c->eng;
        int eflags = flags & (MSG_PEEK | MSG_WAITALL | MSG_OOB);
        c->ch->drive(e);
        long r = drive_op(c, fd, lk, e.start_recv({iov, static_cast<std::size_t>(cnt)}, eflags, nb),
                          [&] { return e.progress_recv(); }, [&] { return e.interrupt_recv(); });
        for (int retry = 0; r == -EAGAIN && retry < 2; ++retry) {
            // Nothing here.  From now on the peer rings the kernel socket (poll and epoll wait
            // there); what raced in before the arming, or a peer that went away, is taken now.
            if (retry == 0) drain_doorbells(fd);
            if (!arm_and_take(c)) check_peer(c, fd);
            if (!e.readable()) break;
            r = drive_op(c, fd, lk, e.start_recv({iov, static_cast<std::size_t>(cnt)}, eflags, nb),
                         [&] { return e.progress_recv(); }, [&] { return e.interrupt_recv(); });
        }
        if (r > 0 && !(flags & MSG_PEEK))
            g_rt.stats.bytes_accelerated_rx.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
        return finish(r, flags | MSG_NOSIGNAL);
    } catch (...) {
        errno = ENOMEM;
        return -1;
    }
}

void shutdown(Conn* c, int fd, int how) noexcept {
    if (!settle(c, fd, true)) return;
    std::lock_guard<std::mutex> lk(c->mu);
    use_fd(c, fd);
    if (how == SHUT_WR || how == SHUT_RDWR) c->eng->shutdown_send();
    if (how == SHUT_RD || how == SHUT_RDWR) c->eng->shutdown_recv();
    c->ch->drive(*c->eng);
}

void release(Conn* c, int fd, bool linger_zero) noexcept {
    if (!c) return;
    State st = c->state.load(std::memory_order_acquire);
    if (st == State::Pending) {
        if (c->seg) {
            std::uint32_t expect = shm::Rendezvous::Announced;
            c->seg->rendezvous()->state.compare_exchange_strong(expect, shm::Rendezvous::Withdrawn);
        }
    } else if (st == State::Accelerated) {
        std::lock_guard<std::mutex> lk(c->mu);
        use_fd(c, fd);
        int side = c->active_side ? 0 : 1;
        if (c->ch->segment().rendezvous()->holders[side].fetch_sub(1, std::memory_order_acq_rel) > 1) {
            c->ch->detach();  // another process (a fork()ed child) still holds the connection
            delete c;
            return;
        }
        c->eng->close(linger_zero);
        c->ch->drive(*c->eng);
        c->ch->close();
        drain_doorbells(fd);  // unread bytes in the kernel socket would turn its FIN into a RST
    }
    delete c;
}

bool ioctl(Conn* c, int fd, unsigned long request, int* value) noexcept {
    if (!settle(c, fd, false)) return false;
    std::lock_guard<std::mutex> lk(c->mu);
    use_fd(c, fd);
    c->ch->drive(*c->eng);
    if (request == FIONREAD) {
        if (c->eng->bytes_readable() == 0) {
            // An application that asks before it reads (nginx on keep-alive) may go to sleep in
            // epoll right after: have the peer ring the kernel socket, and take what raced in.
            arm_and_take(c);
        }
        *value = static_cast<int>(std::min<std::size_t>(c->eng->bytes_readable(), INT32_MAX));
    }
    else if (request == SIOCATMARK) *value = c->eng->at_mark() ? 1 : 0;
    else return false;
    return true;
}

bool take_error(Conn* c, int fd, int* err) noexcept {
    if (!settle(c, fd, false)) return false;
    std::lock_guard<std::mutex> lk(c->mu);
    use_fd(c, fd);
    c->ch->drive(*c->eng);
    *err = c->eng->take_error();
    return true;
}

short poll_events(Conn* c, int fd, short want) noexcept {
    State st = c->state.load(std::memory_order_acquire);
    if (st == State::Pending && !settle(c, fd, false)) return 0;  // undecided: neither readable nor writable yet
    std::lock_guard<std::mutex> lk(c->mu);
    use_fd(c, fd);
    c->ch->drive(*c->eng);
    if (!c->eng->readable()) check_peer(c, fd);
    unsigned m = c->eng->poll_mask();
    return static_cast<short>(m & (static_cast<unsigned>(want) | POLLERR | POLLHUP));
}

bool arm(Conn* c, int fd) noexcept {
    if (c->state.load(std::memory_order_acquire) != State::Accelerated) return false;
    std::lock_guard<std::mutex> lk(c->mu);
    use_fd(c, fd);
    return arm_and_take(c);
}

void add_holder(Conn* c) noexcept {
    if (c->state.load(std::memory_order_acquire) != State::Accelerated) return;
    c->ch->segment().rendezvous()->holders[c->active_side ? 0 : 1].fetch_add(1, std::memory_order_acq_rel);
}

void drain_doorbells(int fd) noexcept {
    char buf[256];
    while (real::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
}

}  // namespace sdx::accel
