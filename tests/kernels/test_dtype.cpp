// f16/bf16 conversions: exhaustive f16 -> f32, f32 -> f16 against the F16C instructions on edge
// cases and random bit patterns, and hand-checked values (rounding, subnormals, inf, NaN).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/dtype.h"

namespace phi::kernels::cpu::test {
bool have_f16c();
uint16_t hw_f32_to_f16(float f);
float hw_f16_to_f32(uint16_t h);
}  // namespace phi::kernels::cpu::test

namespace {

using namespace phi;
using namespace phi::kernels::cpu::test;

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

TEST(Dtype, F16RoundTripEveryValue) {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = f16_to_f32(uint16_t(h));
        const bool nan = ((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff) != 0;
        if (nan) {
            EXPECT_TRUE(std::isnan(f)) << h;
            EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f)))) << h;
            continue;
        }
        EXPECT_EQ(f32_to_f16(f), uint16_t(h)) << "f16 bits " << h;
    }
}

TEST(Dtype, F16HandValues) {
    EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
    EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
    EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
    EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));
    EXPECT_EQ(f16_to_f32(0xfc00), -std::numeric_limits<float>::infinity());
    EXPECT_EQ(bits(f16_to_f32(0x8000)), 0x80000000u);
    EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
    EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);  // below the halfway point to 65536
    EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // halfway, ties to even = inf
    EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
    EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
    EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);         // tie to even: 0
    EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);         // above the tie
    EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);         // 1.5 ulp ties to even 2
    EXPECT_EQ(f32_to_f16(std::ldexp(1023.5f, -24)), 0x0400);      // rounds up into the min normal
    EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even (down)
    EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie to even (up)
    EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
    const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
    EXPECT_EQ(nan & 0x7c00, 0x7c00);
    EXPECT_NE(nan & 0x3ff, 0);
    // A signalling NaN whose payload sits only in the low bits must stay NaN.
    EXPECT_NE(f32_to_f16(from_bits(0x7f800001u)) & 0x3ff, 0);
}

TEST(Dtype, F16MatchesF16cHardware) {
    if (!have_f16c()) GTEST_SKIP() << "CPU lacks F16C";
    for (uint32_t h = 0; h < 65536; ++h) {
        const float a = f16_to_f32(uint16_t(h));
        const float b = hw_f16_to_f32(uint16_t(h));
        EXPECT_EQ(bits(a), bits(b)) << h;
    }
    std::mt19937 gen(7);
    // Random bit patterns, concentrated on the exponents where f16 has normals and subnormals.
    for (int i = 0; i < 2000000; ++i) {
        uint32_t u = gen();
        if (i % 2 == 0) u = (u & 0x807fffffu) | ((96u + (u >> 8) % 50u) << 23);  // 2^-31 .. 2^18
        const float f = from_bits(u);
        const uint16_t a = f32_to_f16(f);
        const uint16_t b = hw_f32_to_f16(f);
        if (std::isnan(f)) {
            ASSERT_TRUE(std::isnan(f16_to_f32(a))) << std::hex << u;
        } else {
            ASSERT_EQ(a, b) << std::hex << "f32 bits " << u;
        }
    }
}

TEST(Dtype, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);  // tie, even stays
    EXPECT_EQ(f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);  // tie, odd rounds up
    EXPECT_EQ(f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
    EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
}

}  // namespace
