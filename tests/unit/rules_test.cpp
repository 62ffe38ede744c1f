#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "conf/rules.hpp"

using namespace sdx::conf;

namespace {

Rule rule(std::string_view text) {
    auto r = parse_rule(text);
    if (auto* e = std::get_if<RuleError>(&r)) ADD_FAILURE() << text << ": col " << e->column << " found " << e->found;
    return std::get_if<Rule>(&r) ? std::get<Rule>(r) : Rule{};
}

RuleError error(std::string_view text) {
    auto r = parse_rule(text);
    EXPECT_TRUE(std::holds_alternative<RuleError>(r)) << text;
    return std::holds_alternative<RuleError>(r) ? std::get<RuleError>(r) : RuleError{};
}

Endpoint v4(const char* a, std::uint16_t port) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(port);
    inet_pton(AF_INET, a, &in.sin_addr);
    return *endpoint_of(reinterpret_cast<sockaddr*>(&in), sizeof in);
}

Endpoint v6(const char* a, std::uint16_t port) {
    sockaddr_in6 in{};
    in.sin6_family = AF_INET6;
    in.sin6_port = htons(port);
    inet_pton(AF_INET6, a, &in.sin6_addr);
    return *endpoint_of(reinterpret_cast<sockaddr*>(&in), sizeof in);
}

}  // namespace

TEST(Rules, Cidr) {
    auto r = rule("use tcp * * 10.0.0.0/8:*");
    EXPECT_EQ(r.use, Use::Tcp);
    EXPECT_TRUE(r.matches(Role::Client, "x", v4("10.1.2.3", 80)));
    EXPECT_TRUE(r.matches(Role::Server, "x", v4("10.255.255.255", 1)));
    EXPECT_FALSE(r.matches(Role::Client, "x", v4("11.0.0.1", 80)));
    auto host = rule("use sdx * * 192.168.1.7:*");
    EXPECT_TRUE(host.matches(Role::Client, "x", v4("192.168.1.7", 9)));
    EXPECT_FALSE(host.matches(Role::Client, "x", v4("192.168.1.8", 9)));
    auto odd = rule("use sdx * * 172.16.0.0/12:*");
    EXPECT_TRUE(odd.matches(Role::Client, "x", v4("172.31.255.1", 9)));
    EXPECT_FALSE(odd.matches(Role::Client, "x", v4("172.32.0.1", 9)));
    auto all = rule("use sdx * * 0.0.0.0/0:*");
    EXPECT_TRUE(all.matches(Role::Client, "x", v4("8.8.8.8", 9)));
    EXPECT_FALSE(all.matches(Role::Client, "x", v6("2001:db8::1", 9)));  // IPv4 rules match IPv4 only
}

TEST(Rules, HostBitsInThePatternAreIgnored) {
    auto r = rule("use tcp * * 10.9.9.9/8:*");
    EXPECT_TRUE(r.matches(Role::Client, "x", v4("10.0.0.1", 1)));
}

TEST(Rules, Ports) {
    auto r = rule("use sdx * * *:8000-8100");
    EXPECT_TRUE(r.matches(Role::Client, "x", v4("1.2.3.4", 8000)));
    EXPECT_TRUE(r.matches(Role::Client, "x", v4("1.2.3.4", 8100)));
    EXPECT_FALSE(r.matches(Role::Client, "x", v4("1.2.3.4", 7999)));
    EXPECT_FALSE(r.matches(Role::Client, "x", v4("1.2.3.4", 8101)));
    auto one = rule("use sdx * * *:6379");
    EXPECT_TRUE(one.matches(Role::Client, "x", v6("::1", 6379)));
    EXPECT_FALSE(one.matches(Role::Client, "x", v6("::1", 6380)));
}

TEST(Rules, ProgramGlobAndRole) {
    auto r = rule("use sdx server redis-* *:*");
    EXPECT_TRUE(r.matches(Role::Server, "redis-server", v4("0.0.0.0", 6379)));
    EXPECT_FALSE(r.matches(Role::Client, "redis-server", v4("0.0.0.0", 6379)));
    EXPECT_FALSE(r.matches(Role::Server, "nginx", v4("0.0.0.0", 80)));
    auto q = rule("use sdx client iperf[23] *");
    EXPECT_TRUE(q.matches(Role::Client, "iperf3", v4("1.1.1.1", 5201)));
    EXPECT_FALSE(q.matches(Role::Client, "iperf", v4("1.1.1.1", 5201)));
}

