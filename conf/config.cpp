#include "conf/config.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "conf/text.hpp"

namespace sdx::conf {
namespace {

struct ProfileValue {
    std::string_view profile;
    Opt opt;
    std::string_view value;
};

constexpr ProfileValue kProfileValues[] = {
#define SDX_PROFILE_VALUE(profile, option, value) {#profile, Opt::option, value},
#include "conf/profiles.def"
#undef SDX_PROFILE_VALUE
};

// Variables that are not options but belong to sdx.
constexpr std::string_view kOtherVariables[] = {kConfigEnv};

// Cuts a trailing "# comment" (a '#' at the start or after white space).
std::string_view strip_comment(std::string_view line) {
    for (std::size_t i = 0; i < line.size(); ++i)
        if (line[i] == '#' && (i == 0 || kSpace.find(line[i - 1]) != std::string_view::npos)) return line.substr(0, i);
    return line;
}

std::string unknown_option_hint(std::string_view name, bool as_env) {
    auto close = closest_option(name);
    if (close.empty()) return as_env ? "an SDX_* option variable (see `sdx --help`)" : "an option name (see `sdx --help`)";
    return fmt::format("an option name; did you mean '{}'?", as_env ? env_name(close) : std::string(close));
}

}  // namespace

std::string Source::describe() const {
    switch (kind) {
    case Default: return "default";
    case Profile: return fmt::format("profile {}", where);
    case File: return where;
    case Env: return fmt::format("env {}", where);
    case Flag: return fmt::format("flag {}", where);
    }
    return "?";
}

std::string Diagnostic::message() const {
    std::string loc = line ? fmt::format("{}:{}:{}", where, line, column) : where;
    if (found.empty()) return fmt::format("{}: {}", loc, expected);
    return fmt::format("{}: found '{}', expected {}", loc, found, expected);
}

Config::Config() {
    for (std::size_t i = 0; i < kOptionCount; ++i) {
        std::string expected;
        auto v = parse_value(static_cast<Opt>(i), kOptions[i].default_text, expected);
        values_[i] = v ? *v : Value{};  // a bad default is caught by the unit tests
    }
}

void Config::set(const Setting& s) {
    values_[index(s.opt)] = s.value;
    sources_[index(s.opt)] = s.source;
}

std::vector<std::string_view> profile_names() {
    auto names = split(info(Opt::profile).range, '|');
    return {names.begin(), names.end()};
}

std::vector<std::string> profile_table_errors() {
    std::vector<std::string> errors;
    auto names = profile_names();
    for (const auto& pv : kProfileValues) {
        if (std::find(names.begin(), names.end(), pv.profile) == names.end())
            errors.push_back(fmt::format("unknown profile {}", pv.profile));
        std::string expected;
        if (!parse_value(pv.opt, pv.value, expected))
            errors.push_back(fmt::format("{}: {}={} is not {}", pv.profile, info(pv.opt).name, pv.value, expected));
    }
    return errors;
}

std::vector<Setting> profile_settings(std::string_view profile) {
    std::vector<Setting> out;
    for (const auto& pv : kProfileValues) {
        if (pv.profile != profile) continue;
        std::string expected;
        if (auto v = parse_value(pv.opt, pv.value, expected)) out.push_back({pv.opt, *v, {Source::Profile, std::string(profile)}});
    }
    return out;
}

std::variant<Setting, Diagnostic> parse_assignment(std::string_view name, std::string_view value, Source source) {
    bool env = source.kind == Source::Env;
    std::string key(name);
    if (env) {
        // SDX_SPIN -> spin
        key = std::string(name.substr(4));
        for (auto& c : key) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    auto opt = find_option(key);
    if (!opt) return Diagnostic{std::string(name), 0, 0, std::string(name), unknown_option_hint(key, env)};
    std::string expected;
    auto v = parse_value(*opt, trim(value), expected);
    if (!v) return Diagnostic{fmt::format("{}={}", name, value), 0, 0, std::string(trim(value)), expected};
    return Setting{*opt, *v, std::move(source)};
}

std::optional<Diagnostic> parse_config_text(std::string_view path, std::string_view text,
                                            std::vector<Setting>& settings, std::vector<Rule>& rules) {
    std::size_t line_no = 0;
    for (std::string_view raw : split(text, '\n')) {
        ++line_no;
        std::string_view line = strip_comment(raw);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        std::string_view body = trim(line);
        if (body.empty()) continue;
        std::size_t body_col = line.find_first_not_of(kSpace) + 1;
        std::string where = fmt::format("{}:{}", path, line_no);

        if (body.starts_with("use") && (body.size() == 3 || kSpace.find(body[3]) != std::string_view::npos)) {
            auto parsed = parse_rule(line);
            if (auto* err = std::get_if<RuleError>(&parsed))
                return Diagnostic{std::string(path), line_no, err->column, err->found, err->expected};
            auto rule = std::get<Rule>(std::move(parsed));
            rule.source = where;
            rules.push_back(std::move(rule));
            continue;
        }

        auto eq = line.find('=');
        if (eq == std::string_view::npos) {
            auto word_end = body.find_first_of(kSpace);
            return Diagnostic{std::string(path), line_no, body_col, std::string(body.substr(0, word_end)),
                              "'name = value' or a 'use' rule"};
        }
        std::string_view name = trim(line.substr(0, eq));
        if (name.empty()) return Diagnostic{std::string(path), line_no, eq + 1, "=", "an option name before '='"};
        auto opt = find_option(name);
        if (!opt) return Diagnostic{std::string(path), line_no, body_col, std::string(name), unknown_option_hint(name, false)};
        std::string_view after = line.substr(eq + 1);
        std::string_view value = trim(after);
        std::size_t value_col = eq + 2 + (value.empty() ? after.size() : after.find_first_not_of(kSpace));
        if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
        std::string expected;
        auto v = parse_value(*opt, value, expected);
        if (!v)
            return Diagnostic{std::string(path), line_no, value_col, value.empty() ? "end of line" : std::string(value),
                              fmt::format("{} for '{}'", expected, name)};
        settings.push_back({*opt, *v, {Source::File, where}});
    }
    return std::nullopt;
}

std::optional<Diagnostic> parse_config_file(const std::string& path, bool must_exist, std::vector<Setting>& settings,
                                            std::vector<Rule>& rules) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && !must_exist) return std::nullopt;
        return Diagnostic{path, 0, 0, "", fmt::format("cannot open: {}", std::strerror(errno))};
    }
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            ::close(fd);
            return Diagnostic{path, 0, 0, "", fmt::format("cannot read: {}", std::strerror(e))};
        }
        if (n == 0) break;
        text.append(buf, static_cast<std::size_t>(n));
        if (text.size() > (1u << 20)) {
            ::close(fd);
            return Diagnostic{path, 0, 0, "", "a config file smaller than 1 MiB"};
        }
    }
    ::close(fd);
    return parse_config_text(path, text, settings, rules);
}

