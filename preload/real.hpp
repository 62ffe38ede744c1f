// The real C library functions behind the interposed names.  sdx::real::read(...) calls libc's read.
// Each pointer is resolved with dlsym(RTLD_NEXT) eagerly by the shim's constructor, and lazily on first
// use when a call arrives earlier (another library's constructor) or on a thread that raced it.
#pragma once

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>

namespace sdx::real {

// Resolves `name` into `slot` (idempotent, thread-safe, lock-free).  Aborts with a message when
// the C library lacks it: a call we cannot forward has no correct answer.
void* resolve(std::atomic<void*>& slot, const char* name) noexcept;
void resolve_all() noexcept;

#define SDX_LIBC(ret, name, params, args)                                                 \
    extern std::atomic<void*> name##_slot;                                                \
    inline ret name params {                                                              \
        void* fn_ = name##_slot.load(std::memory_order_relaxed);                          \
        if (__builtin_expect(fn_ == nullptr, 0)) fn_ = resolve(name##_slot, #name);         \
        return reinterpret_cast<ret(*) params>(fn_) args;                                 \
    }
#include "preload/libc.def"
#undef SDX_LIBC

}  // namespace sdx::real
