// Small string helpers shared by the config parser, the rules and the launcher.
#pragma once

#include <string_view>
#include <vector>

namespace sdx::conf {

inline constexpr std::string_view kSpace = " \t\r\n";

inline std::string_view trim(std::string_view s) {
    auto b = s.find_first_not_of(kSpace);
    if (b == std::string_view::npos) return {};
    auto e = s.find_last_not_of(kSpace);
    return s.substr(b, e - b + 1);
}

// Splits on every `sep`; empty fields are kept ("a..b" on '.' gives "a", "", "b").
inline std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    for (;;) {
        auto pos = s.find(sep, start);
        out.push_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
        if (pos == std::string_view::npos) return out;
        start = pos + 1;
    }
}

}  // namespace sdx::conf
