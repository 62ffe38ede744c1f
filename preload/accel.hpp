// An accelerated connection in the shim: the protocol engine, the shared-memory channel, a lock,
// and the blocking waits and signals around them.  The application's fd stays the kernel socket:
// it carries the connection's addresses and options, doorbell bytes for poll/epoll, and the
// liveness signal (a dead peer's kernel closes it).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/stats_shm.hpp"
#include "protocol/engine.hpp"
#include "verbs/shm_channel.hpp"

namespace sdx {
struct Socket;
}

namespace sdx::accel {

enum class State : std::uint8_t {
    Pending,      // announced to an sdx listener, waiting for its decision
    Accelerated,  // the byte stream runs over shared memory
    Kernel,       // decided: kernel TCP (declined, withdrawn or failed)
};

struct Conn {
    Conn() noexcept;
    ~Conn();
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;
    std::mutex send_mu;                       // one sender at a time (held for a whole send)
    std::mutex recv_mu;                       // one receiver at a time
    std::mutex mu;                            // the engine and the channel
    std::atomic<State> state{State::Pending};
    bool active_side = true;
    long long decide_by_ns = 0;               // Pending: withdraw after this
    std::optional<shm::Segment> seg;          // Pending: the announced segment
    // The active side's segment keeps its fd and returns to shm::SegmentPool when the connection
    // ends normally on both sides (it holds one of the pool's fd reservations meanwhile).
    bool poolable = false;
    std::string listener;                     // poolable: the rendezvous name it serves
    // Pending with early data out (accel.cpp): the channel and engine exist, the segment is in
    // the channel, and settle() finishes or undoes them.
    bool early = false;
    std::uint64_t early_bytes = 0;
    bool kernel_up = false;                   // the kernel connection is known to be established
    bool opts_set = true;                     // see announce(): false skips three getsockopt calls
    std::unique_ptr<shm::Channel> ch;
    std::unique_ptr<proto::Engine> eng;
    std::atomic<bool> closed{false};
    std::atomic<std::uint64_t> gen{0};        // bumped by every arrival from the peer (epoll edges)
    std::uint64_t epoch = 0;                  // this process's latest claim on the connection (accel.cpp)
    std::atomic<shmstats::SocketSlot*> slot{nullptr};  // the socket's `sdx stats` line
    std::atomic<long long> rcvtimeo_ns{0};    // SO_RCVTIMEO / SO_SNDTIMEO (0: none)
    long long spin_ns = -1;                   // the adaptive spin budget now (-1: not yet set; under mu)
    unsigned spin_idle = 0;                   // waits since the budget fell to zero
    std::atomic<long long> sndtimeo_ns{0};
};

// Whether sockets may be accelerated in this process (option `accelerate`).
bool enabled() noexcept;
// Whether this process holds any sdx connection at all (readiness calls skip their scan if not).
bool any_live() noexcept;

// connect(): announce before the SYN.  Returns a pending connection, or nullptr (stay on TCP).
// `opts_set`: the application set SO_OOBINLINE, SO_RCVTIMEO or SO_SNDTIMEO on the socket (or its
// listener); otherwise the engine starts from the defaults without asking the kernel.
Conn* announce(const sockaddr* dst, socklen_t len, shmstats::SocketSlot* slot, bool opts_set) noexcept;
// After the real connect() returned 0 or EINPROGRESS; `ok` false when it failed (withdraw).
// `up`: connect() returned 0 (the kernel connection is established, not just in progress).
void connect_done(Conn* c, int fd, bool ok, bool up) noexcept;
// accept(): the connection is accelerated when its peer announced itself to this listener.
Conn* accept_from(void* listener, int fd, const sockaddr* peer, socklen_t len, shmstats::SocketSlot* slot, bool opts_set) noexcept;
void* open_listener(int fd) noexcept;  // after listen(): the rendezvous, or nullptr
void close_listener(void* l) noexcept;

// Settles a pending connection (waits when `may_wait`).  True when it is accelerated.
bool settle(Conn* c, int fd, bool may_wait) noexcept;

// The data path.  `handled` false: the socket is (now) on kernel TCP, the caller passes through.
ssize_t send(Socket* s, int fd, const iovec* iov, int cnt, int flags, bool* handled) noexcept;
ssize_t recv(Socket* s, int fd, const iovec* iov, int cnt, int flags, bool* handled) noexcept;
// shutdown(): the engine's half; the kernel socket is shut down too by the caller.
void shutdown(Conn* c, int fd, int how) noexcept;
// The last close of the socket: DisConn or AbortConn, then the channel goes.
void release(Conn* c, int fd, bool linger_zero) noexcept;
// FIONREAD, SIOCATMARK.
bool ioctl(Conn* c, int fd, unsigned long request, int* value) noexcept;
// The socket's fd number closes while a call is in progress; `fd` (a private duplicate) stands in.
void move_fd(Conn* c, int fd) noexcept;
// SO_RCVTIMEO or SO_SNDTIMEO set by the application (the kernel accepted `tv`).
void set_timeout(Conn* c, int which, const timeval& tv) noexcept;
// SO_OOBINLINE set by the application.
void set_oob_inline(Conn* c, int fd, bool on) noexcept;
// SO_ERROR.
bool take_error(Conn* c, int fd, int* err) noexcept;
// fork(): the connection now has one more holder (the child); only the last close ends it.  Its
// state is published first, so that whichever process uses it next continues from there.
void add_holder(Conn* c) noexcept;
// exit(): a connection another process also holds is published for it to continue.
void publish_shared() noexcept;

// Readiness.  `poll_events` computes the POLL* bits of an accelerated socket from the engine
// (after taking in what arrived); `arm` asks the peer to ring the kernel socket at its next
// message and reports whether something arrived meanwhile (then do not sleep).
// `gen`, when given, receives the connection's event generation (see Conn::gen).
short poll_events(Conn* c, int fd, short want, std::uint64_t* gen = nullptr) noexcept;
bool arm(Conn* c, int fd, bool read, bool write) noexcept;  // what the waiter waits for
// Takes the doorbell bytes the peer sent off the kernel socket (never more than it counted).
void drain_doorbells(Conn* c, int fd) noexcept;
void drain_doorbells_locked(Conn* c, int fd) noexcept;  // caller holds c->mu
// The engine parameters this process's configuration gives.
proto::Params engine_params() noexcept;
// Gives `c` its channel over `seg` and a fresh engine, and arms the socket doorbell on `fd`.
void attach_channel(Conn* c, shm::Segment seg, int side, pid_t peer, int fd);

}  // namespace sdx::accel
