// Shared helpers for the syscall-semantics programs (tests/semantics/*.cpp).
//
// Each program runs a list of checks and prints one line per check:
//     ok   NAME -> RESULT
//     FAIL NAME: got X expected Y
// The transcript must be byte-identical with and without the sdx preload, so nothing printed may
// depend on the run: no fd numbers, pids, ports or timings.  main() returns sem::finish(): 1 when a
// check failed.
//
// No sleeps as synchronisation: a thread is known to be blocked in a syscall when
// /proc/self/task/TID/syscall names that syscall (wait_in_syscall); every wait is bounded (kWaitMs)
// and turns into a failed check instead of a hang.  A watchdog alarm kills a program that hangs
// anyway.
#pragma once

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <cstdint>
#include <string>

namespace sem {

inline int g_failed = 0;
inline int g_passed = 0;
constexpr int kWaitMs = 10000;  // upper bound of every wait for the kernel or another thread

// ---------------------------------------------------------------- output

inline std::string errname(int e) {
    if (e == 0) return "0";
    const char* n = strerrorname_np(e);
    return n ? n : "E#" + std::to_string(e);
}

inline void emit(const std::string& line) {
    fputs(line.c_str(), stdout);
    fputc('\n', stdout);
    fflush(stdout);  // before any fork: a child must not inherit unwritten output
}

inline void pass(const std::string& name, const std::string& result) {
    ++g_passed;
    emit("ok   " + name + " -> " + result);
}

inline void fail(const std::string& name, const std::string& why) {
    ++g_failed;
    emit("FAIL " + name + ": " + why);
}

// A check whose outcome is a plain condition; `what` describes the expected result.
inline bool expect(const std::string& name, bool cond, const std::string& what, const std::string& got = "") {
    if (cond) pass(name, what);
    else fail(name, "expected " + what + (got.empty() ? "" : ", got " + got));
    return cond;
}

// Result of one call: return value and errno (errno only meaningful when ret == -1).
struct R {
    long ret;
    int err;
};
// A GNU statement expression rather than a lambda: the call stays in the caller, where the compiler
// sees the destination buffer's size (a lambda would hide it from _FORTIFY_SOURCE).
#define SEM_CALL(expr) ({ errno = 0; long r_ = (long)(expr); ::sem::R{r_, r_ == -1 ? errno : 0}; })

inline std::string show(R r) { return r.ret == -1 ? "-1 " + errname(r.err) : std::to_string(r.ret); }

// Exact return value; when `ret` is -1 the errno must be `err` too.
inline bool expect_ret(const std::string& name, R got, long ret, int err = 0) {
    R want{ret, ret == -1 ? err : 0};
    bool ok = got.ret == want.ret && (ret != -1 || got.err == err);
    if (ok) pass(name, show(want));
    else fail(name, "got " + show(got) + " expected " + show(want));
    return ok;
}

// Success returning a descriptor (any value >= 0; the number itself is never printed).
inline bool expect_fd(const std::string& name, R got) {
    bool ok = got.ret >= 0;
    if (ok) pass(name, "fd");
    else fail(name, "got " + show(got) + " expected an fd");
    return ok;
}

inline bool expect_eq(const std::string& name, long long got, long long want) {
    bool ok = got == want;
    if (ok) pass(name, std::to_string(want));
    else fail(name, "got " + std::to_string(got) + " expected " + std::to_string(want));
    return ok;
}

// Printable form of a short string: one transcript line per check, whatever the bytes.
inline std::string quote(const std::string& s) {
    std::string q = "\"";
    for (unsigned char ch : s) {
        if (ch == '\n') q += "\\n";
        else if (ch == '"' || ch == '\\') q += std::string("\\") + char(ch);
        else if (ch < 0x20 || ch >= 0x7f) {
            char b[8];
            snprintf(b, sizeof b, "\\x%02x", ch);
            q += b;
        } else q += char(ch);
    }
    return q + "\"";
}

inline bool expect_str(const std::string& name, const std::string& got, const std::string& want) {
    bool ok = got == want;
    if (ok) pass(name, quote(want));
    else fail(name, "got " + quote(got) + " expected " + quote(want));
    return ok;
}

// Setup that must not fail; a failure is reported and the program ends (exit 1).
[[noreturn]] inline void die(const std::string& what) {
    fail("setup", what + ": " + errname(errno));
    exit(1);
}
inline long must(long r, const char* what) {
    if (r < 0) die(what);
    return r;
}

inline int finish() {
    emit("# " + std::to_string(g_passed) + " passed, " + std::to_string(g_failed) + " failed");
    return g_failed ? 1 : 0;
}

// ---------------------------------------------------------------- deterministic data

// splitmix64: fixed seed in, same stream out, on every run.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    size_t range(size_t lo, size_t hi) { return lo + static_cast<size_t>(next() % (hi - lo + 1)); }  // [lo, hi]
    void fill(unsigned char* p, size_t n) {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t v = next();
            for (size_t j = 0; j < 8 && i + j < n; ++j) p[i + j] = static_cast<unsigned char>(v >> (8 * j));
        }
    }
};

