#include "preload/rendezvous.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/clock.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"
#include "verbs/shm_pool.hpp"

namespace sdx::rdv {

namespace {

constexpr std::uint32_t kMagic = 0x53445831;  // "SDX1"
constexpr int kSlots = 128;

struct Announcement {
    std::uint32_t magic;
    std::int32_t pid;
    std::int32_t fd;
    std::uint32_t reserved;
    std::uint64_t id;  // Segment::id: a segment this listener's process mapped before is not mapped again
};

// An address reduced to what identifies a TCP endpoint: IPv4 as v4-mapped IPv6, and the port.
struct Endpoint {
    std::uint8_t addr[16];
    std::uint16_t port;
    bool operator==(const Endpoint&) const = default;
};

std::optional<Endpoint> endpoint(const sockaddr* sa, socklen_t len) {
    Endpoint e{};
    if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        e.addr[10] = e.addr[11] = 0xff;
        std::memcpy(e.addr + 12, &in->sin_addr, 4);
        e.port = ntohs(in->sin_port);
        return e;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        std::memcpy(e.addr, &in6->sin6_addr, 16);
        e.port = ntohs(in6->sin6_port);
        return e;
    }
    return std::nullopt;
}

bool is_v4_mapped(const Endpoint& e) {
    static const std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(e.addr, prefix, 12) == 0;
}

// "\0sdx1:4:127.0.0.1:6379" / "\0sdx1:6:::1:6379": an abstract name, so sun_path starts with NUL.
socklen_t make_name(sockaddr_un& un, const Endpoint& e, bool wildcard, bool as_v6) {
    char text[INET6_ADDRSTRLEN] = "";
    if (!as_v6 && is_v4_mapped(e)) {
        if (wildcard) std::strcpy(text, "0.0.0.0");
        else inet_ntop(AF_INET, e.addr + 12, text, sizeof text);
    } else {
        std::uint8_t any[16] = {};
        inet_ntop(AF_INET6, wildcard ? any : e.addr, text, sizeof text);
    }
    std::memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    int n = std::snprintf(un.sun_path + 1, sizeof un.sun_path - 1, "sdx1:%c:%s:%u", (!as_v6 && is_v4_mapped(e)) ? '4' : '6', text,
                          static_cast<unsigned>(e.port));
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}


}  // namespace

// Announcements moved out of the unix socket, shared by every process that inherited the listener.
struct ListenerTable {
    struct Slot {
        std::atomic<std::uint32_t> state;  // 0 free, 1 being written, 2 filled
        std::int32_t pid;
        std::int32_t fd;
        std::uint64_t id;
    };
    Slot slots[kSlots];
};

bool is_local(const sockaddr* addr, socklen_t len) {
    auto e = endpoint(addr, len);
    if (!e) return false;
    if (is_v4_mapped(*e)) return e->addr[12] == 127;
    static const std::uint8_t loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return std::memcmp(e->addr, loop6, 16) == 0;
}

Listener* Listener::open(const sockaddr* addr, socklen_t len) {
    auto e = endpoint(addr, len);
    if (!e) return nullptr;
    sockaddr_un un;
    // A listener on a v4-mapped or v4 address announces itself under its v4 name; a v6 listener
    // (also the dual-stack wildcard) under its v6 name.
    socklen_t ul = make_name(un, *e, false, addr->sa_family == AF_INET6 && !is_v4_mapped(*e));
    int s = real::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return nullptr;
    if (real::bind(s, reinterpret_cast<sockaddr*>(&un), ul) != 0 || real::listen(s, 512) != 0) {
        real::close(s);
        return nullptr;
    }
    void* mem = ::mmap(nullptr, sizeof(ListenerTable), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        real::close(s);
        return nullptr;
    }
    auto* l = new (std::nothrow) Listener;
    if (!l) {
        ::munmap(mem, sizeof(ListenerTable));
        real::close(s);
        return nullptr;
    }
    l->sock_ = s;
    l->table_ = static_cast<ListenerTable*>(mem);  // zero-filled: every slot free
    return l;
}

