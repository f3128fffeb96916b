// The fault hook's parsing, seeding and selection (core/fault.h): pure code, no kernel.
#include <gtest/gtest.h>

#include <array>
#include <cerrno>
#include <string>
#include <vector>

#include "core/fault.h"

namespace userblk {
namespace {

FaultConfig config(FaultMask kinds, std::uint64_t seed, double rate = 0.1, std::uint32_t skip = 0) {
    FaultConfig c;
    c.kinds = kinds;
    c.seed = seed;
    c.rate = rate;
    c.skip = skip;
    return c;
}

TEST(FaultParse, NamesRoundTrip) {
    std::string bad;
    auto all = parse_faults("all", &bad);
    ASSERT_TRUE(all);
    EXPECT_EQ(format_faults(*all), "drop,double,wrong-tag,short,bad-result,stall,exit,scribble");
    auto two = parse_faults("double,drop");
    ASSERT_TRUE(two);
    EXPECT_EQ(*two, fault_bit(FaultKind::drop) | fault_bit(FaultKind::twice));
    EXPECT_EQ(format_faults(0), "none");
    EXPECT_EQ(parse_faults(""), FaultMask{0});
    EXPECT_FALSE(parse_faults("drop,explode", &bad));
    EXPECT_EQ(bad, "explode");
}

TEST(FaultParse, TransportSetsDifferOnlyWhereTheProtocolDoes) {
    EXPECT_EQ(format_faults(kDescFaults), "drop,double,wrong-tag,short,bad-result,stall,exit");
    EXPECT_EQ(format_faults(kRingFaults), "drop,double,wrong-tag,bad-result,stall,exit,scribble");
}

TEST(FaultDecide, SameSeedSameDecisions) {
    FaultConfig c = config(parse_faults("all").value(), 42);
    for (std::uint64_t n = 0; n < 5000; ++n) {
        EXPECT_EQ(FaultInjector::decide(c, 1, n), FaultInjector::decide(c, 1, n));
    }
    FaultInjector a(c, "t", 1, 2000);
    FaultInjector b(c, "t", 1, 2000);
    for (int i = 0; i < 2000; ++i) {
        ASSERT_EQ(a.pick(0), b.pick(0)) << i;
        ASSERT_EQ(a.next(), b.next()) << i;
    }
}

TEST(FaultDecide, SeedsAndQueuesDiffer) {
    FaultConfig c1 = config(fault_bit(FaultKind::drop), 1);
    FaultConfig c2 = config(fault_bit(FaultKind::drop), 2);
    int seed_diff = 0;
    int queue_diff = 0;
    for (std::uint64_t n = 0; n < 2000; ++n) {
        seed_diff += FaultInjector::decide(c1, 0, n) != FaultInjector::decide(c2, 0, n);
        queue_diff += FaultInjector::decide(c1, 0, n) != FaultInjector::decide(c1, 1, n);
    }
    EXPECT_GT(seed_diff, 50);
    EXPECT_GT(queue_diff, 50);
}

TEST(FaultDecide, RateIsRespected) {
    FaultConfig c = config(parse_faults("all").value(), 7, 0.05);
    int hits = 0;
    constexpr int kN = 100000;
    for (int n = 0; n < kN; ++n) {
        hits += FaultInjector::decide(c, 0, n).has_value();
    }
    EXPECT_NEAR(hits / double(kN), 0.05, 0.005);
    FaultConfig always = config(fault_bit(FaultKind::stall), 7, 1.0);
    for (int n = 0; n < 100; ++n) {
        EXPECT_EQ(FaultInjector::decide(always, 0, n), FaultKind::stall);
    }
}

TEST(FaultDecide, OnlyConfiguredKindsEachOfThem) {
    FaultMask mask = fault_bit(FaultKind::twice) | fault_bit(FaultKind::wrong_tag) |
                     fault_bit(FaultKind::scribble);
    FaultConfig c = config(mask, 3, 0.5);
    std::array<int, kFaultKinds> seen{};
    for (int n = 0; n < 20000; ++n) {
        if (auto k = FaultInjector::decide(c, 0, n)) {
            ASSERT_NE(mask & fault_bit(*k), 0u) << fault_name(*k);
            ++seen[static_cast<unsigned>(*k)];
        }
    }
    for (FaultKind k : {FaultKind::twice, FaultKind::wrong_tag, FaultKind::scribble}) {
        EXPECT_GT(seen[static_cast<unsigned>(k)], 2500) << fault_name(k);
    }
}

TEST(FaultDecide, SkipAndDisarmed) {
    FaultConfig c = config(fault_bit(FaultKind::drop), 5, 1.0, 10);
    for (int n = 0; n < 10; ++n) {
        EXPECT_FALSE(FaultInjector::decide(c, 0, n));
    }
    EXPECT_TRUE(FaultInjector::decide(c, 0, 10));
    FaultInjector off(FaultConfig{}, "t", 0, 2000);
    EXPECT_FALSE(off.armed());
    EXPECT_FALSE(off.pick(0));
    FaultInjector on(c, "t", 0, 2000);
    EXPECT_TRUE(on.armed());
    for (int n = 0; n < 12; ++n) {
        on.pick(0);
    }
    EXPECT_EQ(on.completions(), 12u);
    EXPECT_EQ(on.injected(FaultKind::drop), 2u);
}

TEST(FaultValues, InvalidResultsAreOutOfRangeOddErrnosAreIn) {
    FaultInjector f(config(fault_bit(FaultKind::bad_result), 11), "t", 0, 2000);
    for (int i = 0; i < 200; ++i) {
        std::int32_t bad = f.invalid_result();
        EXPECT_TRUE(bad > 0 || bad < -4095) << bad;
        std::int32_t odd = f.odd_errno();
        EXPECT_TRUE(odd < 0 && odd >= -4095) << odd;
        EXPECT_LT(f.below(7), 7u);
    }
}

/// A seam that records what the fault mode did, in order: "send T/G R", "flush", "answer T/G",
/// "short T/G", "fail T/G R", "scribble". answer() returns result.
struct RecordingSeam final : FaultSeam {
    std::vector<std::string> log;
    std::int32_t result = 0;

