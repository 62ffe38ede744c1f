#include <gtest/gtest.h>

#include "conf/config.hpp"
#include "conf/options.hpp"

using namespace sdx::conf;

TEST(Options, EveryDefaultParsesAndRoundTrips) {
    for (std::size_t i = 0; i < kOptionCount; ++i) {
        auto o = static_cast<Opt>(i);
        std::string expected;
        auto v = parse_value(o, info(o).default_text, expected);
        ASSERT_TRUE(v) << info(o).name << ": default '" << info(o).default_text << "' is not " << expected;
        auto again = parse_value(o, format_value(o, *v), expected);
        ASSERT_TRUE(again) << info(o).name;
        EXPECT_EQ(*again, *v) << info(o).name;
        EXPECT_FALSE(info(o).summary.empty()) << info(o).name;
    }
}

TEST(Options, EveryProfileValueIsValid) {
    EXPECT_EQ(profile_table_errors(), std::vector<std::string>{});
    for (auto name : profile_names()) {
        auto settings = profile_settings(name);
        if (name != "default") {
            EXPECT_FALSE(settings.empty()) << name;
        }

        LoadInputs in;
        in.profile_flag = std::string(name);
        in.config_path = "";
        auto r = load(in);
        ASSERT_TRUE(std::holds_alternative<Config>(r)) << name;
    }
}

TEST(Options, Sizes) {
    std::string e;
    EXPECT_EQ(parse_value(Opt::buf_size, "64K", e)->number, 65536);
    EXPECT_EQ(parse_value(Opt::buf_size, "64KiB", e)->number, 65536);
    EXPECT_EQ(parse_value(Opt::buf_size, "1m", e)->number, 1 << 20);
    EXPECT_EQ(parse_value(Opt::buf_size, "8192", e)->number, 8192);
    EXPECT_FALSE(parse_value(Opt::buf_size, "1K", e));  // below the 4K minimum
    EXPECT_NE(e.find("between 4K and 16M"), std::string::npos) << e;
    EXPECT_FALSE(parse_value(Opt::buf_size, "64X", e));
    EXPECT_FALSE(parse_value(Opt::buf_size, "", e));
    EXPECT_FALSE(parse_value(Opt::buf_size, "-4K", e));
    EXPECT_FALSE(parse_value(Opt::mr_cache_max, "99999999999999999999", e));
    EXPECT_EQ(format_value(Opt::buf_size, {65536, {}}), "64K");
    EXPECT_EQ(format_value(Opt::buf_size, {65537, {}}), "65537");
}

TEST(Options, Durations) {
    std::string e;
    EXPECT_EQ(parse_value(Opt::spin, "50us", e)->number, 50000);
    EXPECT_EQ(parse_value(Opt::spin, "50", e)->number, 50000);  // bare number: microseconds
    EXPECT_EQ(parse_value(Opt::spin, "1ms", e)->number, 1000000);
    EXPECT_EQ(parse_value(Opt::spin, "1s", e)->number, 1000000000);
    EXPECT_FALSE(parse_value(Opt::spin, "2s", e));
    EXPECT_FALSE(parse_value(Opt::spin, "5 minutes", e));
    EXPECT_EQ(format_value(Opt::spin, {200000, {}}), "200us");
    EXPECT_EQ(format_value(Opt::cancel_timeout, {5000000000, {}}), "5s");
}

TEST(Options, BoolEnumList) {
    std::string e;
    EXPECT_EQ(parse_value(Opt::stats, "yes", e)->number, 1);
    EXPECT_EQ(parse_value(Opt::stats, "OFF", e)->number, 0);
    EXPECT_FALSE(parse_value(Opt::stats, "maybe", e));
    EXPECT_EQ(e, "true or false");
    EXPECT_EQ(parse_value(Opt::default_use, "tcp", e)->number, 1);
    EXPECT_FALSE(parse_value(Opt::default_use, "udp", e));
    EXPECT_EQ(e, "one of sdx|tcp|both");
    EXPECT_EQ(parse_value(Opt::transports, " shm , ofi:verbs;ofi_rxm ", e)->text, "shm,ofi:verbs;ofi_rxm");
    EXPECT_FALSE(parse_value(Opt::transports, "shm,,verbs", e));
    EXPECT_FALSE(parse_value(Opt::transports, "infiniband", e));
    EXPECT_FALSE(parse_value(Opt::log, "", e));
}

TEST(Options, NamesAndSuggestions) {
    EXPECT_EQ(env_name("send_zcopy_threshold"), "SDX_SEND_ZCOPY_THRESHOLD");
    EXPECT_EQ(closest_option("spinn"), "spin");
    EXPECT_EQ(closest_option("credit"), "credits");
    EXPECT_EQ(closest_option("completely_different"), "");
    EXPECT_TRUE(find_option("log_level"));
    EXPECT_FALSE(find_option("LOG_LEVEL"));
}
