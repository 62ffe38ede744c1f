// Readiness: poll, ppoll, select, pselect, epoll_create/epoll_create1/epoll_ctl/epoll_wait/
// epoll_pwait/epoll_pwait2 — results, revents and errno.  Waits for events use a bounded timeout
// (kWaitMs) only as a safety net: every wait has an event that makes it return at once.
#include "check.hpp"

#include <sys/epoll.h>
#include <sys/select.h>

#include <string>

using namespace sem;

namespace {

std::string evname(unsigned e) {
    static const struct {
        unsigned bit;
        const char* name;
    } bits[] = {{EPOLLIN, "IN"}, {EPOLLPRI, "PRI"}, {EPOLLOUT, "OUT"}, {EPOLLERR, "ERR"}, {EPOLLHUP, "HUP"}, {EPOLLRDNORM, "RDNORM"},
                {EPOLLRDBAND, "RDBAND"}, {EPOLLWRNORM, "WRNORM"}, {EPOLLWRBAND, "WRBAND"}, {EPOLLRDHUP, "RDHUP"}, {0x20, "NVAL"}};
    std::string s;
    for (auto& b : bits)
        if (e & b.bit) {
            if (!s.empty()) s += "|";
            s += b.name;
            e &= ~b.bit;
        }
    if (e) s += (s.empty() ? "" : "|") + std::to_string(e);
    return s.empty() ? "0" : s;
}

// One poll/epoll outcome as text: "RET EVENTS", so a check states both at once.
std::string outcome(long ret, unsigned events) { return std::to_string(ret) + " " + evname(events); }
// poll/ppoll on array `p`, then "RET REVENTS-OF-p[0]" (the call is sequenced before the read).
#define POLL_OUTCOME(call) ({ long r_ = (call); outcome(r_, unsigned(p[0].revents)); })

void test_poll() {
    int c, s;
    tcp_pair(c, s);
    pollfd p[3];
    p[0] = {s, POLLIN, 0};
    expect_str("poll POLLIN, no data, timeout 0", POLL_OUTCOME(::poll(p, 1, 0)), "0 0");
    p[0] = {c, POLLOUT, 0};
    expect_str("poll POLLOUT on connected socket", POLL_OUTCOME(::poll(p, 1, 0)), "1 OUT");
    expect_ret("poll nfds 0 timeout 0", SEM_CALL(::poll(nullptr, 0, 0)), 0);
    expect_ret("poll nfds 0 timeout 1 ms", SEM_CALL(::poll(nullptr, 0, 1)), 0);

    send_all(c, "ping", 4);
    p[0] = {s, POLLIN, 0};
    expect_str("poll after peer write", POLL_OUTCOME(::poll(p, 1, kWaitMs)), "1 IN");
    p[0] = {s, POLLIN | POLLOUT, 0};
    expect_str("poll POLLIN|POLLOUT with data", POLL_OUTCOME(::poll(p, 1, 0)), "1 IN|OUT");

    // Negative fds are skipped; a closed fd reports POLLNVAL and counts as ready.
    p[0] = {-1, POLLIN, 0x7f};
    p[1] = {s, POLLIN, 0};
    p[2] = {900, POLLIN, 0};
    int r = ::poll(p, 3, 0);
    expect_str("poll [-1, readable, closed fd 900]",
               std::to_string(r) + " " + evname(unsigned(p[0].revents)) + " / " + evname(unsigned(p[1].revents)) + " / " +
                   evname(unsigned(p[2].revents)),
               "2 0 / IN / NVAL");
    p[0] = {900, 0, 0};
    expect_str("POLLNVAL even with events 0", POLL_OUTCOME(::poll(p, 1, 0)), "1 NVAL");
    pollfd* volatile unseen = p;  // hides the array from the compiler's size checks
    expect_ret("poll nfds > RLIMIT_NOFILE", SEM_CALL(::poll(unseen, nfds_t(1) << 30, 0)), -1, EINVAL);
    recv_exact(s, 4);
    p[0] = {s, POLLIN, 0};
    expect_str("poll after draining", POLL_OUTCOME(::poll(p, 1, 0)), "0 0");

    // Peer half-close: POLLIN (EOF is readable) and POLLRDHUP.
    ::shutdown(c, SHUT_WR);
    p[0] = {s, POLLIN | POLLRDHUP, 0};
    expect_str("poll after peer SHUT_WR", POLL_OUTCOME(::poll(p, 1, kWaitMs)), "1 IN|RDHUP");
    p[0] = {s, POLLOUT, 0};
    expect_str("poll POLLOUT after peer SHUT_WR", POLL_OUTCOME(::poll(p, 1, 0)), "1 OUT");
    ::shutdown(s, SHUT_WR);
    p[0] = {s, POLLIN | POLLOUT | POLLRDHUP, 0};
    expect_str("poll after both directions shut", POLL_OUTCOME(::poll(p, 1, kWaitMs)), "1 IN|OUT|HUP|RDHUP");
    close_all({c, s});

    // A listener is readable when a connection waits in its queue.
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    p[0] = {l, POLLIN, 0};
    expect_str("poll listener, no client", POLL_OUTCOME(::poll(p, 1, 0)), "0 0");
    int cc = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    must(::connect(cc, reinterpret_cast<sockaddr*>(&la), ll), "connect");
    p[0] = {l, POLLIN, 0};
    expect_str("poll listener with a pending connection", POLL_OUTCOME(::poll(p, 1, kWaitMs)), "1 IN");
    int u = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    p[0] = {u, POLLIN | POLLOUT, 0};
    expect_str("poll fresh unconnected TCP socket", POLL_OUTCOME(::poll(p, 1, 0)), "1 OUT|HUP");
    close_all({l, cc, u});
}

void test_ppoll() {
    int c, s;
    tcp_pair(c, s);
    pollfd p[2];
    timespec zero{0, 0}, ten{10, 0}, bad{0, 2000000000};
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    p[0] = {s, POLLIN, 0};
    expect_str("ppoll timeout {0,0}", POLL_OUTCOME(::ppoll(p, 1, &zero, nullptr)), "0 0");
    expect_str("ppoll timeout {0,0} with a sigmask", POLL_OUTCOME(::ppoll(p, 1, &zero, &mask)), "0 0");
    send_all(c, "x", 1);
    expect_str("ppoll after peer write", POLL_OUTCOME(::ppoll(p, 1, &ten, &mask)), "1 IN");
    expect_str("ppoll NULL timeout, data ready", POLL_OUTCOME(::ppoll(p, 1, nullptr, nullptr)), "1 IN");
    p[1] = {901, POLLIN, 0};
    int r = ::ppoll(p, 2, &zero, nullptr);
    expect_str("ppoll [readable, closed fd]", std::to_string(r) + " " + evname(unsigned(p[0].revents)) + " / " + evname(unsigned(p[1].revents)),
               "2 IN / NVAL");
    expect_ret("ppoll tv_nsec 2e9", SEM_CALL(::ppoll(p, 1, &bad, nullptr)), -1, EINVAL);
    timespec neg{-1, 0};
    expect_ret("ppoll negative timeout", SEM_CALL(::ppoll(p, 1, &neg, nullptr)), -1, EINVAL);
    sigset_t now;
    sigprocmask(SIG_SETMASK, nullptr, &now);
    expect_eq("ppoll restores the signal mask", sigismember(&now, SIGUSR1), 0);
    close_all({c, s});
}

void test_select() {
    int c, s;
    tcp_pair(c, s);
    int nfds = (c > s ? c : s) + 1;
    fd_set r, w, e;
    timeval tv{0, 0};
    FD_ZERO(&r);
    FD_SET(s, &r);
    expect_ret("select readable, no data, timeout 0", SEM_CALL(::select(nfds, &r, nullptr, nullptr, &tv)), 0);
    expect_eq("select clears the unready fd", FD_ISSET(s, &r), 0);
    FD_ZERO(&w);
    FD_SET(c, &w);
    tv = {0, 0};
    expect_ret("select writable connected socket", SEM_CALL(::select(nfds, nullptr, &w, nullptr, &tv)), 1);
    expect_eq("select writable: FD_ISSET", FD_ISSET(c, &w) != 0, 1);
    expect_ret("select all sets NULL, timeout 0", SEM_CALL(::select(0, nullptr, nullptr, nullptr, &tv)), 0);

    send_all(c, "sel", 3);
    FD_ZERO(&r);
    FD_SET(s, &r);
    tv = {10, 0};
    expect_ret("select after peer write", SEM_CALL(::select(nfds, &r, nullptr, nullptr, &tv)), 1);
    expect_eq("select readable: FD_ISSET", FD_ISSET(s, &r) != 0, 1);
    expect("select updates the timeout (Linux)", tv.tv_sec < 10 || (tv.tv_sec == 10 && tv.tv_usec == 0), "remaining <= 10 s");
    FD_ZERO(&r);
    FD_SET(s, &r);
    FD_ZERO(&w);
    FD_SET(s, &w);
    tv = {0, 0};
    expect_ret("select same fd readable and writable counts twice", SEM_CALL(::select(nfds, &r, &w, nullptr, &tv)), 2);
    recv_exact(s, 3);

    // Urgent data shows in exceptfds.
    FD_ZERO(&e);
    FD_SET(s, &e);
    tv = {0, 0};
    expect_ret("select exceptfds, no urgent data", SEM_CALL(::select(nfds, nullptr, nullptr, &e, &tv)), 0);
    ::send(c, "!", 1, MSG_OOB);
    FD_ZERO(&e);
    FD_SET(s, &e);
    tv = {10, 0};
    expect_ret("select exceptfds after MSG_OOB", SEM_CALL(::select(nfds, nullptr, nullptr, &e, &tv)), 1);
    expect_eq("select exceptfds: FD_ISSET", FD_ISSET(s, &e) != 0, 1);

    int p[2];
    must(::pipe(p), "pipe");
    int closed = p[0];
    ::close(p[0]);
    ::close(p[1]);
    FD_ZERO(&r);
    FD_SET(s, &r);
    FD_SET(closed, &r);
    tv = {0, 0};
    int n2 = (closed > s ? closed : s) + 1;
    expect_ret("select with a closed fd in the set", SEM_CALL(::select(n2, &r, nullptr, nullptr, &tv)), -1, EBADF);
    tv = {0, 0};
    expect_ret("select nfds -1", SEM_CALL(::select(-1, nullptr, nullptr, nullptr, &tv)), -1, EINVAL);
    tv = {0, -1};
    expect_ret("select negative tv_usec", SEM_CALL(::select(0, nullptr, nullptr, nullptr, &tv)), -1, EINVAL);

    // pselect
    timespec ts{0, 0}, ten{10, 0};
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    FD_ZERO(&r);
    FD_SET(s, &r);
    char b[8];
    ::recv(s, b, sizeof b, MSG_DONTWAIT);  // nothing normal queued (the urgent byte is out of band)
    expect_ret("pselect readable, no data, timeout 0", SEM_CALL(::pselect(nfds, &r, nullptr, nullptr, &ts, &mask)), 0);
    send_all(c, "ps", 2);
    FD_ZERO(&r);
    FD_SET(s, &r);
    expect_ret("pselect after peer write", SEM_CALL(::pselect(nfds, &r, nullptr, nullptr, &ten, &mask)), 1);
    expect_eq("pselect readable: FD_ISSET", FD_ISSET(s, &r) != 0, 1);
    expect_eq("pselect leaves its timeout untouched", ten.tv_sec, 10);
    FD_ZERO(&w);
    FD_SET(c, &w);
    expect_ret("pselect writable, NULL sigmask", SEM_CALL(::pselect(nfds, nullptr, &w, nullptr, &ts, nullptr)), 1);
    FD_ZERO(&r);
    FD_SET(closed, &r);
    expect_ret("pselect with a closed fd", SEM_CALL(::pselect(closed + 1, &r, nullptr, nullptr, &ts, nullptr)), -1, EBADF);
    timespec bad{0, 2000000000};
    expect_ret("pselect tv_nsec 2e9", SEM_CALL(::pselect(0, nullptr, nullptr, nullptr, &bad, nullptr)), -1, EINVAL);
    close_all({c, s});
}

void test_epoll_api() {
    R r = SEM_CALL(::epoll_create(1));
    expect_fd("epoll_create(1)", r);
    if (r.ret >= 0) {
        expect_eq("epoll_create: FD_CLOEXEC clear", fd_flags(int(r.ret)) & FD_CLOEXEC, 0);
        ::close(int(r.ret));
    }
    expect_ret("epoll_create(0)", SEM_CALL(::epoll_create(0)), -1, EINVAL);
    expect_ret("epoll_create(-1)", SEM_CALL(::epoll_create(-1)), -1, EINVAL);
    r = SEM_CALL(::epoll_create1(0));
    expect_fd("epoll_create1(0)", r);
    if (r.ret >= 0) {
        expect_eq("epoll_create1(0): FD_CLOEXEC clear", fd_flags(int(r.ret)) & FD_CLOEXEC, 0);
        ::close(int(r.ret));
    }
    r = SEM_CALL(::epoll_create1(EPOLL_CLOEXEC));
    expect_fd("epoll_create1(EPOLL_CLOEXEC)", r);
    int ep = int(r.ret);
    expect_eq("epoll_create1(EPOLL_CLOEXEC): FD_CLOEXEC", fd_flags(ep) & FD_CLOEXEC, FD_CLOEXEC);
    expect_ret("epoll_create1(bad flag 1)", SEM_CALL(::epoll_create1(1)), -1, EINVAL);

    int c, s;
    tcp_pair(c, s);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0x1122334455667788ULL;
    expect_ret("epoll_ctl ADD", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev)), 0);
    expect_ret("epoll_ctl ADD again", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev)), -1, EEXIST);
    expect_ret("epoll_ctl MOD unregistered", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev)), -1, ENOENT);
    expect_ret("epoll_ctl DEL unregistered", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_DEL, c, &ev)), -1, ENOENT);
    expect_ret("epoll_ctl ADD bad fd", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, 900, &ev)), -1, EBADF);
    expect_ret("epoll_ctl bad epfd", SEM_CALL(::epoll_ctl(900, EPOLL_CTL_ADD, s, &ev)), -1, EBADF);
    expect_ret("epoll_ctl on a non-epoll epfd", SEM_CALL(::epoll_ctl(c, EPOLL_CTL_ADD, s, &ev)), -1, EINVAL);
    expect_ret("epoll_ctl ADD itself", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev)), -1, EINVAL);
    expect_ret("epoll_ctl bad op 99", SEM_CALL(::epoll_ctl(ep, 99, c, &ev)), -1, EINVAL);
    expect_ret("epoll_ctl ADD NULL event", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, c, nullptr)), -1, EFAULT);
    epoll_event ex{};
    ex.events = EPOLLIN | EPOLLEXCLUSIVE;
    expect_ret("epoll_ctl MOD with EPOLLEXCLUSIVE", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_MOD, s, &ex)), -1, EINVAL);
    char path[] = "/tmp/sdx-sem-XXXXXX";
    int file = int(must(::mkstemp(path), "mkstemp"));
    ::unlink(path);
    expect_ret("epoll_ctl ADD regular file", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, file, &ev)), -1, EPERM);
    ::close(file);

    epoll_event out[4];
    expect_ret("epoll_wait maxevents 0", SEM_CALL(::epoll_wait(ep, out, 0, 0)), -1, EINVAL);
    volatile int minus_one = -1;
    expect_ret("epoll_wait maxevents -1", SEM_CALL(::epoll_wait(ep, out, minus_one, 0)), -1, EINVAL);
    expect_ret("epoll_wait on a socket", SEM_CALL(::epoll_wait(c, out, 4, 0)), -1, EINVAL);
    expect_ret("epoll_wait bad fd", SEM_CALL(::epoll_wait(900, out, 4, 0)), -1, EBADF);
    expect_ret("epoll_wait nothing ready, timeout 0", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    send_all(c, "ep", 2);
    r = SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs));
    expect_str("epoll_wait after peer write", outcome(r.ret, r.ret == 1 ? out[0].events : 0), "1 IN");
    expect("epoll_wait returns data.u64 unchanged", r.ret == 1 && out[0].data.u64 == 0x1122334455667788ULL, "0x1122334455667788");
    expect_ret("epoll_ctl DEL", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_DEL, s, nullptr)), 0);
    expect_ret("epoll_wait after DEL", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    ev.events = EPOLLOUT;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    r = SEM_CALL(::epoll_wait(ep, out, 4, 0));
    expect_str("epoll_wait EPOLLOUT on connected socket", outcome(r.ret, r.ret == 1 ? out[0].events : 0), "1 OUT");
    ev.events = EPOLLIN;
    expect_ret("epoll_ctl MOD", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev)), 0);
    expect_ret("epoll_wait after MOD to EPOLLIN", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    close_all({c, s, ep});
}

