#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "protocol/wire.hpp"

using namespace sdx::proto;

namespace {

std::vector<std::byte> bytes(std::initializer_list<int> v) {
    std::vector<std::byte> out;
    for (int x : v) out.push_back(static_cast<std::byte>(x));
    return out;
}

}  // namespace

TEST(Wire, BsdhIsBigEndianAndSixteenBytes) {
    std::byte buf[kBsdhSize];
    Bsdh h{Mid::Data, kOobPres, 0x0102, 0x03040506, 0x0708090a, 0x0b0c0d0e};
    ASSERT_EQ(encode_bsdh(h, buf), 16u);
    EXPECT_EQ(std::vector<std::byte>(buf, buf + 16),
              bytes({0xff, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e}));
}

TEST(Wire, RoundTripsEveryMessageSdxSends) {
    std::byte buf[kMaxHeader + 4];
    Message m;

    Bsdh h{Mid::Hello, 0, 16, 0, 0, 0};
    std::size_t n = encode_hello(h, HelloHeader{kVersion, kCapSrcAvail | kCapOob, 3, 65536}, buf);
    ASSERT_EQ(decode({buf, n}, m), DecodeError::None);
    EXPECT_EQ(m.h.mid, Mid::Hello);
    EXPECT_EQ(m.h.bufs, 16);
    EXPECT_EQ(m.hello.caps, kCapSrcAvail | kCapOob);
    EXPECT_EQ(m.hello.max_adverts, 3);
    EXPECT_EQ(m.hello.buf_size, 65536u);

    for (Mid mid : {Mid::SrcAvail, Mid::SinkAvail}) {
        h = Bsdh{mid, 0, 7, 0, 42, 41};
        n = encode_advert(h, Advert{1 << 20, 0xdeadbeef, 0x7fff00001000ull}, buf);
        ASSERT_EQ(decode({buf, n}, m), DecodeError::None) << mid_name(mid);
        EXPECT_EQ(m.h.mid, mid);
        EXPECT_EQ(m.h.mseq, 42u);
        EXPECT_EQ(m.h.mseq_ack, 41u);
        EXPECT_EQ(m.advert.len, 1u << 20);
        EXPECT_EQ(m.advert.rkey, 0xdeadbeefu);
        EXPECT_EQ(m.advert.vaddr, 0x7fff00001000ull);
    }
    for (Mid mid : {Mid::RdmaRdCompl, Mid::RdmaWrCompl}) {
        n = encode_compl(Bsdh{mid, 0, 1, 0, 5, 4}, 4096, buf);
        ASSERT_EQ(decode({buf, n}, m), DecodeError::None);
        EXPECT_EQ(m.compl_len, 4096u);
    }
    for (Mid mid : {Mid::DisConn, Mid::AbortConn, Mid::SendSm, Mid::SrcAvailCancel, Mid::SinkAvailCancel, Mid::SinkCancelAck}) {
        n = encode_bsdh(Bsdh{mid, 0, 1, kBsdhSize, 9, 8}, buf);
        ASSERT_EQ(decode({buf, n}, m), DecodeError::None) << mid_name(mid);
        EXPECT_EQ(m.h.mid, mid);
    }
    std::vector<std::byte> data(kBsdhSize + 5);
    encode_bsdh(Bsdh{Mid::Data, kOobPres, 1, static_cast<std::uint32_t>(data.size()), 1, 0}, data.data());
    ASSERT_EQ(decode(data, m), DecodeError::None);
    EXPECT_EQ(m.payload.size(), 5u);
    EXPECT_EQ(m.payload.data(), data.data() + kBsdhSize);
}

TEST(Wire, RejectsMalformedMessages) {
    std::byte buf[64] = {};
    Message m;
    EXPECT_EQ(decode({buf, 15}, m), DecodeError::Short);

    encode_bsdh(Bsdh{Mid::Data, 0, 1, 20, 1, 0}, buf);
    EXPECT_EQ(decode({buf, 16}, m), DecodeError::LengthMismatch) << "len says 20, 16 arrived";

    encode_bsdh(Bsdh{static_cast<Mid>(0x42), 0, 1, 16, 1, 0}, buf);
    EXPECT_EQ(decode({buf, 16}, m), DecodeError::UnknownMid);
    encode_bsdh(Bsdh{Mid::ModeChange, 0, 1, 16, 1, 0}, buf);
    EXPECT_EQ(decode({buf, 16}, m), DecodeError::UnknownMid) << "sdx 1.0 does not use ModeChange";

    encode_bsdh(Bsdh{Mid::DisConn, 0, 1, 20, 1, 0}, buf);
    EXPECT_EQ(decode({buf, 20}, m), DecodeError::BadField) << "payload on a control message";

    encode_bsdh(Bsdh{Mid::SrcAvail, 0, 1, 20, 1, 0}, buf);
    EXPECT_EQ(decode({buf, 20}, m), DecodeError::Short) << "SrcAvail without its extended header";

    std::size_t n = encode_advert(Bsdh{Mid::SrcAvail, 0, 1, 0, 1, 0}, Advert{0, 1, 0x1000}, buf);
    EXPECT_EQ(decode({buf, n}, m), DecodeError::BadField) << "zero-length advertisement";
    n = encode_advert(Bsdh{Mid::SinkAvail, 0, 1, 0, 1, 0}, Advert{4096, 1, ~0ull - 10}, buf);
    EXPECT_EQ(decode({buf, n}, m), DecodeError::BadField) << "advertised range wraps the address space";

    n = encode_compl(Bsdh{Mid::RdmaRdCompl, 0, 1, 0, 1, 0}, 0, buf);
    EXPECT_EQ(decode({buf, n}, m), DecodeError::BadField) << "empty completion";

    encode_bsdh(Bsdh{Mid::DisConn, kOobPres, 1, 16, 1, 0}, buf);
    EXPECT_EQ(decode({buf, 16}, m), DecodeError::BadField) << "OOB_PRES on a message without payload";
    encode_bsdh(Bsdh{Mid::Data, 0x80, 1, 17, 1, 0}, buf);
    EXPECT_EQ(decode({buf, 17}, m), DecodeError::BadField) << "undefined flag bit";
}

TEST(Wire, RandomBytesNeverDecodeOutOfBounds) {
    std::mt19937 g(7);
    std::vector<std::byte> buf;
    int accepted = 0;
    for (int i = 0; i < 200000; ++i) {
        buf.resize(g() % 48);
        for (auto& b : buf) b = static_cast<std::byte>(g());
        if (buf.size() >= 8 && (g() & 1)) {  // make the length field right half the time
            std::uint32_t len = static_cast<std::uint32_t>(buf.size());
            buf[4] = std::byte(len >> 24), buf[5] = std::byte(len >> 16), buf[6] = std::byte(len >> 8), buf[7] = std::byte(len);
            buf[1] = std::byte{0};
        }
        Message m;
        if (decode(buf, m) == DecodeError::None) {
            ++accepted;
            EXPECT_EQ(m.h.len, buf.size());
            EXPECT_LE(m.payload.size(), buf.size());
        }
    }
    EXPECT_GT(accepted, 0);
}
