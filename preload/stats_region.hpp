// This process's live statistics in shared memory (common/stats_shm.hpp), for `sdx stats`.
#pragma once

#include <sys/socket.h>

#include <string>

#include "common/stats_shm.hpp"

namespace sdx::statsreg {

// Creates the region once, at the process's first tracked socket (before any socket can count
// anything, so no count is lost when the totals move there); a fork()ed child that inherited one
// gets its own.  Without it (no memory) everything still counts, in process memory, and nothing
// is listed.
void open() noexcept;
// A line for socket `fd`, or nullptr (region full or absent).
shmstats::SocketSlot* slot_for(int fd, shmstats::Path path) noexcept;
void set_peer(shmstats::SocketSlot* s, const sockaddr* sa, socklen_t len) noexcept;
// The socket lines as JSON ("[]" without a region).
std::string live_json();
// The fork()ed child: the inherited sockets get lines in its own region.
void after_fork() noexcept;

}  // namespace sdx::statsreg
