#include "preload/revert.hpp"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>

#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "preload/accel.hpp"
#include "preload/real.hpp"
#include "protocol/wire.hpp"

namespace sdx::accel {

namespace {

constexpr std::uint32_t kStarted = 0x1;
constexpr std::uint32_t kDone = 0x2;
constexpr std::uint32_t kSideShift = 4;
constexpr long long kBoundNs = 1000000000LL;  // how long either side waits for the other's step

// Waits (yielding the CPU) until `done()` or the bound passes.  False on timeout.
template <typename Done>
bool wait_for(Done done) {
    long long end = now_ns() + kBoundNs;
    while (!done()) {
        if (now_ns() > end) return false;
        ::sched_yield();
    }
    return true;
}

// Whether the peer's unreleased messages can be replayed on TCP by the peer itself.
bool replayable(const shm::Channel& ch) {
    bool gone = ch.peer_gone();
    return ch.walk_incoming([&](std::span<const std::byte> m) {
        proto::Message msg;
        if (proto::decode(m, msg) != proto::DecodeError::None) return false;
        switch (msg.h.mid) {
        case proto::Mid::Data:
            // Urgent data would lose its mark; a peer that is gone cannot replay anything.
            return msg.payload.empty() || (!gone && !(msg.h.flags & proto::kOobPres));
        case proto::Mid::SrcAvail: return !gone;
        case proto::Mid::SinkAvail:
        case proto::Mid::SrcAvailCancel:  // the bytes it took back follow as Data (or were never sent)
        case proto::Mid::DisConn: return true;
        default: return false;
        }
    });
}

// Sends everything of `parts` on the kernel socket, waiting for room when it is nonblocking.
bool send_all(int fd, std::vector<iovec>& parts) {
    for (iovec& v : parts) {
        auto* p = static_cast<const char*>(v.iov_base);
        std::size_t left = v.iov_len;
        while (left > 0) {
            ssize_t n = real::send(fd, p, left, MSG_NOSIGNAL);
            if (n > 0) {
                p += n;
                left -= static_cast<std::size_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                pollfd q{fd, POLLOUT, 0};
                real::poll(&q, 1, 1000);
                continue;
            }
            return false;
        }
    }
    return true;
}

}  // namespace

bool replay_outgoing(const shm::Channel& ch, int fd) {
    std::vector<iovec> parts;
    bool disconn = false;
    bool ok = ch.walk_outgoing([&](std::span<const std::byte> m) {
        proto::Message msg;
        if (proto::decode(m, msg) != proto::DecodeError::None) return false;
        if (msg.h.mid == proto::Mid::Data && !msg.payload.empty())
            parts.push_back(iovec{const_cast<std::byte*>(msg.payload.data()), msg.payload.size()});
        else if (msg.h.mid == proto::Mid::SrcAvail && !ch.reclaimed(msg.advert.rkey))
            // Our own buffer: its send() is still waiting.  (A reclaimed one is not: what the peer
            // did not take of it follows as Data, or was never sent.)
            parts.push_back(iovec{reinterpret_cast<void*>(msg.advert.vaddr), msg.advert.len});
        else if (msg.h.mid == proto::Mid::DisConn)
            disconn = true;
        return true;
    });
    if (!ok || !send_all(fd, parts)) return false;
    if (disconn) real::shutdown(fd, SHUT_WR);
    return true;
}

bool given_back(const Conn* c) noexcept { return c->ch && c->ch->revert_state() != 0; }

bool give_back(Conn* c, int fd, bool abort_if_used) noexcept {
    shm::Channel& ch = *c->ch;
    if (ch.revert_state() != 0) return true;  // another fd of this connection already did
    std::uint32_t me = static_cast<std::uint32_t>(ch.side()) << kSideShift;
    try {
        if (!ch.sent_nothing() || !ch.took_nothing() || !replayable(ch)) {
            if (!abort_if_used) return false;
            log::warn("fd {}: exec with an sdx connection whose stream was already in use: it is reset "
                      "(the new program sees end of file, the peer ECONNRESET)", fd);
            if (c->eng) {
                c->eng->close(true);  // AbortConn
                ch.drive(*c->eng);
            }
            ch.close();
            drain_doorbells_locked(c, fd);
            real::shutdown(fd, SHUT_RDWR);
            c->state.store(State::Kernel, std::memory_order_release);
            return false;
        }
        ch.disarm_socket_doorbell();
        ch.set_revert_state(kStarted | me);
        // No doorbell comes after this one: take every one the peer counted off the socket.
        wait_for([&] { return !ch.socket_doorbell_in_flight(); });
        wait_for([&] {
            drain_doorbells_locked(c, fd);
            return ch.doorbells_owed() == 0;
        });
        ch.set_revert_state(kDone | kStarted | me);
        ch.wake_peer();
    } catch (...) {
        return false;
    }
    c->state.store(State::Kernel, std::memory_order_release);
    return true;
}

void take_back(Conn* c, int fd) noexcept {
    shm::Channel& ch = *c->ch;
    std::uint32_t st = ch.revert_state();
    if (st == 0 || c->state.load(std::memory_order_acquire) == State::Kernel) return;
    if (static_cast<int>(st >> kSideShift) != ch.side()) {
        // The peer gave the stream back: replay what it never read, once its socket is clean.
        try {
            wait_for([&] { return (ch.revert_state() & kDone) != 0; });
            if (!replay_outgoing(ch, fd)) {
                log::warn("fd {}: the sdx peer returned the stream to TCP and it could not be replayed: reset", fd);
                real::shutdown(fd, SHUT_RDWR);
            }
        } catch (...) {
            real::shutdown(fd, SHUT_RDWR);
        }
    }
    ch.detach();  // leave the segment as it is: the stream is on TCP now
    c->state.store(State::Kernel, std::memory_order_release);
}

}  // namespace sdx::accel
