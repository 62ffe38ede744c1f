// sdx: run programs with the sdx socket accelerator, and inspect its configuration.
#include <cstdio>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "cli/commands.hpp"

using namespace sdx::cli;

int main(int argc, char** argv) {
    if (argc < 2) {
        fmt::print(stderr, "{}", usage_text());
        return kExitUsage;
    }
    std::string_view cmd = argv[1];
    try {
        if (cmd == "run") return cmd_run(argc - 2, argv + 2);
        if (cmd == "config") return cmd_config(argc - 2, argv + 2);
        if (cmd == "check-config") return cmd_check_config(argc - 2, argv + 2);
        if (cmd == "stats") return cmd_stats(argc - 2, argv + 2);
        if (cmd == "--help" || cmd == "-h" || cmd == "help") return cmd_help();
        if (cmd == "--version" || cmd == "-V") {
            fmt::print("sdx {}\n", SDX_VERSION);
            return kExitOk;
        }
        if (cmd == "internal-man") return cmd_internal_man(argc - 2, argv + 2);
        throw UsageError{fmt::format("unknown command '{}'", cmd)};
    } catch (const UsageError& e) {
        fmt::print(stderr, "sdx: {}\n{}", e.message, usage_text());
        return kExitUsage;
    } catch (const std::exception& e) {
        fmt::print(stderr, "sdx: {}\n", e.what());
        return kExitFailure;
    }
}
