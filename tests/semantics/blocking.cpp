// Blocking calls and other threads: EINTR with and without SA_RESTART, signal masks of ppoll/
// pselect/epoll_pwait/epoll_pwait2, close() and shutdown() of an fd another thread is blocked on.
//
// A thread is known to be blocked when /proc/self/task/TID/syscall names the syscall; nothing
// sleeps to let time pass.  glibc on x86_64 implements recv() as recvfrom(2), poll() as poll(2),
// select() as select(2) and epoll_wait() as epoll_wait(2); accept() is accept(2) or accept4(2).
#include "check.hpp"

#include <sys/epoll.h>
#include <sys/select.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

using namespace sem;

namespace {

// The thread's pending signals include `sig` (it is blocked, so it stays pending).
bool pending_in_thread(pid_t t, int sig) {
    int64_t end = now_ms() + kWaitMs;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", int(t));
    while (now_ms() < end) {
        FILE* f = fopen(path, "re");
        if (!f) return false;
        char line[256];
        unsigned long long mask = 0;
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "SigPnd:", 7) == 0) mask = strtoull(line + 7, nullptr, 16);
        fclose(f);
        if (mask & (1ULL << (sig - 1))) return true;
        backoff();
    }
    return false;
}

void test_eintr_recv() {
    int c, s;
    tcp_pair(c, s);
    char buf[32];

    {
        Blocked b([&] { return SEM_CALL(::recv(s, buf, sizeof buf, 0)); });
        b.start();
        expect("recv blocked (no SA_RESTART)", b.in({SYS_recvfrom}), "in recvfrom");
        int before = g_usr1;
        pthread_kill(b.th, SIGUSR1);
        b.join();
        expect_ret("recv interrupted, no SA_RESTART", b.r, -1, EINTR);
        expect_eq("handler ran once", g_usr1 - before, 1);
    }
    {
        Blocked b([&] { return SEM_CALL(::recv(s, buf, sizeof buf, 0)); });
        b.start();
        expect("recv blocked (SA_RESTART)", b.in({SYS_recvfrom}), "in recvfrom");
        int before = g_usr2;
        pthread_kill(b.th, SIGUSR2);
        expect("SA_RESTART handler ran", wait_flag_value(g_usr2, before + 1), "ran");
        expect("recv restarted after the handler", b.in({SYS_recvfrom}) && !b.done, "blocked in recvfrom again");
        send_all(c, "after", 5);
        b.join();
        expect_ret("restarted recv returns the data sent afterwards", b.r, 5);
        expect_str("restarted recv data", std::string(buf, 5), "after");
    }
    {
        Blocked b([&] { return SEM_CALL(::read(s, buf, sizeof buf)); });
        b.start();
        expect("read blocked", b.in({SYS_read}), "in read");
        pthread_kill(b.th, SIGUSR1);
        b.join();
        expect_ret("read interrupted, no SA_RESTART", b.r, -1, EINTR);
    }
    {
        Blocked b([&] { return SEM_CALL(::read(s, buf, sizeof buf)); });
        b.start();
        expect("read blocked (SA_RESTART)", b.in({SYS_read}), "in read");
        int before = g_usr2;
        pthread_kill(b.th, SIGUSR2);
        wait_flag_value(g_usr2, before + 1);
        expect("read restarted", b.in({SYS_read}) && !b.done, "blocked in read again");
        send_all(c, "rd", 2);
        b.join();
        expect_ret("restarted read returns data", b.r, 2);
    }
    {
        // MSG_WAITALL with part of the data: a signal ends the wait with what arrived, not EINTR.
        send_all(c, "abc", 3);
        wait_events(s, POLLIN);
        Blocked b([&] { return SEM_CALL(::recv(s, buf, 8, MSG_WAITALL)); });
        b.start();
        expect("recv MSG_WAITALL blocked with 3 of 8 bytes", b.in({SYS_recvfrom}), "in recvfrom");
        pthread_kill(b.th, SIGUSR1);
        b.join();
        expect_ret("MSG_WAITALL interrupted returns the partial count", b.r, 3);
    }
    {
        // A receive timeout (SO_RCVTIMEO) makes the call non-restartable: EINTR despite SA_RESTART.
        timeval tv{30, 0};
        ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        Blocked b([&] { return SEM_CALL(::recv(s, buf, sizeof buf, 0)); });
        b.start();
        expect("recv with SO_RCVTIMEO blocked", b.in({SYS_recvfrom}), "in recvfrom");
        pthread_kill(b.th, SIGUSR2);
        b.join();
        expect_ret("recv with SO_RCVTIMEO interrupted despite SA_RESTART", b.r, -1, EINTR);
        tv = {0, 0};
        ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    close_all({c, s});
}

void test_eintr_accept() {
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    {
        Blocked b([&] { return SEM_CALL(::accept(l, nullptr, nullptr)); });
        b.start();
        expect("accept blocked", b.in({SYS_accept, SYS_accept4}), "in accept");
        pthread_kill(b.th, SIGUSR1);
        b.join();
        expect_ret("accept interrupted, no SA_RESTART", b.r, -1, EINTR);
    }
    {
        Blocked b([&] { return SEM_CALL(::accept4(l, nullptr, nullptr, SOCK_CLOEXEC)); });
        b.start();
        expect("accept4 blocked (SA_RESTART)", b.in({SYS_accept4}), "in accept4");
        int before = g_usr2;
        pthread_kill(b.th, SIGUSR2);
        wait_flag_value(g_usr2, before + 1);
        expect("accept4 restarted", b.in({SYS_accept4}) && !b.done, "blocked in accept4 again");
        int c = int(must(::socket(AF_INET, SOCK_STREAM, 0), "socket"));
        must(::connect(c, reinterpret_cast<sockaddr*>(&la), ll), "connect");
        b.join();
        expect("restarted accept4 returns the connection", b.r.ret >= 0, "fd", show(b.r));
        if (b.r.ret >= 0) ::close(int(b.r.ret));
        ::close(c);
    }
    ::close(l);
}

// poll, ppoll, select, pselect, epoll_wait, epoll_pwait, epoll_pwait2 are never restarted: EINTR
// even when the handler has SA_RESTART.
void test_eintr_readiness() {
    int c, s;
    tcp_pair(c, s);
    int ep = int(must(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1"));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    pollfd pfd[1] = {{s, POLLIN, 0}};
    epoll_event out[4];
    timespec ten{20, 0};
    fd_set rs;

    struct Case {
        const char* name;
        std::initializer_list<long> nrs;
        std::function<R()> op;
    };
    const Case cases[] = {
        {"poll", {SYS_poll, SYS_ppoll}, [&] { return SEM_CALL(::poll(pfd, 1, -1)); }},
        {"ppoll", {SYS_ppoll}, [&] { return SEM_CALL(::ppoll(pfd, 1, nullptr, nullptr)); }},
        {"select", {SYS_select, SYS_pselect6}, [&] {
             FD_ZERO(&rs);
             FD_SET(s, &rs);
             return SEM_CALL(::select(s + 1, &rs, nullptr, nullptr, nullptr));
         }},
        {"pselect", {SYS_pselect6}, [&] {
             FD_ZERO(&rs);
             FD_SET(s, &rs);
             return SEM_CALL(::pselect(s + 1, &rs, nullptr, nullptr, nullptr, nullptr));
         }},
        {"epoll_wait", {SYS_epoll_wait, SYS_epoll_pwait}, [&] { return SEM_CALL(::epoll_wait(ep, out, 4, -1)); }},
        {"epoll_pwait", {SYS_epoll_pwait}, [&] { return SEM_CALL(::epoll_pwait(ep, out, 4, -1, nullptr)); }},
        {"epoll_pwait2", {SYS_epoll_pwait2}, [&] { return SEM_CALL(::epoll_pwait2(ep, out, 4, &ten, nullptr)); }},
    };
    for (const Case& k : cases) {
        Blocked b(k.op);
        b.start();
        expect(std::string(k.name) + " blocked", b.in(k.nrs), "blocked");
        pthread_kill(b.th, SIGUSR2);
        b.join();
        expect_ret(std::string(k.name) + " interrupted with SA_RESTART", b.r, -1, EINTR);
    }

    // The signal mask argument: a signal blocked by the call's mask stays pending and does not
    // interrupt; the handler runs once the call has returned and restored the thread's mask.
    sigset_t block_usr1;
    sigemptyset(&block_usr1);
    sigaddset(&block_usr1, SIGUSR1);
    struct MaskCase {
        const char* name;
        long nr;
        std::function<R()> op;
    };
    const MaskCase masked[] = {
        {"ppoll", SYS_ppoll, [&] { return SEM_CALL(::ppoll(pfd, 1, nullptr, &block_usr1)); }},
        {"pselect", SYS_pselect6, [&] {
             FD_ZERO(&rs);
             FD_SET(s, &rs);
             return SEM_CALL(::pselect(s + 1, &rs, nullptr, nullptr, nullptr, &block_usr1));
         }},
        {"epoll_pwait", SYS_epoll_pwait, [&] { return SEM_CALL(::epoll_pwait(ep, out, 4, -1, &block_usr1)); }},
        {"epoll_pwait2", SYS_epoll_pwait2, [&] { return SEM_CALL(::epoll_pwait2(ep, out, 4, nullptr, &block_usr1)); }},
    };
    char buf[8];
    for (const MaskCase& k : masked) {
        std::string n = k.name;
        Blocked b(k.op);
        b.start();
        expect(n + " with SIGUSR1 in its mask: blocked", b.in({k.nr}), "blocked");
        int before = g_usr1;
        pthread_kill(b.th, SIGUSR1);
        expect(n + ": SIGUSR1 stays pending", pending_in_thread(b.tid, SIGUSR1), "pending");
        expect(n + ": not interrupted", b.in({k.nr}) && !b.done && g_usr1 == before, "still blocked, handler not run");
        send_all(c, "m", 1);
        b.join();
        expect_ret(n + ": returns the readiness", b.r, 1);
        expect_eq(n + ": handler ran after the call returned", b.usr1_at_return - before, 1);
        recv_exact(s, 1);
    }
    // The opposite: the thread blocks SIGUSR1, the call's mask unblocks it: EINTR.
    sigset_t none;
    sigemptyset(&none);
    const MaskCase unmasked[] = {
        {"ppoll", SYS_ppoll, [&] { return SEM_CALL(::ppoll(pfd, 1, nullptr, &none)); }},
        {"pselect", SYS_pselect6, [&] {
             FD_ZERO(&rs);
             FD_SET(s, &rs);
             return SEM_CALL(::pselect(s + 1, &rs, nullptr, nullptr, nullptr, &none));
         }},
        {"epoll_pwait", SYS_epoll_pwait, [&] { return SEM_CALL(::epoll_pwait(ep, out, 4, -1, &none)); }},
        {"epoll_pwait2", SYS_epoll_pwait2, [&] { return SEM_CALL(::epoll_pwait2(ep, out, 4, nullptr, &none)); }},
    };
    for (const MaskCase& k : unmasked) {
        std::string n = k.name;
        Blocked b(k.op);
        b.mask = block_usr1;
        b.start();
        expect(n + " unblocking SIGUSR1 for the wait: blocked", b.in({k.nr}), "blocked");
        pthread_kill(b.th, SIGUSR1);
        b.join();
        expect_ret(n + ": interrupted by the signal its mask let through", b.r, -1, EINTR);
    }
    (void)buf;
    close_all({c, s, ep});
}

void test_cross_thread_close() {
    // close() from another thread does not wake a blocked recv: the call holds its own reference to
    // the socket, keeps waiting and returns data sent afterwards; the socket is released (peer sees
    // EOF) only when that recv returns.
    int c, s;
    tcp_pair(c, s);
    char buf[32];
    {
        Blocked b([&] { return SEM_CALL(::recv(s, buf, sizeof buf, 0)); });
        b.start();
        expect("recv blocked before close from another thread", b.in({SYS_recvfrom}), "in recvfrom");
        expect_ret("close(fd) from another thread", SEM_CALL(::close(s)), 0);
        expect_ret("the closed fd number is gone for new calls", SEM_CALL(::recv(s, buf, sizeof buf, MSG_DONTWAIT)), -1, EBADF);
        expect("blocked recv not woken by close", b.in({SYS_recvfrom}) && !b.done, "still blocked in recvfrom");
        char probe[4];
        expect_ret("peer sees no EOF while the recv holds the socket", SEM_CALL(::recv(c, probe, sizeof probe, MSG_DONTWAIT)), -1, EAGAIN);
        send_all(c, "late", 4);
        b.join();
        expect_ret("blocked recv returns the data sent after close", b.r, 4);
        expect_str("data after close", std::string(buf, 4), "late");
        expect("peer sees EOF once the recv returned", (wait_events(c, POLLIN) & POLLIN) && ::recv(c, probe, sizeof probe, 0) == 0, "EOF");
    }
    ::close(c);

    // shutdown(SHUT_RDWR) from another thread wakes the blocked recv with 0.
    tcp_pair(c, s);
    {
        Blocked b([&] { return SEM_CALL(::recv(s, buf, sizeof buf, 0)); });
        b.start();
        expect("recv blocked before shutdown from another thread", b.in({SYS_recvfrom}), "in recvfrom");
        expect_ret("shutdown(SHUT_RDWR) from another thread", SEM_CALL(::shutdown(s, SHUT_RDWR)), 0);
        b.join();
        expect_ret("blocked recv woken by shutdown returns 0", b.r, 0);
        expect_ret("peer reads EOF", SEM_CALL(::recv(c, buf, sizeof buf, 0)), 0);
    }
    close_all({c, s});

    // shutdown(SHUT_RD) alone wakes a blocked read too.
    tcp_pair(c, s);
    {
        Blocked b([&] { return SEM_CALL(::read(s, buf, sizeof buf)); });
        b.start();
        expect("read blocked before SHUT_RD", b.in({SYS_read}), "in read");
        expect_ret("shutdown(SHUT_RD) from another thread", SEM_CALL(::shutdown(s, SHUT_RD)), 0);
        b.join();
        expect_ret("blocked read woken by SHUT_RD returns 0", b.r, 0);
        expect_ret("the connection still sends", SEM_CALL(::send(s, "w", 1, 0)), 1);
        expect_str("peer receives", recv_exact(c, 1), "w");
    }
    close_all({c, s});

    // A blocked accept is woken by shutdown of the listener: EINVAL.
    sockaddr_storage la;
    socklen_t ll;
    int l = listener(AF_INET, la, ll);
    {
        Blocked b([&] { return SEM_CALL(::accept(l, nullptr, nullptr)); });
        b.start();
        expect("accept blocked before shutdown", b.in({SYS_accept, SYS_accept4}), "in accept");
        expect_ret("shutdown(listener) from another thread", SEM_CALL(::shutdown(l, SHUT_RDWR)), 0);
        b.join();
        expect_ret("blocked accept woken by shutdown", b.r, -1, EINVAL);
    }
    ::close(l);

    // A blocked poll sees the peer's close as readable (EOF).
    tcp_pair(c, s);
    {
        pollfd pfd[1] = {{s, POLLIN | POLLRDHUP, 0}};
        Blocked b([&] { return SEM_CALL(::poll(pfd, 1, -1)); });
        b.start();
        expect("poll blocked before the peer closes", b.in({SYS_poll, SYS_ppoll}), "in poll");
        ::close(c);
        b.join();
        expect_ret("blocked poll woken by the peer's close", b.r, 1);
        expect_eq("revents", pfd[0].revents, POLLIN | POLLRDHUP);
    }
    ::close(s);

    // epoll_wait in one thread, data from another: woken with the event.
    tcp_pair(c, s);
    int ep = int(must(::epoll_create1(0), "epoll_create1"));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 7;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    {
        epoll_event out[2];
        Blocked b([&] { return SEM_CALL(::epoll_wait(ep, out, 2, -1)); });
        b.start();
        expect("epoll_wait blocked", b.in({SYS_epoll_wait, SYS_epoll_pwait}), "in epoll_wait");
        send_all(c, "e", 1);
        b.join();
        expect("epoll_wait woken by data", b.r.ret == 1 && out[0].data.u64 == 7, "1 event, data 7", show(b.r));
    }
    close_all({c, s, ep});
}

// A blocking send that fits in the socket buffers returns whether or not the receiver reads.
// Here the receiving thread waits on another connection for a message that is sent only after
// that send.  (Over sdx a large send lends its buffer to the receiver, which would never read it.)
void test_send_to_busy_receiver() {
    int c1, s1, c2, s2;
    tcp_pair(c1, s1);
    tcp_pair(c2, s2);
    const size_t n = 256 * 1024;
    std::vector<unsigned char> data(n), got(n);
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<unsigned char>(i * 131 + 7);
    char go = 0;
    Blocked b([&] { return SEM_CALL(::recv(s2, &go, 1, 0)); });
    b.start();
    expect("the receiver waits on the other connection", b.in({SYS_recvfrom}), "in recvfrom");
    expect_ret("256 KiB send while the receiver is busy elsewhere", SEM_CALL(::send(c1, data.data(), n, 0)), long(n));
    expect_ret("then the message it waits for", SEM_CALL(::send(c2, "g", 1, 0)), 1);
    b.join();
    expect_ret("the receiver got it", b.r, 1);
    expect_ret("then reads the 256 KiB", SEM_CALL(::recv(s1, got.data(), n, MSG_WAITALL)), long(n));
    expect("the 256 KiB are intact", got == data, "intact");
    close_all({c1, s1, c2, s2});
}

}  // namespace

int main() {
    start();
    install_usr_handlers();
    test_eintr_recv();
    test_eintr_accept();
    test_eintr_readiness();
    test_cross_thread_close();
    test_send_to_busy_receiver();
    return finish();
}
