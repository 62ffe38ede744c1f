// fork, vfork, the exec family and posix_spawn.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/prctl.h>
#include <spawn.h>
#include <unistd.h>
#include <alloca.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <vector>

#include "preload/accel.hpp"
#include "preload/exec_env.hpp"
#include "preload/handover.hpp"
#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

extern char** environ;

using namespace sdx;

// The environment the new program gets: unchanged for exec=inherit, else rewritten on the stack
// (this may run in a vfork child, where malloc is off limits).
// alloca stays out of call arguments, where its stack adjustment is not safe.
#define SDX_EXEC_ENV(var, envp)                                                             \
    char* const* var = (envp);                                                             \
    if (exec_mode() != ExecMode::Inherit) var = rewrite_env(var, exec_mode(), alloca(env_scratch_size(var)))

// Accelerated sockets the new program inherits are handed over or given back to TCP
// (handover.hpp); a handover adds its variable to the environment.
#define SDX_EXEC_HANDOVER(var, target)                                                      \
    {                                                                                       \
        auto* hbuf_ = static_cast<char*>(alloca(accel::kHandoverBuf));                      \
        if (const char* h_ = accel::prepare_exec((target), var, hbuf_, accel::kHandoverBuf)) \
            var = with_entry(var, h_, alloca(with_entry_scratch_size(var)));               \
    }

// The exec failed: this image goes on (with its connections as they were).
template <typename R>
R exec_returned(R r) noexcept {
    int saved = errno;
    accel::exec_failed();
    errno = saved;
    return r;
}

SDX_EXPORT pid_t fork() noexcept {
    count(Call::fork);
    // The child inherits every accelerated connection: each now has one more holder, so that only
    // the last close (in whichever process) ends it.
    // (Skipped without any: every fork of a shell pays for this scan otherwise.)
    if (accel::any_live()) {
        try {
            std::vector<std::pair<accel::Conn*, int>> conns;
            g_fds.for_each(0, ~0u >> 1, [&](int fd, Socket* s) {
                if (accel::Conn* c = s->conn.load(std::memory_order_acquire)) conns.emplace_back(c, fd);
            });
            std::sort(conns.begin(), conns.end());
            // dup()ed fds share one connection
            conns.erase(std::unique(conns.begin(), conns.end(), [](auto& a, auto& b) { return a.first == b.first; }), conns.end());
            for (auto [c, fd] : conns) {
                // A connection still waiting for the listener's decision is decided now, once:
                // otherwise parent and child would each set it up from scratch.
                accel::settle(c, fd, true);
                accel::add_holder(c);
            }
        } catch (...) {
        }
    }
    pid_t pid = real::fork();
    if (pid == 0) after_fork_child();
    return pid;
}

// vfork itself is in vfork.S: it must not keep a stack frame of its own, because the child runs on
// the parent's stack.  This helper runs before the real vfork and returns its address.
extern "C" __attribute__((visibility("hidden"))) void* sdx_vfork_prepare() noexcept {
    count(Call::vfork);
    void* p = real::vfork_slot.load(std::memory_order_relaxed);
    return p ? p : real::resolve(real::vfork_slot, "vfork");
}

// The file execveat/fexecve will run, as a path (into buf).
const char* at_path(int dirfd, const char* path, int flags, char* buf, std::size_t size) noexcept {
    if (path && path[0] == '/') return path;
    if (path && path[0] == '\0' && (flags & AT_EMPTY_PATH)) {
        std::snprintf(buf, size, "/proc/self/fd/%d", dirfd);
        return buf;
    }
    if (dirfd == AT_FDCWD) return path;
    std::snprintf(buf, size, "/proc/self/fd/%d/%s", dirfd, path ? path : "");
    return buf;
}

SDX_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) noexcept {
    count(Call::execve);
    SDX_EXEC_ENV(env_, envp);
    SDX_EXEC_HANDOVER(env_, path);
    return exec_returned(real::execve(path, argv, env_));
}

SDX_EXPORT int execv(const char* path, char* const argv[]) noexcept {
    count(Call::execv);
    SDX_EXEC_ENV(env_, environ);
    SDX_EXEC_HANDOVER(env_, path);
    return exec_returned(real::execve(path, argv, env_));
}

SDX_EXPORT int execvp(const char* file, char* const argv[]) noexcept {
    count(Call::execvp);
    SDX_EXEC_ENV(env_, environ);
    char where_[PATH_MAX];
    SDX_EXEC_HANDOVER(env_, resolve_on_path(file, where_, sizeof where_));
    return exec_returned(real::execvpe(file, argv, env_));
}

