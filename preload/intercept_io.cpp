// The data path: read/write, the send/recv family, sendfile, splice and glibc's fortified variants.
// A socket on the kernel path costs one table lookup here; an accelerated one (or one waiting for
// its peer's decision) goes to accel::, which reports `handled` false when the socket turned out
// to stay on kernel TCP.
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include <algorithm>
#include <sys/socket.h>
#include <sys/uio.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "preload/accel.hpp"
#include "preload/export.hpp"
#include "preload/real.hpp"
#include "preload/runtime.hpp"

using namespace sdx;

namespace {
inline void note(int fd, Call c) noexcept {
    if (tracked(fd)) count(c);
}
inline void note2(int a, int b, Call c) noexcept {
    if (tracked(a) || tracked(b)) count(c);
}

// Payload that went over kernel TCP on a tracked socket: process totals and its `sdx stats` line.
inline ssize_t real_tcp(int fd, ssize_t r, bool tx) noexcept {
    if (r > 0)
        if (Socket* s = tracked(fd)) {
            (tx ? totals().tcp_tx : totals().tcp_rx).fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
            if (shmstats::SocketSlot* sl = s->slot.load(std::memory_order_relaxed))
                (tx ? sl->tcp_tx : sl->tcp_rx).fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
        }
    return r;
}

inline int mmsg_tcp(int fd, const mmsghdr* vec, int r, bool tx) noexcept {
    for (int i = 0; i < r; ++i) real_tcp(fd, vec[i].msg_len, tx);
    return r;
}

inline bool maybe_accel(int fd) noexcept {
    Socket* s = tracked(fd);
    return s && s->conn.load(std::memory_order_relaxed);
}

// Runs the accelerated path with the socket pinned (a concurrent close cannot free it under us).
// False: pass the call through to the kernel.
template <typename Fn>
bool via_accel(int fd, ssize_t* out, Fn fn) noexcept {
    if (!maybe_accel(fd)) return false;
    Socket* s = acquire(fd);
    if (!s) return false;
    bool handled = false;
    s->inflight.fetch_add(1, std::memory_order_acq_rel);
    ssize_t r = fn(s, &handled);
    int saved = errno;
    call_done(s);
    s->unref();
    errno = saved;
    if (handled) *out = r;
    return handled;
}

ssize_t recv_iov(int fd, const iovec* iov, int cnt, int flags, bool* used) noexcept {
    ssize_t r = 0;
    *used = via_accel(fd, &r, [&](Socket* s, bool* h) { return accel::recv(s, fd, iov, cnt, flags, h); });
    return r;
}

ssize_t send_iov(int fd, const iovec* iov, int cnt, int flags, bool* used) noexcept {
    ssize_t r = 0;
    *used = via_accel(fd, &r, [&](Socket* s, bool* h) { return accel::send(s, fd, iov, cnt, flags, h); });
    return r;
}

// sendfile() onto an accelerated socket: read the file here, send it through sdx.
ssize_t sendfile_accel(int out, int in, off64_t* offset, size_t n, bool* used) noexcept {
    *used = false;
    if (!maybe_accel(out)) return 0;
    static thread_local char buf[128 * 1024];
    size_t total = 0;
    while (total < n) {
        size_t want = std::min(n - total, sizeof buf);
        ssize_t got = offset ? ::pread64(in, buf, want, *offset) : real::read(in, buf, want);
        if (got <= 0) {
            if (total == 0 && got < 0) {
                *used = true;
                return -1;
            }
            break;
        }
        iovec v{buf, static_cast<size_t>(got)};
        bool u = false;
        ssize_t sent = send_iov(out, &v, 1, 0, &u);
        if (!u) {  // the socket settled on kernel TCP meanwhile: send what we read there
            sent = real::send(out, buf, static_cast<size_t>(got), MSG_NOSIGNAL);
        }
        *used = true;
        if (sent < 0) {
            if (!offset) ::lseek64(in, -got, SEEK_CUR);
            return total > 0 ? static_cast<ssize_t>(total) : -1;
        }
        if (offset) *offset += sent;
        else if (sent < got) ::lseek64(in, sent - got, SEEK_CUR);
        total += static_cast<size_t>(sent);
        if (sent < got) break;
    }
    *used = true;
    return static_cast<ssize_t>(total);
}

// Free room in pipe `fd` (its capacity less what it holds).
long pipe_room(int fd) noexcept {
    int size = real::fcntl(fd, F_GETPIPE_SZ, 0), queued = 0;
    if (size < 0 || real::ioctl(fd, FIONREAD, reinterpret_cast<unsigned long>(&queued)) != 0) return -1;
    return std::max(0, size - queued);
}

// splice() with an accelerated socket at one end goes through a buffer.  Socket to pipe: peek at
// most what the pipe has room for, write it, then consume exactly what was written, so a byte is
// never lost between the two.  Pipe to socket: what was read from the pipe is sent in full.
ssize_t splice_accel(int in, loff_t* off_in, int out, loff_t* off_out, size_t n, unsigned flags, bool* used) noexcept {
    *used = false;
    struct stat si {}, so {};
    if (::fstat(in, &si) != 0 || ::fstat(out, &so) != 0) return 0;  // the kernel's EBADF
    bool from_socket = maybe_accel(in);
    // The kernel's argument rules: a pipe at one end, no offset on a socket or pipe.
    if ((!S_ISFIFO(si.st_mode) && !S_ISFIFO(so.st_mode)) || (from_socket && off_in) || (!from_socket && off_out)) return 0;
    static thread_local char buf[64 * 1024];
    if (n == 0) {
        *used = true;
        return 0;
    }
    if (from_socket) {
        if (!S_ISFIFO(so.st_mode)) return 0;  // socket to socket: the kernel's EINVAL
        for (;;) {
            long room = pipe_room(out);
            if (room < 0) return 0;
            if (room == 0) {
                *used = true;
                if (flags & SPLICE_F_NONBLOCK) {
                    errno = EAGAIN;
                    return -1;
                }
                pollfd p{out, POLLOUT, 0};
                if (real::poll(&p, 1, -1) < 0) return -1;
                continue;
            }
            iovec v{buf, std::min({n, sizeof buf, static_cast<size_t>(room)})};
            bool u = false;
            ssize_t got = recv_iov(in, &v, 1, MSG_PEEK, &u);
            if (!u) return 0;  // on kernel TCP after all
            *used = true;
            if (got <= 0) return got;
            ssize_t put = real::write(out, buf, static_cast<size_t>(got));
            if (put <= 0) return put;
            iovec take{buf, static_cast<size_t>(put)};
            return recv_iov(in, &take, 1, 0, &u);
        }
    }
    size_t want = std::min(n, sizeof buf);
    ssize_t got = off_in ? ::pread64(in, buf, want, *off_in) : real::read(in, buf, want);
    *used = true;
    if (got <= 0) return got;
    if (off_in) *off_in += got;
    for (ssize_t sent = 0; sent < got;) {
        iovec v{buf + sent, static_cast<size_t>(got - sent)};
        bool u = false;
        ssize_t r = send_iov(out, &v, 1, MSG_NOSIGNAL, &u);
        if (!u) r = real::send(out, buf + sent, static_cast<size_t>(got - sent), MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                pollfd p{out, POLLOUT, 0};
                ::poll(&p, 1, -1);  // the shim's poll: readiness of the accelerated socket
                continue;
            }
            return sent > 0 ? sent : -1;  // (what the pipe gave and the socket refused is lost, as with a failed splice)
        }
        sent += r;
    }
    return got;
}

