// Process-wide state of the shim: configuration, the fd table, counters.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string_view>

#include "conf/config.hpp"
#include "preload/fd_table.hpp"
#include "preload/socket.hpp"

namespace sdx {

// Interposed calls, for counters.  libc.def plus the variadic exec functions.
enum class Call : int {
#define SDX_LIBC(ret, name, params, args) name,
#include "preload/libc.def"
#undef SDX_LIBC
    execl,
    execlp,
    execle,
    count_
};
std::string_view call_name(Call c);

// Why a socket that might have been accelerated stays on (or went back to) kernel TCP.
enum class Fallback : int {
    NotLocal,          // connect(): the peer is not on this host
    NoListener,        // connect(): no sdx listener for that address (the peer has no sdx)
    ConnectFailed,     // connect() itself failed
    HandshakeTimeout,  // the sdx listener did not accept in time (handshake_timeout)
    Declined,          // the listener refused (versions, resources)
    NotAnnounced,      // accept(): the client did not announce itself (it has no sdx)
    Late,              // accept(): the client had already given up waiting
    SetupFailed,       // memory or segment set-up failed
    Exec,              // exec(): the stream went back to TCP for the new program
    count_
};
std::string_view fallback_name(Fallback f);

struct Stats {
    std::atomic<std::uint64_t> calls[static_cast<int>(Call::count_)]{};
    std::atomic<std::uint64_t> sockets_tracked{0};
    std::atomic<std::uint64_t> sockets_accelerated{0};
    std::atomic<std::uint64_t> bytes_accelerated_tx{0};  // payload bytes the application sent over sdx
    std::atomic<std::uint64_t> bytes_accelerated_rx{0};
    std::atomic<std::uint64_t> decisions[3]{};  // indexed by conf::Use
    std::atomic<std::uint64_t> fallbacks[static_cast<int>(Fallback::count_)]{};
    void reset() noexcept;
};

struct Runtime {
    std::atomic<bool> active{false};       // config loaded and enable=true: sockets are tracked
    std::atomic<bool> stats_enabled{false};
    // A seccomp filter is installed (sshd's pre-auth child, systemd's SystemCallFilter=): the data
    // path keeps to read, write, poll and futex, which every such filter that does socket I/O
    // allows, and gives up cross-memory attach (the peer then copies: SendSm).
    std::atomic<bool> sandboxed{false};
    pid_t pid = 0;                         // this process (a vfork child differs: it shares our memory)
    const conf::Config* config = nullptr;  // set once before `active`, never freed
    const char* program = "";
    const char* library_path = nullptr;    // this libsdx.so, for exec=keep
    char** sdx_environ = nullptr;          // SDX_* and LD_PRELOAD entries at start-up, for exec=keep
    Stats stats;
};

extern constinit Runtime g_rt;
extern constinit FdTable<Socket> g_fds;

inline Socket* tracked(int fd) noexcept { return g_fds.get(fd); }
inline void count(Call c) noexcept {
    if (g_rt.stats_enabled.load(std::memory_order_relaxed))
        g_rt.stats.calls[static_cast<int>(c)].fetch_add(1, std::memory_order_relaxed);
}

inline void note_fallback(Fallback f) noexcept {
    g_rt.stats.fallbacks[static_cast<int>(f)].fetch_add(1, std::memory_order_relaxed);
}

// The process is (about to be) under a seccomp filter: see Runtime::sandboxed.
void note_sandbox() noexcept;

// Starts tracking a new kernel socket fd (socket(), accept()).  No-op when inactive.
void track_new(int fd, int domain, SocketRole role, bool nonblocking, conf::Use decision) noexcept;
// Forgets `fd` (it was closed).  Returns nothing; drops the table's reference.
void untrack(int fd) noexcept;
// Makes `newfd` share `s` (dup family); `s` carries a reference owned by the caller, now the table's.
void track_dup(int newfd, Socket* s) noexcept;
// The socket behind fd with a reference held, or nullptr (dup family, which must not race close).
Socket* acquire(int fd) noexcept;

// The last fd of socket `s` is closing (or, for a close deferred while a call was in progress, its
// kept kernel socket `fd`): the socket's sdx state ends (intercept_fd.cpp).
void end_socket(int fd, Socket* s) noexcept;
// An accelerated call on `s` ends: the last one out finishes a close that had to wait for it.
void call_done(Socket* s) noexcept;

// Rule decision for a socket; falls back to default_use.
conf::Use decide(conf::Role role, const sockaddr* sa, socklen_t len) noexcept;

// Called in the child after fork(): counters restart for the new process.
void after_fork_child() noexcept;

}  // namespace sdx