std::variant<Config, Diagnostic> load(const LoadInputs& in) {
    std::vector<Setting> env_settings, flag_settings, file_settings;
    std::vector<Rule> rules;
    std::optional<std::string> env_config;

    for (char** e = in.environ; e && *e; ++e) {
        std::string_view kv(*e);
        if (!kv.starts_with("SDX_")) continue;
        auto eq = kv.find('=');
        std::string_view name = kv.substr(0, eq), value = eq == std::string_view::npos ? "" : kv.substr(eq + 1);
        if (name == kConfigEnv) {
            env_config = std::string(value);
            continue;
        }
        bool other = false;
        for (auto o : kOtherVariables) other |= name == o;
        if (other) continue;
        auto r = parse_assignment(name, value, {Source::Env, std::string(name)});
        if (auto* d = std::get_if<Diagnostic>(&r)) return *d;
        env_settings.push_back(std::get<Setting>(std::move(r)));
    }
    for (const auto& [name, value] : in.flags) {
        auto r = parse_assignment(name, value, {Source::Flag, fmt::format("-o {}={}", name, value)});
        if (auto* d = std::get_if<Diagnostic>(&r)) {
            d->where = fmt::format("-o {}={}", name, value);
            return *d;
        }
        flag_settings.push_back(std::get<Setting>(std::move(r)));
    }

    Config cfg;
    std::string path = in.config_path ? *in.config_path : env_config ? *env_config : kDefaultConfigPath;
    bool explicit_path = in.config_path || env_config;
    if (!path.empty()) {
        if (auto d = parse_config_file(path, explicit_path, file_settings, rules)) return *d;
        if (::access(path.c_str(), F_OK) == 0) cfg.file = path;
    }

    // The profile is chosen by the strongest source that names one.
    std::string profile = "default";
    auto pick = [&](const std::vector<Setting>& layer) {
        for (const auto& s : layer)
            if (s.opt == Opt::profile) profile = std::string(enum_choice(Opt::profile, s.value.number));
    };
    pick(file_settings);
    pick(env_settings);
    pick(flag_settings);
    if (in.profile_flag) {
        std::string expected;
        auto v = parse_value(Opt::profile, *in.profile_flag, expected);
        if (!v) return Diagnostic{"-p", 0, 0, *in.profile_flag, expected};
        profile = *in.profile_flag;
        flag_settings.push_back({Opt::profile, *v, {Source::Flag, "-p " + profile}});
    }

    for (const auto& layer : {profile_settings(profile), file_settings, env_settings, flag_settings})
        for (const auto& s : layer) cfg.set(s);
    cfg.rules = std::move(rules);
    return cfg;
}

}  // namespace sdx::conf