void no_peer_address(sockaddr* addr, socklen_t* len) noexcept {
    (void)addr;
    if (len) *len = 0;  // a connected stream reports no source address, as TCP does
}

}  // namespace

SDX_EXPORT ssize_t read(int fd, void* buf, size_t n) {
    note(fd, Call::read);
    iovec v{buf, n};
    bool used;
    ssize_t r = recv_iov(fd, &v, 1, 0, &used);
    return used ? r : real_tcp(fd, real::read(fd, buf, n), false);
}

SDX_EXPORT ssize_t readv(int fd, const iovec* iov, int cnt) {
    note(fd, Call::readv);
    if (cnt >= 0 && cnt <= IOV_MAX) {
        bool used;
        ssize_t r = recv_iov(fd, iov, cnt, 0, &used);
        if (used) return r;
    }
    return real_tcp(fd, real::readv(fd, iov, cnt), false);
}

SDX_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    note(fd, Call::recv);
    iovec v{buf, n};
    bool used;
    ssize_t r = recv_iov(fd, &v, 1, flags, &used);
    return used ? r : real_tcp(fd, real::recv(fd, buf, n, flags), false);
}

SDX_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* len) {
    note(fd, Call::recvfrom);
    iovec v{buf, n};
    bool used;
    ssize_t r = recv_iov(fd, &v, 1, flags, &used);
    if (!used) return real_tcp(fd, real::recvfrom(fd, buf, n, flags, addr, len), false);
    if (r >= 0) no_peer_address(addr, len);
    return r;
}

