#include "preload/exec_env.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
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

std::size_t with_entry_scratch_size(char* const* envp) noexcept { return (count_entries(envp) + 2) * sizeof(char*); }

char* const* with_entry(char* const* envp, const char* entry, void* scratch) noexcept {
    auto** out = static_cast<char**>(scratch);
    std::string_view name = name_of(entry);
    std::size_t k = 0;
    for (char* const* e = envp; e && *e; ++e)
        if (name_of(*e) != name) out[k++] = *e;
    out[k++] = const_cast<char*>(entry);
    out[k] = nullptr;
    return out;
}

bool will_load_sdx(const char* path, char* const* envp) noexcept {
    bool preloaded = false;
    for (char* const* e = envp; e && *e && !preloaded; ++e) {
        std::string_view entry(*e);
        if (!entry.starts_with(kPreload)) continue;
        std::string_view value = entry.substr(kPreload.size());
        for (std::size_t i = 0; i <= value.size() && !preloaded;) {
            std::size_t j = value.find_first_of(": ", i);
            if (j == std::string_view::npos) j = value.size();
            preloaded = j > i && is_sdx_library(value.substr(i, j - i));
            i = j + 1;
        }
    }
    if (!preloaded || !path) return false;
    struct stat st {};
    if (::stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_ISUID | S_ISGID))) return false;
    int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    unsigned char head[4096];
    ssize_t n = ::pread(fd, head, sizeof head, 0);
    ::close(fd);
    if (n >= 2 && head[0] == '#' && head[1] == '!') return true;  // the interpreter loads it
    if (n < static_cast<ssize_t>(sizeof(Elf64_Ehdr)) || std::memcmp(head, ELFMAG, SELFMAG) != 0 || head[EI_CLASS] != ELFCLASS64)
        return false;
    Elf64_Ehdr eh;
    std::memcpy(&eh, head, sizeof eh);
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        std::size_t off = eh.e_phoff + static_cast<std::size_t>(i) * eh.e_phentsize;
        if (eh.e_phentsize < sizeof(Elf64_Phdr) || off + sizeof(Elf64_Phdr) > static_cast<std::size_t>(n)) return false;
        Elf64_Phdr ph;
        std::memcpy(&ph, head + off, sizeof ph);
        if (ph.p_type == PT_INTERP) return true;
    }
    return false;
}

const char* resolve_on_path(const char* file, char* buf, std::size_t size) noexcept {
    if (!file || std::strchr(file, '/')) return file;
    const char* path = std::getenv("PATH");
    std::string_view dirs = path ? path : "/bin:/usr/bin";
    for (std::size_t i = 0; i <= dirs.size();) {
        std::size_t j = dirs.find(':', i);
        if (j == std::string_view::npos) j = dirs.size();
        std::string_view dir = dirs.substr(i, j - i);
        if (dir.empty()) dir = ".";
        if (dir.size() + std::strlen(file) + 2 <= size) {
            std::memcpy(buf, dir.data(), dir.size());
            buf[dir.size()] = '/';
            std::strcpy(buf + dir.size() + 1, file);
            if (::access(buf, X_OK) == 0) return buf;
        }
        i = j + 1;
    }
    return nullptr;
}

}  // namespace sdx
