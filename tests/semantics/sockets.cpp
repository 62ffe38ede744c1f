// Socket lifecycle: socket, socketpair, bind, listen, accept/accept4, connect, shutdown,
// getsockname/getpeername, getsockopt/setsockopt — results and errno, with and without sdx.
#include "check.hpp"

#include <string>

using namespace sem;

namespace {

sockaddr* sa(sockaddr_storage& s) { return reinterpret_cast<sockaddr*>(&s); }

std::string addr_text(const sockaddr_storage& ss) {
    char b[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, b, sizeof b);
    if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, b, sizeof b);
    return std::string(ss.ss_family == AF_INET ? "AF_INET " : ss.ss_family == AF_INET6 ? "AF_INET6 " : "family? ") + b;
}

void test_socket() {
    R r = SEM_CALL(::socket(AF_INET, SOCK_STREAM, 0));
    expect_fd("socket AF_INET SOCK_STREAM", r);
    if (r.ret >= 0) {
        expect_eq("socket default: O_NONBLOCK clear", fl_flags(int(r.ret)) & O_NONBLOCK, 0);
        expect_eq("socket default: FD_CLOEXEC clear", fd_flags(int(r.ret)) & FD_CLOEXEC, 0);
        int v = -1;
        socklen_t l = sizeof v;
        ::getsockopt(int(r.ret), SOL_SOCKET, SO_TYPE, &v, &l);
        expect_eq("socket SO_TYPE", v, SOCK_STREAM);
        ::getsockopt(int(r.ret), SOL_SOCKET, SO_DOMAIN, &v, &l);
        expect_eq("socket SO_DOMAIN", v, AF_INET);
        ::getsockopt(int(r.ret), SOL_SOCKET, SO_PROTOCOL, &v, &l);
        expect_eq("socket SO_PROTOCOL", v, IPPROTO_TCP);
        ::close(int(r.ret));
    }
    r = SEM_CALL(::socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP));
    expect_fd("socket AF_INET6 SOCK_STREAM IPPROTO_TCP", r);
    if (r.ret >= 0) ::close(int(r.ret));

    r = SEM_CALL(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    expect_fd("socket SOCK_NONBLOCK", r);
    if (r.ret >= 0) {
        expect_eq("socket SOCK_NONBLOCK: F_GETFL O_NONBLOCK", fl_flags(int(r.ret)) & O_NONBLOCK, O_NONBLOCK);
        expect_eq("socket SOCK_NONBLOCK: FD_CLOEXEC clear", fd_flags(int(r.ret)) & FD_CLOEXEC, 0);
        ::close(int(r.ret));
    }
    r = SEM_CALL(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    expect_fd("socket SOCK_CLOEXEC", r);
    if (r.ret >= 0) {
        expect_eq("socket SOCK_CLOEXEC: F_GETFD FD_CLOEXEC", fd_flags(int(r.ret)) & FD_CLOEXEC, FD_CLOEXEC);
        expect_eq("socket SOCK_CLOEXEC: O_NONBLOCK clear", fl_flags(int(r.ret)) & O_NONBLOCK, 0);
        ::close(int(r.ret));
    }
    r = SEM_CALL(::socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    expect_fd("socket AF_INET6 SOCK_NONBLOCK|SOCK_CLOEXEC", r);
    if (r.ret >= 0) {
        expect_eq("socket both flags: O_NONBLOCK", fl_flags(int(r.ret)) & O_NONBLOCK, O_NONBLOCK);
        expect_eq("socket both flags: FD_CLOEXEC", fd_flags(int(r.ret)) & FD_CLOEXEC, FD_CLOEXEC);
        ::close(int(r.ret));
    }
    r = SEM_CALL(::socket(AF_INET, SOCK_DGRAM, 0));
    expect_fd("socket AF_INET SOCK_DGRAM", r);
    if (r.ret >= 0) ::close(int(r.ret));
    r = SEM_CALL(::socket(AF_UNIX, SOCK_STREAM, 0));
    expect_fd("socket AF_UNIX SOCK_STREAM", r);
    if (r.ret >= 0) ::close(int(r.ret));

    expect_ret("socket(12345 family)", SEM_CALL(::socket(12345, SOCK_STREAM, 0)), -1, EAFNOSUPPORT);
    expect_ret("socket(AF_INET, bad type 999)", SEM_CALL(::socket(AF_INET, 999, 0)), -1, EINVAL);
    expect_ret("socket(AF_INET, SOCK_STREAM|bad flag)", SEM_CALL(::socket(AF_INET, SOCK_STREAM | 0x40000000, 0)), -1, EINVAL);
    expect_ret("socket(AF_INET, SOCK_STREAM, IPPROTO_UDP)", SEM_CALL(::socket(AF_INET, SOCK_STREAM, IPPROTO_UDP)), -1, EPROTONOSUPPORT);
}

void test_socketpair() {
    int sv[2] = {-1, -1};
    expect_ret("socketpair AF_UNIX SOCK_STREAM", SEM_CALL(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv)), 0);
    if (sv[0] >= 0) {
        expect_ret("socketpair write", SEM_CALL(::write(sv[0], "pair", 4)), 4);
        char b[8] = {};
        expect_ret("socketpair read", SEM_CALL(::read(sv[1], b, 4)), 4);
        expect_str("socketpair data", std::string(b, 4), "pair");
        close_all({sv[0], sv[1]});
    }
    sv[0] = sv[1] = -1;
    expect_ret("socketpair SOCK_NONBLOCK|SOCK_CLOEXEC", SEM_CALL(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv)), 0);
    if (sv[0] >= 0) {
        bool flags = (fl_flags(sv[0]) & O_NONBLOCK) && (fl_flags(sv[1]) & O_NONBLOCK) && (fd_flags(sv[0]) & FD_CLOEXEC) &&
                     (fd_flags(sv[1]) & FD_CLOEXEC);
        expect("socketpair flags on both ends", flags, "O_NONBLOCK+FD_CLOEXEC on both");
        char b[4];
        expect_ret("socketpair nonblocking read empty", SEM_CALL(::read(sv[0], b, sizeof b)), -1, EAGAIN);
        close_all({sv[0], sv[1]});
    }
    expect_ret("socketpair AF_UNIX SOCK_DGRAM", SEM_CALL(::socketpair(AF_UNIX, SOCK_DGRAM, 0, sv)), 0);
    close_all({sv[0], sv[1]});
    expect_ret("socketpair AF_INET SOCK_STREAM", SEM_CALL(::socketpair(AF_INET, SOCK_STREAM, 0, sv)), -1, EOPNOTSUPP);
    expect_ret("socketpair AF_INET6 SOCK_STREAM", SEM_CALL(::socketpair(AF_INET6, SOCK_STREAM, 0, sv)), -1, EOPNOTSUPP);
    expect_ret("socketpair bad family", SEM_CALL(::socketpair(12345, SOCK_STREAM, 0, sv)), -1, EAFNOSUPPORT);
}

