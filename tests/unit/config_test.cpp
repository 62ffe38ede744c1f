#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "conf/config.hpp"

using namespace sdx::conf;

namespace {

std::optional<Diagnostic> parse(std::string_view text, std::vector<Setting>* out = nullptr) {
    std::vector<Setting> s;
    std::vector<Rule> r;
    auto d = parse_config_text("t.conf", text, s, r);
    if (out) *out = s;
    return d;
}

std::string temp_file(const std::string& text) {
    char name[] = "/tmp/sdx-conf-test-XXXXXX";
    int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    FILE* f = fdopen(fd, "w");
    fputs(text.c_str(), f);
    fclose(f);
    return name;
}

}  // namespace

TEST(ConfigFile, SettingsCommentsAndRules) {
    std::vector<Setting> s;
    std::vector<Rule> r;
    auto d = parse_config_text("t.conf",
                               "# comment\n"
                               "\n"
                               "  spin = 10us   # trailing comment\n"
                               "log = \"/var/log/sdx-%p.log\"\r\n"
                               "use tcp client * 10.0.0.0/8:*\n",
                               s, r);
    ASSERT_FALSE(d) << d->message();
    ASSERT_EQ(s.size(), 2u);
    EXPECT_EQ(s[0].opt, Opt::spin);
    EXPECT_EQ(s[0].value.number, 10000);
    EXPECT_EQ(s[0].source.where, "t.conf:3");
    EXPECT_EQ(s[1].value.text, "/var/log/sdx-%p.log");
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].source, "t.conf:5");
}

TEST(ConfigFile, UnknownOptionNamesLineColumnAndSuggestion) {
    auto d = parse("spin = 1us\n   spinn = 3\n");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->line, 2u);
    EXPECT_EQ(d->column, 4u);
    EXPECT_EQ(d->found, "spinn");
    EXPECT_EQ(d->message(), "t.conf:2:4: found 'spinn', expected an option name; did you mean 'spin'?");
}

TEST(ConfigFile, BadValuePointsAtTheValue) {
    auto d = parse("credits =   100000\n");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->line, 1u);
    EXPECT_EQ(d->column, 13u);
    EXPECT_EQ(d->found, "100000");
    EXPECT_NE(d->expected.find("between 2 and 4096"), std::string::npos) << d->expected;
}

TEST(ConfigFile, MissingValueAndMissingEquals) {
    auto d = parse("spin =\n");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->found, "end of line");
    EXPECT_EQ(d->column, 7u);
    d = parse("\n\nspin 10us\n");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->line, 3u);
    EXPECT_EQ(d->column, 1u);
    EXPECT_EQ(d->expected, "'name = value' or a 'use' rule");
    d = parse(" = 3\n");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->column, 2u);
}

TEST(ConfigFile, BadRuleColumn) {
    auto d = parse("use sdx servr * *:80\n");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->column, 9u);
    EXPECT_EQ(d->found, "servr");
    EXPECT_EQ(d->expected, "server, client or *");
}

TEST(ConfigFile, BinaryGarbageIsAnErrorNotACrash) {
    std::string junk("\x01\x02\xff=\xfe\n\0\0use", 11);
    auto d = parse(junk);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->line, 1u);
}

TEST(ConfigFile, MissingFile) {
    std::vector<Setting> s;
    std::vector<Rule> r;
    EXPECT_FALSE(parse_config_file("/nonexistent/sdx.conf", false, s, r));
    auto d = parse_config_file("/nonexistent/sdx.conf", true, s, r);
    ASSERT_TRUE(d);
    EXPECT_NE(d->message().find("cannot open"), std::string::npos);
}

TEST(Layering, DefaultsProfileFileEnvFlags) {
    std::string path = temp_file("profile = latency\nspin = 7us\ncredits = 8\nbuf_size = 8K\n");
    std::string e1 = "SDX_CREDITS=9", e2 = "SDX_BUF_SIZE=16K", e3 = "HOME=/root";
    char* env[] = {e1.data(), e2.data(), e3.data(), nullptr};
    LoadInputs in;
    in.environ = env;
    in.config_path = path;
    in.flags = {{"buf_size", "32K"}};
    auto r = load(in);
    ASSERT_TRUE(std::holds_alternative<Config>(r)) << std::get<Diagnostic>(r).message();
    const auto& c = std::get<Config>(r);
    EXPECT_EQ(c.number(Opt::spin), 7000);  // file beats profile
    EXPECT_EQ(c.source(Opt::spin).kind, Source::File);
    EXPECT_EQ(c.source(Opt::spin).where, path + ":2");
    EXPECT_EQ(c.number(Opt::send_zcopy_threshold), 256 * 1024);  // from the latency profile
    EXPECT_EQ(c.source(Opt::send_zcopy_threshold).describe(), "profile latency");
    EXPECT_EQ(c.number(Opt::credits), 9);  // env beats file
    EXPECT_EQ(c.source(Opt::credits).describe(), "env SDX_CREDITS");
    EXPECT_EQ(c.number(Opt::buf_size), 32 * 1024);  // flag beats env
    EXPECT_EQ(c.source(Opt::buf_size).kind, Source::Flag);
    EXPECT_EQ(c.number(Opt::mr_cache_max), 256ll << 20);  // default
    EXPECT_EQ(c.file, path);
    std::remove(path.c_str());
}

TEST(Layering, ProfileFlagOverridesEnvProfile) {
    std::string e1 = "SDX_PROFILE=safe";
    char* env[] = {e1.data(), nullptr};
    LoadInputs in;
    in.environ = env;
    in.config_path = "";
    in.profile_flag = "throughput";
    auto r = load(in);
    ASSERT_TRUE(std::holds_alternative<Config>(r));
    const auto& c = std::get<Config>(r);
    EXPECT_EQ(c.number(Opt::buf_size), 256 * 1024);
    EXPECT_EQ(c.number(Opt::spin), 50000);  // safe's spin=0 is not applied
}

TEST(Layering, BadEnvironmentVariables) {
    for (auto [var, needle] : std::vector<std::pair<std::string, std::string>>{
             {"SDX_SPINN=3", "did you mean 'SDX_SPIN'"},
             {"SDX_SPIN=fast", "found 'fast', expected a duration"},
             {"SDX_EXEC=sometimes", "expected one of inherit|keep|drop"}}) {
        char* env[] = {var.data(), nullptr};
        LoadInputs in;
        in.environ = env;
        in.config_path = "";
        auto r = load(in);
        ASSERT_TRUE(std::holds_alternative<Diagnostic>(r)) << var;
        EXPECT_NE(std::get<Diagnostic>(r).message().find(needle), std::string::npos) << std::get<Diagnostic>(r).message();
    }
}

TEST(Layering, SdxConfigVariableMustExist) {
    std::string e1 = "SDX_CONFIG=/nonexistent/x.conf";
    char* env[] = {e1.data(), nullptr};
    LoadInputs in;
    in.environ = env;
    auto r = load(in);
    ASSERT_TRUE(std::holds_alternative<Diagnostic>(r));
    EXPECT_EQ(std::get<Diagnostic>(r).where, "/nonexistent/x.conf");
}

TEST(Layering, BadFlag) {
    LoadInputs in;
    in.config_path = "";
    in.flags = {{"credits", "1"}};
    auto r = load(in);
    ASSERT_TRUE(std::holds_alternative<Diagnostic>(r));
    EXPECT_EQ(std::get<Diagnostic>(r).message(), "-o credits=1: found '1', expected an integer between 2 and 4096");
}
