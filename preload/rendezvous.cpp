#include "preload/rendezvous.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <poll.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"
#include "verbs/shm_pool.hpp"

namespace sdx::rdv {

namespace {

constexpr std::uint32_t kMagic = 0x53445831;  // "SDX1"
constexpr int kSlots = 128;

}  // namespace

struct Announcement {
    std::uint32_t magic;
    std::int32_t pid;
    std::int32_t fd;
    std::uint32_t reserved;
    std::uint64_t id;  // Segment::id: a segment this listener's process mapped before is not mapped again
};

namespace {

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

unsigned long inode_of(int fd) noexcept {
    struct stat st {};
    return ::fstat(fd, &st) == 0 ? static_cast<unsigned long>(st.st_ino) : 0;
}

bool is_v4_mapped(const Endpoint& e) {
    static const std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(e.addr, prefix, 12) == 0;
}

// "\0sdx1:4:127.0.0.1:6379" / "\0sdx1:6:::1:6379": an abstract name, so sun_path starts with NUL.
// The listener's datagram socket has the same name with "sdx1d" (`datagram`).
socklen_t make_name(sockaddr_un& un, const Endpoint& e, bool wildcard, bool as_v6, bool datagram = false) {
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
    int n = std::snprintf(un.sun_path + 1, sizeof un.sun_path - 1, "sdx1%s:%c:%s:%u", datagram ? "d" : "",
                          (!as_v6 && is_v4_mapped(e)) ? '4' : '6', text, static_cast<unsigned>(e.port));
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

// The datagram name of the listener whose stream name is `name` (a name of make_name's).
socklen_t datagram_name(sockaddr_un& out, const sockaddr_un& name, socklen_t len) {
    std::memset(&out, 0, sizeof out);
    out.sun_family = AF_UNIX;
    std::size_t path = len - offsetof(sockaddr_un, sun_path);  // NUL + "sdx1:..."
    if (path < 5 || path + 1 > sizeof out.sun_path) return 0;
    std::memcpy(out.sun_path, name.sun_path, 5);  // NUL + "sdx1"
    out.sun_path[5] = 'd';
    std::memcpy(out.sun_path + 6, name.sun_path + 5, path - 5);
    return static_cast<socklen_t>(len + 1);
}

// --- Announcing by datagram ----------------------------------------------------------------------
// The first connection to a listener goes through its stream socket: SO_PEERCRED there says the
// listener runs as our user (or root), so it can attach our segment.  Later connections to it only
// send one datagram to its datagram socket (socket + sendto + close, instead of socket + connect +
// getsockopt + send + close with a connection for the listener to accept and close).  A listener that went
// away refuses the datagram (ECONNREFUSED) and one that does not answer in time is forgotten
// (forget_listener): both lead back to the stream socket.


struct KnownListener {
    Endpoint dst;            // a destination we connected to
    sockaddr_un name;        // the datagram name of the listener that answered for it
    socklen_t len = 0;
    std::string listener;    // its stream name (Announced::listener)
};
std::mutex g_known_mu;
KnownListener g_known[16];
unsigned g_known_next = 0;

bool known_listener(const Endpoint& e, sockaddr_un* name, socklen_t* len, std::string* listener) {
    std::lock_guard<std::mutex> lk(g_known_mu);
    for (const KnownListener& k : g_known) {
        if (k.len == 0 || !(k.dst == e)) continue;
        *name = k.name;
        *len = k.len;
        *listener = k.listener;
        return true;
    }
    return false;
}

void remember_listener(const Endpoint& e, const sockaddr_un& stream_name, socklen_t stream_len, const std::string& listener) {
    std::lock_guard<std::mutex> lk(g_known_mu);
    KnownListener* slot = nullptr;
    for (KnownListener& k : g_known)
        if (k.len != 0 && k.dst == e) slot = &k;
    if (!slot) slot = &g_known[g_known_next++ % std::size(g_known)];
    slot->len = datagram_name(slot->name, stream_name, stream_len);
    slot->dst = e;
    slot->listener = listener;
}

void forget_endpoint(const Endpoint& e) {
    std::lock_guard<std::mutex> lk(g_known_mu);
    for (KnownListener& k : g_known)
        if (k.len != 0 && k.dst == e) k.len = 0;
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

namespace {

// This host's addresses in this process's network namespace (getifaddrs), fetched again at most
// once a second when an address is not among them: connections to other hosts cost at most one
// netlink dump a second, and an address added to an interface counts within a second.
struct HostAddresses {
    std::mutex mu;
    std::vector<std::array<std::uint8_t, 16>> addrs;
    long long fetched_ns = 0;  // 0: never
};
HostAddresses g_host;

bool host_has(const Endpoint& e) {
    auto has = [&] {
        for (const auto& a : g_host.addrs)
            if (std::memcmp(a.data(), e.addr, 16) == 0) return true;
        return false;
    };
    {
        std::lock_guard<std::mutex> lk(g_host.mu);
        if (has()) return true;
        long long now = now_ns();
        if (g_host.fetched_ns != 0 && now - g_host.fetched_ns < 1000000000LL) return false;
        g_host.fetched_ns = now;
    }
    // (Under a seccomp filter a netlink socket may be fatal: such a process is on loopback anyway.)
    if (g_rt.sandboxed.load(std::memory_order_relaxed)) return false;
    // The netlink dump runs without the lock: a fork meanwhile must not leave it held in the child.
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return false;
    std::vector<std::array<std::uint8_t, 16>> fresh;
    for (const ifaddrs* i = list; i; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        int family = i->ifa_addr->sa_family;
        socklen_t l = family == AF_INET ? sizeof(sockaddr_in) : family == AF_INET6 ? sizeof(sockaddr_in6) : 0;
        if (l == 0) continue;
        if (auto a = endpoint(i->ifa_addr, l)) {
            std::array<std::uint8_t, 16> b;
            std::memcpy(b.data(), a->addr, 16);
            fresh.push_back(b);
        }
    }
    ::freeifaddrs(list);
    std::lock_guard<std::mutex> lk(g_host.mu);
    g_host.addrs = std::move(fresh);
    return has();
}

}  // namespace

bool is_local(const sockaddr* addr, socklen_t len) {
    auto e = endpoint(addr, len);
    if (!e) return false;
    static const std::uint8_t any[16] = {};
    static const std::uint8_t loop6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (is_v4_mapped(*e)) {
        if (e->addr[12] == 127) return true;
        if (std::memcmp(e->addr + 12, any, 4) == 0) return true;  // 0.0.0.0: this host
    } else if (std::memcmp(e->addr, loop6, 16) == 0 || std::memcmp(e->addr, any, 16) == 0) {
        return true;
    }
    try {
        return host_has(*e);
    } catch (...) {
        return false;
    }
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
    l->sock_ino_ = inode_of(s);
    l->table_ = static_cast<ListenerTable*>(mem);  // zero-filled: every slot free
    // The datagram socket for announcements of known clients (without it they use the stream one).
    sockaddr_un dn;
    socklen_t dl = datagram_name(dn, un, ul);
    int d = dl ? real::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
    if (d >= 0 && real::bind(d, reinterpret_cast<sockaddr*>(&dn), dl) != 0) {
        real::close(d);
        d = -1;
    }
    l->dgram_ = d;
    l->dgram_ino_ = d >= 0 ? inode_of(d) : 0;
    return l;
}

bool Listener::owns(int fd, unsigned long ino) noexcept {
    struct stat st {};
    return fd >= 0 && ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == ino;
}

Listener::~Listener() {
    if (owns(sock_, sock_ino_)) real::close(sock_);
    if (owns(dgram_, dgram_ino_)) real::close(dgram_);
    if (table_) ::munmap(table_, sizeof(ListenerTable));
}

void Listener::file(const Announcement& a) {
    if (a.magic != kMagic || a.pid <= 0 || a.fd < 0) return;
    for (auto& slot : table_->slots) {
        std::uint32_t expect = 0;
        if (slot.state.compare_exchange_strong(expect, 1, std::memory_order_acq_rel)) {
            slot.pid = a.pid;
            slot.fd = a.fd;
            slot.id = a.id;
            slot.state.store(2, std::memory_order_release);
            return;
        }
    }
    // A full table drops the announcement: that peer waits its handshake_timeout, then TCP.
}

void Listener::drain() {
    Announcement a{};
    if (dgram_ >= 0 && !owns(dgram_, dgram_ino_)) dgram_ = -1;
    while (dgram_ >= 0 && real::recv(dgram_, &a, sizeof a, MSG_DONTWAIT) == sizeof a) file(a);
    if (sock_ >= 0 && !owns(sock_, sock_ino_)) sock_ = -1;
    while (sock_ >= 0) {
        int c = real::accept4(sock_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) return;
        ssize_t n = real::recv(c, &a, sizeof a, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN) {
            // The client connected and is still setting up its segment (tens of microseconds):
            // it sends right after.  Closing now would make it fall back to TCP; wait briefly.
            pollfd p{c, POLLIN, 0};
            if (real::poll(&p, 1, 2) == 1) n = real::recv(c, &a, sizeof a, MSG_DONTWAIT);
        }
        real::close(c);
        if (n == sizeof a) file(a);
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

namespace {

// An idle segment of ours that served `listener` before.
std::optional<Announced> pooled_segment(const std::string& listener, std::size_t ring_capacity) {
    auto seg = shm::SegmentPool::take(listener, ring_capacity);
    if (!seg) return std::nullopt;
    totals().seg_reused.fetch_add(1, std::memory_order_relaxed);
    return Announced{std::move(*seg), listener, true};
}

std::optional<Announced> new_segment(const std::string& listener, std::size_t ring_capacity) {
    std::string err;
    auto made = shm::Segment::create(ring_capacity, &err);
    if (!made) return std::nullopt;
    totals().seg_created.fetch_add(1, std::memory_order_relaxed);
    return Announced{std::move(*made), listener, shm::SegmentPool::reserve_fd()};
}

// The segment's announcement, with its rendezvous moved to Announced.
Announcement announcement(Announced& out) {
    shm::Rendezvous* rv = out.seg.rendezvous();
    rv->active_pid = g_rt.pid;
    rv->state.store(shm::Rendezvous::with_phase(rv->state.load(std::memory_order_relaxed), shm::Rendezvous::Announced),
                    std::memory_order_release);
    return Announcement{kMagic, g_rt.pid, out.seg.fd(), 0, out.seg.id()};
}

// Announces by datagram to a listener we announced to before.  Nothing when it is not known, or
// no longer there (then it is forgotten and the stream socket decides).
std::optional<Announced> announce_known(const Endpoint& e, std::size_t ring_capacity) {
    sockaddr_un name;
    socklen_t len = 0;
    std::string listener;
    if (!known_listener(e, &name, &len, &listener)) return std::nullopt;
    // A socket of its own for each announcement: a cached fd number could be closed behind our
    // back (closefrom, raw syscalls) and name an application's TCP socket, which would take the
    // datagram as stream data.
    int d = real::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (d < 0) return std::nullopt;
    auto out = pooled_segment(listener, ring_capacity);
    if (!out) out = new_segment(listener, ring_capacity);
    if (!out) {
        real::close(d);
        return std::nullopt;
    }
    Announcement a = announcement(*out);
    ssize_t n = real::sendto(d, &a, sizeof a, MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&name), len);
    int err = errno;
    real::close(d);
    if (n == sizeof a) return out;
    // A full queue (a burst of connections) is no reason to forget the listener; a refusal is.
    if (!(n < 0 && (err == EAGAIN || err == EWOULDBLOCK))) forget_endpoint(e);
    if (out->poolable) shm::SegmentPool::unreserve_fd();
    return std::nullopt;
}

}  // namespace

std::optional<Announced> announce(const sockaddr* dst, socklen_t len, std::size_t ring_capacity, Refusal* why) {
    *why = Refusal::NoListener;
    auto e = endpoint(dst, len);
    if (!e) return std::nullopt;
    if (auto out = announce_known(*e, ring_capacity)) return out;
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
    // A new segment takes tens of microseconds: made before the connection that carries the
    // announcement (the listener reads that connection as soon as it accepts it, so nothing slow
    // may sit between our connect and our send).  The probe above already proved the listener.
    auto out = pooled_segment(listener, ring_capacity);
    if (!out) {
        real::close(s);
        out = new_segment(listener, ring_capacity);
        if (!out) return std::nullopt;
        s = real::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s < 0 || real::connect(s, reinterpret_cast<sockaddr*>(&names[found]), lens[found]) != 0) {
            if (s >= 0) real::close(s);
            if (out->poolable) shm::SegmentPool::unreserve_fd();
            *why = Refusal::NoListener;  // it went away meanwhile
            return std::nullopt;
        }
    }
    Announcement a = announcement(*out);
    ssize_t n = real::send(s, &a, sizeof a, MSG_DONTWAIT | MSG_NOSIGNAL);
    real::close(s);
    if (n != sizeof a) {
        if (out->poolable) shm::SegmentPool::unreserve_fd();
        return std::nullopt;
    }
    remember_listener(*e, names[found], lens[found], out->listener);
    return out;
}

void forget_listener(const std::string& listener) {
    std::lock_guard<std::mutex> lk(g_known_mu);
    for (KnownListener& k : g_known)
        if (k.len != 0 && k.listener == listener) k.len = 0;
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
