#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "cli/commands.hpp"

extern char** environ;

namespace sdx::cli {

bool parse_config_flag(int argc, char** argv, int& i, ConfigFlags& flags) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view flag) -> std::string {
        if (a.size() > 2) return std::string(a.substr(2));  // -pNAME
        if (i + 1 >= argc) throw UsageError{fmt::format("{} needs an argument", flag)};
        return argv[++i];
    };
    if (a.starts_with("-p")) {
        flags.profile = value("-p");
    } else if (a.starts_with("-c")) {
        flags.config_file = value("-c");
    } else if (a.starts_with("-o")) {
        std::string kv = value("-o");
        auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0)
            throw UsageError{fmt::format("-o takes NAME=VALUE, found '{}'", kv)};
        flags.settings.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else {
        return false;
    }
    return true;
}

std::optional<conf::Config> load_config(const ConfigFlags& flags) {
    conf::LoadInputs in;
    in.environ = environ;
    in.flags = flags.settings;
    in.profile_flag = flags.profile;
    in.config_path = flags.config_file;
    auto r = conf::load(in);
    if (auto* d = std::get_if<conf::Diagnostic>(&r)) {
        fmt::print(stderr, "sdx: {}\n", d->message());
        return std::nullopt;
    }
    return std::get<conf::Config>(std::move(r));
}

}  // namespace sdx::cli