// FNV-1a 64, streaming.
struct Fnv {
    uint64_t h = 0xcbf29ce484222325ULL;
    void add(const void* p, size_t n) {
        auto* b = static_cast<const unsigned char*>(p);
        for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ULL;
    }
};

inline std::string hex(uint64_t v) {
    char b[20];
    snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}

// ---------------------------------------------------------------- time and waiting

inline int64_t now_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

// A short pause between two looks at the kernel's state (never used to order events).
inline void backoff() {
    timespec ts{0, 200000};
    nanosleep(&ts, nullptr);
}

inline pid_t tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// The syscall the thread `t` is blocked in (first field of /proc/self/task/T/syscall), -1 when it
// is running, -2 when the file cannot be read.
inline long current_syscall(pid_t t) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", static_cast<int>(t));
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -2;
    char buf[256];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return -2;
    buf[n] = 0;
    if (buf[0] < '0' || buf[0] > '9') return -1;  // "running" (or "-1 ..." outside a syscall)
    return strtol(buf, nullptr, 10);
}

// Waits until thread `t` sits in syscall `nr`; false after kWaitMs.
// Whether a thread sitting in system call `cur` is blocked in `nr`.  Under sdx with acceleration
// (SDX_ACCELERATE set) a call on an accelerated socket blocks in sdx's own wait on shared memory
// (futex) or on the kernel socket (poll/ppoll) instead: the same observable fact, "it blocks".
inline bool blocked_in(long cur, long nr) {
    static const bool accelerated = [] {
        const char* v = getenv("SDX_ACCELERATE");
        return v && *v && strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
    }();
    return cur == nr || (accelerated && (cur == SYS_futex || cur == SYS_poll || cur == SYS_ppoll));
}

inline bool wait_in_syscall(pid_t t, long nr) {
    int64_t end = now_ms() + kWaitMs;
    while (now_ms() < end) {
        if (blocked_in(current_syscall(t), nr)) return true;
        backoff();
    }
    return false;
}

// Waits until `flag` becomes true; false after kWaitMs.
template <class T>
inline bool wait_flag(const std::atomic<T>& flag) {
    int64_t end = now_ms() + kWaitMs;
    while (now_ms() < end) {
        if (flag.load()) return true;
        backoff();
    }
    return false;
}

// Waits until the counter `n` reaches `value`; false after kWaitMs.
inline bool wait_flag_value(const std::atomic<int>& n, int value) {
    int64_t end = now_ms() + kWaitMs;
    while (now_ms() < end) {
        if (n.load() >= value) return true;
        backoff();
    }
    return false;
}

// Bounded wait for poll events on one fd (returns revents, 0 on timeout).
inline short wait_events(int fd, short events) {
    pollfd p{fd, events, 0};
    int r;
    do r = ::poll(&p, 1, kWaitMs);
    while (r < 0 && errno == EINTR);
    return r > 0 ? p.revents : 0;
}

// ---------------------------------------------------------------- sockets

inline socklen_t loopback(sockaddr_storage& ss, int family, uint16_t port_be = 0) {
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = port_be;
        return sizeof(sockaddr_in6);
    }
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = port_be;
    return sizeof(sockaddr_in);
}

inline uint16_t port_of(const sockaddr_storage& ss) {
    return ss.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(ss).sin6_port
                                    : reinterpret_cast<const sockaddr_in&>(ss).sin_port;
}

// A TCP listener on the loopback address of `family`, kernel-chosen port; its address in `addr`.
inline int listener(int family, sockaddr_storage& addr, socklen_t& len, int type_flags = 0) {
    int fd = static_cast<int>(must(::socket(family, SOCK_STREAM | type_flags, 0), "socket(listener)"));
    len = loopback(addr, family);
    must(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len), "bind(listener)");
    must(::listen(fd, 64), "listen");
    len = sizeof addr;
    must(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), "getsockname(listener)");
    return fd;
}

// A connected TCP pair over loopback: `client` and the accepted `server`.
inline void tcp_pair(int& client, int& server, int family = AF_INET) {
    sockaddr_storage addr;
    socklen_t len;
    int l = listener(family, addr, len);
    client = static_cast<int>(must(::socket(family, SOCK_STREAM, 0), "socket(client)"));
    must(::connect(client, reinterpret_cast<sockaddr*>(&addr), len), "connect");
    server = static_cast<int>(must(::accept(l, nullptr, nullptr), "accept"));
    ::close(l);
}

inline void close_all(std::initializer_list<int> fds) {
    for (int fd : fds)
        if (fd >= 0) ::close(fd);
}