TEST(Rules, Ipv6) {
    auto r = rule("use both * * [fd00::/8]:*");
    EXPECT_TRUE(r.matches(Role::Client, "x", v6("fd12:3456::1", 1)));
    EXPECT_FALSE(r.matches(Role::Client, "x", v6("fe80::1", 1)));
    auto lo = rule("use sdx * * [::1]:80");
    EXPECT_TRUE(lo.matches(Role::Client, "x", v6("::1", 80)));
    EXPECT_FALSE(lo.matches(Role::Client, "x", v4("127.0.0.1", 80)));
    auto odd = rule("use sdx * * [2001:db8:8000::/33]:*");
    EXPECT_TRUE(odd.matches(Role::Client, "x", v6("2001:db8:ffff::1", 1)));
    EXPECT_FALSE(odd.matches(Role::Client, "x", v6("2001:db8:7fff::1", 1)));
}

TEST(Rules, Ipv4RuleMatchesMappedAddressOfDualStackSocket) {
    auto r = rule("use tcp * * 127.0.0.0/8:*");
    EXPECT_TRUE(r.matches(Role::Server, "iperf3", v6("::ffff:127.0.0.1", 5201)));
    EXPECT_FALSE(r.matches(Role::Server, "iperf3", v6("::1", 5201)));
}

TEST(Rules, FirstMatchWins) {
    std::vector<Rule> rules = {rule("use tcp * * 10.0.0.0/8:*"), rule("use sdx * * *:*")};
    EXPECT_EQ(decide(rules, Role::Client, "x", v4("10.0.0.1", 1)), Use::Tcp);
    EXPECT_EQ(decide(rules, Role::Client, "x", v4("11.0.0.1", 1)), Use::Sdx);
    EXPECT_EQ(decide({}, Role::Client, "x", v4("11.0.0.1", 1)), std::nullopt);
}

TEST(Rules, Errors) {
    auto e = error("use fast * * *:*");
    EXPECT_EQ(e.column, 5u);
    EXPECT_EQ(e.expected, "sdx, tcp or both");
    e = error("use sdx * *");
    EXPECT_EQ(e.found, "end of line");
    EXPECT_EQ(e.column, 12u);
    e = error("use sdx * * 10.0.0.0/33:*");
    EXPECT_EQ(e.found, "33");
    EXPECT_EQ(e.column, 22u);
    e = error("use sdx * * 10.0.0.300:*");
    EXPECT_EQ(e.column, 13u);
    e = error("use sdx * * *:99999");
    EXPECT_EQ(e.column, 15u);
    e = error("use sdx * * *:90-80");
    EXPECT_EQ(e.found, "90-80");
    e = error("use sdx * * ::1:80");
    EXPECT_NE(e.expected.find("brackets"), std::string::npos);
    e = error("use sdx * * [::1:80");
    EXPECT_NE(e.expected.find("']'"), std::string::npos);
    e = error("use sdx * * [::1]80");
    e = error("use sdx * * [zz::1]:80");
    EXPECT_EQ(e.column, 14u);
    e = error("use sdx * * *:* extra");
    EXPECT_EQ(e.found, "extra");
    e = error("use sdx * * 10.0.0.1");
    EXPECT_EQ(e.column, 13u);
}

TEST(Rules, EndpointOfRejectsOtherFamilies) {
    sockaddr_storage ss{};
    ss.ss_family = AF_UNIX;
    EXPECT_FALSE(endpoint_of(reinterpret_cast<sockaddr*>(&ss), sizeof ss));
    sockaddr_in short_in{};
    short_in.sin_family = AF_INET;
    EXPECT_FALSE(endpoint_of(reinterpret_cast<sockaddr*>(&short_in), 4));
    EXPECT_FALSE(endpoint_of(nullptr, 0));
}
