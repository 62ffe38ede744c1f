// Process-wide state of the shim: configuration, the fd table, counters.
#pragma once

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

struct Stats {
    std::atomic<std::uint64_t> calls[static_cast<int>(Call::count_)]{};
    std::atomic<std::uint64_t> sockets_tracked{0};
    std::atomic<std::uint64_t> sockets_accelerated{0};
    std::atomic<std::uint64_t> bytes_accelerated_tx{0};  // payload bytes the application sent over sdx
    std::atomic<std::uint64_t> bytes_accelerated_rx{0};
    std::atomic<std::uint64_t> decisions[3]{};  // indexed by conf::Use
    void reset() noexcept;
};

struct Runtime {
    std::atomic<bool> active{false};       // config loaded and enable=true: sockets are tracked
    std::atomic<bool> stats_enabled{false};
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

// Starts tracking a new kernel socket fd (socket(), accept()).  No-op when inactive.
void track_new(int fd, int domain, SocketRole role, bool nonblocking, conf::Use decision) noexcept;
// Forgets `fd` (it was closed).  Returns nothing; drops the table's reference.
void untrack(int fd) noexcept;
// Makes `newfd` share `s` (dup family); `s` carries a reference owned by the caller, now the table's.
void track_dup(int newfd, Socket* s) noexcept;
// The socket behind fd with a reference held, or nullptr (dup family, which must not race close).
Socket* acquire(int fd) noexcept;

// Rule decision for a socket; falls back to default_use.
conf::Use decide(conf::Role role, const sockaddr* sa, socklen_t len) noexcept;

// Called in the child after fork(): counters restart for the new process.
void after_fork_child() noexcept;

}  // namespace sdx
