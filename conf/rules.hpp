// `use` rules: which sockets sdx accelerates.  In the spirit of libsdp.conf / libvma.conf:
//
//   use <sdx|tcp|both> <server|client|*> <program glob> <addr[/prefix]|*>:<port[-port]|*>
//
// First match wins.  IPv6 addresses go in brackets: [::1]:80, [fd00::/8]:*.  An IPv4 rule also
// matches the IPv4-mapped form (::ffff:a.b.c.d) that dual-stack AF_INET6 sockets see.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sdx::conf {

enum class Use { Sdx, Tcp, Both };
enum class Role { Any, Server, Client };

std::string_view use_name(Use u);
std::string_view role_name(Role r);

// An address in IPv6 form (IPv4 as ::ffff:a.b.c.d) plus a port.
struct Endpoint {
    std::array<std::uint8_t, 16> addr{};
    std::uint16_t port = 0;
};
// Converts AF_INET/AF_INET6 socket addresses; nullopt for anything else.
std::optional<Endpoint> endpoint_of(const sockaddr* sa, socklen_t len);

struct Rule {
    Use use = Use::Both;
    Role role = Role::Any;
    std::string program = "*";             // fnmatch glob against the program's short name
    bool any_addr = true;
    std::array<std::uint8_t, 16> addr{};   // IPv6 form
    unsigned prefix = 128;                 // in IPv6 bits (an IPv4 /8 is stored as /104)
    std::uint16_t port_lo = 0, port_hi = 65535;
    std::string text;                      // the rule as written
    std::string source;                    // "file:line" for messages

    bool matches(Role r, std::string_view prog, const Endpoint& ep) const;
};

struct RuleError {
    std::size_t column = 0;   // 1-based column within the line
    std::string found;
    std::string expected;
};

// Parses one rule line (it must start with "use").  Columns in errors count from the line start.
std::variant<Rule, RuleError> parse_rule(std::string_view line);

// First matching rule's decision, or nullopt when none matches.
std::optional<Use> decide(const std::vector<Rule>& rules, Role role, std::string_view program, const Endpoint& ep);

}  // namespace sdx::conf
