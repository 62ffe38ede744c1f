// `sdx run`: validate the configuration, put libsdx.so into LD_PRELOAD, export the flags as SDX_*
// variables (so they outrank the caller's environment and reach every child), exec the program.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "cli/commands.hpp"

namespace sdx::cli {
namespace {

// libsdx.so sits in ../lib relative to the sdx binary, both in build/ and after `make install`.
std::string library_path() {
    char exe[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) throw std::runtime_error("cannot read /proc/self/exe");
    exe[n] = '\0';
    std::string dir(exe);
    dir = dir.substr(0, dir.rfind('/'));
    std::string lib = dir.substr(0, dir.rfind('/')) + "/lib/libsdx.so";
    if (::access(lib.c_str(), R_OK) != 0) throw std::runtime_error(fmt::format("cannot find {}: {}", lib, std::strerror(errno)));
    return lib;
}

std::string with_library_first(const std::string& lib, const char* current) {
    std::string out = lib;
    std::string_view rest = current ? current : "";
    std::size_t i = 0;
    while (i < rest.size()) {
        std::size_t j = rest.find_first_of(": ", i);
        if (j == std::string_view::npos) j = rest.size();
        std::string_view item = rest.substr(i, j - i);
        if (!item.empty() && item != lib) out += ":" + std::string(item);
        i = j + 1;
    }
    return out;
}

}  // namespace

int cmd_run(int argc, char** argv) {
    ConfigFlags flags;
    bool verbose = false;
    int i = 0;
    for (; i < argc; ++i) {
        std::string_view a = argv[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (a == "-v") {
            verbose = true;
            continue;
        }
        if (a.empty() || a[0] != '-') break;
        if (!parse_config_flag(argc, argv, i, flags)) throw UsageError{fmt::format("unknown run option '{}'", a)};
    }
    if (i >= argc) throw UsageError{"run needs a command: sdx run [-p PROFILE] [-v] [-o NAME=VALUE] [--] CMD [ARGS...]"};

    auto cfg = load_config(flags);
    if (!cfg) return kExitUsage;

    std::string lib = library_path();
    ::setenv("LD_PRELOAD", with_library_first(lib, ::getenv("LD_PRELOAD")).c_str(), 1);
    if (flags.config_file) ::setenv(conf::kConfigEnv, flags.config_file->c_str(), 1);
    if (flags.profile) ::setenv("SDX_PROFILE", flags.profile->c_str(), 1);
    for (const auto& [name, value] : flags.settings) ::setenv(conf::env_name(name).c_str(), value.c_str(), 1);

    if (verbose) {
        fmt::print(stderr, "sdx: preloading {}\n", lib);
        if (!cfg->file.empty()) fmt::print(stderr, "sdx: config file {}\n", cfg->file);
        for (std::size_t k = 0; k < conf::kOptionCount; ++k) {
            auto o = static_cast<conf::Opt>(k);
            if (cfg->source(o).kind == conf::Source::Default) continue;
            fmt::print(stderr, "sdx: {} = {} ({})\n", conf::info(o).name, conf::format_value(o, cfg->get(o)),
                       cfg->source(o).describe());
        }
        for (const auto& r : cfg->rules) fmt::print(stderr, "sdx: rule from {}\n", r.source);
    }
    ::execvp(argv[i], argv + i);
    int e = errno;
    fmt::print(stderr, "sdx: cannot run {}: {}\n", argv[i], std::strerror(e));
    return e == ENOENT ? 127 : 126;
}

}  // namespace sdx::cli