void test_bind_listen() {
    sockaddr_storage a;
    socklen_t al = loopback(a, AF_INET);
    expect_ret("bind(-1)", SEM_CALL(::bind(-1, sa(a), al)), -1, EBADF);
    expect_ret("bind(closed fd 900)", SEM_CALL(::bind(900, sa(a), al)), -1, EBADF);
    int p[2];
    must(::pipe(p), "pipe");
    expect_ret("bind(pipe)", SEM_CALL(::bind(p[0], sa(a), al)), -1, ENOTSOCK);
    expect_ret("listen(pipe)", SEM_CALL(::listen(p[0], 5)), -1, ENOTSOCK);
    expect_ret("listen(-1)", SEM_CALL(::listen(-1, 5)), -1, EBADF);

    int s1 = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("bind 127.0.0.1:0", SEM_CALL(::bind(s1, sa(a), al)), 0);
    sockaddr_storage got;
    socklen_t gl = sizeof got;
    expect_ret("getsockname after bind", SEM_CALL(::getsockname(s1, sa(got), &gl)), 0);
    expect("getsockname: kernel chose a port", port_of(got) != 0 && gl == sizeof(sockaddr_in), "nonzero port, addrlen 16");
    expect_str("getsockname address", addr_text(got), "AF_INET 127.0.0.1");
    expect_ret("bind again (already bound)", SEM_CALL(::bind(s1, sa(a), al)), -1, EINVAL);

    int s2 = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("bind same port, other socket", SEM_CALL(::bind(s2, sa(got), gl)), -1, EADDRINUSE);
    expect_ret("bind short addrlen", SEM_CALL(::bind(s2, sa(a), 4)), -1, EINVAL);
    sockaddr_storage a6;
    socklen_t a6l = loopback(a6, AF_INET6);
    expect_ret("bind AF_INET socket to sockaddr_in6", SEM_CALL(::bind(s2, sa(a6), a6l)), -1, EAFNOSUPPORT);

    expect_ret("listen", SEM_CALL(::listen(s1, 16)), 0);
    int v = 0;
    socklen_t vl = sizeof v;
    ::getsockopt(s1, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl);
    expect_eq("SO_ACCEPTCONN on listener", v, 1);
    expect_ret("listen again (backlog change)", SEM_CALL(::listen(s1, 32)), 0);

    int u = int(must(::socket(AF_INET, SOCK_DGRAM, 0), "socket udp"));
    expect_ret("listen(UDP socket)", SEM_CALL(::listen(u, 5)), -1, EOPNOTSUPP);

    int s6 = int(must(::socket(AF_INET6, SOCK_STREAM, 0), "socket6"));
    expect_ret("bind [::1]:0", SEM_CALL(::bind(s6, sa(a6), a6l)), 0);
    expect_ret("listen AF_INET6", SEM_CALL(::listen(s6, 4)), 0);

    int c, s;
    tcp_pair(c, s);
    expect_ret("listen(connected socket)", SEM_CALL(::listen(c, 5)), -1, EINVAL);
    close_all({p[0], p[1], s1, s2, u, s6, c, s});
}

