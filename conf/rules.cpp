#include "conf/rules.hpp"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

#include "conf/text.hpp"

namespace sdx::conf {
namespace {

struct Token {
    std::string_view text;
    std::size_t column;  // 1-based
};

std::vector<Token> tokenize(std::string_view line) {
    std::vector<Token> out;
    std::size_t i = 0;
    while (i < line.size()) {
        if (kSpace.find(line[i]) != std::string_view::npos) {
            ++i;
            continue;
        }
        std::size_t start = i;
        while (i < line.size() && kSpace.find(line[i]) == std::string_view::npos) ++i;
        out.push_back({line.substr(start, i - start), start + 1});
    }
    return out;
}

std::optional<unsigned> parse_uint(std::string_view s, unsigned max) {
    unsigned v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v > max) return std::nullopt;
    return v;
}

constexpr std::array<std::uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::array<std::uint8_t, 16> mapped(const in_addr& a) {
    std::array<std::uint8_t, 16> out{};
    std::memcpy(out.data(), kMappedPrefix.data(), 12);
    std::memcpy(out.data() + 12, &a, 4);
    return out;
}

// "addr[/prefix]" (IPv4) or "[addr[/prefix]]" already stripped of brackets (IPv6).
std::optional<RuleError> parse_address(Rule& r, std::string_view text, bool v6, std::size_t column) {
    std::string_view addr = text, pfx;
    if (auto slash = text.find('/'); slash != std::string_view::npos) {
        addr = text.substr(0, slash);
        pfx = text.substr(slash + 1);
    }
    std::string a(addr);
    r.any_addr = false;
    if (v6) {
        in6_addr a6{};
        if (inet_pton(AF_INET6, a.c_str(), &a6) != 1)
            return RuleError{column, std::string(addr), "an IPv6 address such as ::1 or fd00::"};
        std::memcpy(r.addr.data(), &a6, 16);
        r.prefix = 128;
        if (!pfx.empty()) {
            auto p = parse_uint(pfx, 128);
            if (!p) return RuleError{column + addr.size() + 1, std::string(pfx), "an IPv6 prefix length 0..128"};
            r.prefix = *p;
        }
    } else {
        in_addr a4{};
        if (inet_pton(AF_INET, a.c_str(), &a4) != 1)
            return RuleError{column, std::string(addr),
                             "an IPv4 address such as 10.0.0.0/8, an IPv6 address in brackets, or *"};
        r.addr = mapped(a4);
        r.prefix = 128;
        if (!pfx.empty()) {
            auto p = parse_uint(pfx, 32);
            if (!p) return RuleError{column + addr.size() + 1, std::string(pfx), "an IPv4 prefix length 0..32"};
            r.prefix = 96 + *p;
        }
    }
    // Clear host bits so matching is a plain masked compare.
    for (unsigned bit = r.prefix; bit < 128; ++bit) r.addr[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
    return std::nullopt;
}

std::optional<RuleError> parse_ports(Rule& r, std::string_view text, std::size_t column) {
    if (text == "*") return std::nullopt;
    const char* expected = "a port, a port range like 8000-8100, or *";
    auto dash = text.find('-');
    auto lo = parse_uint(text.substr(0, dash), 65535);
    if (!lo) return RuleError{column, std::string(text), expected};
    unsigned hi = *lo;
    if (dash != std::string_view::npos) {
        auto h = parse_uint(text.substr(dash + 1), 65535);
        if (!h || *h < *lo) return RuleError{column, std::string(text), expected};
        hi = *h;
    }
    r.port_lo = static_cast<std::uint16_t>(*lo);
    r.port_hi = static_cast<std::uint16_t>(hi);
    return std::nullopt;
}

std::optional<RuleError> parse_endpoint(Rule& r, Token t) {
    std::string_view s = t.text;
    if (s == "*") return std::nullopt;
    std::string_view addr, port;
    std::size_t port_col;
    bool v6 = false;
    if (s.starts_with('[')) {
        auto close = s.find(']');
        if (close == std::string_view::npos)
            return RuleError{t.column, std::string(s), "']' closing the IPv6 address, as in [::1]:80"};
        addr = s.substr(1, close - 1);
        v6 = true;
        if (close + 1 >= s.size() || s[close + 1] != ':')
            return RuleError{t.column + close + 1, std::string(s.substr(close + 1)), "':' and a port after ']'"};
        port = s.substr(close + 2);
        port_col = t.column + close + 2;
    } else {
        auto colon = s.rfind(':');
        if (colon == std::string_view::npos)
            return RuleError{t.column, std::string(s), "<addr[/prefix]|*>:<port[-port]|*>, e.g. 10.0.0.0/8:* or *:6379"};
        if (s.find(':') != colon)
            return RuleError{t.column, std::string(s), "an IPv6 address in brackets, as in [::1]:80"};
        addr = s.substr(0, colon);
        port = s.substr(colon + 1);
        port_col = t.column + colon + 1;
    }
    if (addr != "*") {
        if (auto e = parse_address(r, addr, v6, t.column + (v6 ? 1 : 0))) return e;
    }
    return parse_ports(r, port, port_col);
}

}  // namespace

std::string_view use_name(Use u) {
    switch (u) {
    case Use::Sdx: return "sdx";
    case Use::Tcp: return "tcp";
    case Use::Both: return "both";
    }
    return "?";
}

std::string_view role_name(Role r) {
    switch (r) {
    case Role::Any: return "*";
    case Role::Server: return "server";
    case Role::Client: return "client";
    }
    return "?";
}

std::optional<Endpoint> endpoint_of(const sockaddr* sa, socklen_t len) {
    if (!sa) return std::nullopt;
    Endpoint ep;
    if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        ep.addr = mapped(in->sin_addr);
        ep.port = ntohs(in->sin_port);
        return ep;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        std::memcpy(ep.addr.data(), &in6->sin6_addr, 16);
        ep.port = ntohs(in6->sin6_port);
        return ep;
    }
    return std::nullopt;
}

