#include "common/log.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

namespace sdx::log {
namespace {

enum class Dest { Stderr, Syslog, File };

struct State {
    std::atomic<Level> level{Level::Error};
    Dest dest = Dest::Stderr;
    std::string path;  // pattern with %p
    std::string program = "sdx";
    std::mutex mu;     // guards the file descriptor below
    int fd = -1;
    long fd_pid = 0;   // the process that opened fd (reopen after fork)
};

State& state() {
    static State* s = new State;  // never destroyed: logging may happen during exit
    return *s;
}

long raw_write(int fd, const char* p, std::size_t n) {
    while (n > 0) {
        long w = ::syscall(SYS_write, fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return 0;
}

constexpr std::string_view name_of(Level l) {
    switch (l) {
    case Level::Error: return "error";
    case Level::Warn: return "warning";
    case Level::Info: return "info";
    case Level::Debug: return "debug";
    case Level::Trace: return "trace";
    default: return "";
    }
}

}  // namespace

std::string expand_pid(std::string_view pattern, long pid) {
    std::string out;
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == 'p') {
            out += std::to_string(pid);
            ++i;
        } else {
            out += pattern[i];
        }
    }
    return out;
}

void configure(Level level, std::string_view destination, std::string_view program) {
    State& s = state();
    std::lock_guard g(s.mu);
    s.level.store(level, std::memory_order_relaxed);
    s.program = std::string(program);
    if (s.fd >= 0) ::syscall(SYS_close, s.fd), s.fd = -1;
    if (destination == "stderr" || destination.empty()) {
        s.dest = Dest::Stderr;
    } else if (destination == "syslog") {
        s.dest = Dest::Syslog;
    } else {
        s.dest = Dest::File;
        s.path = std::string(destination);
    }
}

Level level() { return state().level.load(std::memory_order_relaxed); }

void emit(Level l, std::string_view message) {
    State& s = state();
    long pid = ::getpid();
    if (s.dest == Dest::Syslog) {
        int prio = l == Level::Error ? LOG_ERR : l == Level::Warn ? LOG_WARNING : l == Level::Info ? LOG_INFO : LOG_DEBUG;
        ::syslog(LOG_USER | prio, "sdx: %.*s", static_cast<int>(message.size()), message.data());
        return;
    }
    std::string line = fmt::format("sdx[{}] {}: {}: {}\n", pid, s.program, name_of(l), message);
    if (s.dest == Dest::Stderr) {
        raw_write(2, line.data(), line.size());
        return;
    }
    std::lock_guard g(s.mu);
    if (s.fd < 0 || s.fd_pid != pid) {
        if (s.fd >= 0) ::syscall(SYS_close, s.fd);
        std::string path = expand_pid(s.path, pid);
        s.fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
        s.fd_pid = pid;
        if (s.fd < 0) {
            raw_write(2, line.data(), line.size());
            return;
        }
    }
    raw_write(s.fd, line.data(), line.size());
}

}  // namespace sdx::log