void test_accept() {
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll, SOCK_NONBLOCK);
    expect_ret("accept nonblocking listener, no client", SEM_CALL(::accept(l, nullptr, nullptr)), -1, EAGAIN);
    expect_ret("accept4 nonblocking listener, no client", SEM_CALL(::accept4(l, nullptr, nullptr, SOCK_CLOEXEC)), -1, EAGAIN);
    expect_ret("accept(-1)", SEM_CALL(::accept(-1, nullptr, nullptr)), -1, EBADF);
    expect_ret("accept4(-1)", SEM_CALL(::accept4(-1, nullptr, nullptr, 0)), -1, EBADF);
    int p[2];
    must(::pipe(p), "pipe");
    expect_ret("accept(pipe)", SEM_CALL(::accept(p[0], nullptr, nullptr)), -1, ENOTSOCK);
    int nl = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("accept(non-listening socket)", SEM_CALL(::accept(nl, nullptr, nullptr)), -1, EINVAL);
    expect_ret("accept4(non-listening socket)", SEM_CALL(::accept4(nl, nullptr, nullptr, 0)), -1, EINVAL);
    expect_ret("accept4 bad flags", SEM_CALL(::accept4(l, nullptr, nullptr, 0x7)), -1, EINVAL);

    // accept with peer address; the listener is nonblocking, so wait for the connection first.
    int c1 = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    must(::connect(c1, sa(la), ll), "connect");
    expect_eq("listener readable after connect", wait_events(l, POLLIN), POLLIN);
    sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    R r = SEM_CALL(::accept(l, sa(peer), &pl));
    expect_fd("accept with address", r);
    int a1 = int(r.ret);
    sockaddr_storage cname;
    socklen_t cl = sizeof cname;
    ::getsockname(c1, sa(cname), &cl);
    expect_eq("accept addrlen", pl, sizeof(sockaddr_in));
    expect_str("accept peer address", addr_text(peer), "AF_INET 127.0.0.1");
    expect("accept peer port == client's local port", port_of(peer) == port_of(cname), "equal");
    if (a1 >= 0) {
        // Linux: accept() does not inherit O_NONBLOCK from the listener.
        expect_eq("accept from O_NONBLOCK listener: result blocking", fl_flags(a1) & O_NONBLOCK, 0);
        expect_eq("accept: FD_CLOEXEC clear", fd_flags(a1) & FD_CLOEXEC, 0);
        expect_ret("accepted socket carries data", SEM_CALL(::write(c1, "acc", 3)), 3);
        expect_str("accepted socket data", recv_exact(a1, 3), "acc");
    }

    // accept4 with both flags, address truncated to 4 bytes: the kernel reports the full length.
    int c2 = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    must(::connect(c2, sa(la), ll), "connect");
    wait_events(l, POLLIN);
    pl = 4;
    r = SEM_CALL(::accept4(l, sa(peer), &pl, SOCK_NONBLOCK | SOCK_CLOEXEC));
    expect_fd("accept4 SOCK_NONBLOCK|SOCK_CLOEXEC", r);
    expect_eq("accept4 truncated addrlen reports full size", pl, sizeof(sockaddr_in));
    int a2 = int(r.ret);
    if (a2 >= 0) {
        expect_eq("accept4: O_NONBLOCK", fl_flags(a2) & O_NONBLOCK, O_NONBLOCK);
        expect_eq("accept4: FD_CLOEXEC", fd_flags(a2) & FD_CLOEXEC, FD_CLOEXEC);
        char b[4];
        expect_ret("accept4 nonblocking socket read empty", SEM_CALL(::recv(a2, b, sizeof b, 0)), -1, EAGAIN);
    }
    int c3 = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    must(::connect(c3, sa(la), ll), "connect");
    wait_events(l, POLLIN);
    r = SEM_CALL(::accept4(l, nullptr, nullptr, 0));
    expect_fd("accept4 flags 0", r);
    int a3 = int(r.ret);
    if (a3 >= 0) {
        expect_eq("accept4 flags 0: blocking", fl_flags(a3) & O_NONBLOCK, 0);
        expect_eq("accept4 flags 0: FD_CLOEXEC clear", fd_flags(a3) & FD_CLOEXEC, 0);
    }
    expect_ret("accept after queue drained", SEM_CALL(::accept(l, nullptr, nullptr)), -1, EAGAIN);
    close_all({l, p[0], p[1], nl, c1, a1, c2, a2, c3, a3});
}

