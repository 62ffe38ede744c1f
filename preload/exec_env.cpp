#include "preload/exec_env.hpp"

#include <cstring>
#include <string_view>

#include "preload/runtime.hpp"

namespace sdx {
namespace {

constexpr std::string_view kPreload = "LD_PRELOAD=";

std::size_t count_entries(char* const* v) noexcept {
    std::size_t n = 0;
    while (v && v[n]) ++n;
    return n;
}

std::string_view name_of(const char* entry) noexcept {
    const char* eq = std::strchr(entry, '=');
    return eq ? std::string_view(entry, static_cast<std::size_t>(eq - entry)) : std::string_view(entry);
}

bool is_sdx_library(std::string_view item) noexcept {
    std::string_view lib = g_rt.library_path ? g_rt.library_path : "";
    auto slash = item.rfind('/');
    std::string_view base = slash == std::string_view::npos ? item : item.substr(slash + 1);
    return item == lib || base == "libsdx.so";
}

// Bump allocator over the caller's scratch memory.
struct Arena {
    char* p;
    char* put(std::string_view s) noexcept {
        char* out = p;
        std::memcpy(p, s.data(), s.size());
        p += s.size();
        return out;
    }
    char* end_string() noexcept {
        *p++ = '\0';
        return p;
    }
};

// LD_PRELOAD without libsdx.so (drop), or with it first (keep).  Returns nullptr when empty.
char* preload_entry(std::string_view value, ExecMode mode, Arena& a) noexcept {
    char* start = a.put(kPreload);
    bool any = false;
    if (mode == ExecMode::Keep && g_rt.library_path) {
        a.put(g_rt.library_path);
        any = true;
    }
    std::size_t i = 0;
    while (i < value.size()) {
        std::size_t j = value.find_first_of(": ", i);
        if (j == std::string_view::npos) j = value.size();
        std::string_view item = value.substr(i, j - i);
        if (!item.empty() && !is_sdx_library(item)) {
            if (any) a.put(":");
            a.put(item);
            any = true;
        }
        i = j + 1;
    }
    a.end_string();
    return any ? start : nullptr;
}

}  // namespace

ExecMode exec_mode() noexcept {
    const conf::Config* cfg = g_rt.config;
    if (!cfg) return ExecMode::Inherit;
    return static_cast<ExecMode>(cfg->number(conf::Opt::exec));
}

std::size_t env_scratch_size(char* const* envp) noexcept {
    std::size_t n = count_entries(envp) + count_entries(g_rt.sdx_environ) + 2;
    std::size_t bytes = n * sizeof(char*) + kPreload.size() + 2;
    if (g_rt.library_path) bytes += std::strlen(g_rt.library_path) + 1;
    for (char* const* e = envp; e && *e; ++e)
        if (std::strncmp(*e, kPreload.data(), kPreload.size()) == 0) bytes += std::strlen(*e) + 1;
    return bytes;
}

char* const* rewrite_env(char* const* envp, ExecMode mode, void* scratch) noexcept {
    std::size_t n = count_entries(envp) + count_entries(g_rt.sdx_environ) + 2;
    auto** out = static_cast<char**>(scratch);
    Arena a{reinterpret_cast<char*>(out + n)};
    std::size_t k = 0;
    bool saw_preload = false;
    for (char* const* e = envp; e && *e; ++e) {
        std::string_view entry(*e);
        if (entry.starts_with(kPreload)) {
            saw_preload = true;
            if (char* p = preload_entry(entry.substr(kPreload.size()), mode, a)) out[k++] = p;
            continue;
        }
        if (mode == ExecMode::Drop && entry.starts_with("SDX_")) continue;
        out[k++] = *e;
    }
    if (mode == ExecMode::Keep) {
        if (!saw_preload)
            if (char* p = preload_entry("", mode, a)) out[k++] = p;
        // Re-add the SDX_* variables this process started with, unless the program set them itself.
        for (char* const* s = g_rt.sdx_environ; s && *s; ++s) {
            std::string_view name = name_of(*s);
            bool present = false;
            for (std::size_t i = 0; i < k && !present; ++i) present = name_of(out[i]) == name;
            if (!present) out[k++] = *s;
        }
    }
    out[k] = nullptr;
    return out;
}

}  // namespace sdx
