// Segments kept mapped from one connection to the next.
//
// Setting up a segment per connection and tearing it down at close cost more than the whole
// connection does on kernel TCP: unmapping a shared mapping flushes the TLB of every core the
// process ran on (an IPI each, 30-60 us under this VM's hypervisor) and frees its page tables,
// and the creator's memfd_create/ftruncate/mmap add the rest (measured: ~350 us per close, ~60 us
// per connect).  So both ends keep them:
//
//   SegmentPool  the active side's idle segments.  A connection that ended normally on both sides
//                leaves its segment (and the segment's fd, which the passive side needs to attach
//                it) to its creator, who reuses it, renewed, for its next connection to the same
//                listener: same listener only, so a server never sees memory another server used.
//   AttachCache  the passive side's idle mappings of other processes' segments, by creator pid and
//                segment id (Segment::id), so a reused segment is not mapped again.
//
// Both are bounded, and let go of a segment whose other process died.  A reused segment's
// rendezvous has a new generation (shm_channel.hpp), so nothing about an earlier connection can
// be mistaken for the new one.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "verbs/shm_channel.hpp"

namespace sdx::shm {

class SegmentPool {
public:
    // Segments whose fd this process keeps so that they can be reused, live and idle together:
    // the fds are numbers in the application's table, so there are few of them.
    static constexpr int kMaxFds = 16;
    static constexpr int kMaxIdle = 8;

    // Whether a new connection's segment may keep its fd (then it is poolable).  Every successful
    // reservation ends in give() or unreserve_fd().
    static bool reserve_fd() noexcept;
    static void unreserve_fd() noexcept;
    // A renewed segment for a connection to `listener` whose rings hold `ring_capacity` bytes, if
    // one is idle and its last passive side is done with it.  It carries a reservation.
    static std::optional<Segment> take(const std::string& listener, std::size_t ring_capacity);
    // The segment of a connection that ended normally on this side (with its reservation): kept
    // for reuse, or unmapped when the pool is full.
    static void give(Segment seg, const std::string& listener, pid_t passive_pid);
    // In a fork()ed child: the parent's idle segments are the parent's to reuse.
    static void after_fork_child() noexcept;
};

class AttachCache {
public:
    static constexpr int kMaxIdle = 64;

    // The mapping of process `pid`'s segment `id`, if this process kept it.
    static std::optional<Segment> take(pid_t pid, std::uint64_t id);
    // A mapping of `pid`'s segment this process no longer uses (its fd already closed).
    static void give(Segment seg, pid_t pid);
    static void after_fork_child() noexcept;
};

}  // namespace sdx::shm