SDX_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) noexcept {
    count(Call::execvpe);
    SDX_EXEC_ENV(env_, envp);
    char where_[PATH_MAX];
    SDX_EXEC_HANDOVER(env_, resolve_on_path(file, where_, sizeof where_));
    return exec_returned(real::execvpe(file, argv, env_));
}

SDX_EXPORT int execveat(int dirfd, const char* path, char* const argv[], char* const envp[], int flags) noexcept {
    count(Call::execveat);
    SDX_EXEC_ENV(env_, envp);
    char where_[PATH_MAX];
    SDX_EXEC_HANDOVER(env_, at_path(dirfd, path, flags, where_, sizeof where_));
    return exec_returned(real::execveat(dirfd, path, argv, env_, flags));
}

SDX_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) noexcept {
    count(Call::fexecve);
    SDX_EXEC_ENV(env_, envp);
    char where_[PATH_MAX];
    SDX_EXEC_HANDOVER(env_, at_path(fd, "", AT_EMPTY_PATH, where_, sizeof where_));
    return exec_returned(real::fexecve(fd, argv, env_));
}

// execl, execlp, execle: gather the variadic arguments into an argv on the stack.
#define SDX_GATHER_ARGS(arg0, argv, ap, extra)                     \
    std::size_t argc_ = 1;                                         \
    {                                                              \
        va_list count_;                                            \
        va_copy(count_, ap);                                       \
        while (va_arg(count_, const char*) != nullptr) ++argc_;    \
        va_end(count_);                                            \
    }                                                              \
    auto** argv = static_cast<char**>(alloca((argc_ + 1) * sizeof(char*))); \
    argv[0] = const_cast<char*>(arg0);                             \
    for (std::size_t i_ = 1; i_ <= argc_; ++i_) argv[i_] = va_arg(ap, char*); \
    extra

SDX_EXPORT int execl(const char* path, const char* arg, ...) noexcept {
    va_list ap;
    va_start(ap, arg);
    SDX_GATHER_ARGS(arg, argv, ap, );
    va_end(ap);
    count(Call::execl);
    SDX_EXEC_ENV(env_, environ);
    SDX_EXEC_HANDOVER(env_, path);
    return exec_returned(real::execve(path, argv, env_));
}

SDX_EXPORT int execlp(const char* file, const char* arg, ...) noexcept {
    va_list ap;
    va_start(ap, arg);
    SDX_GATHER_ARGS(arg, argv, ap, );
    va_end(ap);
    count(Call::execlp);
    SDX_EXEC_ENV(env_, environ);
    char where_[PATH_MAX];
    SDX_EXEC_HANDOVER(env_, resolve_on_path(file, where_, sizeof where_));
    return exec_returned(real::execvpe(file, argv, env_));
}

SDX_EXPORT int execle(const char* path, const char* arg, ...) noexcept {
    va_list ap;
    va_start(ap, arg);
    SDX_GATHER_ARGS(arg, argv, ap, char* const* envp = va_arg(ap, char* const*););
    va_end(ap);
    count(Call::execle);
    SDX_EXEC_ENV(env_, envp);
    SDX_EXEC_HANDOVER(env_, path);
    return exec_returned(real::execve(path, argv, env_));
}

SDX_EXPORT int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* fa,
                           const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    count(Call::posix_spawn);
    accel::before_spawn(fa != nullptr);
    SDX_EXEC_ENV(env_, envp);
    return real::posix_spawn(pid, path, fa, attr, argv, env_);
}

SDX_EXPORT int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* fa,
                            const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    count(Call::posix_spawnp);
    accel::before_spawn(fa != nullptr);
    SDX_EXEC_ENV(env_, envp);
    return real::posix_spawnp(pid, file, fa, attr, argv, env_);
}

// prctl: a seccomp filter (sshd's pre-auth sandbox) forbids most system calls; sdx's data path
// then keeps to the few such filters allow (Runtime::sandboxed).  <sys/prctl.h> declares prctl as
// variadic; every option passes at most four more words, read here as such.
SDX_EXPORT int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) noexcept {
    count(Call::prctl);
    if (option == PR_SET_SECCOMP) note_sandbox();  // before: the filter may forbid what follows
    return real::prctl(option, a2, a3, a4, a5);
}
