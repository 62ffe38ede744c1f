// The data path: read/write, the send/recv family, sendfile, splice and glibc's fortified variants.
// A socket on the kernel path costs one table lookup here; the accelerated path branches off at
// the same place.
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <unistd.h>

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
}  // namespace

SDX_EXPORT ssize_t read(int fd, void* buf, size_t n) {
    note(fd, Call::read);
    return real::read(fd, buf, n);
}

SDX_EXPORT ssize_t readv(int fd, const iovec* iov, int cnt) {
    note(fd, Call::readv);
    return real::readv(fd, iov, cnt);
}

SDX_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
    note(fd, Call::recv);
    return real::recv(fd, buf, n, flags);
}

SDX_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* addr, socklen_t* len) {
    note(fd, Call::recvfrom);
    return real::recvfrom(fd, buf, n, flags, addr, len);
}

SDX_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags) {
    note(fd, Call::recvmsg);
    return real::recvmsg(fd, msg, flags);
}

SDX_EXPORT int recvmmsg(int fd, mmsghdr* vec, unsigned int n, int flags, timespec* timeout) {
    note(fd, Call::recvmmsg);
    return real::recvmmsg(fd, vec, n, flags, timeout);
}

SDX_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
    note(fd, Call::write);
    return real::write(fd, buf, n);
}

SDX_EXPORT ssize_t writev(int fd, const iovec* iov, int cnt) {
    note(fd, Call::writev);
    return real::writev(fd, iov, cnt);
}

SDX_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
    note(fd, Call::send);
    return real::send(fd, buf, n, flags);
}

SDX_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* addr, socklen_t len) {
    note(fd, Call::sendto);
    return real::sendto(fd, buf, n, flags, addr, len);
}

SDX_EXPORT ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
    note(fd, Call::sendmsg);
    return real::sendmsg(fd, msg, flags);
}

SDX_EXPORT int sendmmsg(int fd, mmsghdr* vec, unsigned int n, int flags) {
    note(fd, Call::sendmmsg);
    return real::sendmmsg(fd, vec, n, flags);
}

SDX_EXPORT ssize_t sendfile(int out, int in, off_t* offset, size_t n) noexcept {
    note2(out, in, Call::sendfile);
    return real::sendfile(out, in, offset, n);
}

SDX_EXPORT ssize_t sendfile64(int out, int in, off64_t* offset, size_t n) noexcept {
    note2(out, in, Call::sendfile64);
    return real::sendfile64(out, in, offset, n);
}

SDX_EXPORT ssize_t splice(int in, loff_t* off_in, int out, loff_t* off_out, size_t n, unsigned int flags) {
    note2(in, out, Call::splice);
    return real::splice(in, off_in, out, off_out, n, flags);
}

// _FORTIFY_SOURCE builds call these instead of read/recv/recvfrom; the real ones check the buffer
// size and abort on overflow exactly as without sdx.
SDX_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
    note(fd, Call::__read_chk);
    return real::__read_chk(fd, buf, n, buflen);
}

SDX_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
    note(fd, Call::__recv_chk);
    return real::__recv_chk(fd, buf, n, buflen, flags);
}

SDX_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* addr, socklen_t* len) {
    note(fd, Call::__recvfrom_chk);
    return real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len);
}
