// A fake transport for the protocol engine's unit tests: two engines wired back to back in one
// process.  It is strict where a real transport would corrupt data: posting to a peer with no free
// receive buffer, a message larger than the peer's buffer, releasing a buffer twice, or touching
// memory outside an advertised range all fail the test.  Nothing here proves the product works;
// it proves the state machine keeps its invariants, byte for byte.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "protocol/engine.hpp"

namespace sdx::proto::testing {

struct Side : Port {
    struct Region {
        std::byte* base;
        std::size_t len;
        bool writable;
        std::size_t taken = 0;  // consumed by the peer (what Port::reclaim reports)
    };
    Params params;
    std::unique_ptr<Engine> eng;
    Side* peer = nullptr;
    std::deque<std::pair<RecvId, std::vector<std::byte>>> inbox;  // posted by the peer, not yet delivered
    std::set<RecvId> held;                                        // delivered, not yet released
    std::uint32_t free_bufs = 0;
    RecvId next_id = 1;
    std::map<std::uint32_t, Region> exposed;
    std::uint32_t next_key = 100;
    struct Completion {
        OpId op;
        bool ok;
        bool reclaimed;
    };
    std::deque<Completion> completions;
    // Port::reclaim as shared memory does it (the default Port has none: RDMA's behaviour).
    bool reclaimable = false;
    std::set<std::uint32_t> busy;         // keys the peer is "copying right now": reclaim says Busy
    std::set<std::uint32_t> taken_back;   // reclaimed keys: the peer's copies fail as reclaimed
    int reclaims = 0;                     // reclaims that succeeded
    bool fail_rdma = false;      // the next remote-memory operations fail
    bool refuse_expose = false;  // registration impossible
    bool hold_completions = false;
    std::vector<Mid> sent_mids;  // every message id this side posted, in order

    explicit Side(Params p) : params(p) {
        eng = std::make_unique<Engine>(params, *this);
        free_bufs = std::max<std::uint16_t>(p.recv_bufs, 4);
    }

    void post_send(std::span<const std::byte> header, std::span<const iovec> payload) override {
        std::vector<std::byte> m(header.begin(), header.end());
        for (const iovec& v : payload) {
            auto* b = static_cast<const std::byte*>(v.iov_base);
            m.insert(m.end(), b, b + v.iov_len);
        }
        ASSERT_GT(peer->free_bufs, 0u) << "posted a message with no buffer free at the peer (credit violation), mid "
                                       << static_cast<int>(m[0]);
        ASSERT_LE(m.size(), peer->params.buf_size) << "message larger than the peer's receive buffer";
        --peer->free_bufs;
        sent_mids.push_back(static_cast<Mid>(m[0]));
        peer->inbox.emplace_back(peer->next_id++, std::move(m));
    }
    void release_recv(RecvId id) override {
        ASSERT_EQ(held.erase(id), 1u) << "released buffer " << id << " twice or never held";
        ++free_bufs;
    }
    Region* find(std::uint32_t key) {
        auto it = exposed.find(key);
        return it == exposed.end() ? nullptr : &it->second;
    }
    void rdma_read(OpId op, void* local, std::size_t len, const Advert& remote, std::uint64_t off, bool consume) override {
        if (peer->taken_back.count(remote.rkey)) {
            completions.push_back({op, false, true});
            return;
        }
        Region* r = peer->find(remote.rkey);
        ASSERT_NE(r, nullptr) << "RDMA Read with a revoked or unknown key";
        ASSERT_EQ(reinterpret_cast<std::uint64_t>(r->base), remote.vaddr);
        ASSERT_LE(off + len, r->len) << "RDMA Read outside the advertised range";
        if (!fail_rdma) std::memcpy(local, r->base + off, len);
        if (!fail_rdma && consume) r->taken = std::max<std::size_t>(r->taken, off + len);
        completions.push_back({op, !fail_rdma, false});
    }
    void rdma_write(OpId op, const void* local, std::size_t len, const Advert& remote, std::uint64_t off) override {
        if (peer->taken_back.count(remote.rkey)) {
            completions.push_back({op, false, true});
            return;
        }
        Region* r = peer->find(remote.rkey);
        ASSERT_NE(r, nullptr) << "RDMA Write with a revoked or unknown key";
        ASSERT_TRUE(r->writable) << "RDMA Write into a read-only advertisement";
        ASSERT_LE(off + len, r->len) << "RDMA Write outside the advertised range";
        if (!fail_rdma) std::memcpy(r->base + off, local, len);
        if (!fail_rdma) r->taken = std::max<std::size_t>(r->taken, off + len);
        completions.push_back({op, !fail_rdma, false});
    }
    std::optional<std::uint32_t> expose(void* addr, std::size_t len, bool peer_writes) override {
        if (refuse_expose) return std::nullopt;
        std::uint32_t k = next_key++;
        exposed[k] = Region{static_cast<std::byte*>(addr), len, peer_writes};
        return k;
    }
    void revoke(std::uint32_t key) override { EXPECT_EQ(exposed.erase(key), 1u) << "revoked key " << key << " twice"; }
    Reclaim reclaim(std::uint32_t key, std::size_t* taken) override {
        if (!reclaimable) return Reclaim::Unsupported;
        if (busy.count(key)) return Reclaim::Busy;
        Region* r = find(key);
        EXPECT_NE(r, nullptr) << "reclaimed key " << key << " after revoking it";
        if (!r) return Reclaim::Unsupported;
        if (taken_back.insert(key).second) ++reclaims;
        *taken = r->taken;
        return Reclaim::Done;
    }