SDX_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags) {
    note(fd, Call::recvmsg);
    if (msg && msg->msg_iovlen <= IOV_MAX) {
        bool used;
        ssize_t r = recv_iov(fd, msg->msg_iov, static_cast<int>(msg->msg_iovlen), flags, &used);
        if (used) {
            if (r >= 0) {
                msg->msg_namelen = 0;
                msg->msg_controllen = 0;
                msg->msg_flags = 0;
            }
            return r;
        }
    }
    return real_tcp(fd, real::recvmsg(fd, msg, flags), false);
}

SDX_EXPORT int recvmmsg(int fd, mmsghdr* vec, unsigned int n, int flags, timespec* timeout) {
    note(fd, Call::recvmmsg);
    if (!maybe_accel(fd) || !vec) return mmsg_tcp(fd, vec, real::recvmmsg(fd, vec, n, flags, timeout), false);
    // As the kernel does for a stream: one recvmsg per message, each waiting as the socket and
    // flags say (MSG_WAITFORONE: only the first); end of file fills every remaining message with
    // 0 bytes; an error after the first message ends the call with what was received.
    unsigned int done = 0;
    for (; done < n; ++done) {
        int f = flags & ~MSG_WAITFORONE;
        if ((flags & MSG_WAITFORONE) && done > 0) f |= MSG_DONTWAIT;
        ssize_t r = recvmsg(fd, &vec[done].msg_hdr, f);
        if (r < 0) {
            if (done == 0) return -1;
            break;
        }
        vec[done].msg_len = static_cast<unsigned int>(r);
    }
    return static_cast<int>(done);
}

SDX_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
    note(fd, Call::write);
    iovec v{const_cast<void*>(buf), n};
    bool used;
    ssize_t r = send_iov(fd, &v, 1, 0, &used);
    return used ? r : real_tcp(fd, real::write(fd, buf, n), true);
}

SDX_EXPORT ssize_t writev(int fd, const iovec* iov, int cnt) {
    note(fd, Call::writev);
    if (cnt >= 0 && cnt <= IOV_MAX) {
        bool used;
        ssize_t r = send_iov(fd, iov, cnt, 0, &used);
        if (used) return r;
    }
    return real_tcp(fd, real::writev(fd, iov, cnt), true);
}

SDX_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
    note(fd, Call::send);
    iovec v{const_cast<void*>(buf), n};
    bool used;
    ssize_t r = send_iov(fd, &v, 1, flags, &used);
    return used ? r : real_tcp(fd, real::send(fd, buf, n, flags), true);
}

