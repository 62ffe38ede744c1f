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

}  // namespace sdx
