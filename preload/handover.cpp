#include "preload/handover.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "preload/accel.hpp"
#include "preload/exec_env.hpp"
#include "preload/real.hpp"
#include "preload/revert.hpp"
#include "preload/runtime.hpp"

namespace sdx::accel {

namespace {

constexpr int kMaxConns = 64;  // connections handed over in one exec (more go back to TCP)
constexpr int kMaxFds = 8;     // fds of one socket the new program inherits

int g_exec_segfds[kMaxConns];
int g_exec_nsegfds = 0;

struct Group {
    Conn* c;
    int fds[kMaxFds];
    int n;  // -1: more fds than kMaxFds
};

// An fd of the segment that survives exec.  The segment's own fd was closed once the peer had
// attached; /proc/self/map_files reopens the mapping (this needs CAP_CHECKPOINT_RESTORE or
// CAP_SYS_ADMIN, which daemons that exec after accept, such as sshd, have).
int reopen_segment(const shm::Segment& seg) noexcept {
    char path[96];
    auto start = reinterpret_cast<unsigned long>(seg.base());
    std::snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", start, start + seg.size());
    return ::open(path, O_RDWR);  // no O_CLOEXEC: the new image gets it
}

bool fresh(const Conn* c) noexcept { return c->ch->sent_nothing() && c->ch->took_nothing(); }

void give_back_for_exec(Conn* c, int fd) noexcept {
    give_back(c, fd);
    note_fallback(Fallback::Exec, c->slot.load(std::memory_order_relaxed));
}

// The new image, for one handed-over connection.
void resume_one(const std::vector<int>& fds, int segfd, int side, pid_t peer) {
    int fd = fds.front();
    std::string err;
    auto seg = shm::Segment::attach(segfd, &err);
    if (!seg) {
        // Neither resume nor give back is possible without the segment: end the connection
        // cleanly rather than let the program read doorbells.
        log::error("fd {}: cannot take over the sdx connection from before exec ({}): it is closed", fd, err);
        real::shutdown(fd, SHUT_RDWR);
        return;
    }
    seg->close_fd();
    auto c = std::make_unique<Conn>();
    c->active_side = side == 0;
    bool active = g_rt.active.load(std::memory_order_acquire) && g_rt.config;
    bool ok = false;
    if (active) {
        attach_channel(c.get(), std::move(*seg), side, peer, fd);
        shm::Rendezvous* rv = c->ch->segment().rendezvous();
        if (side == 0) {
            auto hello = proto::Engine::hello_for(engine_params());
            std::vector<std::byte> ack(reinterpret_cast<std::byte*>(rv->hello_ack),
                                       reinterpret_cast<std::byte*>(rv->hello_ack) + sizeof rv->hello_ack);
            ok = hello.size() <= sizeof rv->hello && std::memcmp(hello.data(), rv->hello, hello.size()) == 0 &&
                 c->eng->accept_hello_ack(ack);
        } else {
            std::vector<std::byte> hello(reinterpret_cast<std::byte*>(rv->hello), reinterpret_cast<std::byte*>(rv->hello) + sizeof rv->hello);
            auto ack = c->eng->accept_hello(hello);
            ok = ack && ack->size() <= sizeof rv->hello_ack && std::memcmp(ack->data(), rv->hello_ack, ack->size()) == 0;
        }
    } else {
        c->ch = std::make_unique<shm::Channel>(std::move(*seg), side, peer);
    }
    if (!ok) {
        // This image's settings differ from the old one's (or sdx is off here): the connection
        // is still fresh, so it goes back to TCP exactly.
        std::lock_guard<std::mutex> lk(c->mu);
        give_back(c.get(), fd);
        note_fallback(Fallback::Exec);
        c->ch->detach();
        return;
    }
    int fl = real::fcntl(fd, F_GETFL, 0);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    real::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    track_new(fd, ss.ss_family, side == 0 ? SocketRole::Client : SocketRole::Accepted, fl >= 0 && (fl & O_NONBLOCK), conf::Use::Both);
    Socket* s = tracked(fd);
    if (!s) {  // cannot track (pool exhausted): TCP it is
        std::lock_guard<std::mutex> lk(c->mu);
        give_back(c.get(), fd);
        c->ch->detach();
        return;
    }
    s->conn_opts.store(true, std::memory_order_relaxed);  // the old image may have set any option
    // The old image's claim is this image's: the process is the same.
    c->epoch = c->ch->segment().rendezvous()->epoch[side].load(std::memory_order_acquire);
    c->state.store(State::Accelerated, std::memory_order_release);
    s->conn.store(c.release(), std::memory_order_release);
    totals().sockets_accelerated.fetch_add(1, std::memory_order_relaxed);
    if (shmstats::SocketSlot* sl = s->slot.load(std::memory_order_acquire)) {
        sl->path.store(shmstats::Path::Shm, std::memory_order_relaxed);
        s->conn.load()->slot.store(sl, std::memory_order_relaxed);
    }
    for (std::size_t i = 1; i < fds.size(); ++i)
        if (Socket* again = acquire(fd)) track_dup(fds[i], again);
    log::debug("fd {}: sdx connection taken over from before exec", fd);
}

}  // namespace

const char* prepare_exec(const char* path, char* const* envp, char* buf, std::size_t size) noexcept {
    g_exec_nsegfds = 0;
    if (!any_live()) return nullptr;
    Group groups[kMaxConns];
    int ng = 0;
    // Connections still waiting for their listener's decision are decided now, once.
    g_fds.for_each(0, ~0u >> 1, [&](int fd, Socket* s) {
        Conn* c = s->conn.load(std::memory_order_acquire);
        if (c && c->state.load(std::memory_order_acquire) == State::Pending) settle(c, fd, true);
    });
    g_fds.for_each(0, ~0u >> 1, [&](int fd, Socket* s) {
        Conn* c = s->conn.load(std::memory_order_acquire);
        if (!c || c->state.load(std::memory_order_acquire) != State::Accelerated) return;
        int fl = real::fcntl(fd, F_GETFD, 0);
        if (fl < 0 || (fl & FD_CLOEXEC)) return;  // the new program will not have it
        for (int i = 0; i < ng; ++i) {
            if (groups[i].c != c) continue;
            if (groups[i].n >= 0 && groups[i].n < kMaxFds) groups[i].fds[groups[i].n++] = fd;
            else groups[i].n = -1;
            return;
        }
        if (ng == kMaxConns) {
            std::lock_guard<std::mutex> lk(c->mu);
            if (c->state.load(std::memory_order_acquire) == State::Accelerated) give_back_for_exec(c, fd);
            return;
        }
        groups[ng].c = c;
        groups[ng].fds[0] = fd;
        groups[ng].n = 1;
        ++ng;
    });
    if (ng == 0) return nullptr;
    bool can = will_load_sdx(path, envp);
    int len = std::snprintf(buf, size, "%s=", kHandoverVar);
    bool any = false;
    for (int i = 0; i < ng; ++i) {
        Group& g = groups[i];
        int first = g.n > 0 ? g.fds[0] : -1;
        std::lock_guard<std::mutex> lk(g.c->mu);
        if (g.c->state.load(std::memory_order_acquire) != State::Accelerated) continue;
        if (first < 0) {
            // More fds than the handover names: find one to give back on.
            g_fds.for_each(0, ~0u >> 1, [&](int fd, Socket* s) {
                if (first < 0 && s->conn.load(std::memory_order_acquire) == g.c) first = fd;
            });
            if (first >= 0) give_back_for_exec(g.c, first);
            continue;
        }
        if (given_back(g.c)) {
            take_back(g.c, first);
            continue;
        }
        bool handed = false;
        if (can && fresh(g.c)) {
            int sfd = reopen_segment(g.c->ch->segment());
            if (sfd >= 0) {
                char entry[160];
                int k = 0;
                for (int j = 0; j < g.n; ++j) k += std::snprintf(entry + k, sizeof entry - k, "%s%d", j ? "," : "", g.fds[j]);
                k += std::snprintf(entry + k, sizeof entry - k, ":%d:%d:%d;", sfd, g.c->ch->side(), static_cast<int>(g.c->ch->peer()));
                if (len + k < static_cast<int>(size) && g_exec_nsegfds < kMaxConns) {
                    std::memcpy(buf + len, entry, static_cast<std::size_t>(k) + 1);
                    len += k;
                    g_exec_segfds[g_exec_nsegfds++] = sfd;
                    handed = any = true;
                    // A vfork child shares our memory and was never counted: the new program is
                    // one more holder (fork() counted a forked child already).
                    if (::getpid() != g_rt.pid)
                        g.c->ch->segment().rendezvous()->holders[g.c->ch->side()].fetch_add(1, std::memory_order_acq_rel);
                } else {
                    real::close(sfd);
                }
            }
        }
        if (!handed) give_back_for_exec(g.c, first);
    }
    return any ? buf : nullptr;
}

void before_spawn(bool any) noexcept {
    if (!any_live()) return;
    g_fds.for_each(0, ~0u >> 1, [&](int fd, Socket* s) {
        Conn* c = s->conn.load(std::memory_order_acquire);
        if (!c) return;
        int fl = real::fcntl(fd, F_GETFD, 0);
        if (fl < 0 || (!any && (fl & FD_CLOEXEC))) return;
        if (c->state.load(std::memory_order_acquire) == State::Pending) settle(c, fd, true);
        std::lock_guard<std::mutex> lk(c->mu);
        if (c->state.load(std::memory_order_acquire) != State::Accelerated) return;
        if (give_back(c, fd, false))
            note_fallback(Fallback::Exec, c->slot.load(std::memory_order_relaxed));
        else
            log::info("fd {}: posix_spawn child may inherit this sdx connection, which is in use: it stays accelerated here", fd);
    });
}

void exec_failed() noexcept {
    for (int i = 0; i < g_exec_nsegfds; ++i) real::close(g_exec_segfds[i]);
    g_exec_nsegfds = 0;
}

void resume_inherited() noexcept {
    const char* v = std::getenv(kHandoverVar);
    if (!v) return;
    try {
        std::string spec(v);
        ::unsetenv(kHandoverVar);  // not for this program's own children
        std::size_t pos = 0;
        while (pos < spec.size()) {
            std::size_t end = spec.find(';', pos);
            if (end == std::string::npos) end = spec.size();
            std::string entry = spec.substr(pos, end - pos);
            pos = end + 1;
            std::vector<int> fds;
            int segfd = -1, side = -1, peer = 0;
            std::size_t c1 = entry.find(':');
            if (c1 == std::string::npos) continue;
            for (std::size_t p = 0; p < c1;) {
                std::size_t q = entry.find(',', p);
                if (q == std::string::npos || q > c1) q = c1;
                fds.push_back(std::atoi(entry.c_str() + p));
                p = q + 1;
            }
            if (std::sscanf(entry.c_str() + c1, ":%d:%d:%d", &segfd, &side, &peer) != 3 || fds.empty() || segfd < 0 ||
                (side != 0 && side != 1) || peer <= 0) {
                log::error("{}: malformed entry '{}' ignored", kHandoverVar, entry);
                continue;
            }
            resume_one(fds, segfd, side, peer);
        }
    } catch (...) {
        log::error("out of memory while taking over sdx connections after exec");
    }
}

}  // namespace sdx::accel