bool Rule::matches(Role r, std::string_view prog, const Endpoint& ep) const {
    if (role != Role::Any && role != r) return false;
    if (ep.port < port_lo || ep.port > port_hi) return false;
    if (!any_addr) {
        unsigned full = prefix / 8, rest = prefix % 8;
        if (std::memcmp(ep.addr.data(), addr.data(), full) != 0) return false;
        if (rest) {
            auto mask = static_cast<std::uint8_t>(0xff00u >> rest);
            if ((ep.addr[full] & mask) != addr[full]) return false;
        }
    }
    if (program != "*") {
        std::string p(prog);
        if (fnmatch(program.c_str(), p.c_str(), 0) != 0) return false;
    }
    return true;
}

std::variant<Rule, RuleError> parse_rule(std::string_view line) {
    auto tokens = tokenize(line);
    static constexpr const char* kShape =
        "use <sdx|tcp|both> <server|client|*> <program glob> <addr[/prefix]|*>:<port[-port]|*>";
    Rule r;
    std::size_t end_col = line.size() + 1;
    auto missing = [&](const char* what) { return RuleError{end_col, "end of line", what}; };
    if (tokens.empty() || tokens[0].text != "use")
        return RuleError{tokens.empty() ? 1 : tokens[0].column, tokens.empty() ? "" : std::string(tokens[0].text), kShape};
    if (tokens.size() < 2) return missing("sdx, tcp or both");
    auto& u = tokens[1];
    if (u.text == "sdx") r.use = Use::Sdx;
    else if (u.text == "tcp") r.use = Use::Tcp;
    else if (u.text == "both") r.use = Use::Both;
    else return RuleError{u.column, std::string(u.text), "sdx, tcp or both"};
    if (tokens.size() < 3) return missing("server, client or *");
    auto& role = tokens[2];
    if (role.text == "server") r.role = Role::Server;
    else if (role.text == "client") r.role = Role::Client;
    else if (role.text == "*") r.role = Role::Any;
    else return RuleError{role.column, std::string(role.text), "server, client or *"};
    if (tokens.size() < 4) return missing("a program name glob, e.g. redis-* or *");
    r.program = std::string(tokens[3].text);
    if (tokens.size() < 5) return missing("<addr[/prefix]|*>:<port[-port]|*>, e.g. *:6379");
    if (auto e = parse_endpoint(r, tokens[4])) return *e;
    if (tokens.size() > 5) return RuleError{tokens[5].column, std::string(tokens[5].text), "end of line (a rule has 5 words)"};
    r.text = std::string(trim(line));
    return r;
}

std::optional<Use> decide(const std::vector<Rule>& rules, Role role, std::string_view program, const Endpoint& ep) {
    for (const auto& r : rules)
        if (r.matches(role, program, ep)) return r.use;
    return std::nullopt;
}

}  // namespace sdx::conf
