// SA_RESTART for calls the shim blocks in itself.  The kernel restarts an interrupted blocking
// socket call when the handler that ran was installed with SA_RESTART; sdx waits on shared memory
// instead, so it must decide the same: it installs its own trampoline in front of every
// application handler (intercept_signal.cpp), which notes, per thread, the signal that ran.
#pragma once

namespace sdx::sig {

// A mark to take before a wait, and whether an interruption since the mark should restart the
// call (the handler that ran had SA_RESTART, or no handler of the application ran at all).
unsigned mark() noexcept;
bool should_restart(unsigned since) noexcept;

}  // namespace sdx::sig