void test_epoll_modes() {
    int c, s;
    tcp_pair(c, s);
    int ep = int(must(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1"));
    epoll_event ev{}, out[4];
    char b[64];

    // Level-triggered: reported until drained.
    ev.events = EPOLLIN;
    ev.data.fd = 1;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    send_all(c, "level", 5);
    expect_ret("LT: first epoll_wait", SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs)), 1);
    expect_ret("LT: second epoll_wait (not drained)", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 1);
    expect_ret("LT: partial read", SEM_CALL(::recv(s, b, 2, 0)), 2);
    expect_ret("LT: still reported after a partial read", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 1);
    recv_exact(s, 3);
    expect_ret("LT: drained", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);

    // Edge-triggered: once per arrival.
    ev.events = EPOLLIN | EPOLLET;
    expect_ret("ET: epoll_ctl MOD EPOLLET", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev)), 0);
    send_all(c, "edge", 4);
    expect_ret("ET: first epoll_wait", SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs)), 1);
    expect_ret("ET: second epoll_wait (no new data)", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    send_all(c, "more", 4);
    expect_ret("ET: new data reported again", SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs)), 1);
    expect_ret("ET: and only once", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    expect_str("ET: both writes queued", recv_exact(s, 8), "edgemore");

    // EPOLLONESHOT: disarmed after one report until MOD re-arms it.
    ev.events = EPOLLIN | EPOLLONESHOT;
    ::epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    send_all(c, "one", 3);
    expect_ret("ONESHOT: first report", SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs)), 1);
    send_all(c, "two", 3);
    expect_eq("ONESHOT: data arrived", wait_events(s, POLLIN), POLLIN);
    expect_ret("ONESHOT: disarmed", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    expect_ret("ONESHOT: ADD again while disarmed", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev)), -1, EEXIST);
    expect_ret("ONESHOT: MOD re-arms", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev)), 0);
    expect_ret("ONESHOT: reported after re-arm", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 1);
    recv_exact(s, 6);

    // EPOLLRDHUP on peer half-close.
    ev.events = EPOLLIN | EPOLLRDHUP;
    ::epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev);
    expect_ret("RDHUP: nothing yet", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    ::shutdown(c, SHUT_WR);
    R r = SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs));
    expect_str("RDHUP: after peer SHUT_WR", outcome(r.ret, r.ret == 1 ? out[0].events : 0), "1 IN|RDHUP");
    close_all({c, s, ep});

    // EPOLLERR and EPOLLHUP are reported without being asked for: a reset connection.
    tcp_pair(c, s);
    ep = int(must(::epoll_create1(0), "epoll_create1"));
    ev.events = EPOLLOUT;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    send_all(c, "unread", 6);
    wait_events(s, POLLIN);
    ::close(s);  // closing with unread data sends RST
    expect("reset: POLLERR", (wait_events(c, POLLERR) & POLLERR) != 0, "POLLERR");
    r = SEM_CALL(::epoll_wait(ep, out, 4, 0));
    expect_str("reset: epoll reports ERR|HUP unasked", outcome(r.ret, r.ret == 1 ? out[0].events & (EPOLLERR | EPOLLHUP) : 0), "1 ERR|HUP");
    close_all({c, ep});

    // The registration belongs to the open file description: it survives close(fd) while a dup lives.
    tcp_pair(c, s);
    ep = int(must(::epoll_create1(0), "epoll_create1"));
    int d = int(must(::dup(s), "dup"));
    ev.events = EPOLLIN;
    ev.data.u64 = 42;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    ::close(s);
    send_all(c, "dup", 3);
    r = SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs));
    expect("closed fd with a live dup still reported", r.ret == 1 && out[0].data.u64 == 42, "1 event, data 42", show(r));
    expect_ret("epoll_ctl DEL of the closed fd", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_DEL, s, nullptr)), -1, EBADF);
    expect_ret("epoll_ctl DEL via the dup (not registered)", SEM_CALL(::epoll_ctl(ep, EPOLL_CTL_DEL, d, nullptr)), -1, ENOENT);
    ::close(d);
    expect_ret("after the last close: nothing reported", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    close_all({c, ep});
}

