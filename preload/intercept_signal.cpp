// sigaction, signal & co.: every application handler runs behind a trampoline that notes, in the
// interrupted thread, which signal ran (restart.hpp).  The application sees its own handlers and
// flags in every query; the kernel sees the trampoline with SA_SIGINFO and the application's mask
// and other flags, so delivery, masking, SA_RESETHAND and SA_NODEFER are the kernel's own.
#include <errno.h>
#include <signal.h>

#include <atomic>

#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/restart.hpp"
#include "preload/runtime.hpp"

using namespace sdx;

namespace {

struct AppHandler {
    std::atomic<void*> fn{nullptr};  // the application's handler (a real function, never SIG_DFL/SIG_IGN)
    std::atomic<int> flags{0};       // the application's sa_flags
};
AppHandler g_app[_NSIG];

// initial-exec: the trampoline must never make the dynamic loader allocate TLS.
__attribute__((tls_model("initial-exec"))) thread_local unsigned t_seq = 0;
__attribute__((tls_model("initial-exec"))) thread_local int t_last = 0;

void trampoline(int sig, siginfo_t* info, void* uc) {
    int saved = errno;
    t_last = sig;
    ++t_seq;
    errno = saved;
    AppHandler& h = g_app[sig];
    void* fn = h.fn.load(std::memory_order_acquire);
    int flags = h.flags.load(std::memory_order_relaxed);
    if (flags & SA_RESETHAND) {  // the kernel has reset the disposition already
        h.fn.store(nullptr, std::memory_order_relaxed);
        h.flags.store(0, std::memory_order_relaxed);
    }
    if (!fn) return;
    if (flags & SA_SIGINFO)
        reinterpret_cast<void (*)(int, siginfo_t*, void*)>(fn)(sig, info, uc);
    else
        reinterpret_cast<void (*)(int)>(fn)(sig);
}

bool wraps(sighandler_t h) noexcept { return h != SIG_DFL && h != SIG_IGN && h != SIG_ERR; }

int install(int sig, const struct sigaction* act, struct sigaction* old) noexcept {
    if (sig <= 0 || sig >= _NSIG) return real::sigaction(sig, act, old);
    struct sigaction k;
    const struct sigaction* pass = act;
    if (act && wraps(act->sa_handler)) {
        k = *act;
        k.sa_sigaction = trampoline;
        k.sa_flags |= SA_SIGINFO;
        pass = &k;
    }
    void* prev_fn = g_app[sig].fn.load(std::memory_order_acquire);
    int prev_flags = g_app[sig].flags.load(std::memory_order_relaxed);
    int r = real::sigaction(sig, pass, old);
    if (r != 0) return r;
    if (old && old->sa_sigaction == trampoline) {  // report the application's own handler
        if (prev_flags & SA_SIGINFO)
            old->sa_sigaction = reinterpret_cast<void (*)(int, siginfo_t*, void*)>(prev_fn);
        else
            old->sa_handler = reinterpret_cast<sighandler_t>(prev_fn);
        old->sa_flags = prev_flags;
    }
    if (act) {
        bool w = wraps(act->sa_handler);
        g_app[sig].flags.store(w ? act->sa_flags : 0, std::memory_order_relaxed);
        g_app[sig].fn.store(w ? reinterpret_cast<void*>(act->sa_handler) : nullptr, std::memory_order_release);
    }
    return r;
}

// signal() in its BSD and System V flavours, as glibc defines them.
sighandler_t simple_signal(int sig, sighandler_t h, int flags, bool mask_self) noexcept {
    if (sig <= 0 || sig >= _NSIG || h == SIG_ERR) {
        errno = EINVAL;
        return SIG_ERR;
    }
    struct sigaction act {}, old {};
    act.sa_handler = h;
    sigemptyset(&act.sa_mask);
    if (mask_self) sigaddset(&act.sa_mask, sig);
    act.sa_flags = flags;
    if (install(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
}

// siginterrupt() state, as glibc keeps it: signals whose signal() handlers do not restart.
std::atomic<bool> g_interrupting[_NSIG];

int bsd_flags(int sig) noexcept { return g_interrupting[sig].load(std::memory_order_relaxed) ? 0 : SA_RESTART; }

}  // namespace

namespace sdx::sig {

unsigned mark() noexcept { return t_seq; }

bool should_restart(unsigned since) noexcept {
    if (t_seq == since) return true;  // no handler of the application ran (stop/continue, ...)
    int s = t_last;
    return s > 0 && s < _NSIG && (g_app[s].flags.load(std::memory_order_relaxed) & SA_RESTART);
}

}  // namespace sdx::sig

SDX_EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) noexcept {
    count(Call::sigaction);
    return install(sig, act, old);
}

SDX_EXPORT sighandler_t signal(int sig, sighandler_t h) noexcept {
    count(Call::signal);
    return simple_signal(sig, h, bsd_flags(sig), true);
}

SDX_EXPORT sighandler_t bsd_signal(int sig, sighandler_t h) noexcept {
    count(Call::bsd_signal);
    return simple_signal(sig, h, bsd_flags(sig), true);
}

SDX_EXPORT sighandler_t sysv_signal(int sig, sighandler_t h) noexcept {
    count(Call::sysv_signal);
    return simple_signal(sig, h, SA_RESETHAND | SA_NODEFER, false);
}

SDX_EXPORT sighandler_t __sysv_signal(int sig, sighandler_t h) noexcept {
    count(Call::__sysv_signal);
    return simple_signal(sig, h, SA_RESETHAND | SA_NODEFER, false);
}

SDX_EXPORT int siginterrupt(int sig, int flag) noexcept {
    count(Call::siginterrupt);
    if (sig <= 0 || sig >= _NSIG) {
        errno = EINVAL;
        return -1;
    }
    struct sigaction act {};
    if (install(sig, nullptr, &act) != 0) return -1;
    g_interrupting[sig].store(flag != 0, std::memory_order_relaxed);
    if (flag)
        act.sa_flags &= ~SA_RESTART;
    else
        act.sa_flags |= SA_RESTART;
    return install(sig, &act, nullptr);
}
