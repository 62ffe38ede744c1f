// The one clock sdx measures waits and deadlines with.
#pragma once

#include <time.h>

namespace sdx {

// CLOCK_MONOTONIC in nanoseconds (a vDSO call: no system call, allowed under seccomp filters).
inline long long now_ns() noexcept {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

}  // namespace sdx