void test_connect() {
    // A bound but not listening socket holds a port nobody listens on: connecting is refused.
    int hold = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    sockaddr_storage ha;
    socklen_t hl = loopback(ha, AF_INET);
    must(::bind(hold, sa(ha), hl), "bind");
    hl = sizeof ha;
    must(::getsockname(hold, sa(ha), &hl), "getsockname");
    int c = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("connect to closed port", SEM_CALL(::connect(c, sa(ha), hl)), -1, ECONNREFUSED);
    ::close(c);

    int nb = int(must(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), "socket"));
    expect_ret("connect nonblocking to closed port", SEM_CALL(::connect(nb, sa(ha), hl)), -1, EINPROGRESS);
    short ev = wait_events(nb, POLLOUT);
    expect_eq("refused nonblocking connect: poll revents", ev, POLLOUT | POLLERR | POLLHUP);
    int err = -1;
    socklen_t el = sizeof err;
    ::getsockopt(nb, SOL_SOCKET, SO_ERROR, &err, &el);
    expect_str("refused nonblocking connect: SO_ERROR", errname(err), "ECONNREFUSED");
    ::getsockopt(nb, SOL_SOCKET, SO_ERROR, &err, &el);
    expect_eq("SO_ERROR is cleared by reading it", err, 0);
    ::close(nb);

    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    c = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("connect blocking", SEM_CALL(::connect(c, sa(la), ll)), 0);
    expect_ret("connect again", SEM_CALL(::connect(c, sa(la), ll)), -1, EISCONN);
    int a = int(must(::accept(l, nullptr, nullptr), "accept"));
    close_all({c, a});

    nb = int(must(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), "socket"));
    expect_ret("connect nonblocking", SEM_CALL(::connect(nb, sa(la), ll)), -1, EINPROGRESS);
    ev = wait_events(nb, POLLOUT);
    expect_eq("nonblocking connect: poll POLLOUT", ev, POLLOUT);
    err = -1;
    ::getsockopt(nb, SOL_SOCKET, SO_ERROR, &err, &el);
    expect_eq("nonblocking connect: SO_ERROR", err, 0);
    // Linux: the first connect() after a nonblocking connect completed reports success (0) and
    // only then marks the socket connected; the one after that is EISCONN.
    expect_ret("nonblocking connect again after completion", SEM_CALL(::connect(nb, sa(la), ll)), 0);
    expect_ret("nonblocking connect a third time", SEM_CALL(::connect(nb, sa(la), ll)), -1, EISCONN);
    a = int(must(::accept(l, nullptr, nullptr), "accept"));
    expect_ret("nonblocking connected: send", SEM_CALL(::send(nb, "nb", 2, 0)), 2);
    expect_str("nonblocking connected: peer data", recv_exact(a, 2), "nb");
    close_all({nb, a});

    expect_ret("connect(-1)", SEM_CALL(::connect(-1, sa(la), ll)), -1, EBADF);
    int p[2];
    must(::pipe(p), "pipe");
    expect_ret("connect(pipe)", SEM_CALL(::connect(p[0], sa(la), ll)), -1, ENOTSOCK);
    c = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("connect short addrlen", SEM_CALL(::connect(c, sa(la), 8)), -1, EINVAL);
    sockaddr_storage a6;
    socklen_t a6l = loopback(a6, AF_INET6, port_of(la));
    expect_ret("connect AF_INET socket to sockaddr_in6", SEM_CALL(::connect(c, sa(a6), a6l)), -1, EAFNOSUPPORT);
    ::close(c);
    close_all({p[0], p[1], l, hold});

    // IPv6 loopback.
    sockaddr_storage l6a;
    socklen_t l6l;
    int l6 = listener(AF_INET6, l6a, l6l);
    c = int(must(::socket(AF_INET6, SOCK_STREAM, 0), "socket6"));
    expect_ret("connect [::1]", SEM_CALL(::connect(c, sa(l6a), l6l)), 0);
    sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    a = int(must(::accept(l6, sa(peer), &pl), "accept6"));
    expect_str("accept [::1] peer address", addr_text(peer), "AF_INET6 ::1");
    pl = sizeof peer;
    expect_ret("getpeername [::1]", SEM_CALL(::getpeername(c, sa(peer), &pl)), 0);
    expect_str("getpeername [::1] address", addr_text(peer), "AF_INET6 ::1");
    expect_eq("getpeername [::1] addrlen", pl, sizeof(sockaddr_in6));
    expect_ret("IPv6 send", SEM_CALL(::send(c, "six", 3, 0)), 3);
    expect_str("IPv6 data", recv_exact(a, 3), "six");
    close_all({c, a, l6});

    // Dual-stack AF_INET6 listener on [::] accepting an IPv4 client: the peer is IPv4-mapped.
    int ds = int(must(::socket(AF_INET6, SOCK_STREAM, 0), "socket6"));
    int off = 0;
    expect_ret("setsockopt IPV6_V6ONLY 0", SEM_CALL(::setsockopt(ds, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off)), 0);
    sockaddr_in6 any{};
    any.sin6_family = AF_INET6;
    any.sin6_addr = in6addr_any;
    must(::bind(ds, reinterpret_cast<sockaddr*>(&any), sizeof any), "bind [::]");
    must(::listen(ds, 4), "listen");
    sockaddr_storage dsa;
    socklen_t dsl = sizeof dsa;
    must(::getsockname(ds, sa(dsa), &dsl), "getsockname");
    sockaddr_storage v4;
    socklen_t v4l = loopback(v4, AF_INET, port_of(dsa));
    c = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("connect IPv4 client to dual-stack [::] listener", SEM_CALL(::connect(c, sa(v4), v4l)), 0);
    pl = sizeof peer;
    a = int(must(::accept(ds, sa(peer), &pl), "accept"));
    expect_str("dual-stack accept: peer is IPv4-mapped", addr_text(peer), "AF_INET6 ::ffff:127.0.0.1");
    sockaddr_storage me;
    socklen_t ml = sizeof me;
    ::getsockname(a, sa(me), &ml);
    expect_str("dual-stack accepted socket: local address", addr_text(me), "AF_INET6 ::ffff:127.0.0.1");
    pl = sizeof peer;
    ::getpeername(c, sa(peer), &pl);
    expect_str("IPv4 client: peer address", addr_text(peer), "AF_INET 127.0.0.1");
    expect_ret("dual-stack send", SEM_CALL(::send(a, "mapped", 6, 0)), 6);
    expect_str("dual-stack data", recv_exact(c, 6), "mapped");
    close_all({c, a});

    // AF_INET6 client to an IPv4 listener through ::ffff:127.0.0.1.
    int l4 = listener(AF_INET, la, ll);
    sockaddr_in6 m{};
    m.sin6_family = AF_INET6;
    m.sin6_port = port_of(la);
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &m.sin6_addr);
    c = int(must(::socket(AF_INET6, SOCK_STREAM, 0), "socket6"));
    expect_ret("AF_INET6 connect to ::ffff:127.0.0.1", SEM_CALL(::connect(c, reinterpret_cast<sockaddr*>(&m), sizeof m)), 0);
    pl = sizeof peer;
    a = int(must(::accept(l4, sa(peer), &pl), "accept"));
    expect_str("IPv4 listener sees plain IPv4 peer", addr_text(peer), "AF_INET 127.0.0.1");
    close_all({c, a, l4, ds});

    // An IPv6-only socket cannot reach a mapped address.
    c = int(must(::socket(AF_INET6, SOCK_STREAM, 0), "socket6"));
    int on = 1;
    ::setsockopt(c, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    expect_ret("V6ONLY connect to ::ffff:127.0.0.1", SEM_CALL(::connect(c, reinterpret_cast<sockaddr*>(&m), sizeof m)), -1, ENETUNREACH);
    ::close(c);
}

