// The fault hook's parsing, seeding and selection (core/fault.h): pure code, no kernel.
#include <gtest/gtest.h>

#include <array>
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

} // namespace
} // namespace userblk
