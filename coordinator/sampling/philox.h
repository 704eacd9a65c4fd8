// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based
// generator. The random draw for a token is a pure function of (key, counter), so a seeded request gets
// the same draws whatever else is in the batch, in whatever order requests are sampled, at any TP size.
#pragma once

#include <array>
#include <cstdint>

namespace phi::sampling {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

/// One Philox4x32 block with 10 rounds; checked against Random123's known-answer vectors in the tests.
inline PhiloxCounter philox4x32_10(PhiloxCounter ctr, PhiloxKey key) {
    constexpr uint32_t k_m0 = 0xD2511F53u;
    constexpr uint32_t k_m1 = 0xCD9E8D57u;
    constexpr uint32_t k_w0 = 0x9E3779B9u;
    constexpr uint32_t k_w1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key[0] += k_w0;
            key[1] += k_w1;
        }
        const uint64_t p0 = static_cast<uint64_t>(k_m0) * ctr[0];
        const uint64_t p1 = static_cast<uint64_t>(k_m1) * ctr[2];
        const auto hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
        const auto hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
        ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    }
    return ctr;
}

/// A uniform double in [0, 1) with 53 random bits, for draw `counter` of stream `stream` under `seed`:
/// key = seed, counter = (counter, stream) as 32-bit words, low word first.
inline double philox_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    const PhiloxCounter out =
        philox4x32_10({static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                       static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)},
                      {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
    const uint64_t bits = (static_cast<uint64_t>(out[0]) << 32 | out[1]) >> 11;
    return static_cast<double>(bits) * 0x1.0p-53;
}

}  // namespace phi::sampling
