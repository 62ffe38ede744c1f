// exec() with accelerated sockets: the new program keeps the acceleration when it can, otherwise
// the stream goes back to kernel TCP (revert.hpp).  Either way no byte is lost or reordered.
//
// Handover: the exec'ing process leaves the connection exactly as a fresh one (it posted nothing
// and consumed nothing: the usual case, since inetd-style servers and sshd exec right after
// accept), opens an fd of the shared segment that survives exec, and names the socket's fds, the
// segment fd, its side and the peer's pid in LIBSDX_HANDOVER.  The new image's shim, at start-up,
// maps the segment, builds a fresh engine from the Hello/HelloAck kept in the segment, and goes on
// where the old image stood; the peer notices nothing (exec keeps the pid, so cross-memory attach
// still reaches the process).  When that is impossible (the new program will not load sdx, the
// segment cannot be reopened without privilege, the stream is already in use), the connection is
// given back to TCP before exec; and a new image that cannot resume gives it back itself.
#pragma once

#include <cstddef>

namespace sdx::accel {

// Before exec of `path` with environment `envp`: prepares every accelerated socket the new program
// inherits.  Returns the LIBSDX_HANDOVER=... entry to add to the environment (written into `buf`),
// or nullptr.  No malloc (this may run in a vfork child).
const char* prepare_exec(const char* path, char* const* envp, char* buf, std::size_t size) noexcept;
// posix_spawn: the child execs inside the C library, out of the shim's reach, and file actions
// may hand it any socket (`any` true): fresh connections it may inherit go back to TCP, so that
// parent and child both see the kernel socket.  One already in use stays accelerated in the parent
// (a child that touches an inherited copy of it would read doorbells: said in the log).
void before_spawn(bool any) noexcept;
// exec failed: the current image goes on with its connections; the segment fds opened go.
void exec_failed() noexcept;
// At start-up: takes over the connections the previous image handed over (LIBSDX_HANDOVER).
void resume_inherited() noexcept;

// The environment variable, and room enough for its value.
inline constexpr char kHandoverVar[] = "LIBSDX_HANDOVER";
inline constexpr std::size_t kHandoverBuf = 4096;

}  // namespace sdx::accel
