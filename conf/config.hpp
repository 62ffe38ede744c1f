// Effective configuration: built-in defaults < profile < config file < SDX_* environment < `sdx run`
// flags.  Every value remembers where it came from, for `sdx config` and error messages.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "conf/options.hpp"
#include "conf/rules.hpp"

namespace sdx::conf {

inline constexpr const char* kDefaultConfigPath = "/etc/sdx.conf";
inline constexpr const char* kConfigEnv = "SDX_CONFIG";

struct Source {
    enum Kind { Default, Profile, File, Env, Flag } kind = Default;
    std::string where;  // profile name, "file:line", variable name, or flag text
    std::string describe() const;
};

// A problem in the input: where, what was found, what was expected.
struct Diagnostic {
    std::string where;     // file path, or the variable / flag name
    std::size_t line = 0;  // 0 when not in a file
    std::size_t column = 0;
    std::string found;
    std::string expected;
    std::string message() const;  // "FILE:LINE:COL: found 'X', expected Y"
};

struct Setting {
    Opt opt;
    Value value;
    Source source;
};

class Config {
public:
    Config();  // built-in defaults

    const Value& get(Opt o) const { return values_[index(o)]; }
    std::int64_t number(Opt o) const { return get(o).number; }
    bool flag(Opt o) const { return get(o).number != 0; }
    const std::string& text(Opt o) const { return get(o).text; }
    const Source& source(Opt o) const { return sources_[index(o)]; }
    void set(const Setting& s);

    std::vector<Rule> rules;
    std::string file;  // the config file that was read, empty if none

private:
    static std::size_t index(Opt o) { return static_cast<std::size_t>(o); }
    std::array<Value, kOptionCount> values_;
    std::array<Source, kOptionCount> sources_;
};

// Settings a profile applies (empty for "default").  Fails only for an unknown profile name.
std::vector<Setting> profile_settings(std::string_view profile);
std::vector<std::string_view> profile_names();
// Problems in conf/profiles.def (unknown profile, bad value); empty when the table is sound.
std::vector<std::string> profile_table_errors();

// Parses a config file's text.  Appends its settings and rules; returns the first error.
std::optional<Diagnostic> parse_config_text(std::string_view path, std::string_view text,
                                            std::vector<Setting>& settings, std::vector<Rule>& rules);
// Reads and parses a file; a missing file is an error only when `must_exist`.
std::optional<Diagnostic> parse_config_file(const std::string& path, bool must_exist,
                                            std::vector<Setting>& settings, std::vector<Rule>& rules);

// One SDX_* variable (or `sdx run -o name=value`) as a setting.
std::variant<Setting, Diagnostic> parse_assignment(std::string_view name, std::string_view value, Source source);

struct LoadInputs {
    char** environ = nullptr;                                   // SDX_* variables and SDX_CONFIG
    std::vector<std::pair<std::string, std::string>> flags;     // name=value from `sdx run -o`
    std::optional<std::string> profile_flag;                    // `sdx run -p`
    std::optional<std::string> config_path;                     // overrides SDX_CONFIG / default
};

// The whole layering.  The first problem found is returned instead of a config.
std::variant<Config, Diagnostic> load(const LoadInputs& in);

}  // namespace sdx::conf
