#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "preload/fd_table.hpp"
#include "preload/socket.hpp"

using sdx::FdTable;

namespace {
struct Item {
    int v;
};
}  // namespace

TEST(FdTable, GetExchangeClear) {
    auto t = std::make_unique<FdTable<Item>>();
    Item a{1}, b{2};
    EXPECT_EQ(t->get(3), nullptr);
    EXPECT_EQ(t->get(-1), nullptr);
    EXPECT_EQ(t->exchange(3, &a), nullptr);
    EXPECT_EQ(t->get(3), &a);
    EXPECT_EQ(t->exchange(3, &b), &a);
    EXPECT_EQ(t->exchange(3, nullptr), &b);
    EXPECT_EQ(t->get(3), nullptr);
    EXPECT_EQ(t->exchange(-5, &a), &a);  // refused: nothing stored
    EXPECT_EQ(t->exchange(1 << 20, nullptr), nullptr);  // clearing an unmapped page maps nothing
}

TEST(FdTable, BeyondSixtyFourK) {
    auto t = std::make_unique<FdTable<Item>>();
    std::vector<Item> items(8);
    const int fds[] = {0, 4095, 4096, 65535, 65536, 70000, 1 << 20, 0x7fffffff};
    for (int i = 0; i < 8; ++i) t->exchange(fds[i], &items[i]);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(t->get(fds[i]), &items[i]) << fds[i];
    EXPECT_EQ(t->get(70001), nullptr);
}

TEST(FdTable, ForEachVisitsOnlyTheRange) {
    auto t = std::make_unique<FdTable<Item>>();
    std::vector<Item> items(5);
    const int fds[] = {3, 100, 5000, 70000, 200000};
    for (int i = 0; i < 5; ++i) t->exchange(fds[i], &items[i]);
    std::vector<int> seen;
    t->for_each(4, 70000, [&](int fd, Item*) { seen.push_back(fd); });
    EXPECT_EQ(seen, (std::vector<int>{100, 5000, 70000}));
    seen.clear();
    t->for_each(0, ~0u, [&](int fd, Item*) { seen.push_back(fd); });
    EXPECT_EQ(seen.size(), 5u);
}

TEST(FdTable, ConcurrentInstallsOfOnePage) {
    auto t = std::make_unique<FdTable<Item>>();
    std::vector<Item> items(4096);
    std::vector<std::thread> threads;
    for (int th = 0; th < 4; ++th)
        threads.emplace_back([&, th] {
            for (int i = th; i < 4096; i += 4) t->exchange(8192 + i, &items[i]);
        });
    for (auto& th : threads) th.join();
    for (int i = 0; i < 4096; ++i) ASSERT_EQ(t->get(8192 + i), &items[i]);
}

TEST(SocketPool, ReuseAndRefcount) {
    auto base = sdx::sockets_live();
    sdx::Socket* s = sdx::socket_alloc();
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(sdx::sockets_live(), base + 1);
    EXPECT_EQ(s->refs.load(), 1u);
    EXPECT_TRUE(s->try_ref());
    s->unref();
    s->unref();
    EXPECT_EQ(sdx::sockets_live(), base);
    EXPECT_FALSE(s->try_ref());  // freed: cannot be pinned any more
    sdx::Socket* again = sdx::socket_alloc();
    EXPECT_EQ(again, s);  // type-stable: the slot is reused
    again->unref();
}

TEST(SocketPool, ConcurrentAllocFree) {
    auto base = sdx::sockets_live();
    std::vector<std::thread> threads;
    for (int th = 0; th < 4; ++th)
        threads.emplace_back([] {
            std::vector<sdx::Socket*> mine;
            for (int round = 0; round < 200; ++round) {
                for (int i = 0; i < 50; ++i) mine.push_back(sdx::socket_alloc());
                for (auto* s : mine) {
                    ASSERT_NE(s, nullptr);
                    ASSERT_EQ(s->refs.load(), 1u);
                    s->unref();
                }
                mine.clear();
            }
        });
    for (auto& th : threads) th.join();
    EXPECT_EQ(sdx::sockets_live(), base);
}
