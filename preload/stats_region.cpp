#include "preload/stats_region.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <cstring>
#include <new>

#include "common/stats_json.hpp"
#include "preload/accel.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

namespace sdx {

namespace {
constinit shmstats::Totals g_local_totals;  // before the region exists, or without one
shmstats::Region* g_region = nullptr;
int g_region_fd = -1;
}  // namespace

shmstats::Totals& totals() noexcept {
    shmstats::Totals* t = g_rt.totals.load(std::memory_order_acquire);
    return t ? *t : g_local_totals;
}

void note_fallback(Fallback f, shmstats::SocketSlot* slot) noexcept {
    totals().fallbacks[static_cast<int>(f)].fetch_add(1, std::memory_order_relaxed);
    if (slot) {
        slot->reason.store(static_cast<int>(f), std::memory_order_relaxed);
        slot->path.store(shmstats::Path::Tcp, std::memory_order_relaxed);
    }
}

namespace statsreg {

namespace {
std::atomic<bool> g_opened{false};
std::mutex g_open_mu;

void create() noexcept {
    // The object lives as long as this process holds the fd or the mapping: nothing is left
    // behind, whatever kills the process.  The fd stays open (CLOEXEC) so `sdx stats` can find it
    // in /proc/PID/fd; it sits high, out of the way of programs that expect small numbers.
    int fd = static_cast<int>(::syscall(SYS_memfd_create, shmstats::kMemfdName, MFD_CLOEXEC));
    if (fd < 0) return;
    if (::ftruncate(fd, sizeof(shmstats::Region)) != 0) {
        ::syscall(SYS_close, fd);
        return;
    }
    void* mem = ::mmap(nullptr, sizeof(shmstats::Region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        ::syscall(SYS_close, fd);
        return;
    }
    int high = real::fcntl(fd, F_DUPFD_CLOEXEC, 512);
    if (high >= 0) {
        ::syscall(SYS_close, fd);
        fd = high;
    }
    auto* r = new (mem) shmstats::Region{};
    std::memcpy(r->magic, shmstats::kMagic, sizeof r->magic);
    r->version = shmstats::kVersion;
    r->slots_n = shmstats::kSlots;
    r->pid = static_cast<std::int32_t>(::getpid());
    std::strncpy(r->program, g_rt.program ? g_rt.program : "", sizeof r->program - 1);
    // What was counted before (a fork()ed child starts from zero: after_fork resets first).
    shmstats::Totals& old = totals();
    r->totals.sockets_tracked.store(old.sockets_tracked.load());
    r->totals.sockets_accelerated.store(old.sockets_accelerated.load());
    r->totals.sdx_tx.store(old.sdx_tx.load());
    r->totals.sdx_rx.store(old.sdx_rx.load());
    r->totals.tcp_tx.store(old.tcp_tx.load());
    r->totals.tcp_rx.store(old.tcp_rx.load());
    for (int i = 0; i < shmstats::kFallbacks; ++i) r->totals.fallbacks[i].store(old.fallbacks[i].load());
    g_region = r;
    g_region_fd = fd;
    g_rt.totals.store(&r->totals, std::memory_order_release);
}
}  // namespace

void open() noexcept {
    if (g_opened.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> lk(g_open_mu);
    if (g_opened.load(std::memory_order_relaxed)) return;
    create();
    g_opened.store(true, std::memory_order_release);  // also when it failed: counted locally then
}

shmstats::SocketSlot* slot_for(int fd, shmstats::Path path) noexcept {
    if (!g_region) return nullptr;
    for (shmstats::SocketSlot& s : g_region->slots) {
        shmstats::Path expect = shmstats::Path::Free;
        if (s.path.load(std::memory_order_relaxed) != expect) continue;
        if (!s.path.compare_exchange_strong(expect, path, std::memory_order_acq_rel)) continue;
        s.fd.store(fd, std::memory_order_relaxed);
        s.reason.store(-1, std::memory_order_relaxed);
        s.peer_len.store(0, std::memory_order_relaxed);
        for (auto* c : {&s.tx_bcopy, &s.rx_bcopy, &s.tx_zcopy, &s.rx_zcopy, &s.tcp_tx, &s.tcp_rx, &s.credit_stalls, &s.sendsm,
                        &s.cancels, &s.aborts})
            c->store(0, std::memory_order_relaxed);
        return &s;
    }
    return nullptr;
}

void set_peer(shmstats::SocketSlot* s, const sockaddr* sa, socklen_t len) noexcept {
    if (!s || !sa) return;
    std::size_t n = std::min<std::size_t>(len, sizeof s->peer);
    std::memcpy(s->peer, sa, n);
    s->peer_len.store(static_cast<std::uint32_t>(n), std::memory_order_release);
}

std::string live_json() { return g_region ? shmstats::live_json(*g_region) : std::string("[]"); }

void after_fork() noexcept {
    shmstats::Region* parent = g_region;
    if (!parent) return;
    // The parent's object is still mapped and open here: leave it to the parent.
    ::munmap(parent, sizeof(shmstats::Region));
    ::syscall(SYS_close, g_region_fd);
    g_region = nullptr;
    g_region_fd = -1;
    g_rt.totals.store(nullptr, std::memory_order_release);
    shmstats::Totals& t = g_local_totals;
    for (auto* c : {&t.sockets_tracked, &t.sockets_accelerated, &t.sdx_tx, &t.sdx_rx, &t.tcp_tx, &t.tcp_rx}) c->store(0);
    for (auto& f : t.fallbacks) f.store(0);
    create();
    // Inherited sockets: lines in the child's region (their counters start over, as the process's).
    g_fds.for_each(0, ~0u >> 1, [](int fd, Socket* s) {
        shmstats::SocketSlot* old = s->slot.load(std::memory_order_acquire);
        if (!old) return;
        if (g_region && old >= g_region->slots && old < g_region->slots + shmstats::kSlots) return;  // a dup, done
        // `old` pointed into the parent's region, unmapped above: only its path was read before.
        shmstats::Path p = shmstats::Path::Tcp;
        if (accel::Conn* c = s->conn.load(std::memory_order_acquire))
            p = c->state.load(std::memory_order_acquire) == accel::State::Accelerated ? shmstats::Path::Shm : shmstats::Path::Tcp;
        else if (s->role.load(std::memory_order_relaxed) == SocketRole::Listener)
            p = shmstats::Path::Listen;
        shmstats::SocketSlot* mine = slot_for(fd, p);
        s->slot.store(mine, std::memory_order_release);
        if (accel::Conn* c = s->conn.load(std::memory_order_acquire)) c->slot.store(mine, std::memory_order_release);
    });
}

}  // namespace statsreg
}  // namespace sdx
