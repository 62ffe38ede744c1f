// File descriptor -> T* map for every fd number the kernel can hand out (0 .. 2^31-1).
//
// Lookups are two dependent loads and never lock or allocate, so they are safe on every call path,
// in signal handlers and before the shim is initialised.  Pages of 4096 slots are mmap'd on first
// use and installed with a compare-and-swap; they are never freed, so a racing reader can never
// touch unmapped memory.  The directory itself lives in .bss (zero pages cost nothing until used).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace sdx {

template <typename T>
class FdTable {
public:
    static constexpr unsigned kPageBits = 12;
    static constexpr unsigned kPageSlots = 1u << kPageBits;
    static constexpr std::uint64_t kMaxFds = 1ull << 31;  // fds are non-negative ints
    static constexpr std::size_t kPages = kMaxFds >> kPageBits;

    constexpr FdTable() = default;
    FdTable(const FdTable&) = delete;
    FdTable& operator=(const FdTable&) = delete;

    T* get(int fd) const noexcept {
        if (fd < 0) return nullptr;
        Page* p = dir_[static_cast<unsigned>(fd) >> kPageBits].load(std::memory_order_acquire);
        return p ? p->slot[fd & (kPageSlots - 1)].load(std::memory_order_acquire) : nullptr;
    }

    // Stores `value` for `fd` and returns what was there.  Returns `value` itself (and stores
    // nothing) only if a page could not be mapped; callers then treat the fd as untracked.
    T* exchange(int fd, T* value) noexcept {
        if (fd < 0) return value;
        std::atomic<Page*>& d = dir_[static_cast<unsigned>(fd) >> kPageBits];
        Page* p = d.load(std::memory_order_acquire);
        if (p == nullptr) {
            if (value == nullptr) return nullptr;  // nothing to clear
            p = install(d);
            if (p == nullptr) return value;
            note_page(static_cast<unsigned>(fd) >> kPageBits);
        }
        return p->slot[fd & (kPageSlots - 1)].exchange(value, std::memory_order_acq_rel);
    }

    // Calls f(fd, T*) for every non-null slot in [first, last], visiting only mapped pages.
    template <typename F>
    void for_each(unsigned first, unsigned last, F&& f) const {
        // Pages above the highest one ever mapped hold nothing: close_range(3, ~0U) stays cheap.
        std::uint64_t top = (static_cast<std::uint64_t>(pages_end_.load(std::memory_order_acquire)) << kPageBits);
        if (top == 0) return;
        if (static_cast<std::uint64_t>(last) >= top) last = static_cast<unsigned>(top - 1);
        for (std::uint64_t fd = first; fd <= last;) {
            Page* p = dir_[fd >> kPageBits].load(std::memory_order_acquire);
            std::uint64_t page_end = (fd | (kPageSlots - 1));
            if (p) {
                for (std::uint64_t i = fd; i <= page_end && i <= last; ++i)
                    if (T* v = p->slot[i & (kPageSlots - 1)].load(std::memory_order_acquire)) f(static_cast<int>(i), v);
            }
            fd = page_end + 1;
        }
    }

private:
    struct Page {
        std::atomic<T*> slot[kPageSlots];
    };

    void note_page(unsigned page) noexcept {
        unsigned end = page + 1, cur = pages_end_.load(std::memory_order_relaxed);
        while (cur < end && !pages_end_.compare_exchange_weak(cur, end, std::memory_order_acq_rel)) {
        }
    }

    static Page* install(std::atomic<Page*>& d) noexcept {
        void* mem = ::mmap(nullptr, sizeof(Page), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) return nullptr;
        auto* fresh = static_cast<Page*>(mem);  // zero-filled: every slot is nullptr
        Page* expected = nullptr;
        if (d.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return fresh;
        ::munmap(mem, sizeof(Page));
        return expected;
    }

    std::atomic<unsigned> pages_end_{0};  // one past the highest page index ever installed
    std::atomic<Page*> dir_[kPages]{};
};

}  // namespace sdx
