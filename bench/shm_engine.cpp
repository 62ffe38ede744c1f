// Benchmark (not a test): the protocol engine over the shared-memory transport between two real
// processes, side by side with kernel TCP loopback doing the same work in the same run.
//
//   shm_engine stream SIZE TOTAL   one direction, writes and reads of SIZE bytes: GB/s
//   shm_engine pingpong SIZE COUNT round trips of SIZE bytes: half round trip, p50 and p99 in us
//
// Prints one JSON object per line: {"bench":..., "path":"shm"|"tcp", ...}.  bench/run.sh takes
// medians over several runs.  Set SDX_BENCH_ZCOPY=0 to force bcopy.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "verbs/shm_channel.hpp"

using namespace sdx;
using Clock = std::chrono::steady_clock;

namespace {

long run(proto::Engine& e, shm::Channel& ch, proto::OpResult r, bool send) {
    while (r.status == proto::Status::Pending) {
        int fed = ch.drive(e);
        r = send ? e.progress_send() : e.progress_recv();
        if (r.status == proto::Status::Done) break;
        if (fed == 0) ch.wait(50000, 1000000000LL);
    }
    return r.result;
}

bool full(proto::Engine& e, shm::Channel& ch, void* buf, std::size_t n, bool send) {
    std::size_t done = 0;
    while (done < n) {
        iovec v{static_cast<char*>(buf) + done, n - done};
        long r = send ? run(e, ch, e.start_send({&v, 1}, 0, false), true)
                      : run(e, ch, e.start_recv({&v, 1}, MSG_WAITALL, false), false);
        if (r <= 0) return false;
        done += static_cast<std::size_t>(r);
    }
    return true;
}

bool tcp_full(int fd, void* buf, std::size_t n, bool send) {
    std::size_t done = 0;
    while (done < n) {
        ssize_t r = send ? ::send(fd, static_cast<char*>(buf) + done, n - done, MSG_NOSIGNAL)
                         : ::recv(fd, static_cast<char*>(buf) + done, n - done, MSG_WAITALL);
        if (r <= 0) return false;
        done += static_cast<std::size_t>(r);
    }
    return true;
}

proto::Params params() {
    proto::Params p;
    p.recv_bufs = 16;
    p.buf_size = 64 * 1024;
    p.rdma_sync = true;
    const char* z = std::getenv("SDX_BENCH_ZCOPY");
    if (z && std::strcmp(z, "0") == 0) p.send_zcopy_threshold = p.recv_zcopy_threshold = 0;
    return p;
}

// Work done by the "client" (parent) and the "server" (child) of one benchmark.
struct Work {
    std::string mode;
    std::size_t size;
    std::uint64_t count;  // stream: total bytes; pingpong: round trips
};

void report(const Work& w, const char* path, double secs, std::vector<double>& rtt_us) {
    if (w.mode == "stream") {
        std::printf("{\"bench\":\"stream\",\"path\":\"%s\",\"size\":%zu,\"bytes\":%llu,\"gbyte_per_s\":%.3f}\n", path, w.size,
                    static_cast<unsigned long long>(w.count), w.count / secs / 1e9);
    } else {
        std::sort(rtt_us.begin(), rtt_us.end());
        auto pct = [&](double q) { return rtt_us[static_cast<std::size_t>(q * (rtt_us.size() - 1))] / 2; };
        std::printf("{\"bench\":\"pingpong\",\"path\":\"%s\",\"size\":%zu,\"round_trips\":%llu,\"half_rtt_p50_us\":%.3f,"
                    "\"half_rtt_p99_us\":%.3f}\n",
                    path, w.size, static_cast<unsigned long long>(w.count), pct(0.5), pct(0.99));
    }
    std::fflush(stdout);
}

// The same loop for both paths: `xfer(buf, n, send)` moves n bytes.
template <typename Xfer>
bool client_loop(const Work& w, Xfer xfer, double* secs, std::vector<double>& rtt) {
    std::vector<char> buf(w.size, 'x');
    auto t0 = Clock::now();
    if (w.mode == "stream") {
        for (std::uint64_t sent = 0; sent < w.count; sent += w.size)
            if (!xfer(buf.data(), w.size, true)) return false;
        char ack;
        if (!xfer(&ack, 1, false)) return false;  // the server read everything
    } else {
        rtt.reserve(w.count);
        for (std::uint64_t i = 0; i < w.count; ++i) {
            auto a = Clock::now();
            if (!xfer(buf.data(), w.size, true) || !xfer(buf.data(), w.size, false)) return false;
            rtt.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
        }
    }
    *secs = std::chrono::duration<double>(Clock::now() - t0).count();
    return true;
}

template <typename Xfer>
bool server_loop(const Work& w, Xfer xfer) {
    std::vector<char> buf(w.size);
    if (w.mode == "stream") {
        for (std::uint64_t got = 0; got < w.count; got += w.size)
            if (!xfer(buf.data(), w.size, false)) return false;
        char ack = 1;
        return xfer(&ack, 1, true);
    }
    for (std::uint64_t i = 0; i < w.count; ++i)
        if (!xfer(buf.data(), w.size, false) || !xfer(buf.data(), w.size, true)) return false;
    return true;
}

int bench_shm(const Work& w) {
    std::string err;
    proto::Params prm = params();
    auto seg = shm::Segment::create(shm::ring_capacity_for(prm.recv_bufs, prm.buf_size), &err);
    if (!seg) {
        std::fprintf(stderr, "shm_engine: %s\n", err.c_str());
        return 1;
    }
    int hp[2], ap[2];
    if (::pipe(hp) || ::pipe(ap)) return 1;
    pid_t parent = ::getpid();
    int seg_fd = seg->fd();
    pid_t child = ::fork();
    if (child == 0) {
        auto mine = shm::Segment::attach_pid(parent, seg_fd, &err);
        if (!mine) _exit(2);
        shm::Channel ch(std::move(*mine), 1, parent);
        proto::Engine eng(prm, ch);
        std::vector<std::byte> hello(proto::kHelloSize);
        if (::read(hp[0], hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) _exit(3);
        auto ack = eng.accept_hello(hello);
        if (!ack || ::write(ap[1], ack->data(), ack->size()) != static_cast<ssize_t>(ack->size())) _exit(4);
        bool ok = server_loop(w, [&](void* b, std::size_t n, bool s) { return full(eng, ch, b, n, s); });
        _exit(ok ? 0 : 5);
    }
    shm::Channel ch(std::move(*seg), 0, child);
    proto::Engine eng(prm, ch);
    auto hello = eng.hello();
    std::vector<std::byte> ack(proto::kHelloSize);
    if (::write(hp[1], hello.data(), hello.size()) != static_cast<ssize_t>(hello.size()) ||
        ::read(ap[0], ack.data(), ack.size()) != static_cast<ssize_t>(ack.size()) || !eng.accept_hello_ack(ack))
        return 1;
    double secs = 0;
    std::vector<double> rtt;
    bool ok = client_loop(w, [&](void* b, std::size_t n, bool s) { return full(eng, ch, b, n, s); }, &secs, rtt);
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "shm_engine: shm run failed (child status %d)\n", status);
        return 1;
    }
    report(w, "shm", secs, rtt);
    return 0;
}

