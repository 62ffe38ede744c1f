// Marks the C entry points that the shim exports in place of libc's (see libsdx.map).
#pragma once

#define SDX_EXPORT extern "C" __attribute__((visibility("default")))