Listener::~Listener() {
    if (sock_ >= 0) real::close(sock_);
    if (table_) ::munmap(table_, sizeof(ListenerTable));
}

void Listener::drain() {
    for (;;) {
        int c = real::accept4(sock_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) return;
        Announcement a{};
        ssize_t n = real::recv(c, &a, sizeof a, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN) {
            // The client connected and is still setting up its segment (tens of microseconds):
            // it sends right after.  Closing now would make it fall back to TCP; wait briefly.
            pollfd p{c, POLLIN, 0};
            if (real::poll(&p, 1, 2) == 1) n = real::recv(c, &a, sizeof a, MSG_DONTWAIT);
        }
        real::close(c);
        if (n != sizeof a || a.magic != kMagic || a.pid <= 0 || a.fd < 0) continue;
        for (auto& slot : table_->slots) {
            std::uint32_t expect = 0;
            if (slot.state.compare_exchange_strong(expect, 1, std::memory_order_acq_rel)) {
                slot.pid = a.pid;
                slot.fd = a.fd;
                slot.id = a.id;
                slot.state.store(2, std::memory_order_release);
                break;
            }
        }
        // A full table drops the announcement: that peer waits its handshake_timeout, then TCP.
    }
}

// The segment `pid` announced as its fd `fd`: this process's earlier mapping of it, or a new one.
std::optional<shm::Segment> map_announced(pid_t pid, int fd, std::uint64_t id) {
    if (auto seg = shm::AttachCache::take(pid, id)) {
        totals().seg_cached.fetch_add(1, std::memory_order_relaxed);
        return seg;
    }
    std::string err;
    auto seg = shm::Segment::attach_pid(pid, fd, &err);
    if (!seg) return seg;
    totals().seg_attached.fetch_add(1, std::memory_order_relaxed);
    seg->close_fd();  // the mapping is all we need; the fd would be one more in the application's table
    return seg;
}

std::optional<shm::Segment> Listener::claim(const sockaddr* peer, socklen_t len, pid_t* peer_pid, std::uint32_t* seen, long long patience_ns) {
    auto want = endpoint(peer, len);
    if (!want) return std::nullopt;
    drain();
    long long deadline = now_ns() + patience_ns;
    for (;;) {
        bool waiting = false;
        for (auto& slot : table_->slots) {
            if (slot.state.load(std::memory_order_acquire) != 2) continue;
            pid_t pid = slot.pid;
            auto seg = map_announced(pid, slot.fd, slot.id);
            auto drop_slot = [&] {
                std::uint32_t expect = 2;
                slot.state.compare_exchange_strong(expect, 0, std::memory_order_acq_rel);
            };
            if (!seg) {  // its process is gone, or the fd closed: a dead announcement
                drop_slot();
                continue;
            }
            shm::Rendezvous* rv = seg->rendezvous();
            // The word first: whatever is read after it belongs to that generation, or the
            // compare-and-swap on it (accept_from) fails.
            std::uint32_t word = rv->state.load(std::memory_order_acquire);
            if (shm::Rendezvous::phase_of(word) != shm::Rendezvous::Announced || rv->active_pid != pid) {
                drop_slot();
                shm::AttachCache::give(std::move(*seg), pid);
                continue;
            }
            if (!rv->addr_ready.load(std::memory_order_acquire)) {
                waiting = true;
                shm::AttachCache::give(std::move(*seg), pid);
                continue;
            }
            std::uint8_t a[28];
            std::memcpy(a, rv->addr, sizeof a);
            auto theirs = endpoint(reinterpret_cast<const sockaddr*>(a), std::min<std::uint32_t>(rv->addr_len, sizeof a));
            std::uint32_t expect = 2;
            if (!theirs || !(*theirs == *want) || !slot.state.compare_exchange_strong(expect, 0, std::memory_order_acq_rel)) {
                shm::AttachCache::give(std::move(*seg), pid);  // another connection's (or another worker took it)
                continue;
            }
            *peer_pid = pid;
            *seen = word;
            return seg;
        }
        if (!waiting || now_ns() > deadline) return std::nullopt;
        ::sched_yield();
    }
}

