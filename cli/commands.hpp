// The `sdx` launcher's subcommands.  Each returns the process exit status.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "conf/config.hpp"

namespace sdx::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;  // bad command line, bad configuration

// Options shared by `run` and `config`: -p PROFILE, -c FILE, -o NAME=VALUE.
struct ConfigFlags {
    std::optional<std::string> profile;
    std::optional<std::string> config_file;
    std::vector<std::pair<std::string, std::string>> settings;
};

// Consumes one of -p/-c/-o (with its argument) at argv[i]; returns false if argv[i] is none of them.
// Throws UsageError for a malformed one.
bool parse_config_flag(int argc, char** argv, int& i, ConfigFlags& flags);
// Loads the layered configuration; prints the diagnostic and returns nullopt on error.
std::optional<conf::Config> load_config(const ConfigFlags& flags);

struct UsageError {
    std::string message;
};

int cmd_run(int argc, char** argv);
int cmd_config(int argc, char** argv);
int cmd_check_config(int argc, char** argv);
int cmd_stats(int argc, char** argv);
int cmd_help();
int cmd_internal_man(int argc, char** argv);

// Help and man-page text generated from the option table.
std::string usage_text();
std::string options_help_text();
std::string man_options(bool long_form);
std::string man_profiles();

}  // namespace sdx::cli
