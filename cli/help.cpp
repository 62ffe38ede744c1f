// `sdx --help` and the generated parts of the man pages, both from the option table.
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "cli/commands.hpp"
#include "conf/text.hpp"

namespace sdx::cli {
namespace {

std::string range_text(const conf::OptionInfo& o) {
    switch (o.type) {
    case conf::Type::Int:
    case conf::Type::Size:
    case conf::Type::Duration: {
        auto b = conf::split(o.range, '.');
        return fmt::format("{} to {}", b.front(), b.back());
    }
    case conf::Type::Enum: return fmt::format("one of {}", o.range);
    case conf::Type::List: return fmt::format("items: {}", o.range);
    default: return "";
    }
}

// roff-safe text: backslashes, hyphens, and a leading '.' or '\''.
std::string roff(std::string_view s) {
    std::string out;
    for (char c : s) {
        if (c == '\\') out += "\\e";
        else if (c == '-') out += "\\-";
        else out += c;
    }
    if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
    return out;
}

}  // namespace

std::string usage_text() {
    return "usage: sdx run [-p PROFILE] [-v] [-c FILE] [-o NAME=VALUE]... [--] CMD [ARGS...]\n"
           "       sdx config [-p PROFILE] [-c FILE] [-o NAME=VALUE]...\n"
           "       sdx check-config [FILE]\n"
           "       sdx stats [-p PID] [--json] [--watch]\n"
           "       sdx --version | --help\n";
}

std::string options_help_text() {
    std::string out;
    for (const auto& o : conf::kOptions) {
        out += fmt::format("  {:<22} {}\n", o.name, o.summary);
        std::string meta = fmt::format("{}, default {}", conf::type_name(o.type), o.default_text.empty() ? "\"\"" : o.default_text);
        if (auto r = range_text(o); !r.empty()) meta += ", " + r;
        out += fmt::format("  {:<22} {}; env {}\n", "", meta, conf::env_name(o.name));
    }
    return out;
}

int cmd_help() {
    fmt::print("sdx {} - run unmodified socket programs over shared memory and RDMA\n\n{}\n", SDX_VERSION, usage_text());
    fmt::print("commands:\n"
               "  run            run CMD with libsdx.so preloaded (-v prints the options that are not defaults)\n"
               "  config         print every option, its value and where it came from\n"
               "  check-config   check a config file (default: $SDX_CONFIG, else /etc/sdx.conf)\n"
               "  stats          the live sockets of processes under sdx: path (shm, or tcp and why), bytes by copy\n"
               "                 and zero copy, credit stalls, SendSm, cancels (--json: as JSON; --watch: every second)\n\n");
    fmt::print("profiles (-p, SDX_PROFILE): ");
    auto names = conf::profile_names();
    for (std::size_t i = 0; i < names.size(); ++i) fmt::print("{}{}", i ? ", " : "", names[i]);
    fmt::print("\n\noptions (config file: NAME = VALUE; environment: SDX_NAME=VALUE; sdx run -o NAME=VALUE):\n{}", options_help_text());
    fmt::print("\nrules (config file): use <sdx|tcp|both> <server|client|*> <program glob> <addr[/prefix]|*>:<port[-port]|*>\n"
               "see sdx(1) and sdx.conf(5).\n");
    return kExitOk;
}

std::string man_options(bool long_form) {
    std::string out;
    for (const auto& o : conf::kOptions) {
        out += fmt::format(".TP\n.BR {} \" (\" SDX_{} )\n", roff(o.name), roff(conf::env_name(o.name).substr(4)));
        std::string meta = fmt::format("{}, default \\fB{}\\fR", conf::type_name(o.type), roff(o.default_text));
        if (auto r = range_text(o); !r.empty()) meta += ", " + roff(r);
        out += meta + ".\n";
        out += roff(o.summary) + ".\n";
        if (long_form && !o.doc.empty()) out += roff(o.doc) + "\n";
    }
    return out;
}

std::string man_profiles() {
    std::string out;
    for (auto name : conf::profile_names()) {
        auto settings = conf::profile_settings(name);
        out += fmt::format(".TP\n.B {}\n", roff(name));
        if (settings.empty()) {
            out += "The built\\-in defaults.\n";
            continue;
        }
        for (std::size_t i = 0; i < settings.size(); ++i)
            out += fmt::format("{}{}={}", i ? ", " : "", roff(conf::info(settings[i].opt).name),
                               roff(conf::format_value(settings[i].opt, settings[i].value)));
        out += "\n";
    }
    return out;
}

// Fills a man page template: @VERSION@, @OPTIONS_SHORT@, @OPTIONS_LONG@, @PROFILES@.
int cmd_internal_man(int argc, char** argv) {
    if (argc != 1) throw UsageError{"internal-man TEMPLATE"};
    std::ifstream in(argv[0]);
    if (!in) throw std::runtime_error(fmt::format("cannot read {}", argv[0]));
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    auto replace = [&](std::string_view key, const std::string& value) {
        for (auto pos = text.find(key); pos != std::string::npos; pos = text.find(key, pos + value.size()))
            text.replace(pos, key.size(), value);
    };
    std::string opts_short = man_options(false), opts_long = man_options(true), profiles = man_profiles();
    // The substitutions are whole lines: strip the template line's newline after each marker.
    replace("@OPTIONS_SHORT@\n", opts_short);
    replace("@OPTIONS_LONG@\n", opts_long);
    replace("@PROFILES@\n", profiles);
    replace("@VERSION@", SDX_VERSION);
    fmt::print("{}", text);
    return kExitOk;
}

}  // namespace sdx::cli