    static std::string id(const userblk_io_desc& d) {
        return std::to_string(d.tag) + "/" + std::to_string(d.gen);
    }
    [[nodiscard]] std::uint32_t depth() const noexcept override { return 8; }
    bool send(const userblk_io_desc& d, std::int32_t res) noexcept override {
        log.push_back("send " + id(d) + " " + std::to_string(res));
        return true;
    }
    bool flush() noexcept override {
        log.emplace_back("flush");
        return true;
    }
    std::optional<std::int32_t> answer(const userblk_io_desc& d, bool short_read) noexcept override {
        log.push_back((short_read ? "short " : "answer ") + id(d));
        return result;
    }
    bool fail(const userblk_io_desc& d, std::int32_t res) noexcept override {
        log.push_back("fail " + id(d) + " " + std::to_string(res));
        return true;
    }
    void scribble() noexcept override { log.emplace_back("scribble"); }
};

userblk_io_desc request(std::uint16_t tag, std::uint32_t gen, std::uint8_t op = USERBLK_OP_READ) {
    userblk_io_desc d{};
    d.tag = tag;
    d.gen = gen;
    d.op = op;
    d.len = 4096;
    return d;
}

/// Every completion of a single-kind injector gets the fault (rate 1, no skip).
FaultInjector always(FaultKind k, std::uint64_t seed = 1) {
    return FaultInjector(config(fault_bit(k), seed, 1.0), "t", 0, 0);
}

TEST(FaultComplete, WithoutAFaultTheRealAnswerOnly) {
    FaultInjector f(config(fault_bit(FaultKind::drop), 1, 1.0, 1), "t", 0, 0);
    RecordingSeam seam;
    EXPECT_TRUE(f.complete(request(3, 7), seam)); // completion 0: skipped
    EXPECT_EQ(seam.log, (std::vector<std::string>{"answer 3/7"}));
}

TEST(FaultComplete, DropSendsNothing) {
    FaultInjector f = always(FaultKind::drop);
    RecordingSeam seam;
    EXPECT_TRUE(f.complete(request(3, 7), seam));
    EXPECT_TRUE(seam.log.empty());
    EXPECT_EQ(f.injected(FaultKind::drop), 1u);
}

TEST(FaultComplete, StallFlushesFirstThenAnswers) {
    FaultInjector f = always(FaultKind::stall); // a timeout of 0 ms: a stall of one second
    RecordingSeam seam;
    EXPECT_TRUE(f.complete(request(1, 2), seam));
    EXPECT_EQ(seam.log, (std::vector<std::string>{"flush", "answer 1/2"}));
}

TEST(FaultComplete, WrongTagFailsSomethingElseThenAnswers) {
    for (std::uint64_t seed = 1; seed <= 30; ++seed) {
        FaultInjector f = always(FaultKind::wrong_tag, seed);
        RecordingSeam seam;
        const userblk_io_desc d = request(2, 5);
        EXPECT_TRUE(f.complete(d, seam));
        ASSERT_EQ(seam.log.size(), 2u);
        EXPECT_NE(seam.log[0], "send 2/5 -5");
        EXPECT_EQ(seam.log[0].substr(seam.log[0].size() - 3), " -5") << seam.log[0]; // -EIO
        EXPECT_EQ(seam.log[1], "answer 2/5");
    }
}

TEST(FaultComplete, BadResultIsRefusedBeforeTheAnswerOrFailsTheRequest) {
    int refused = 0;
    int failed = 0;
    for (std::uint64_t seed = 1; seed <= 30; ++seed) {
        FaultInjector f = always(FaultKind::bad_result, seed);
        RecordingSeam seam;
        EXPECT_TRUE(f.complete(request(4, 1), seam));
        if (seam.log.size() == 2) {
            ++refused;
            EXPECT_EQ(seam.log[0].rfind("send 4/1 ", 0), 0u);
            const int res = std::stoi(seam.log[0].substr(9));
            EXPECT_TRUE(res > 0 || res < -4095) << res;
            EXPECT_EQ(seam.log[1], "answer 4/1");
        } else {
            ++failed;
            ASSERT_EQ(seam.log.size(), 1u);
            EXPECT_EQ(seam.log[0].rfind("fail 4/1 -", 0), 0u) << seam.log[0];
        }
    }
    EXPECT_GT(refused, 0);
    EXPECT_GT(failed, 0);
}

TEST(FaultComplete, DoubleAnswersTwiceNowOrAtTheNextBatch) {
    int now = 0;
    int later = 0;
    for (std::uint64_t seed = 1; seed <= 30; ++seed) {
        FaultInjector f = always(FaultKind::twice, seed);
        RecordingSeam seam;
        seam.result = -28;
        EXPECT_TRUE(f.complete(request(6, 9), seam));
        if (seam.log.size() == 2) {
            ++now;
            EXPECT_EQ(seam.log, (std::vector<std::string>{"answer 6/9", "send 6/9 -28"}));
            EXPECT_TRUE(f.begin_batch(seam));
            EXPECT_EQ(seam.log.size(), 2u); // nothing owed
        } else {
            ++later;
            EXPECT_EQ(seam.log, (std::vector<std::string>{"answer 6/9"}));
            EXPECT_TRUE(f.begin_batch(seam));
            EXPECT_EQ(seam.log.back(), "send 6/9 0");
            EXPECT_TRUE(f.begin_batch(seam));
            EXPECT_EQ(seam.log.size(), 2u); // owed once
        }
    }
    EXPECT_GT(now, 0);
    EXPECT_GT(later, 0);
}

TEST(FaultComplete, ShortCutsOnlyReads) {
    FaultInjector f = always(FaultKind::short_len);
    RecordingSeam seam;
    EXPECT_TRUE(f.complete(request(1, 1, USERBLK_OP_READ), seam));
    EXPECT_TRUE(f.complete(request(2, 1, USERBLK_OP_WRITE), seam));
    EXPECT_EQ(seam.log, (std::vector<std::string>{"short 1/1", "answer 2/1"}));
}

TEST(FaultComplete, ScribbleAfterTheAnswer) {
    FaultInjector f = always(FaultKind::scribble);
    RecordingSeam seam;
    EXPECT_TRUE(f.complete(request(0, 3), seam));
    EXPECT_EQ(seam.log, (std::vector<std::string>{"answer 0/3", "scribble"}));
}

TEST(FaultComplete, ExitFlushesAndEndsTheProcess) {
    EXPECT_EXIT(
        {
            FaultInjector f = always(FaultKind::exit);
            RecordingSeam seam;
            (void)f.complete(request(0, 1), seam);
        },
        ::testing::ExitedWithCode(kFaultExitStatus), "exiting mid-batch");
}

} // namespace
} // namespace userblk