    // Delivers what the peer posted.  Returns whether anything happened.
    bool deliver(std::size_t max = SIZE_MAX) {
        bool any = false;
        while (!inbox.empty() && max-- > 0) {
            auto [id, bytes] = std::move(inbox.front());
            inbox.pop_front();
            held.insert(id);
            // The engine may keep pointing into the buffer: park it where it stays put.
            storage.push_back(std::move(bytes));
            eng->on_message(id, storage.back());
            any = true;
        }
        return any;
    }
    bool complete() {
        if (hold_completions) return false;
        bool any = false;
        while (!completions.empty()) {
            Completion c = completions.front();
            completions.pop_front();
            eng->on_rdma_done(c.op, c.ok, c.reclaimed);
            any = true;
        }
        return any;
    }
    std::deque<std::vector<std::byte>> storage;
};

// Two connected sides; side a is the active (Hello) side.
struct Pair {
    Side a, b;
    struct NoHandshake {};
    Pair(Params pa, Params pb, NoHandshake) : a(pa), b(pb) {
        a.peer = &b;
        b.peer = &a;
    }
    Pair(Params pa, Params pb) : Pair(pa, pb, NoHandshake{}) {
        auto hello = a.eng->hello();
        auto ack = b.eng->accept_hello(hello);
        EXPECT_TRUE(ack.has_value());
        EXPECT_TRUE(a.eng->accept_hello_ack(*ack));
    }
    explicit Pair(Params p = Params{}) : Pair(p, p) {}

    // Moves messages and completions until nothing changes; `step` runs between rounds (it
    // progresses pending operations).  Returns the rounds taken.
    int settle(const std::function<void()>& step = {}, int max_rounds = 100000) {
        int rounds = 0;
        for (; rounds < max_rounds; ++rounds) {
            bool any = a.deliver() | b.deliver() | a.complete() | b.complete();
            if (step) step();
            if (!any && a.inbox.empty() && b.inbox.empty() && (a.completions.empty() || a.hold_completions) &&
                (b.completions.empty() || b.hold_completions))
                break;
        }
        return rounds;
    }
};

// An application operation being driven to completion.
struct Op {
    Engine* eng;
    bool send;
    OpResult r;
    bool done() const { return r.status == Status::Done; }
    void step() {
        if (!done()) r = send ? eng->progress_send() : eng->progress_recv();
    }
};

// Small buffers and thresholds, so that a few KiB exercise splitting, credits and zero copy.
inline Params small_bufs() {
    Params p;
    p.recv_bufs = 8;
    p.buf_size = 1024;
    p.send_zcopy_threshold = 8192;
    p.recv_zcopy_threshold = 8192;
    p.zcopy_max_chunk = 32768;
    return p;
}

// Drives one operation to its end, moving messages and completions meanwhile.
inline OpResult run_op(Pair& p, Engine& e, OpResult r, bool send) {
    Op op{&e, send, r};
    p.settle([&] { op.step(); });
    op.step();
    return op.r;
}

inline std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
    std::vector<std::byte> v(n);
    std::mt19937_64 g(seed);
    for (auto& b : v) b = static_cast<std::byte>(g());
    return v;
}

inline iovec iov_of(std::vector<std::byte>& v, std::size_t off = 0, std::size_t len = SIZE_MAX) {
    return iovec{v.data() + off, std::min(len, v.size() - off)};
}

}  // namespace sdx::proto::testing
