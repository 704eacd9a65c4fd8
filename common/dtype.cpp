// IEEE binary16 <-> binary32 conversions in portable bit manipulation (no F16C needed): round to
// nearest even, subnormals, infinities and NaNs handled as the hardware instructions do.
#include "common/dtype.h"

namespace phi {

float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;  // +-0
        } else {
            // Subnormal: mant * 2^-24, exact in fp32.
            float f = float(mant) * 5.9604644775390625e-8f;
            std::memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) {
        // inf, or NaN with its payload kept and quieted (as vcvtph2ps does).
        u = sign | 0x7f800000u | (mant << 13) | (mant != 0 ? 0x400000u : 0u);
    } else {
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) {
        // NaN: keep the top payload bits and force quiet, so a NaN never turns into inf.
        return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    }
    if (a >= 0x47800000u) return uint16_t(sign | 0x7c00u);  // >= 65536 (or inf): inf
    if (a >= 0x38800000u) {
        // Normal in half (>= 2^-14). Rebias the exponent, round the 13 dropped bits to nearest
        // even; a carry out of the mantissa correctly bumps the exponent (65520 -> inf).
        const uint32_t v = a - (112u << 23);
        return uint16_t(sign | ((v + 0xfffu + ((v >> 13) & 1u)) >> 13));
    }
    if (a < 0x33000000u) return sign;  // < 2^-25 (or exactly 2^-25: ties to even 0)
    // Half subnormal: value = m * 2^(e-150) with the implicit bit; result = that / 2^-24.
    const uint32_t e = a >> 23;  // 102 .. 112
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14 .. 24
    const uint32_t half_ulp = 1u << (shift - 1);
    const uint32_t rest = m & ((1u << shift) - 1u);
    uint32_t r = m >> shift;
    if (rest > half_ulp || (rest == half_ulp && (r & 1u))) ++r;  // may become 0x400: min normal
    return uint16_t(sign | r);
}

}  // namespace phi