int bench_tcp(const Work& w) {
    int ls = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) || ::listen(ls, 1) ||
        ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &al))
        return 1;
    pid_t child = ::fork();
    if (child == 0) {
        int c = ::accept(ls, nullptr, nullptr);
        int one = 1;
        ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        _exit(server_loop(w, [&](void* b, std::size_t n, bool s) { return tcp_full(c, b, n, s); }) ? 0 : 5);
    }
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a)) return 1;
    double secs = 0;
    std::vector<double> rtt;
    bool ok = client_loop(w, [&](void* b, std::size_t n, bool s) { return tcp_full(fd, b, n, s); }, &secs, rtt);
    int status = 0;
    ::waitpid(child, &status, 0);
    ::close(fd);
    ::close(ls);
    if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
    report(w, "tcp", secs, rtt);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4 || (std::strcmp(argv[1], "stream") != 0 && std::strcmp(argv[1], "pingpong") != 0)) {
        std::fprintf(stderr, "usage: shm_engine stream SIZE TOTAL | pingpong SIZE COUNT\n");
        return 2;
    }
    Work w{argv[1], std::strtoull(argv[2], nullptr, 0), std::strtoull(argv[3], nullptr, 0)};
    if (w.size == 0 || w.count == 0) return 2;
    return bench_tcp(w) | bench_shm(w);
}