void test_epoll_nested_and_variants() {
    int c, s;
    tcp_pair(c, s);
    int inner = int(must(::epoll_create1(0), "epoll_create1"));
    int outer = int(must(::epoll_create1(0), "epoll_create1"));
    epoll_event ev{}, out[4];
    ev.events = EPOLLIN;
    ev.data.u64 = 1;
    ::epoll_ctl(inner, EPOLL_CTL_ADD, s, &ev);
    ev.data.u64 = 2;
    expect_ret("nested: add inner epoll to outer", SEM_CALL(::epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev)), 0);
    expect_ret("nested: add outer to inner (loop)", SEM_CALL(::epoll_ctl(inner, EPOLL_CTL_ADD, outer, &ev)), -1, ELOOP);
    expect_ret("nested: nothing ready", SEM_CALL(::epoll_wait(outer, out, 4, 0)), 0);
    send_all(c, "nest", 4);
    R r = SEM_CALL(::epoll_wait(outer, out, 4, kWaitMs));
    expect("nested: outer reports inner", r.ret == 1 && out[0].data.u64 == 2 && out[0].events == EPOLLIN, "1 event data 2 IN", show(r));
    r = SEM_CALL(::epoll_wait(inner, out, 4, 0));
    expect("nested: inner reports the socket", r.ret == 1 && out[0].data.u64 == 1 && out[0].events == EPOLLIN, "1 event data 1 IN", show(r));
    recv_exact(s, 2);  // a partial read: the level-triggered socket stays ready, and so the inner set
    r = SEM_CALL(::epoll_wait(outer, out, 4, 0));
    expect("nested: after a partial read the outer set still reports inner", r.ret == 1 && out[0].data.u64 == 2 && out[0].events == EPOLLIN,
           "1 event data 2 IN", show(r));
    recv_exact(s, 2);
    expect_ret("nested: drained", SEM_CALL(::epoll_wait(outer, out, 4, 0)), 0);

    // The inner set edge-triggered in an outer one: one edge for what arrived, none for a partial
    // read that leaves data behind.
    {
        int c2, s2;
        tcp_pair(c2, s2);
        int in2 = int(must(::epoll_create1(0), "epoll_create1"));
        int out2 = int(must(::epoll_create1(0), "epoll_create1"));
        ev.events = EPOLLIN;
        ev.data.u64 = 1;
        ::epoll_ctl(in2, EPOLL_CTL_ADD, s2, &ev);
        ev.events = EPOLLIN | EPOLLET;
        ev.data.u64 = 2;
        ::epoll_ctl(out2, EPOLL_CTL_ADD, in2, &ev);
        send_all(c2, "abcdefgh", 8);
        r = SEM_CALL(::epoll_wait(out2, out, 4, kWaitMs));
        expect("nested ET: the outer set reports the arrival", r.ret == 1 && out[0].data.u64 == 2, "1 event data 2", show(r));
        recv_exact(s2, 2);
        expect_ret("nested ET: no new edge after a partial read", SEM_CALL(::epoll_wait(out2, out, 4, 0)), 0);
        expect_ret("nested ET: still none", SEM_CALL(::epoll_wait(out2, out, 4, 0)), 0);
        close_all({c2, s2, in2, out2});
    }

    // epoll_pwait and epoll_pwait2
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    expect_ret("epoll_pwait timeout 0 with sigmask", SEM_CALL(::epoll_pwait(inner, out, 4, 0, &mask)), 0);
    expect_ret("epoll_pwait NULL sigmask", SEM_CALL(::epoll_pwait(inner, out, 4, 0, nullptr)), 0);
    timespec zero{0, 0}, ten{10, 0}, bad{0, 2000000000};
    expect_ret("epoll_pwait2 timeout {0,0}", SEM_CALL(::epoll_pwait2(inner, out, 4, &zero, &mask)), 0);
    send_all(c, "pw", 2);
    r = SEM_CALL(::epoll_pwait(inner, out, 4, kWaitMs, &mask));
    expect_str("epoll_pwait after peer write", outcome(r.ret, r.ret == 1 ? out[0].events : 0), "1 IN");
    r = SEM_CALL(::epoll_pwait2(inner, out, 4, &ten, &mask));
    expect_str("epoll_pwait2 {10,0} data ready", outcome(r.ret, r.ret == 1 ? out[0].events : 0), "1 IN");
    r = SEM_CALL(::epoll_pwait2(inner, out, 4, nullptr, nullptr));
    expect_str("epoll_pwait2 NULL timeout data ready", outcome(r.ret, r.ret == 1 ? out[0].events : 0), "1 IN");
    expect_ret("epoll_pwait2 tv_nsec 2e9", SEM_CALL(::epoll_pwait2(inner, out, 4, &bad, nullptr)), -1, EINVAL);
    expect_ret("epoll_pwait maxevents 0", SEM_CALL(::epoll_pwait(inner, out, 0, 0, nullptr)), -1, EINVAL);
    expect_ret("epoll_pwait2 bad fd", SEM_CALL(::epoll_pwait2(900, out, 4, &zero, nullptr)), -1, EBADF);
    sigset_t now;
    sigprocmask(SIG_SETMASK, nullptr, &now);
    expect_eq("epoll_pwait restores the signal mask", sigismember(&now, SIGUSR1), 0);

    // A listener in epoll: EPOLLIN when a connection is pending.
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    int ep = int(must(::epoll_create1(0), "epoll_create1"));
    ev.events = EPOLLIN;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    expect_ret("epoll listener, no client", SEM_CALL(::epoll_wait(ep, out, 4, 0)), 0);
    int cc = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
    must(::connect(cc, reinterpret_cast<sockaddr*>(&la), ll), "connect");
    r = SEM_CALL(::epoll_wait(ep, out, 4, kWaitMs));
    expect_str("epoll listener with a pending connection", outcome(r.ret, r.ret == 1 ? out[0].events : 0), "1 IN");
    close_all({c, s, inner, outer, l, cc, ep});
}

}  // namespace

int main() {
    start();
    test_poll();
    test_ppoll();
    test_select();
    test_epoll_api();
    test_epoll_modes();
    test_epoll_nested_and_variants();
    return finish();
}
