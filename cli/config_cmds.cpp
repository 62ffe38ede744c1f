// `sdx config` and `sdx check-config`.
#include <unistd.h>

#include <cstdlib>

#include <fmt/format.h>

#include "cli/commands.hpp"

namespace sdx::cli {

int cmd_config(int argc, char** argv) {
    ConfigFlags flags;
    for (int i = 0; i < argc; ++i)
        if (!parse_config_flag(argc, argv, i, flags)) throw UsageError{fmt::format("unknown config option '{}'", argv[i])};
    auto cfg = load_config(flags);
    if (!cfg) return kExitUsage;
    fmt::print("# config file: {}\n", cfg->file.empty() ? "none" : cfg->file);
    std::size_t width = 0;
    for (const auto& o : conf::kOptions) width = std::max(width, o.name.size());
    for (std::size_t k = 0; k < conf::kOptionCount; ++k) {
        auto o = static_cast<conf::Opt>(k);
        fmt::print("{:<{}} = {:<24} # {}\n", conf::info(o).name, width, conf::format_value(o, cfg->get(o)),
                   cfg->source(o).describe());
    }
    for (const auto& r : cfg->rules)
        fmt::print("{} # {}\n", r.text, r.source);
    return kExitOk;
}

int cmd_check_config(int argc, char** argv) {
    if (argc > 1) throw UsageError{"check-config takes at most one FILE"};
    std::string path;
    bool must_exist = true;
    if (argc == 1) {
        path = argv[0];
    } else if (const char* env = std::getenv(conf::kConfigEnv)) {
        path = env;
    } else {
        path = conf::kDefaultConfigPath;
        must_exist = false;
    }
    std::vector<conf::Setting> settings;
    std::vector<conf::Rule> rules;
    if (auto d = conf::parse_config_file(path, must_exist, settings, rules)) {
        fmt::print(stderr, "{}\n", d->message());
        return kExitUsage;
    }
    if (::access(path.c_str(), F_OK) != 0) {
        fmt::print("{}: no such file; built-in defaults apply\n", path);
        return kExitOk;
    }
    fmt::print("{}: ok ({} settings, {} rules)\n", path, settings.size(), rules.size());
    return kExitOk;
}

}  // namespace sdx::cli
