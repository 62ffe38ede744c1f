#include "preload/runtime.hpp"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/log.hpp"
#include "preload/accel.hpp"
#include "preload/handover.hpp"
#include "preload/real.hpp"
#include "common/stats_json.hpp"
#include "preload/stats_region.hpp"
#include "verbs/shm_channel.hpp"
#include "verbs/shm_pool.hpp"

extern char** environ;

namespace sdx {

constinit Runtime g_rt;
constinit FdTable<Socket> g_fds;

namespace {

constexpr std::string_view kCallNames[] = {
#define SDX_LIBC(ret, name, params, args) #name,
#include "preload/libc.def"
#undef SDX_LIBC
    "execl", "execlp", "execle",
};
static_assert(std::size(kCallNames) == static_cast<std::size_t>(Call::count_));

void raw_stderr(std::string_view s) {
    while (!s.empty()) {
        long n = ::syscall(SYS_write, 2, s.data(), s.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        s.remove_prefix(static_cast<std::size_t>(n));
    }
}

// Copies of the SDX_* and LD_PRELOAD variables this process started with (exec=keep re-adds them).
char** snapshot_sdx_environ() {
    std::size_t n = 0;
    for (char** e = environ; e && *e; ++e)
        if (std::strncmp(*e, "SDX_", 4) == 0) ++n;
    auto** out = new char*[n + 1];
    std::size_t i = 0;
    for (char** e = environ; e && *e; ++e)
        if (std::strncmp(*e, "SDX_", 4) == 0) out[i++] = ::strdup(*e);
    out[i] = nullptr;
    return out;
}

void write_stats() noexcept {
    if (!g_rt.stats_enabled.load() || totals().sockets_tracked.load() == 0 || !g_rt.config) return;
    try {
        const Stats& st = g_rt.stats;
        std::string json = fmt::format(R"({{"pid":{},"program":"{}",{},"calls":{{)", ::getpid(), g_rt.program,
                                       shmstats::totals_json(totals()));
        bool first = true;
        for (int i = 0; i < static_cast<int>(Call::count_); ++i) {
            auto n = st.calls[i].load();
            if (!n) continue;
            json += fmt::format(R"({}"{}":{})", first ? "" : ",", kCallNames[i], n);
            first = false;
        }
        json += R"(},"decisions":{)";
        for (int u = 0; u < 3; ++u)
            json += fmt::format(R"({}"{}":{})", u ? "," : "", conf::use_name(static_cast<conf::Use>(u)), st.decisions[u].load());
        json += fmt::format(R"(}},"live":{}}})", statsreg::live_json());
        json += "\n";
        std::string path = log::expand_pid(g_rt.config->text(conf::Opt::stats_file), ::getpid());
        int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (fd < 0) {
            log::error("cannot write stats to {}: {}", path, std::strerror(errno));
            return;
        }
        ::syscall(SYS_write, fd, json.data(), json.size());
        ::syscall(SYS_close, fd);
    } catch (...) {
        // Never let an exception escape into the application's exit path.
    }
}

// Whether this process starts under a seccomp filter it inherited ("Seccomp:" in /proc/self/status).
bool seccomp_active() noexcept {
    int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC));
    if (fd < 0) return false;
    char buf[4096];
    ssize_t n = ::syscall(SYS_read, fd, buf, sizeof buf - 1);
    ::syscall(SYS_close, fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    const char* p = std::strstr(buf, "\nSeccomp:");
    if (!p) return false;
    p += 9;
    while (*p == ' ' || *p == '\t') ++p;
    return *p != '0';
}

void init() noexcept {
    real::resolve_all();
    g_rt.pid = ::getpid();
    g_rt.program = program_invocation_short_name ? program_invocation_short_name : "";
    Dl_info dl{};
    if (::dladdr(reinterpret_cast<void*>(&init), &dl) && dl.dli_fname) g_rt.library_path = dl.dli_fname;
    try {
        g_rt.sdx_environ = snapshot_sdx_environ();
        conf::LoadInputs in;
        in.environ = environ;
        auto loaded = conf::load(in);
        if (auto* d = std::get_if<conf::Diagnostic>(&loaded)) {
            // Exactly one line, then the application runs as if sdx were not there.
            raw_stderr(fmt::format("sdx: {}; sdx is disabled in this process\n", d->message()));
            return;
        }
        auto* cfg = new conf::Config(std::get<conf::Config>(std::move(loaded)));
        g_rt.config = cfg;
        log::configure(static_cast<log::Level>(cfg->number(conf::Opt::log_level)), cfg->text(conf::Opt::log), g_rt.program);
        g_rt.stats_enabled.store(cfg->flag(conf::Opt::stats), std::memory_order_relaxed);
        if (seccomp_active()) note_sandbox();
        g_rt.active.store(cfg->flag(conf::Opt::enable), std::memory_order_release);
        log::debug("loaded (config file: {}, {} rules)", cfg->file.empty() ? "none" : cfg->file, cfg->rules.size());
    } catch (...) {
        raw_stderr("sdx: out of memory while starting; sdx is disabled in this process\n");
        g_rt.active.store(false);
    }
}

__attribute__((constructor(101))) void sdx_constructor() {
    init();
    accel::resume_inherited();  // also when sdx is off here: the connections must go back to TCP
}
__attribute__((destructor(101))) void sdx_destructor() {
    accel::publish_shared();  // a forked process may go on with a connection this one used
    write_stats();
}

}  // namespace

std::string_view call_name(Call c) { return kCallNames[static_cast<int>(c)]; }

void note_sandbox() noexcept {
    g_rt.sandboxed.store(true, std::memory_order_release);
    shm::Channel::forbid_cross_memory();
}

void Stats::reset() noexcept {
    for (auto& c : calls) c.store(0, std::memory_order_relaxed);
    for (auto& d : decisions) d.store(0, std::memory_order_relaxed);
}

void track_new(int fd, int domain, SocketRole role, bool nonblocking, conf::Use decision) noexcept {
    if (fd < 0 || !g_rt.active.load(std::memory_order_acquire)) return;
    statsreg::open();  // on the first socket: a process that never makes one pays nothing
    Socket* s = socket_alloc();
    if (!s) {
        log::warn("socket pool exhausted: fd {} stays on kernel TCP", fd);
        return;
    }
    s->domain = domain;
    s->role.store(role, std::memory_order_relaxed);
    s->nonblocking.store(nonblocking, std::memory_order_relaxed);
    s->decision.store(decision, std::memory_order_relaxed);
    s->fd_refs.store(1, std::memory_order_relaxed);
    Socket* old = g_fds.exchange(fd, s);
    if (old == s) {  // no memory for the table page
        s->unref();
        return;
    }
    if (old) {  // a stale entry: that fd was closed behind our back
        old->fd_refs.fetch_sub(1, std::memory_order_relaxed);
        old->unref();
    }
    totals().sockets_tracked.fetch_add(1, std::memory_order_relaxed);
    s->slot.store(statsreg::slot_for(fd, role == SocketRole::Listener ? shmstats::Path::Listen : shmstats::Path::Tcp),
                  std::memory_order_release);
}

void untrack(int fd) noexcept {
    if (Socket* s = g_fds.exchange(fd, nullptr)) {
        s->fd_refs.fetch_sub(1, std::memory_order_relaxed);
        s->unref();
    }
}

void track_dup(int newfd, Socket* s) noexcept {
    Socket* old = g_fds.exchange(newfd, s);
    if (old == s && s != nullptr) {
        // Either the page could not be mapped or newfd already shared s: both leave one reference extra.
        s->unref();
        return;
    }
    if (s) s->fd_refs.fetch_add(1, std::memory_order_relaxed);
    if (old) {
        old->fd_refs.fetch_sub(1, std::memory_order_relaxed);
        old->unref();
    }
}

Socket* acquire(int fd) noexcept {
    for (;;) {
        Socket* s = g_fds.get(fd);
        if (!s) return nullptr;
        if (!s->try_ref()) continue;          // being freed: re-read the slot
        if (g_fds.get(fd) == s) return s;     // still the socket behind fd
        s->unref();
    }
}

conf::Use decide(conf::Role role, const sockaddr* sa, socklen_t len) noexcept {
    const conf::Config* cfg = g_rt.config;
    auto fallback = cfg ? static_cast<conf::Use>(cfg->number(conf::Opt::default_use)) : conf::Use::Tcp;
    conf::Use u = fallback;
    if (cfg) {
        if (auto ep = conf::endpoint_of(sa, len)) {
            if (auto d = conf::decide(cfg->rules, role, g_rt.program, *ep)) u = *d;
        }
    }
    g_rt.stats.decisions[static_cast<int>(u)].fetch_add(1, std::memory_order_relaxed);
    return u;
}

void after_fork_child() noexcept {
    g_rt.pid = ::getpid();
    g_rt.stats.reset();
    statsreg::after_fork();
    shm::SegmentPool::after_fork_child();
    shm::AttachCache::after_fork_child();
}

}  // namespace sdx
