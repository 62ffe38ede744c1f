// Logging through fmt.  Silent by default (errors only); destinations: stderr, syslog or a file whose
// name may contain %p (the process id).  Writes go straight to the kernel, never through the
// interposed libc functions, so logging from inside the shim cannot recurse.
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace sdx::log {

enum class Level { Off = 0, Error, Warn, Info, Debug, Trace };

// destination: "stderr", "syslog" or a path.  `program` prefixes every line.
void configure(Level level, std::string_view destination, std::string_view program);
Level level();
inline bool enabled(Level l) { return l != Level::Off && l <= level(); }
void emit(Level l, std::string_view message);
// "%p" -> pid in a path.
std::string expand_pid(std::string_view pattern, long pid);

template <typename... Args>
void write(Level l, fmt::format_string<Args...> f, Args&&... args) {
    if (enabled(l)) emit(l, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args> void error(fmt::format_string<Args...> f, Args&&... a) { write(Level::Error, f, std::forward<Args>(a)...); }
template <typename... Args> void warn(fmt::format_string<Args...> f, Args&&... a) { write(Level::Warn, f, std::forward<Args>(a)...); }
template <typename... Args> void info(fmt::format_string<Args...> f, Args&&... a) { write(Level::Info, f, std::forward<Args>(a)...); }
template <typename... Args> void debug(fmt::format_string<Args...> f, Args&&... a) { write(Level::Debug, f, std::forward<Args>(a)...); }
template <typename... Args> void trace(fmt::format_string<Args...> f, Args&&... a) { write(Level::Trace, f, std::forward<Args>(a)...); }

}  // namespace sdx::log