std::optional<Announced> announce(const sockaddr* dst, socklen_t len, std::size_t ring_capacity, Refusal* why) {
    *why = Refusal::NoListener;
    auto e = endpoint(dst, len);
    if (!e) return std::nullopt;
    // The listener may sit on the exact address, on the wildcard of its family, or on the IPv6
    // wildcard of a dual-stack socket.
    sockaddr_un names[3];
    socklen_t lens[3];
    int count = 0;
    bool v4 = is_v4_mapped(*e);
    lens[count] = make_name(names[count], *e, false, !v4);
    ++count;
    lens[count] = make_name(names[count], *e, true, !v4);
    ++count;
    if (v4) {
        lens[count] = make_name(names[count], *e, true, true);
        ++count;
    }
    int s = -1, found = -1;
    for (int i = 0; i < count; ++i) {
        s = real::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s < 0) return std::nullopt;
        if (real::connect(s, reinterpret_cast<sockaddr*>(&names[i]), lens[i]) == 0) {
            found = i;
            break;
        }
        real::close(s);
        s = -1;
    }
    if (s < 0) return std::nullopt;
    // The listener attaches our segment through /proc/<pid>/fd and reads our memory with
    // process_vm_readv: it can when it runs as our user or as root.  Otherwise it could not
    // answer, and we would wait handshake_timeout for nothing: stay on TCP at once.
    ucred cred{};
    socklen_t cl = sizeof cred;
    if (real::getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || (cred.uid != ::geteuid() && cred.uid != 0)) {
        real::close(s);
        *why = Refusal::OtherUser;
        return std::nullopt;
    }
    *why = Refusal::SetupFailed;
    std::string listener(names[found].sun_path + 1, lens[found] - offsetof(sockaddr_un, sun_path) - 1);
    std::optional<Announced> out;
    if (auto seg = shm::SegmentPool::take(listener, ring_capacity)) {
        out.emplace(Announced{std::move(*seg), std::move(listener), true});
        totals().seg_reused.fetch_add(1, std::memory_order_relaxed);
    } else {
        // A new segment is made only now that an sdx listener is known to exist (a peer without
        // sdx costs one failed connect, nothing more), and before the connection that carries the
        // announcement: the listener reads that connection as soon as it accepts it, so nothing
        // slow may sit between our connect and our send.
        real::close(s);
        std::string err;
        auto made = shm::Segment::create(ring_capacity, &err);
        if (!made) return std::nullopt;
        totals().seg_created.fetch_add(1, std::memory_order_relaxed);
        out.emplace(Announced{std::move(*made), std::move(listener), shm::SegmentPool::reserve_fd()});
        s = real::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s < 0 || real::connect(s, reinterpret_cast<sockaddr*>(&names[found]), lens[found]) != 0) {
            if (s >= 0) real::close(s);
            if (out->poolable) shm::SegmentPool::unreserve_fd();
            *why = Refusal::NoListener;  // it went away meanwhile
            return std::nullopt;
        }
    }
    shm::Rendezvous* rv = out->seg.rendezvous();
    rv->active_pid = g_rt.pid;
    rv->state.store(shm::Rendezvous::with_phase(rv->state.load(std::memory_order_relaxed), shm::Rendezvous::Announced),
                    std::memory_order_release);
    Announcement a{kMagic, g_rt.pid, out->seg.fd(), 0, out->seg.id()};
    ssize_t n = real::send(s, &a, sizeof a, MSG_DONTWAIT | MSG_NOSIGNAL);
    real::close(s);
    if (n != sizeof a) {
        if (out->poolable) shm::SegmentPool::unreserve_fd();
        return std::nullopt;
    }
    return out;
}

void publish_address(shm::Segment& seg, int fd) {
    shm::Rendezvous* rv = seg.rendezvous();
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (real::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return;
    std::memcpy(rv->addr, &ss, std::min<std::size_t>(len, sizeof rv->addr));
    rv->addr_len = len;
    rv->addr_ready.store(1, std::memory_order_release);  // claim() polls it, yielding: no wake-up to send
}

}  // namespace sdx::rdv
