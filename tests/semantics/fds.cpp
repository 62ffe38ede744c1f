// Descriptors: close, close_range, dup/dup2/dup3, fcntl/fcntl64, ioctl, and sockets living at fds
// above 65536.
#include "check.hpp"

#include <linux/close_range.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>

using namespace sem;

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// Sends `msg` on `from`, reads it back exactly on `to`.
bool carries(int from, int to, const std::string& msg) {
    return send_all(from, msg.data(), msg.size()) && recv_exact(to, msg.size()) == msg;
}

void test_close() {
    expect_ret("close(-1)", SEM_CALL(::close(-1)), -1, EBADF);
    int c, s;
    tcp_pair(c, s);
    expect_ret("close connected socket", SEM_CALL(::close(c)), 0);
    expect_ret("close same fd again", SEM_CALL(::close(c)), -1, EBADF);
    char b[8];
    expect_ret("peer reads EOF after close", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    expect_ret("close peer", SEM_CALL(::close(s)), 0);
    expect_ret("close(900) never opened", SEM_CALL(::close(900)), -1, EBADF);
    int p[2];
    must(::pipe(p), "pipe");
    expect_ret("close pipe end", SEM_CALL(::close(p[0])), 0);
    expect_ret("close other pipe end", SEM_CALL(::close(p[1])), 0);
}

void test_close_range() {
    // Two connected pairs placed at fixed numbers 500..503, a pipe at 504/505.
    int c1, s1, c2, s2;
    tcp_pair(c1, s1);
    tcp_pair(c2, s2);
    int p[2];
    must(::pipe(p), "pipe");
    must(::dup2(c1, 500), "dup2");
    must(::dup2(c2, 501), "dup2");
    must(::dup2(p[0], 504), "dup2");
    must(::dup2(p[1], 505), "dup2");
    close_all({c1, c2, p[0], p[1]});

    expect_ret("close_range first > last", SEM_CALL(::close_range(505, 500, 0)), -1, EINVAL);
    expect_ret("close_range bad flags", SEM_CALL(::close_range(500, 505, 0x80)), -1, EINVAL);

    expect_ret("close_range 500..505 CLOSE_RANGE_CLOEXEC", SEM_CALL(::close_range(500, 505, CLOSE_RANGE_CLOEXEC)), 0);
    expect("CLOEXEC: fds stay open", is_open(500) && is_open(501) && is_open(504) && is_open(505) && !is_open(502), "500,501,504,505 open");
    expect("CLOEXEC: FD_CLOEXEC set on all", (fd_flags(500) & fd_flags(501) & fd_flags(504) & fd_flags(505) & FD_CLOEXEC) != 0,
           "FD_CLOEXEC");
    expect("CLOEXEC: socket still carries data", carries(500, s1, "still"), "data through");

    expect_ret("close_range 500..505", SEM_CALL(::close_range(500, 505, 0)), 0);
    expect("close_range: all closed", !is_open(500) && !is_open(501) && !is_open(504) && !is_open(505), "EBADF on all");
    char b[8];
    expect_ret("close_range: peer 1 reads EOF", SEM_CALL(::recv(s1, b, sizeof b, 0)), 0);
    expect_ret("close_range: peer 2 reads EOF", SEM_CALL(::recv(s2, b, sizeof b, 0)), 0);
    expect_ret("close_range on an empty range", SEM_CALL(::close_range(600, 700, 0)), 0);
    expect_ret("close_range CLOSE_RANGE_UNSHARE", SEM_CALL(::close_range(600, 700, CLOSE_RANGE_UNSHARE)), 0);
    expect_ret("send on fd closed by close_range", SEM_CALL(::send(500, "x", 1, MSG_NOSIGNAL)), -1, EBADF);
    close_all({s1, s2});
}

void test_dup() {
    int c, s;
    tcp_pair(c, s);
    R r = SEM_CALL(::dup(c));
    expect_fd("dup socket", r);
    int d = int(r.ret);
    expect("dup: data through the dup", carries(d, s, "via-dup"), "peer reads \"via-dup\"");
    expect("dup: data to the dup", carries(s, d, "to-dup"), "dup reads \"to-dup\"");
    expect_ret("dup(-1)", SEM_CALL(::dup(-1)), -1, EBADF);
    expect_ret("close original", SEM_CALL(::close(c)), 0);
    expect("dup survives close of original", carries(d, s, "alive"), "data through");
    must(::fcntl(d, F_SETFD, FD_CLOEXEC), "F_SETFD");
    r = SEM_CALL(::dup(d));
    expect_fd("dup of FD_CLOEXEC fd", r);
    int d2 = int(r.ret);
    expect_eq("dup does not copy FD_CLOEXEC", fd_flags(d2) & FD_CLOEXEC, 0);
    must(::fcntl(d, F_SETFL, O_NONBLOCK), "F_SETFL");
    expect_eq("dup shares O_NONBLOCK (file status)", fl_flags(d2) & O_NONBLOCK, O_NONBLOCK);
    must(::fcntl(d, F_SETFL, 0), "F_SETFL");
    ::close(d2);

    // dup2
    r = SEM_CALL(::dup2(d, d));
    expect("dup2(fd, fd) returns fd", r.ret == d, "same fd", show(r));
    expect("dup2(fd, fd) keeps the socket", carries(d, s, "same"), "data through");
    expect_ret("dup2(-1, 700)", SEM_CALL(::dup2(-1, 700)), -1, EBADF);
    expect_ret("dup2(closed 900, 900)", SEM_CALL(::dup2(900, 900)), -1, EBADF);
    expect_ret("dup2(fd, -1)", SEM_CALL(::dup2(d, -1)), -1, EBADF);
    r = SEM_CALL(::dup2(d, 700));
    expect_eq("dup2 onto free fd 700", r.ret, 700);
    expect("dup2: data through 700", carries(700, s, "seven"), "data through");
    expect_eq("dup2 result: FD_CLOEXEC clear", fd_flags(700) & FD_CLOEXEC, 0);

    // dup2 onto an open socket closes it atomically: its peer sees EOF.
    int c2, s2;
    tcp_pair(c2, s2);
    must(::dup2(c2, 701), "dup2");
    ::close(c2);
    r = SEM_CALL(::dup2(d, 701));
    expect_eq("dup2 onto an open socket", r.ret, 701);
    char b[8];
    expect_ret("dup2: replaced socket's peer reads EOF", SEM_CALL(::recv(s2, b, sizeof b, 0)), 0);
    expect("dup2: 701 now carries the first connection", carries(701, s, "repl"), "data through");
    ::close(s2);

    // dup3
    expect_ret("dup3(fd, fd, 0)", SEM_CALL(::dup3(d, d, 0)), -1, EINVAL);
    expect_ret("dup3(fd, fd, O_CLOEXEC)", SEM_CALL(::dup3(d, d, O_CLOEXEC)), -1, EINVAL);
    expect_ret("dup3 bad flags O_NONBLOCK", SEM_CALL(::dup3(d, 702, O_NONBLOCK)), -1, EINVAL);
    expect_ret("dup3(-1, 702, 0)", SEM_CALL(::dup3(-1, 702, 0)), -1, EBADF);
    r = SEM_CALL(::dup3(d, 702, O_CLOEXEC));
    expect_eq("dup3 O_CLOEXEC onto 702", r.ret, 702);
    expect_eq("dup3 O_CLOEXEC: FD_CLOEXEC set", fd_flags(702) & FD_CLOEXEC, FD_CLOEXEC);
    r = SEM_CALL(::dup3(d, 703, 0));
    expect_eq("dup3 flags 0 onto 703", r.ret, 703);
    expect_eq("dup3 flags 0: FD_CLOEXEC clear", fd_flags(703) & FD_CLOEXEC, 0);
    expect("dup3: data through 702", carries(702, s, "dup3"), "data through");
    close_all({700, 701, 702, 703});
    expect("all dups but one closed: still connected", carries(d, s, "last"), "data through");
    ::close(d);
    expect_ret("last dup closed: peer reads EOF", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    ::close(s);
}

template <class F>
void fcntl_suite(const std::string& tag, F fc) {
    int c, s;
    tcp_pair(c, s);
    R r = SEM_CALL(fc(c, F_GETFL, 0));
    expect("F_GETFL " + tag, r.ret >= 0 && (r.ret & O_ACCMODE) == O_RDWR && !(r.ret & O_NONBLOCK), "O_RDWR, blocking", show(r));
    expect_ret("F_SETFL O_NONBLOCK " + tag, SEM_CALL(fc(c, F_SETFL, O_NONBLOCK)), 0);
    expect_eq("F_GETFL shows O_NONBLOCK " + tag, fc(c, F_GETFL, 0) & O_NONBLOCK, O_NONBLOCK);
    char b[8];
    expect_ret("recv on O_NONBLOCK socket " + tag, SEM_CALL(::recv(c, b, sizeof b, 0)), -1, EAGAIN);
    expect_ret("F_SETFL 0 " + tag, SEM_CALL(fc(c, F_SETFL, 0)), 0);
    expect_eq("F_GETFL O_NONBLOCK cleared " + tag, fc(c, F_GETFL, 0) & O_NONBLOCK, 0);
    expect_ret("F_GETFD " + tag, SEM_CALL(fc(c, F_GETFD, 0)), 0);
    expect_ret("F_SETFD FD_CLOEXEC " + tag, SEM_CALL(fc(c, F_SETFD, FD_CLOEXEC)), 0);
    expect_ret("F_GETFD after set " + tag, SEM_CALL(fc(c, F_GETFD, 0)), FD_CLOEXEC);
    fc(c, F_SETFD, 0);

    r = SEM_CALL(fc(c, F_DUPFD, 800));
    expect("F_DUPFD min 800 " + tag, r.ret == 800, "lowest free fd >= 800", show(r));
    if (r.ret >= 0) {
        expect_eq("F_DUPFD: FD_CLOEXEC clear " + tag, fd_flags(int(r.ret)) & FD_CLOEXEC, 0);
        expect("F_DUPFD: data through " + tag, carries(int(r.ret), s, "dupfd"), "data through");
    }
    R r2 = SEM_CALL(fc(c, F_DUPFD_CLOEXEC, 800));
    expect("F_DUPFD_CLOEXEC min 800 " + tag, r2.ret == 801, "lowest free fd >= 800 (800 taken)", show(r2));
    if (r2.ret >= 0) {
        expect_eq("F_DUPFD_CLOEXEC: FD_CLOEXEC " + tag, fd_flags(int(r2.ret)) & FD_CLOEXEC, FD_CLOEXEC);
        expect("F_DUPFD_CLOEXEC: data through " + tag, carries(s, int(r2.ret), "cloexec"), "data through");
    }
    close_all({int(r.ret), int(r2.ret)});
    expect_ret("F_DUPFD negative min " + tag, SEM_CALL(fc(c, F_DUPFD, -1)), -1, EINVAL);
    expect_ret("F_DUPFD min >= RLIMIT_NOFILE " + tag, SEM_CALL(fc(c, F_DUPFD, 1 << 30)), -1, EINVAL);
    expect_ret("fcntl(-1, F_GETFL) " + tag, SEM_CALL(fc(-1, F_GETFL, 0)), -1, EBADF);
    expect_ret("fcntl(900, F_GETFD) " + tag, SEM_CALL(fc(900, F_GETFD, 0)), -1, EBADF);
    expect_ret("fcntl bad command 9999 " + tag, SEM_CALL(fc(c, 9999, 0)), -1, EINVAL);
    close_all({c, s});
}

void test_fcntl() {
    fcntl_suite("(fcntl)", [](int fd, int cmd, long arg) { return ::fcntl(fd, cmd, arg); });
    fcntl_suite("(fcntl64)", [](int fd, int cmd, long arg) { return ::fcntl64(fd, cmd, arg); });
}

void test_ioctl() {
    int c, s;
    tcp_pair(c, s);
    int on = 1, off = 0, n = -1;
    expect_ret("ioctl FIONBIO 1", SEM_CALL(::ioctl(c, FIONBIO, &on)), 0);
    expect_eq("FIONBIO: F_GETFL O_NONBLOCK", fl_flags(c) & O_NONBLOCK, O_NONBLOCK);
    char b[8];
    expect_ret("FIONBIO: recv empty", SEM_CALL(::recv(c, b, sizeof b, 0)), -1, EAGAIN);
    expect_ret("ioctl FIONBIO 0", SEM_CALL(::ioctl(c, FIONBIO, &off)), 0);
    expect_eq("FIONBIO 0: blocking", fl_flags(c) & O_NONBLOCK, 0);

    expect_ret("ioctl FIONREAD empty", SEM_CALL(::ioctl(s, FIONREAD, &n)), 0);
    expect_eq("FIONREAD empty count", n, 0);
    std::string msg(1234, 'r');
    send_all(c, msg.data(), msg.size());
    wait_events(s, POLLIN);
    expect_ret("ioctl FIONREAD", SEM_CALL(::ioctl(s, FIONREAD, &n)), 0);
    expect_eq("FIONREAD count", n, 1234);
    recv_exact(s, 1000);
    ::ioctl(s, FIONREAD, &n);
    expect_eq("FIONREAD after reading 1000", n, 234);
    recv_exact(s, 234);

    expect_ret("ioctl SIOCATMARK", SEM_CALL(::ioctl(s, SIOCATMARK, &n)), 0);
    expect_eq("SIOCATMARK without urgent data", n, 0);
    expect_ret("ioctl SIOCOUTQ", SEM_CALL(::ioctl(c, SIOCOUTQ, &n)), 0);
    expect_ret("ioctl FIOCLEX", SEM_CALL(::ioctl(c, FIOCLEX)), 0);
    expect_eq("FIOCLEX: FD_CLOEXEC", fd_flags(c) & FD_CLOEXEC, FD_CLOEXEC);
    expect_ret("ioctl FIONCLEX", SEM_CALL(::ioctl(c, FIONCLEX)), 0);
    expect_eq("FIONCLEX: FD_CLOEXEC clear", fd_flags(c) & FD_CLOEXEC, 0);

    expect_ret("ioctl(-1, FIONBIO)", SEM_CALL(::ioctl(-1, FIONBIO, &on)), -1, EBADF);
    expect_ret("ioctl(900, FIONREAD)", SEM_CALL(::ioctl(900, FIONREAD, &n)), -1, EBADF);
    expect_ret("ioctl unknown request on socket", SEM_CALL(::ioctl(c, 0x5401ff, &n)), -1, ENOTTY);
    int p[2];
    must(::pipe(p), "pipe");
    expect_ret("write pipe", SEM_CALL(::write(p[1], "abc", 3)), 3);
    expect_ret("ioctl FIONREAD pipe", SEM_CALL(::ioctl(p[0], FIONREAD, &n)), 0);
    expect_eq("FIONREAD pipe count", n, 3);
    expect_ret("ioctl SIOCATMARK on pipe", SEM_CALL(::ioctl(p[0], SIOCATMARK, &n)), -1, ENOTTY);
    close_all({c, s, p[0], p[1]});
}

// Sockets at high descriptor numbers.  The fds are 70000, 88888, 99990 and 99999 once RLIMIT_NOFILE
// is raised to 100000 (needs CAP_SYS_RESOURCE beyond the hard limit).  Where the hard limit cannot be
// raised, the same checks run at the same fractions of the hard limit, after a "skip" line saying so.
void test_high_fds() {
    rlimit rl{100000, 100000};
    R r = SEM_CALL(::setrlimit(RLIMIT_NOFILE, &rl));
    long lim = 100000;
    if (r.ret == -1 && r.err == EPERM) {
        rlimit cur{};
        ::getrlimit(RLIMIT_NOFILE, &cur);
        lim = long(cur.rlim_max);
        cur.rlim_cur = cur.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &cur);
        emit("skip fds above 65536: RLIMIT_NOFILE hard limit " + std::to_string(lim) +
             " cannot be raised (EPERM, no CAP_SYS_RESOURCE); the high-fd checks use fds scaled below it");
    } else {
        expect_ret("setrlimit RLIMIT_NOFILE 100000", r, 0);
    }
    const int f_hi = int(lim * 7 / 10), f_lst = int(lim * 88888 / 100000), f_dupfd = int(lim - 10), f_top = int(lim - 1),
              f_from = int(lim * 65537 / 100000);
    const std::string H = "fd " + std::string(lim == 100000 ? "70000" : "hi");
    int c, s;
    tcp_pair(c, s);
    expect_eq("dup2 socket to " + H, ::dup2(c, f_hi), f_hi);
    ::close(c);
    c = f_hi;
    expect(H + ": send", carries(c, s, "high"), "peer reads \"high\"");
    expect(H + ": recv", carries(s, c, "back"), "reads \"back\"");

    // Checksummed bulk through the high fd.
    Rng rng(70000);
    std::string data(300000, '\0');
    rng.fill(reinterpret_cast<unsigned char*>(data.data()), data.size());
    Fnv want;
    want.add(data.data(), data.size());
    struct Arg {
        int fd;
        std::string* d;
    } arg{c, &data};
    pthread_t th;
    pthread_create(&th, nullptr, [](void* a) -> void* {
        auto* x = static_cast<Arg*>(a);
        const char* p = x->d->data();
        size_t left = x->d->size();
        while (left) {
            ssize_t w = ::write(x->fd, p, left > 7777 ? 7777 : left);
            if (w <= 0) break;
            p += w;
            left -= size_t(w);
        }
        return nullptr;
    }, &arg);
    std::string got = recv_exact(s, data.size());
    pthread_join(th, nullptr);
    Fnv h;
    h.add(got.data(), got.size());
    expect(H + ": 300000 bytes write->recv checksum", got.size() == data.size() && h.h == want.h, hex(want.h), hex(h.h));

    int v = 1;
    expect_ret(H + ": setsockopt TCP_NODELAY", SEM_CALL(::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v)), 0);
    sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    expect_ret(H + ": getpeername", SEM_CALL(::getpeername(c, reinterpret_cast<sockaddr*>(&ss), &sl)), 0);
    expect_ret(H + ": F_SETFL O_NONBLOCK", SEM_CALL(::fcntl(c, F_SETFL, O_NONBLOCK)), 0);
    char b[16];
    expect_ret(H + ": recv EAGAIN", SEM_CALL(::recv(c, b, sizeof b, 0)), -1, EAGAIN);
    ::fcntl(c, F_SETFL, 0);
    send_all(s, "pollme", 6);
    pollfd pf[1] = {{c, POLLIN, 0}};
    expect_ret(H + ": poll", SEM_CALL(::poll(pf, 1, kWaitMs)), 1);
    int ep = int(must(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1"));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 70000;
    expect_ret(H + ": epoll_ctl ADD", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev)), 0);
    epoll_event out[2];
    r = SEM_CALL(::epoll_wait(ep, out, 2, kWaitMs));
    expect(H + ": epoll_wait", r.ret == 1 && out[0].data.u64 == 70000 && out[0].events == EPOLLIN, "1 event EPOLLIN", show(r));
    expect_str(H + ": read", recv_exact(c, 6), "pollme");
    ::close(ep);

    expect("F_DUPFD min limit-10", ::fcntl(c, F_DUPFD, f_dupfd) == f_dupfd, "that fd");
    expect_ret("dup2 to RLIMIT_NOFILE", SEM_CALL(::dup2(c, int(lim))), -1, EBADF);
    expect("dup3 to limit-1 O_CLOEXEC", ::dup3(c, f_top, O_CLOEXEC) == f_top, "that fd");
    expect("fd limit-1: send", carries(f_top, s, "edge"), "data through");
    expect_ret("close " + H, SEM_CALL(::close(c)), 0);
    expect_ret("close " + H + " again", SEM_CALL(::close(c)), -1, EBADF);
    expect("fd limit-10 still carries data", carries(f_dupfd, s, "still"), "data through");
    expect_ret(std::string(lim == 100000 ? "close_range 65537..~0U" : "close_range hi..~0U"),
               SEM_CALL(::close_range(unsigned(f_from), ~0U, 0)), 0);
    expect("fds limit-10, limit-1 closed", !is_open(f_dupfd) && !is_open(f_top), "EBADF");
    expect_ret("all high fds closed: peer reads EOF", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    ::close(s);

    // A listener at a high fd hands out ordinary low fds.
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    must(::dup2(l, f_lst), "dup2");
    ::close(l);
    int cc = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    must(::connect(cc, reinterpret_cast<sockaddr*>(&la), ll), "connect");
    r = SEM_CALL(::accept4(f_lst, nullptr, nullptr, SOCK_CLOEXEC));
    expect("accept4 on a listener at a high fd", r.ret >= 0 && r.ret < 1024, "a low fd", show(r));
    if (r.ret >= 0) {
        expect("accepted from the high-fd listener: data", carries(cc, int(r.ret), "acc"), "data through");
        ::close(int(r.ret));
    }
    close_all({cc, f_lst});
}

}  // namespace

int main() {
    start();
    test_close();
    test_close_range();
    test_dup();
    test_fcntl();
    test_ioctl();
    test_high_fds();
    return finish();
}
