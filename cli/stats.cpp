// `sdx stats`: the live sockets of every process running under sdx, read from the shared-memory
// object each one publishes (common/stats_shm.hpp), found through /proc/PID/fd.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "common/stats_json.hpp"
#include "common/stats_shm.hpp"

namespace sdx::cli {

namespace {

using shmstats::Region;

struct Mapped {
    int pid = 0;
    const Region* r = nullptr;
};

bool is_number(const char* s) {
    if (!*s) return false;
    for (; *s; ++s)
        if (*s < '0' || *s > '9') return false;
    return true;
}

// The stats object of process `pid`, mapped read-only, or nullptr.
const Region* map_region(int pid) {
    std::string dir = fmt::format("/proc/{}/fd", pid);
    DIR* d = ::opendir(dir.c_str());
    if (!d) return nullptr;
    const Region* found = nullptr;
    std::string want = fmt::format("/memfd:{} (deleted)", shmstats::kMemfdName);
    while (dirent* e = ::readdir(d)) {
        if (!is_number(e->d_name)) continue;
        std::string link = dir + "/" + e->d_name;
        char target[256];
        ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
        if (n <= 0) continue;
        target[n] = '\0';
        if (want != target) continue;
        int fd = ::open(link.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st {};
        void* m = MAP_FAILED;
        if (::fstat(fd, &st) == 0 && static_cast<std::size_t>(st.st_size) >= sizeof(Region))
            m = ::mmap(nullptr, sizeof(Region), PROT_READ, MAP_SHARED, fd, 0);
        ::close(fd);
        if (m == MAP_FAILED) continue;
        auto* r = static_cast<const Region*>(m);
        if (std::memcmp(r->magic, shmstats::kMagic, sizeof r->magic) != 0 || r->version != shmstats::kVersion) {
            ::munmap(m, sizeof(Region));
            continue;
        }
        found = r;
        break;
    }
    ::closedir(d);
    return found;
}

std::vector<Mapped> find_all(int only_pid) {
    std::vector<Mapped> out;
    if (only_pid > 0) {
        if (const Region* r = map_region(only_pid)) out.push_back({only_pid, r});
        return out;
    }
    DIR* d = ::opendir("/proc");
    if (!d) return out;
    while (dirent* e = ::readdir(d))
        if (is_number(e->d_name))
            if (const Region* r = map_region(std::atoi(e->d_name))) out.push_back({std::atoi(e->d_name), r});
    ::closedir(d);
    return out;
}

std::string reason_text(const shmstats::SocketSlot& s) {
    int r = s.reason.load();
    return r >= 0 && r < shmstats::kFallbacks ? std::string(shmstats::kFallbackNames[r]) : std::string();
}

std::string json_text(const std::vector<Mapped>& all) {
    std::string out = "[";
    for (std::size_t i = 0; i < all.size(); ++i) {
        const Region& r = *all[i].r;
        out += fmt::format(R"({}{{"pid":{},"program":"{}",{},"live":{}}})", i ? "," : "", all[i].pid,
                           std::string(r.program, strnlen(r.program, sizeof r.program)), shmstats::totals_json(r.totals),
                           shmstats::live_json(r));
    }
    return out + "]\n";
}

std::string human(std::uint64_t n) {
    if (n < 10000) return std::to_string(n);
    const char* units[] = {"K", "M", "G", "T"};
    double v = static_cast<double>(n);
    int u = -1;
    while (v >= 10000 && u < 3) {
        v /= 1024;
        ++u;
    }
    return fmt::format("{:.0f}{}", v, units[u]);
}

std::string table_text(const std::vector<Mapped>& all) {
    std::string out;
    if (all.empty()) return "no process is running under sdx\n";
    for (const Mapped& m : all) {
        const Region& r = *m.r;
        const shmstats::Totals& t = r.totals;
        out += fmt::format("pid {} {}: {} sockets tracked, {} accelerated; sdx {} out {} in, tcp {} out {} in\n", m.pid,
                           std::string(r.program, strnlen(r.program, sizeof r.program)), t.sockets_tracked.load(),
                           t.sockets_accelerated.load(), human(t.sdx_tx.load()), human(t.sdx_rx.load()), human(t.tcp_tx.load()),
                           human(t.tcp_rx.load()));
        out += fmt::format("  {:>5} {:<7} {:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6}  {}\n", "FD", "PATH",
                           "PEER", "TX", "RX", "TX-ZC", "RX-ZC", "TCP-TX", "TCP-RX", "STALLS", "SENDSM", "CANCEL",
                           "FALLBACK");
        for (const shmstats::SocketSlot& s : r.slots) {
            auto p = s.path.load();
            if (p == shmstats::Path::Free) continue;
            out += fmt::format("  {:>5} {:<7} {:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6}  {}\n", s.fd.load(),
                               shmstats::path_name(p), shmstats::peer_text(s), human(s.tx_bcopy.load()), human(s.rx_bcopy.load()),
                               human(s.tx_zcopy.load()), human(s.rx_zcopy.load()), human(s.tcp_tx.load()),
                               human(s.tcp_rx.load()), s.credit_stalls.load(), s.sendsm.load(), s.cancels.load(),
                               s.aborts.load() ? "aborted" : reason_text(s));
        }
    }
    return out;
}

volatile sig_atomic_t g_stop = 0;

}  // namespace

int cmd_stats(int argc, char** argv) {
    int pid = 0;
    bool json = false, watch = false;
    for (int i = 0; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--json") json = true;
        else if (a == "--watch" || a == "-w") watch = true;
        else if (a == "-p" && i + 1 < argc) {
            const char* v = argv[++i];
            if (!is_number(v)) throw UsageError{fmt::format("stats: -p wants a process id, not '{}'", v)};
            pid = std::atoi(v);
        } else {
            throw UsageError{fmt::format("stats: unknown argument '{}'", a)};
        }
    }
    if (watch) ::signal(SIGINT, [](int) { g_stop = 1; });
    do {
        std::vector<Mapped> all = find_all(pid);
        std::string text = json ? json_text(all) : table_text(all);
        if (watch && !json) fmt::print("\033[H\033[2J");
        fmt::print("{}", text);
        std::fflush(stdout);
        for (const Mapped& m : all) ::munmap(const_cast<Region*>(m.r), sizeof(Region));
        if (pid > 0 && all.empty() && !watch) {
            fmt::print(stderr, "sdx: process {} is not running under sdx (or is not visible to this user)\n", pid);
            return kExitFailure;
        }
        if (watch) ::sleep(1);
    } while (watch && !g_stop);
    return kExitOk;
}

}  // namespace sdx::cli