SDX_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t len) {
    note(fd, Call::sendto);
    iovec v{const_cast<void*>(buf), n};
    bool used;
    ssize_t r = send_iov(fd, &v, 1, flags, &used);
    return used ? r : real_tcp(fd, real::sendto(fd, buf, n, flags, addr, len), true);
}

SDX_EXPORT ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
    note(fd, Call::sendmsg);
    if (msg && msg->msg_iovlen <= IOV_MAX) {
        bool used;
        ssize_t r = send_iov(fd, msg->msg_iov, static_cast<int>(msg->msg_iovlen), flags, &used);
        if (used) return r;
    }
    return real_tcp(fd, real::sendmsg(fd, msg, flags), true);
}

SDX_EXPORT int sendmmsg(int fd, mmsghdr* vec, unsigned int n, int flags) {
    note(fd, Call::sendmmsg);
    if (!maybe_accel(fd) || !vec) return mmsg_tcp(fd, vec, real::sendmmsg(fd, vec, n, flags), true);
    unsigned int done = 0;
    for (; done < n; ++done) {
        ssize_t r = sendmsg(fd, &vec[done].msg_hdr, flags);
        if (r < 0) {
            if (done == 0) return -1;
            break;
        }
        vec[done].msg_len = static_cast<unsigned int>(r);
    }
    return static_cast<int>(done);
}

SDX_EXPORT ssize_t sendfile(int out, int in, off_t* offset, size_t n) noexcept {
    note2(out, in, Call::sendfile);
    bool used = false;
    off64_t off = offset ? *offset : 0;
    ssize_t r = sendfile_accel(out, in, offset ? &off : nullptr, n, &used);
    if (!used) return real_tcp(out, real::sendfile(out, in, offset, n), true);
    if (offset) *offset = static_cast<off_t>(off);
    return r;
}

SDX_EXPORT ssize_t sendfile64(int out, int in, off64_t* offset, size_t n) noexcept {
    note2(out, in, Call::sendfile64);
    bool used = false;
    ssize_t r = sendfile_accel(out, in, offset, n, &used);
    return used ? r : real_tcp(out, real::sendfile64(out, in, offset, n), true);
}

SDX_EXPORT ssize_t splice(int in, loff_t* off_in, int out, loff_t* off_out, size_t n, unsigned int flags) {
    note2(in, out, Call::splice);
    if (maybe_accel(in) || maybe_accel(out)) {
        bool used = false;
        ssize_t r = splice_accel(in, off_in, out, off_out, n, flags, &used);
        if (used) return r;
    }
    return real::splice(in, off_in, out, off_out, n, flags);
}

// _FORTIFY_SOURCE builds call these instead of read/recv/recvfrom.  A size larger than the buffer
// goes to the real function, which aborts before reading, exactly as without sdx.
SDX_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
    note(fd, Call::__read_chk);
    if (n <= buflen) {
        iovec v{buf, n};
        bool used;
        ssize_t r = recv_iov(fd, &v, 1, 0, &used);
        if (used) return r;
    }
    return real_tcp(fd, real::__read_chk(fd, buf, n, buflen), false);
}

SDX_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
    note(fd, Call::__recv_chk);
    if (n <= buflen) {
        iovec v{buf, n};
        bool used;
        ssize_t r = recv_iov(fd, &v, 1, flags, &used);
        if (used) return r;
    }
    return real_tcp(fd, real::__recv_chk(fd, buf, n, buflen, flags), false);
}

SDX_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* addr, socklen_t* len) {
    note(fd, Call::__recvfrom_chk);
    if (n <= buflen) {
        iovec v{buf, n};
        bool used;
        ssize_t r = recv_iov(fd, &v, 1, flags, &used);
        if (used) {
            if (r >= 0) no_peer_address(addr, len);
            return r;
        }
    }
    return real_tcp(fd, real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len), false);
}
