// exec and posix_spawn: what the new program's environment says about sdx (option `exec`).
//
// Runs in vfork children, which share the parent's heap: no malloc.  The caller provides scratch
// memory of env_scratch_size() bytes (alloca) and gets back a rewritten envp inside it.
#pragma once

#include <cstddef>

namespace sdx {

enum class ExecMode { Inherit, Keep, Drop };

ExecMode exec_mode() noexcept;
std::size_t env_scratch_size(char* const* envp) noexcept;
char* const* rewrite_env(char* const* envp, ExecMode mode, void* scratch) noexcept;

// envp plus `entry` (replacing an entry of the same name), in scratch memory of
// with_entry_scratch_size(envp) bytes.
char* const* with_entry(char* const* envp, const char* entry, void* scratch) noexcept;
std::size_t with_entry_scratch_size(char* const* envp) noexcept;

// Whether the program at `path`, started with `envp`, will load libsdx.so: LD_PRELOAD names it,
// the file is not set-user/group-ID (the loader would ignore LD_PRELOAD), and it is a script or a
// dynamically linked ELF (a static one never loads preloads).
bool will_load_sdx(const char* path, char* const* envp) noexcept;
// `file` as execvp finds it on PATH (into buf), or file itself when it contains a slash.
const char* resolve_on_path(const char* file, char* buf, std::size_t size) noexcept;

}  // namespace sdx
