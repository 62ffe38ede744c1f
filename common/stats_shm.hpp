// The live statistics every sdx process publishes, read by `sdx stats`.
//
// Each process with the shim active keeps one anonymous shared-memory object (a memfd named
// "sdx-stats", so it is gone with the process, even after SIGKILL): process totals, and one slot
// per tracked TCP socket.  `sdx stats` finds the objects through /proc/PID/fd and maps them
// read-only.  The layout is versioned; a reader refuses a layout it does not know.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace sdx::shmstats {

inline constexpr char kMagic[8] = {'S', 'D', 'X', 'S', 'T', 'A', 'T', '1'};
inline constexpr std::uint32_t kVersion = 2;
inline constexpr char kMemfdName[] = "sdx-stats";
inline constexpr std::uint32_t kSlots = 1024;  // sockets listed per process (more are counted, not listed)

// Why a socket that might have been accelerated is on kernel TCP (the stats JSON's "fallbacks").
inline constexpr std::string_view kFallbackNames[] = {
    "not_local",         // connect(): the peer is not on this host
    "no_listener",       // connect(): no sdx listener for that address (the peer has no sdx)
    "connect_failed",    // connect() itself failed
    "handshake_timeout", // the sdx listener did not accept in time (handshake_timeout)
    "declined",          // the listener refused (versions, resources)
    "not_announced",     // accept(): the client did not announce itself (it has no sdx)
    "late",              // accept(): the client had already given up waiting
    "setup_failed",      // memory or segment set-up failed
    "exec",              // exec(): the stream went back to TCP for the new program
    "rule",              // a rule or option said tcp
    "other_user",        // connect(): the sdx listener runs as another user (it could not attach)
};
inline constexpr int kFallbacks = static_cast<int>(std::size(kFallbackNames));

struct Totals {
    std::atomic<std::uint64_t> sockets_tracked{0};
    std::atomic<std::uint64_t> sockets_accelerated{0};
    std::atomic<std::uint64_t> sdx_tx{0}, sdx_rx{0};  // payload bytes over sdx
    std::atomic<std::uint64_t> tcp_tx{0}, tcp_rx{0};  // payload bytes over kernel TCP (tracked sockets)
    std::atomic<std::uint64_t> fallbacks[kFallbacks]{};
    // Connection segments (verbs/shm_pool.hpp): made or reused by the connecting side, mapped
    // anew or found mapped by the accepting side.
    std::atomic<std::uint64_t> seg_created{0}, seg_reused{0}, seg_attached{0}, seg_cached{0};
};

enum class Path : std::uint32_t { Free = 0, Tcp = 1, Pending = 2, Shm = 3, Listen = 4 };
inline std::string_view path_name(Path p) {
    switch (p) {
    case Path::Tcp: return "tcp";
    case Path::Pending: return "pending";
    case Path::Shm: return "shm";
    case Path::Listen: return "listen";
    default: return "free";
    }
}

struct SocketSlot {
    std::atomic<Path> path{Path::Free};
    std::atomic<std::int32_t> fd{-1};
    std::atomic<std::int32_t> reason{-1};  // index into kFallbackNames, or -1
    std::uint8_t peer[28] = {};            // sockaddr_in/in6 of the peer, when known
    std::atomic<std::uint32_t> peer_len{0};
    std::atomic<std::uint64_t> tx_bcopy{0}, rx_bcopy{0}, tx_zcopy{0}, rx_zcopy{0};
    std::atomic<std::uint64_t> tcp_tx{0}, tcp_rx{0};
    std::atomic<std::uint64_t> credit_stalls{0}, sendsm{0}, cancels{0}, aborts{0};
};

struct Region {
    char magic[8];
    std::uint32_t version;
    std::uint32_t slots_n;
    std::int32_t pid;
    char program[64];
    Totals totals;
    SocketSlot slots[kSlots];
};

}  // namespace sdx::shmstats
