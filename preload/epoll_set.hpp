// epoll over accelerated sockets.
//
// The kernel cannot tell when an accelerated socket is readable or writable: its bytes and credits
// travel through shared memory, and the kernel socket underneath only ever carries doorbell bytes
// (and is always writable).  So the shim keeps its own registrations for accelerated sockets, one
// Set per epoll fd, and answers for them from the protocol engine with the kernel's rules: level-
// and edge-triggered, EPOLLONESHOT, EPOLLRDHUP, EPOLLERR/EPOLLHUP always.
//
// Such a socket stays registered in the kernel epoll too, but with the shim's own registration
// (EPOLLIN, edge-triggered, the Entry's address as data): a doorbell wakes the kernel wait, the
// shim takes the bytes away and asks the engine.  Before sleeping, epoll_wait arms every entry's
// doorbell and then checks the engines once more (the stgt seed's "re-arm, then drain the race").
//
// Sockets that are not accelerated keep the application's own kernel registration and cost
// nothing here.  An epoll fd without accelerated sockets has no Set and passes straight through.
#pragma once

#include <signal.h>
#include <sys/epoll.h>

namespace sdx {
struct Socket;
}

namespace sdx::ep {

// epoll_ctl on an epoll fd for a tracked socket `s` (never nullptr).  Returns the call's result.
int ctl(int ep, int op, int fd, Socket* s, epoll_event* ev) noexcept;
// epoll_wait and friends.  timeout_ns < 0: no limit.  Returns -2 when `ep` has no Set (the caller
// passes through).  `how` is the call the application made: the kernel wait uses the same one.
enum class Flavor { wait, pwait, pwait2 };
int wait(int ep, epoll_event* ev, int max, long long timeout_ns, const sigset_t* mask, Flavor how) noexcept;
// A socket's last fd is closing: its registrations go (the kernel drops its own at the close).
void socket_closing(Socket* s) noexcept;
// An fd is closing: if it is an epoll fd with a Set, the Set goes with it.
void fd_closing(int fd) noexcept;
void fds_closing(unsigned first, unsigned last) noexcept;  // close_range()
// dup() & co. made `newfd` from `oldfd`: an epoll fd's Set is shared by both numbers.
void fd_duplicated(int oldfd, int newfd) noexcept;
// connect() gave socket `s` an sdx connection after it had been registered (epoll_ctl before
// connect): the next epoll_wait takes its registrations over.
void socket_connecting(Socket* s) noexcept;
// Epoll fd `inner` was registered in epoll set `outer` (nested epoll): from now on its accelerated
// sockets keep their doorbells armed, and a wait on `outer` first brings the inner set's
// readiness up to date, so the outer set sees the inner one readable exactly as the kernel would.
void nested_in_another(int outer, int inner) noexcept;
// `inner` was removed from `outer` (EPOLL_CTL_DEL of an fd the shim does not track).
void unnested(int outer, int inner) noexcept;
// Whether any epoll set was ever registered in another (so unnested() has anything to do).
bool any_nested() noexcept;

}  // namespace sdx::ep
