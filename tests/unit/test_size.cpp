#include <gtest/gtest.h>

#include "core/size.h"

namespace {

using userblk::format_size;
using userblk::parse_size;

TEST(ParseSize, PlainNumbers) {
    EXPECT_EQ(parse_size("0"), 0U);
    EXPECT_EQ(parse_size("4096"), 4096U);
    EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
}

TEST(ParseSize, SuffixesArePowersOf1024EitherCase) {
    EXPECT_EQ(parse_size("1K"), 1024U);
    EXPECT_EQ(parse_size("512k"), 512U * 1024);
    EXPECT_EQ(parse_size("1M"), 1024U * 1024);
    EXPECT_EQ(parse_size("3g"), 3ULL << 30);
    EXPECT_EQ(parse_size("1G"), 1073741824U);
    EXPECT_EQ(parse_size("2T"), 2ULL << 40);
}

TEST(ParseSize, RejectsGarbage) {
    for (const char* bad :
         {"", "K", "1X", "1KK", "-1", "+1", " 1", "1 ", "1.5G", "0x10", "1KB", "1Ki"}) {
        EXPECT_FALSE(parse_size(bad).has_value()) << "'" << bad << "'";
    }
}

TEST(ParseSize, RejectsOverflow) {
    EXPECT_FALSE(parse_size("18446744073709551616").has_value());
    EXPECT_FALSE(parse_size("16777216T").has_value()); // 2^24 * 2^40 = 2^64
    EXPECT_EQ(parse_size("16777215T"), 16777215ULL << 40);
}

TEST(FormatSize, LargestExactSuffix) {
    EXPECT_EQ(format_size(0), "0");
    EXPECT_EQ(format_size(1000), "1000");
    EXPECT_EQ(format_size(1536), "1536");
    EXPECT_EQ(format_size(2048), "2K");
    EXPECT_EQ(format_size(1073741824), "1G");
    EXPECT_EQ(format_size(3ULL << 40), "3T");
}

TEST(FormatSize, RoundTripsThroughParse) {
    for (std::uint64_t v : {1ULL, 512ULL, 4096ULL, 1000000ULL, 1ULL << 30, (1ULL << 30) + 512}) {
        EXPECT_EQ(parse_size(format_size(v)), v);
    }
}

} // namespace
