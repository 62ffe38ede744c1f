#include "preload/real.hpp"

#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace sdx::real {

#define SDX_LIBC(ret, name, params, args) std::atomic<void*> name##_slot{nullptr};
#include "preload/libc.def"
#undef SDX_LIBC

void* resolve(std::atomic<void*>& slot, const char* name) noexcept {
    void* p = ::dlsym(RTLD_NEXT, name);
    if (p == nullptr) {
        // No logging machinery here: this can run before anything is initialised.
        static const char prefix[] = "sdx: the C library has no symbol ";
        ::syscall(SYS_write, 2, prefix, sizeof prefix - 1);
        ::syscall(SYS_write, 2, name, std::strlen(name));
        ::syscall(SYS_write, 2, "\n", 1);
        std::abort();
    }
    slot.store(p, std::memory_order_relaxed);
    return p;
}

void resolve_all() noexcept {
#define SDX_LIBC(ret, name, params, args) \
    if (name##_slot.load(std::memory_order_relaxed) == nullptr) resolve(name##_slot, #name);
#include "preload/libc.def"
#undef SDX_LIBC
}

}  // namespace sdx::real
