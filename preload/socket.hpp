// The shim's view of one TCP socket: the analogue of the kernel's open file description, shared by
// every fd that dup(), dup2(), fcntl(F_DUPFD) or fork() made from it.
//
// The application's fd is always the kernel socket itself.  The kernel connection stays open
// underneath an accelerated one (addresses, ports, socket options and liveness stay real), so
// switching a socket to sdx at connect/accept time changes `path`, never the fd number.
//
// Sockets live in a type-stable pool: their memory is never returned to the system, so a thread that
// loaded a Socket* from the fd table may read its fields even if another thread is closing the fd;
// the accelerated path (next issue) pins one with try_acquire() before using its connection.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/stats_shm.hpp"
#include "conf/rules.hpp"

namespace sdx {
namespace accel {
struct Conn;
}

enum class Path : std::uint8_t {
    Kernel,       // every call goes to the kernel socket
    Accelerated,  // the byte stream moved to an sdx transport (next issue)
};

enum class SocketRole : std::uint8_t { Unknown, Client, Listener, Accepted };

struct Socket {
    std::atomic<std::uint32_t> refs{0};
    std::atomic<std::uint64_t> free_next{0};  // pool free-list link (index + 1, 0 = end)
    std::atomic<Path> path{Path::Kernel};
    std::atomic<SocketRole> role{SocketRole::Unknown};
    std::atomic<bool> nonblocking{false};       // O_NONBLOCK as last set through this process
    std::atomic<conf::Use> decision{conf::Use::Both};
    int domain = 0;
    std::atomic<accel::Conn*> conn{nullptr};  // set when the stream may move to sdx (pending or moved)
    void* listener = nullptr;                 // a listener's rendezvous (rdv::Listener)
    std::atomic<bool> app_nodelay{false};     // TCP_NODELAY as the application set it
    // SO_OOBINLINE, SO_RCVTIMEO, SO_SNDTIMEO or SO_LINGER set on it (or on its listener): only then
    // does accel ask the kernel for them (three or four system calls per connection saved).
    std::atomic<bool> conn_opts{false};
    std::atomic<int> epoll_regs{0};           // registrations in epoll sets the shim keeps (epoll_set.hpp)
    std::atomic<int> fd_refs{0};              // fd numbers naming this socket in the fd table
    std::atomic<int> inflight{0};             // accelerated calls in progress on it
    std::atomic<int> deferred_fd{-1};         // closed while a call was in progress: the kernel socket, kept
    std::atomic<shmstats::SocketSlot*> slot{nullptr};  // its line in `sdx stats` (stats_region.hpp)

    void ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
    // Takes a reference unless the socket is already being freed.
    bool try_ref() noexcept;
    // Drops a reference; the last one returns the socket to the pool.
    void unref() noexcept;
};

// Allocation without malloc or locks (close() may run in a signal handler).  Returns nullptr when the
// pool is exhausted; the fd then simply stays untracked (kernel TCP).
Socket* socket_alloc() noexcept;
// Sockets handed out and not yet returned (for tests and stats).
std::uint64_t sockets_live() noexcept;

}  // namespace sdx
