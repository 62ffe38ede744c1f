#include "preload/socket.hpp"

#include <sys/mman.h>

#include <new>

namespace sdx {
namespace {

// 1M sockets of address space, reserved lazily: only touched pages cost memory.
constexpr std::uint64_t kCapacity = 1u << 20;

struct Pool {
    std::atomic<Socket*> base{nullptr};
    std::atomic<std::uint64_t> bump{0};       // slots ever handed out
    std::atomic<std::uint64_t> free_head{0};  // (tag << 32) | (index + 1)
    std::atomic<std::uint64_t> live{0};
};

constinit Pool g_pool;

Socket* pool_base() noexcept {
    Socket* b = g_pool.base.load(std::memory_order_acquire);
    if (b) return b;
    void* mem = ::mmap(nullptr, kCapacity * sizeof(Socket), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return nullptr;
    Socket* expected = nullptr;
    if (g_pool.base.compare_exchange_strong(expected, static_cast<Socket*>(mem), std::memory_order_acq_rel))
        return static_cast<Socket*>(mem);
    ::munmap(mem, kCapacity * sizeof(Socket));
    return expected;
}

void pool_free(Socket* s) noexcept {
    if (shmstats::SocketSlot* sl = s->slot.exchange(nullptr, std::memory_order_acq_rel))
        sl->path.store(shmstats::Path::Free, std::memory_order_release);  // its `sdx stats` line goes
    Socket* base = g_pool.base.load(std::memory_order_acquire);
    std::uint64_t index = static_cast<std::uint64_t>(s - base);
    std::uint64_t head = g_pool.free_head.load(std::memory_order_acquire);
    for (;;) {
        s->free_next.store(head & 0xffffffffu, std::memory_order_relaxed);
        std::uint64_t tag = (head >> 32) + 1;
        if (g_pool.free_head.compare_exchange_weak(head, (tag << 32) | (index + 1), std::memory_order_acq_rel))
            break;
    }
    g_pool.live.fetch_sub(1, std::memory_order_relaxed);
}

void reset(Socket* s) noexcept {
    s->path.store(Path::Kernel, std::memory_order_relaxed);
    s->role.store(SocketRole::Unknown, std::memory_order_relaxed);
    s->nonblocking.store(false, std::memory_order_relaxed);
    s->decision.store(conf::Use::Both, std::memory_order_relaxed);
    s->domain = 0;
    s->conn.store(nullptr, std::memory_order_relaxed);
    s->listener = nullptr;
    s->app_nodelay.store(false, std::memory_order_relaxed);
    s->conn_opts.store(false, std::memory_order_relaxed);
    s->epoll_regs.store(0, std::memory_order_relaxed);
    s->fd_refs.store(0, std::memory_order_relaxed);
    s->inflight.store(0, std::memory_order_relaxed);
    s->deferred_fd.store(-1, std::memory_order_relaxed);
    s->slot.store(nullptr, std::memory_order_relaxed);
    s->refs.store(1, std::memory_order_release);
}

}  // namespace

bool Socket::try_ref() noexcept {
    std::uint32_t n = refs.load(std::memory_order_relaxed);
    while (n != 0)
        if (refs.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) return true;
    return false;
}

void Socket::unref() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) pool_free(this);
}

Socket* socket_alloc() noexcept {
    Socket* base = pool_base();
    if (!base) return nullptr;
    // Reuse a freed slot first (ABA-safe: the head carries a tag).
    std::uint64_t head = g_pool.free_head.load(std::memory_order_acquire);
    while ((head & 0xffffffffu) != 0) {
        Socket* s = base + ((head & 0xffffffffu) - 1);
        std::uint64_t next = s->free_next.load(std::memory_order_relaxed);
        std::uint64_t tag = (head >> 32) + 1;
        if (g_pool.free_head.compare_exchange_weak(head, (tag << 32) | next, std::memory_order_acq_rel)) {
            reset(s);
            g_pool.live.fetch_add(1, std::memory_order_relaxed);
            return s;
        }
    }
    std::uint64_t index = g_pool.bump.fetch_add(1, std::memory_order_relaxed);
    if (index >= kCapacity) {
        g_pool.bump.fetch_sub(1, std::memory_order_relaxed);
        return nullptr;
    }
    Socket* s = new (base + index) Socket;
    reset(s);
    g_pool.live.fetch_add(1, std::memory_order_relaxed);
    return s;
}

std::uint64_t sockets_live() noexcept { return g_pool.live.load(std::memory_order_relaxed); }

}  // namespace sdx