// Blocking helpers for setup (not the calls under test).
inline bool send_all(int fd, const void* p, size_t n) {
    auto* b = static_cast<const char*>(p);
    while (n) {
        ssize_t w = ::send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        b += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

inline std::string recv_exact(int fd, size_t n) {
    std::string s(n, '\0');
    size_t got = 0;
    while (got < n) {
        ssize_t r = ::recv(fd, s.data() + got, n - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += static_cast<size_t>(r);
    }
    s.resize(got);
    return s;
}

inline int fd_flags(int fd) { return ::fcntl(fd, F_GETFD); }
inline int fl_flags(int fd) { return ::fcntl(fd, F_GETFL); }

// ---------------------------------------------------------------- fortified entry points

// Read through a volatile so the compiler cannot fold lengths: with the destination's size known
// (fixed arrays) and the length unknown, -D_FORTIFY_SOURCE=2 turns read/recv/recvfrom/poll/ppoll
// into glibc's __read_chk/__recv_chk/__recvfrom_chk/__poll_chk/__ppoll_chk.
inline volatile size_t g_opaque = 1;
inline size_t opaque(size_t v) { return v * g_opaque; }

// Every program starts with this: it makes each .fortify binary call all five checked entry points
// on a TCP socket (the runner verifies the symbols and, under sdx, the per-call counters).
inline void fortified_calls() {
    int c, s;
    tcp_pair(c, s);
    static const char msg[] = "fortified-0123456789";  // 20 bytes
    send_all(c, msg, 20);

    pollfd pfd[2] = {{-1, 0, 0}, {s, POLLIN, 0}};
    int r = ::poll(pfd, opaque(2), kWaitMs);
    expect("fortified poll", r == 1 && pfd[1].revents == POLLIN, "1 POLLIN", std::to_string(r));

    timespec ts{10, 0};
    pfd[1].revents = 0;
    r = ::ppoll(pfd, opaque(2), &ts, nullptr);
    expect("fortified ppoll", r == 1 && pfd[1].revents == POLLIN, "1 POLLIN", std::to_string(r));

    char buf[64];
    expect_ret("fortified recv MSG_PEEK", SEM_CALL(::recv(s, buf, opaque(9), MSG_PEEK)), 9);
    expect_ret("fortified read", SEM_CALL(::read(s, buf, opaque(9))), 9);
    expect_str("fortified read data", std::string(buf, 9), "fortified");
    expect_ret("fortified recv", SEM_CALL(::recv(s, buf, opaque(1), 0)), 1);
    sockaddr_storage from;
    socklen_t flen = sizeof from;
    expect_ret("fortified recvfrom", SEM_CALL(::recvfrom(s, buf, opaque(sizeof buf), 0, reinterpret_cast<sockaddr*>(&from), &flen)), 10);
    expect_str("fortified recvfrom data", std::string(buf, 10), "0123456789");
    expect_eq("fortified recvfrom TCP addrlen", flen, 0);
    close_all({c, s});
}

// Common start of every program: deterministic output, a watchdog, then the fortified calls.
inline void start() {
    setvbuf(stdout, nullptr, _IOFBF, 1 << 16);
    alarm(30);  // a hung program dies (SIGALRM) instead of hanging the suite
    fortified_calls();
}

// SIGUSR1 and SIGUSR2 counted, the first without SA_RESTART, the second with it: how the programs
// tell an interrupted call from a restarted one.  install_usr_handlers() sets both up.
inline std::atomic<int> g_usr1{0};
inline std::atomic<int> g_usr2{0};
inline void on_usr1(int) { g_usr1.fetch_add(1); }
inline void on_usr2(int) { g_usr2.fetch_add(1); }
inline void install_usr_handlers() {
    struct sigaction sa{};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_usr1;
    sa.sa_flags = 0;
    sigaction(SIGUSR1, &sa, nullptr);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, nullptr);
}

// A call run on its own thread (with the signal mask `mask`); the main thread watches it from
// /proc: in() says whether it sits in a given system call.
struct Blocked {
    std::function<R()> op;
    sigset_t mask;  // the thread's signal mask while it runs op
    pid_t tid = 0;
    std::atomic<bool> started{false}, done{false};
    R r{0, 0};
    int usr1_at_return = 0;  // g_usr1 right after op returned
    pthread_t th{};

    explicit Blocked(std::function<R()> f) : op(std::move(f)) { sigemptyset(&mask); }
    void start() {
        pthread_create(&th, nullptr, [](void* a) -> void* {
            auto* b = static_cast<Blocked*>(a);
            pthread_sigmask(SIG_SETMASK, &b->mask, nullptr);
            b->tid = sem::tid();
            b->started = true;
            b->r = b->op();
            b->usr1_at_return = g_usr1.load();
            b->done = true;
            return nullptr;
        }, this);
        wait_flag(started);
    }
    // Waits until the thread sits in one of `nrs`.
    bool in(std::initializer_list<long> nrs) {
        int64_t end = now_ms() + kWaitMs;
        while (now_ms() < end) {
            long cur = current_syscall(tid);
            for (long nr : nrs)
                if (blocked_in(cur, nr)) return true;
            if (done) return false;
            backoff();
        }
        return false;
    }
    void join() { pthread_join(th, nullptr); }
};

}  // namespace sem
