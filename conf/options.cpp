#include "conf/options.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <charconv>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "conf/text.hpp"

namespace sdx::conf {
namespace {

struct Unit {
    std::string_view suffix;
    std::int64_t factor;
};

// Longest suffixes first so "ms" is not read as "s".
constexpr Unit kSizeUnits[] = {{"KiB", 1LL << 10}, {"MiB", 1LL << 20}, {"GiB", 1LL << 30}, {"TiB", 1LL << 40},
                               {"KB", 1LL << 10},  {"MB", 1LL << 20},  {"GB", 1LL << 30},  {"TB", 1LL << 40},
                               {"K", 1LL << 10},   {"M", 1LL << 20},   {"G", 1LL << 30},   {"T", 1LL << 40},
                               {"B", 1}};
constexpr Unit kTimeUnits[] = {{"ns", 1}, {"us", 1000}, {"ms", 1000000}, {"s", 1000000000}};

bool iequal(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return (x | 0x20) == (y | 0x20);
           });
}

std::optional<std::int64_t> parse_integer(std::string_view s) {
    std::int64_t v = 0;
    if (s.empty()) return std::nullopt;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

// "<digits><unit>" with a unit from `units`; a bare number is multiplied by `bare_factor`.
std::optional<std::int64_t> parse_scaled(std::string_view s, std::span<const Unit> units, std::int64_t bare_factor) {
    std::size_t digits = 0;
    while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
    auto number = parse_integer(s.substr(0, digits));
    if (!number) return std::nullopt;
    std::string_view suffix = s.substr(digits);
    std::int64_t factor = bare_factor;
    if (!suffix.empty()) {
        auto it = std::find_if(std::begin(units), std::end(units),
                               [&](const Unit& u) { return iequal(u.suffix, suffix); });
        if (it == std::end(units)) return std::nullopt;
        factor = it->factor;
    }
    if (*number > INT64_MAX / factor) return std::nullopt;
    return *number * factor;
}

std::string format_scaled(std::int64_t v, std::span<const Unit> units, std::string_view bare_suffix) {
    // Largest unit that divides exactly.
    for (auto it = units.rbegin(); it != units.rend(); ++it) {
        if (it->factor > 1 && v != 0 && v % it->factor == 0) return fmt::format("{}{}", v / it->factor, it->suffix);
    }
    return fmt::format("{}{}", v, bare_suffix);
}

// Units used for output: the short forms only.
constexpr Unit kSizeOut[] = {{"K", 1LL << 10}, {"M", 1LL << 20}, {"G", 1LL << 30}, {"T", 1LL << 40}};

std::optional<std::int64_t> parse_number(Type t, std::string_view s) {
    switch (t) {
    case Type::Int: return parse_integer(s);
    case Type::Size: return parse_scaled(s, kSizeUnits, 1);
    case Type::Duration: return parse_scaled(s, kTimeUnits, 1000);
    default: return std::nullopt;
    }
}

std::string format_number(Type t, std::int64_t v) {
    switch (t) {
    case Type::Size: return format_scaled(v, kSizeOut, "");
    case Type::Duration: return v == 0 ? std::string("0") : format_scaled(v, kTimeUnits, "ns");
    default: return fmt::format("{}", v);
    }
}

std::string_view type_example(Type t) {
    switch (t) {
    case Type::Size: return ", like 64K or 1M";
    case Type::Duration: return ", like 50us, 200ms or 5s";
    default: return "";
    }
}

std::optional<std::int64_t> parse_bool(std::string_view s) {
    for (auto yes : {"true", "yes", "on", "1"})
        if (iequal(s, yes)) return 1;
    for (auto no : {"false", "no", "off", "0"})
        if (iequal(s, no)) return 0;
    return std::nullopt;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t sub = prev[j - 1] + ((a[i - 1] | 0x20) == (b[j - 1] | 0x20) ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

}  // namespace

std::optional<Opt> find_option(std::string_view name) {
    for (std::size_t i = 0; i < kOptionCount; ++i)
        if (kOptions[i].name == name) return static_cast<Opt>(i);
    return std::nullopt;
}

std::string env_name(std::string_view option_name) {
    std::string s = "SDX_";
    for (char c : option_name) s += static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    return s;
}

std::string_view closest_option(std::string_view name) {
    std::string_view best;
    std::size_t best_d = 4;
    for (const auto& o : kOptions) {
        std::size_t d = edit_distance(name, o.name);
        if (d < best_d) best_d = d, best = o.name;
    }
    return best;
}

std::string_view type_name(Type t) {
    switch (t) {
    case Type::Bool: return "bool";
    case Type::Int: return "integer";
    case Type::Size: return "size";
    case Type::Duration: return "duration";
    case Type::Enum: return "choice";
    case Type::String: return "string";
    case Type::List: return "list";
    }
    return "?";
}

std::string_view enum_choice(Opt o, std::int64_t index) {
    auto choices = split(info(o).range, '|');
    return index >= 0 && static_cast<std::size_t>(index) < choices.size() ? choices[index] : std::string_view{};
}

std::optional<Value> parse_value(Opt o, std::string_view text, std::string& expected) {
    const OptionInfo& oi = info(o);
    switch (oi.type) {
    case Type::Bool:
        if (auto b = parse_bool(text)) return Value{*b, {}};
        expected = "true or false";
        return std::nullopt;
    case Type::Int:
    case Type::Size:
    case Type::Duration: {
        auto bounds = split(oi.range, '.');  // "min..max" -> {min, "", max}
        std::int64_t lo = *parse_number(oi.type, bounds.front());
        std::int64_t hi = *parse_number(oi.type, bounds.back());
        std::string article = oi.type == Type::Int ? "an" : "a";
        expected = fmt::format("{} {} between {} and {}{}", article, type_name(oi.type), bounds.front(),
                               bounds.back(), type_example(oi.type));
        auto v = parse_number(oi.type, text);
        if (!v || *v < lo || *v > hi) return std::nullopt;
        return Value{*v, {}};
    }
    case Type::Enum: {
        auto choices = split(oi.range, '|');
        for (std::size_t i = 0; i < choices.size(); ++i)
            if (choices[i] == text) return Value{static_cast<std::int64_t>(i), {}};
        expected = fmt::format("one of {}", oi.range);
        return std::nullopt;
    }
    case Type::String:
        if (o == Opt::log || o == Opt::stats_file) {
            if (text.empty()) {
                expected = o == Opt::log ? "stderr, syslog or a file path" : "a file path";
                return std::nullopt;
            }
        }
        return Value{0, std::string(text)};
    case Type::List: {
        auto patterns = split(oi.range, '|');
        std::string canonical;
        expected = fmt::format("a comma-separated list of {}", oi.range);
        auto items = split(text, ',');
        for (auto raw : items) {
            std::string item(trim(raw));
            bool ok = !item.empty() && std::any_of(patterns.begin(), patterns.end(), [&](std::string_view p) {
                return fnmatch(std::string(p).c_str(), item.c_str(), 0) == 0;
            });
            if (!ok) return std::nullopt;
            if (!canonical.empty()) canonical += ',';
            canonical += item;
        }
        return Value{0, canonical};
    }
    }
    return std::nullopt;
}

std::string format_value(Opt o, const Value& v) {
    const OptionInfo& oi = info(o);
    switch (oi.type) {
    case Type::Bool: return v.number ? "true" : "false";
    case Type::Int:
    case Type::Size:
    case Type::Duration: return format_number(oi.type, v.number);
    case Type::Enum: return std::string(enum_choice(o, v.number));
    case Type::String:
    case Type::List: return v.text;
    }
    return {};
}

}  // namespace sdx::conf
