#include "common/stats_json.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace sdx::shmstats {

std::string totals_json(const Totals& t) {
    std::string out = fmt::format(R"("sockets":{{"tracked":{},"accelerated":{}}},"bytes":{{"sdx_tx":{},"sdx_rx":{},"tcp_tx":{},"tcp_rx":{}}},"fallbacks":{{)",
                                  t.sockets_tracked.load(), t.sockets_accelerated.load(), t.sdx_tx.load(), t.sdx_rx.load(),
                                  t.tcp_tx.load(), t.tcp_rx.load());
    for (int f = 0; f < kFallbacks; ++f) out += fmt::format(R"({}"{}":{})", f ? "," : "", kFallbackNames[f], t.fallbacks[f].load());
    return out + fmt::format(R"(}},"segments":{{"created":{},"reused":{},"attached":{},"cached":{}}})", t.seg_created.load(),
                             t.seg_reused.load(), t.seg_attached.load(), t.seg_cached.load());
}

std::string peer_text(const SocketSlot& s) {
    std::uint32_t n = s.peer_len.load();
    if (n < sizeof(sa_family_t)) return "-";
    sockaddr_storage ss{};
    std::memcpy(&ss, s.peer, std::min<std::size_t>(n, sizeof s.peer));
    char buf[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
        return fmt::format("{}:{}", buf, ntohs(a->sin_port));
    }
    if (ss.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
        return fmt::format("[{}]:{}", buf, ntohs(a->sin6_port));
    }
    return "-";
}

std::string live_json(const Region& r) {
    std::string out = "[";
    bool first = true;
    for (const SocketSlot& s : r.slots) {
        Path p = s.path.load();
        if (p == Path::Free) continue;
        int why = s.reason.load();
        out += fmt::format(R"({}{{"fd":{},"path":"{}","peer":"{}","fallback":"{}",)"
                           R"("sdx_tx_bcopy":{},"sdx_rx_bcopy":{},"sdx_tx_zcopy":{},"sdx_rx_zcopy":{},"tcp_tx":{},"tcp_rx":{},)"
                           R"("credit_stalls":{},"sendsm":{},"cancels":{},"aborted":{}}})",
                           first ? "" : ",", s.fd.load(), path_name(p), peer_text(s),
                           why >= 0 && why < kFallbacks ? kFallbackNames[why] : "", s.tx_bcopy.load(), s.rx_bcopy.load(),
                           s.tx_zcopy.load(), s.rx_zcopy.load(), s.tcp_tx.load(), s.tcp_rx.load(), s.credit_stalls.load(),
                           s.sendsm.load(), s.cancels.load(), s.aborts.load() ? "true" : "false");
        first = false;
    }
    return out + "]";
}

}  // namespace sdx::shmstats
