// The option table (conf/options.def) as C++: identifiers, metadata and value parsing.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sdx::conf {

enum class Type { Bool, Int, Size, Duration, Enum, String, List };

enum class Opt : int {
#define SDX_OPTION(name, type, def, range, summary, doc) name,
#include "conf/options.def"
#undef SDX_OPTION
};

struct OptionInfo {
    std::string_view name;
    Type type;
    std::string_view default_text;
    std::string_view range;  // "min..max", "a|b|c", or allowed list items
    std::string_view summary;
    std::string_view doc;
};

inline constexpr std::array kOptions = {
#define SDX_OPTION(name, type, def, range, summary, doc) OptionInfo{#name, Type::type, def, range, summary, doc},
#include "conf/options.def"
#undef SDX_OPTION
};

inline constexpr std::size_t kOptionCount = kOptions.size();

inline const OptionInfo& info(Opt o) { return kOptions[static_cast<std::size_t>(o)]; }

std::optional<Opt> find_option(std::string_view name);
// "spin_us" -> "SDX_SPIN_US"
std::string env_name(std::string_view option_name);
// The option name closest to a misspelt one (edit distance <= 3), or empty.
std::string_view closest_option(std::string_view name);
std::string_view type_name(Type t);

// A parsed value. Bool/Int/Size/Duration(ns)/Enum(index) use `number`; String/List use `text`.
struct Value {
    std::int64_t number = 0;
    std::string text;
    bool operator==(const Value&) const = default;
};

// Parses `text` as option `o`'s type and checks its range. On failure returns nullopt and puts a
// description of what was expected into `expected` (e.g. "a size between 4K and 16M, like 64K").
std::optional<Value> parse_value(Opt o, std::string_view text, std::string& expected);
// Canonical text of a value, e.g. 65536 -> "64K", 50000ns -> "50us".
std::string format_value(Opt o, const Value& v);

// Enum helpers: the choice text of an enum value.
std::string_view enum_choice(Opt o, std::int64_t index);

}  // namespace sdx::conf