void test_shutdown() {
    int c, s;
    tcp_pair(c, s);
    expect_ret("shutdown SHUT_WR", SEM_CALL(::shutdown(c, SHUT_WR)), 0);
    char b[16];
    expect_ret("peer reads EOF after SHUT_WR", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    expect_eq("peer poll after SHUT_WR", wait_events(s, POLLIN | POLLRDHUP), POLLIN | POLLRDHUP);
    expect_ret("peer can still send after our SHUT_WR", SEM_CALL(::send(s, "back", 4, 0)), 4);
    expect_str("we still read after SHUT_WR", recv_exact(c, 4), "back");
    expect_ret("send after SHUT_WR (MSG_NOSIGNAL)", SEM_CALL(::send(c, "x", 1, MSG_NOSIGNAL)), -1, EPIPE);
    expect_ret("shutdown SHUT_WR twice", SEM_CALL(::shutdown(c, SHUT_WR)), 0);
    expect_ret("shutdown SHUT_RD", SEM_CALL(::shutdown(s, SHUT_RD)), 0);
    expect_ret("recv after own SHUT_RD", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    expect_ret("shutdown bad how 99", SEM_CALL(::shutdown(c, 99)), -1, EINVAL);
    expect_ret("shutdown bad how -1", SEM_CALL(::shutdown(c, -1)), -1, EINVAL);
    close_all({c, s});

    tcp_pair(c, s);
    expect_ret("shutdown SHUT_RDWR", SEM_CALL(::shutdown(c, SHUT_RDWR)), 0);
    expect_ret("peer reads EOF after SHUT_RDWR", SEM_CALL(::recv(s, b, sizeof b, 0)), 0);
    close_all({c, s});

    int u = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    expect_ret("shutdown unconnected TCP", SEM_CALL(::shutdown(u, SHUT_RDWR)), -1, ENOTCONN);
    ::close(u);
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    expect_ret("shutdown listener", SEM_CALL(::shutdown(l, SHUT_RDWR)), 0);
    expect_ret("accept after listener shutdown", SEM_CALL(::accept(l, nullptr, nullptr)), -1, EINVAL);
    ::close(l);
    expect_ret("shutdown(-1)", SEM_CALL(::shutdown(-1, SHUT_RDWR)), -1, EBADF);
    int p[2];
    must(::pipe(p), "pipe");
    expect_ret("shutdown(pipe)", SEM_CALL(::shutdown(p[0], SHUT_RDWR)), -1, ENOTSOCK);
    close_all({p[0], p[1]});
}

void test_names() {
    int u = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    sockaddr_storage a;
    socklen_t l = sizeof a;
    expect_ret("getsockname unbound", SEM_CALL(::getsockname(u, sa(a), &l)), 0);
    expect_str("getsockname unbound address", addr_text(a), "AF_INET 0.0.0.0");
    expect_eq("getsockname unbound port", ntohs(port_of(a)), 0);
    l = sizeof a;
    expect_ret("getpeername unconnected", SEM_CALL(::getpeername(u, sa(a), &l)), -1, ENOTCONN);
    expect_ret("getsockname(-1)", SEM_CALL(::getsockname(-1, sa(a), &l)), -1, EBADF);
    expect_ret("getpeername(-1)", SEM_CALL(::getpeername(-1, sa(a), &l)), -1, EBADF);
    int p[2];
    must(::pipe(p), "pipe");
    expect_ret("getsockname(pipe)", SEM_CALL(::getsockname(p[0], sa(a), &l)), -1, ENOTSOCK);
    expect_ret("getpeername(pipe)", SEM_CALL(::getpeername(p[0], sa(a), &l)), -1, ENOTSOCK);
    close_all({p[0], p[1], u});

    int c, s;
    tcp_pair(c, s);
    sockaddr_storage cs, sp;
    socklen_t csl = sizeof cs, spl = sizeof sp;
    expect_ret("getsockname connected", SEM_CALL(::getsockname(c, sa(cs), &csl)), 0);
    expect_ret("getpeername connected", SEM_CALL(::getpeername(s, sa(sp), &spl)), 0);
    expect("client name == server's peer name", csl == spl && memcmp(&cs, &sp, csl) == 0, "equal");
    sockaddr_storage t;
    memset(&t, 0xaa, sizeof t);
    socklen_t tl = 2;
    expect_ret("getsockname addrlen 2 (truncated)", SEM_CALL(::getsockname(c, sa(t), &tl)), 0);
    expect_eq("getsockname truncated: addrlen is the full size", tl, sizeof(sockaddr_in));
    expect_eq("getsockname truncated: byte 2 untouched", reinterpret_cast<unsigned char*>(&t)[2], 0xaa);
    close_all({c, s});
}

void test_sockopts() {
    int c, s;
    tcp_pair(c, s);
    int v = 65536;
    expect_ret("setsockopt SO_RCVBUF 65536", SEM_CALL(::setsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, sizeof v)), 0);
    v = 0;
    socklen_t l = sizeof v;
    expect_ret("getsockopt SO_RCVBUF", SEM_CALL(::getsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, &l)), 0);
    expect_eq("SO_RCVBUF reads back doubled", v, 131072);
    v = 1;
    expect_ret("setsockopt TCP_NODELAY 1", SEM_CALL(::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v)), 0);
    v = -1;
    l = sizeof v;
    expect_ret("getsockopt TCP_NODELAY", SEM_CALL(::getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &l)), 0);
    expect_eq("TCP_NODELAY value", v, 1);
    v = 7;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
    l = sizeof v;
    ::getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &l);
    expect_eq("TCP_NODELAY 7 reads back normalised", v, 1);
    v = 0;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
    l = sizeof v;
    ::getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &l);
    expect_eq("TCP_NODELAY cleared", v, 0);
    v = -1;
    l = sizeof v;
    expect_ret("getsockopt SO_ERROR", SEM_CALL(::getsockopt(c, SOL_SOCKET, SO_ERROR, &v, &l)), 0);
    expect_eq("SO_ERROR on healthy socket", v, 0);
    l = sizeof v;
    ::getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, &l);
    expect_eq("SO_KEEPALIVE default", v, 0);
    v = 1;
    ::setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v);
    l = sizeof v;
    ::getsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &v, &l);
    expect_eq("SO_KEEPALIVE set", v, 1);

    linger lg{1, 5}, lg2{};
    expect_ret("setsockopt SO_LINGER", SEM_CALL(::setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg)), 0);
    l = sizeof lg2;
    ::getsockopt(c, SOL_SOCKET, SO_LINGER, &lg2, &l);
    expect("SO_LINGER round trip", lg2.l_onoff == 1 && lg2.l_linger == 5 && l == sizeof lg2, "{1,5}");
    timeval tv{3, 500000}, tv2{};
    expect_ret("setsockopt SO_RCVTIMEO", SEM_CALL(::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)), 0);
    l = sizeof tv2;
    ::getsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv2, &l);
    expect("SO_RCVTIMEO round trip", tv2.tv_sec == 3 && tv2.tv_usec == 500000, "3.5 s");

    l = sizeof v;
    expect_ret("getsockopt SOL_SOCKET unknown 9999", SEM_CALL(::getsockopt(c, SOL_SOCKET, 9999, &v, &l)), -1, ENOPROTOOPT);
    expect_ret("setsockopt IPPROTO_TCP unknown 9999", SEM_CALL(::setsockopt(c, IPPROTO_TCP, 9999, &v, sizeof v)), -1, ENOPROTOOPT);
    expect_ret("getsockopt IPPROTO_TCP unknown 9999", SEM_CALL(::getsockopt(c, IPPROTO_TCP, 9999, &v, &l)), -1, ENOPROTOOPT);
    v = 1;
    expect_ret("setsockopt SO_RCVBUF optlen 2", SEM_CALL(::setsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, 2)), -1, EINVAL);
    expect_ret("setsockopt TCP_NODELAY optlen 2", SEM_CALL(::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, 2)), -1, EINVAL);
    expect_ret("setsockopt SO_LINGER optlen 4", SEM_CALL(::setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, 4)), -1, EINVAL);
    // A short optlen on getsockopt truncates instead of failing.
    int big = 0x01020304;
    l = 2;
    expect_ret("getsockopt SO_RCVBUF optlen 2 (truncates)", SEM_CALL(::getsockopt(c, SOL_SOCKET, SO_RCVBUF, &big, &l)), 0);
    expect_eq("getsockopt truncated: optlen", l, 2);
    expect_eq("getsockopt truncated: upper bytes untouched", big & 0xffff0000, 0x01020000);
    l = 1;
    expect_ret("getsockopt TCP_NODELAY optlen 1 (truncates)", SEM_CALL(::getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &big, &l)), 0);
    expect_eq("getsockopt TCP_NODELAY truncated: optlen", l, 1);
    l = 0;
    expect_ret("getsockopt SO_ERROR optlen 0", SEM_CALL(::getsockopt(c, SOL_SOCKET, SO_ERROR, &big, &l)), 0);
    expect_eq("getsockopt optlen 0 stays 0", l, 0);
    l = static_cast<socklen_t>(-1);
    expect_ret("getsockopt optlen -1", SEM_CALL(::getsockopt(c, SOL_SOCKET, SO_RCVBUF, &v, &l)), -1, EINVAL);
    expect_ret("getsockopt(-1)", SEM_CALL(::getsockopt(-1, SOL_SOCKET, SO_RCVBUF, &v, &l)), -1, EBADF);
    expect_ret("setsockopt(-1)", SEM_CALL(::setsockopt(-1, SOL_SOCKET, SO_RCVBUF, &v, sizeof v)), -1, EBADF);
    int p[2];
    must(::pipe(p), "pipe");
    l = sizeof v;
    expect_ret("getsockopt(pipe)", SEM_CALL(::getsockopt(p[0], SOL_SOCKET, SO_RCVBUF, &v, &l)), -1, ENOTSOCK);
    expect_ret("setsockopt(pipe)", SEM_CALL(::setsockopt(p[0], SOL_SOCKET, SO_RCVBUF, &v, sizeof v)), -1, ENOTSOCK);
    close_all({p[0], p[1], c, s});
}

}  // namespace

int main() {
    start();
    test_socket();
    test_socketpair();
    test_bind_listen();
    test_accept();
    test_connect();
    test_shutdown();
    test_names();
    test_sockopts();
    return finish();
}
