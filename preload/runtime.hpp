// Process-wide state of the shim: configuration, the fd table, counters.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string_view>

#include "common/stats_shm.hpp"
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

// Why a socket that might have been accelerated stays on (or went back to) kernel TCP; the names
// are shmstats::kFallbackNames, in this order.
enum class Fallback : int {
    NotLocal,
    NoListener,
    ConnectFailed,
    HandshakeTimeout,
    Declined,
    NotAnnounced,
    Late,
    SetupFailed,
    Exec,
    Rule,
    OtherUser,
    count_
};
static_assert(static_cast<int>(Fallback::count_) == shmstats::kFallbacks);

// Per-process counters that stay in this process (the stats file); the live ones are in the
// shared region (stats_region.hpp).
struct Stats {
    std::atomic<std::uint64_t> calls[static_cast<int>(Call::count_)]{};
    std::atomic<std::uint64_t> decisions[3]{};  // indexed by conf::Use
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
    // Live totals: in the shared stats region once it exists (stats_region.hpp), here before.
    std::atomic<shmstats::Totals*> totals{nullptr};
};

extern constinit Runtime g_rt;
extern constinit FdTable<Socket> g_fds;

inline Socket* tracked(int fd) noexcept { return g_fds.get(fd); }
inline void count(Call c) noexcept {
    if (g_rt.stats_enabled.load(std::memory_order_relaxed))
        g_rt.stats.calls[static_cast<int>(c)].fetch_add(1, std::memory_order_relaxed);
}

// The live totals (never null once the shim has started).
shmstats::Totals& totals() noexcept;

// A fallback, counted for the process and, with `slot`, shown for the socket.
void note_fallback(Fallback f, shmstats::SocketSlot* slot = nullptr) noexcept;

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
