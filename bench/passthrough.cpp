// How many nanoseconds does the shim add to a call it passes through?
//
// Within one process, times the interposed read()/write() (application -> libsdx.so -> libc) against
// libc's own read()/write() fetched straight from libc.so.6, interleaved batch by batch so both see
// the same machine state; the median of the paired differences is the shim's cost.  Run without LD_PRELOAD as a
// control (the difference must then be ~0).  Prints JSON.
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using ReadFn = ssize_t (*)(int, void*, size_t);
using WriteFn = ssize_t (*)(int, const void*, size_t);

constexpr int kBatch = 20000;
constexpr int kRounds = 41;

double batch_ns(ReadFn rd, WriteFn wr, int wfd, int rfd) {
    char c = 'x';
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kBatch; ++i) {
        if (wr(wfd, &c, 1) != 1 || rd(rfd, &c, 1) != 1) {
            std::perror("bench io");
            std::exit(1);
        }
    }
    auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::nano>(t1 - t0).count() / kBatch;  // per write+read pair
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Result {
    double shim_pair_ns, libc_pair_ns, added_per_call_ns;
};

Result measure(int wfd, int rfd, ReadFn libc_read, WriteFn libc_write) {
    std::vector<double> shim, libc, diff;
    batch_ns(::read, ::write, wfd, rfd);  // warm up
    for (int r = 0; r < kRounds; ++r) {
        // Alternate the order (ABBA) so drift in machine state does not favour either side.
        double a, b;
        if (r % 2) {
            a = batch_ns(::read, ::write, wfd, rfd);
            b = batch_ns(libc_read, libc_write, wfd, rfd);
        } else {
            b = batch_ns(libc_read, libc_write, wfd, rfd);
            a = batch_ns(::read, ::write, wfd, rfd);
        }
        shim.push_back(a);
        libc.push_back(b);
        diff.push_back((a - b) / 2);  // two calls per pair
    }
    return {median(shim), median(libc), median(diff)};
}

void tcp_pair(int& client, int& server) {
    int l = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) || ::listen(l, 1) ||
        ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len)) {
        std::perror("listen");
        std::exit(1);
    }
    client = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a)) {
        std::perror("connect");
        std::exit(1);
    }
    server = ::accept(l, nullptr, nullptr);
    int one = 1;
    ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::close(l);
}

}  // namespace

int main() {
    void* libc = ::dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc) {
        std::fprintf(stderr, "cannot find libc.so.6\n");
        return 1;
    }
    auto libc_read = reinterpret_cast<ReadFn>(::dlsym(libc, "read"));
    auto libc_write = reinterpret_cast<WriteFn>(::dlsym(libc, "write"));
    bool preloaded = reinterpret_cast<void*>(libc_read) != reinterpret_cast<void*>(&::read);

    int p[2];
    if (::pipe(p)) return 1;
    Result pipe_r = measure(p[1], p[0], libc_read, libc_write);
    int c, s;
    tcp_pair(c, s);
    Result tcp_r = measure(c, s, libc_read, libc_write);

    std::printf("{\"preloaded\":%s,\"batch\":%d,\"rounds\":%d,"
                "\"pipe\":{\"shim_pair_ns\":%.1f,\"libc_pair_ns\":%.1f,\"added_ns_per_call\":%.2f},"
                "\"tcp\":{\"shim_pair_ns\":%.1f,\"libc_pair_ns\":%.1f,\"added_ns_per_call\":%.2f}}\n",
                preloaded ? "true" : "false", kBatch, kRounds, pipe_r.shim_pair_ns, pipe_r.libc_pair_ns,
                pipe_r.added_per_call_ns, tcp_r.shim_pair_ns, tcp_r.libc_pair_ns, tcp_r.added_per_call_ns);
    return 0;
}
