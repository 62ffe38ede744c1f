// Returning an accelerated stream to kernel TCP, for exec().
//
// A new program image knows nothing of the shared-memory channel: it reads and writes the kernel
// socket it inherited.  Before exec, the shim hands every inheritable accelerated connection back
// to kernel TCP, which is exact when nothing of the stream has been consumed yet on the exec'ing
// side (the usual case: inetd-style servers and sshd exec right after accept):
//
//   exec'ing side E                               peer P
//   ---------------                               ------
//   checks: E posted nothing, released nothing,
//   P's unreleased messages are all Data,
//   SrcAvail, SinkAvail or DisConn
//   withdraws its doorbell request
//   reverted := Started|side                      (no more doorbells: P checks `reverted`
//   waits until `ringing` is 0, then reads        between ringing++ and its send)
//   off its socket every doorbell P counted
//   (`bells`): from now on every byte there
//   is P's data
//   reverted := Done|side, wakes P's waits
//   exec                                          sees `reverted` at its next call into the shim
//                                                 (or woken from a wait): sends what E never
//                                                 read (Data payloads, SrcAvail buffers) over
//                                                 TCP, in order, then shutdown(SHUT_WR) for a
//                                                 DisConn, and continues on kernel TCP.
//
// E posted nothing, so no doorbell byte of E's sits on P's socket.  Everywhere, doorbells are read
// off a socket only up to the count the peer published, so a data byte is never taken for one.  When E has consumed part of
// the stream, the stream cannot be rebuilt on TCP: E aborts the connection instead (P sees
// ECONNRESET, the new image EOF) and says so: a clean error, never a corrupt byte.
#pragma once

namespace sdx::shm {
class Channel;
}

namespace sdx::accel {
struct Conn;

// Sends on the kernel socket `fd`, in order, every byte of `ch`'s messages the peer has not
// released (Data payloads, the buffers of SrcAvails), then shuts the socket down for writing if
// a DisConn was among them.  Used when the peer will never read them: it gave the stream back,
// or (early data) it never accepted the connection.  False when that failed.
bool replay_outgoing(const shm::Channel& ch, int fd);

// The exec'ing side.  Caller holds c->mu; the connection is accelerated.  True when the stream
// continues on TCP, false when it had to be aborted.
// With `abort_if_used` false, a connection already in use is left as it is (and false returned).
bool give_back(Conn* c, int fd, bool abort_if_used = true) noexcept;
// Whether the stream was returned to TCP by either side (caller holds c->mu).
bool given_back(const Conn* c) noexcept;
// Any process that finds the stream given back: finishes the switch (the peer of the exec'ing
// side resends what was never read).  Caller holds c->mu.  Afterwards c->state is Kernel.
void take_back(Conn* c, int fd) noexcept;

}  // namespace sdx::accel
