// fork, vfork, the exec family and posix_spawn.
#include <spawn.h>
#include <unistd.h>
#include <alloca.h>

#include <algorithm>
#include <cstdarg>
#include <vector>

#include "preload/accel.hpp"
#include "preload/exec_env.hpp"
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

SDX_EXPORT pid_t fork() noexcept {
    count(Call::fork);
    // The child inherits every accelerated connection: each now has one more holder, so that only
    // the last close (in whichever process) ends it.
    // (Skipped without any: every fork of a shell pays for this scan otherwise.)
    if (accel::any_live()) {
        try {
            std::vector<accel::Conn*> conns;
            g_fds.for_each(0, ~0u >> 1, [&](int, Socket* s) {
                if (accel::Conn* c = s->conn.load(std::memory_order_acquire)) conns.push_back(c);
            });
            std::sort(conns.begin(), conns.end());
            conns.erase(std::unique(conns.begin(), conns.end()), conns.end());  // dup()ed fds share one
            for (accel::Conn* c : conns) accel::add_holder(c);
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

SDX_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) noexcept {
    count(Call::execve);
    SDX_EXEC_ENV(env_, envp);
    return real::execve(path, argv, env_);
}

SDX_EXPORT int execv(const char* path, char* const argv[]) noexcept {
    count(Call::execv);
    if (exec_mode() == ExecMode::Inherit) return real::execv(path, argv);
    SDX_EXEC_ENV(env_, environ);
    return real::execve(path, argv, env_);
}

SDX_EXPORT int execvp(const char* file, char* const argv[]) noexcept {
    count(Call::execvp);
    if (exec_mode() == ExecMode::Inherit) return real::execvp(file, argv);
    SDX_EXEC_ENV(env_, environ);
    return real::execvpe(file, argv, env_);
}

SDX_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) noexcept {
    count(Call::execvpe);
    SDX_EXEC_ENV(env_, envp);
    return real::execvpe(file, argv, env_);
}

SDX_EXPORT int execveat(int dirfd, const char* path, char* const argv[], char* const envp[], int flags) noexcept {
    count(Call::execveat);
    SDX_EXEC_ENV(env_, envp);
    return real::execveat(dirfd, path, argv, env_, flags);
}

SDX_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) noexcept {
    count(Call::fexecve);
    SDX_EXEC_ENV(env_, envp);
    return real::fexecve(fd, argv, env_);
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
    return real::execve(path, argv, env_);
}

SDX_EXPORT int execlp(const char* file, const char* arg, ...) noexcept {
    va_list ap;
    va_start(ap, arg);
    SDX_GATHER_ARGS(arg, argv, ap, );
    va_end(ap);
    count(Call::execlp);
    SDX_EXEC_ENV(env_, environ);
    return real::execvpe(file, argv, env_);
}

SDX_EXPORT int execle(const char* path, const char* arg, ...) noexcept {
    va_list ap;
    va_start(ap, arg);
    SDX_GATHER_ARGS(arg, argv, ap, char* const* envp = va_arg(ap, char* const*););
    va_end(ap);
    count(Call::execle);
    SDX_EXEC_ENV(env_, envp);
    return real::execve(path, argv, env_);
}

SDX_EXPORT int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* fa,
                           const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    count(Call::posix_spawn);
    SDX_EXEC_ENV(env_, envp);
    return real::posix_spawn(pid, path, fa, attr, argv, env_);
}

SDX_EXPORT int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* fa,
                            const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
    count(Call::posix_spawnp);
    SDX_EXEC_ENV(env_, envp);
    return real::posix_spawnp(pid, file, fa, attr, argv, env_);
}
