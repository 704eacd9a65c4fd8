// exp, GELU (tanh form) and SiLU as ONE sequence of fp32 operations, written once over an "ops"
// type: the scalar reference instantiates it with ScalarOps (std::fma, correctly rounded like the
// hardware FMA), each SIMD level with its vector traits. Every lane runs the same operations in
// the same order as the scalar code, so the results are bitwise equal at every ISA level and for
// any vector width, tail or thread split. (libm's expf/tanhf cannot be vectorised this way, and
// were 10 % of prefill.)
//
// exp: Cody-Waite range reduction x = n ln2 + r (|r| <= ln2 / 2, ln2 split in two so n ln2 is
// exact), then Cephes' degree-7 polynomial, then 2^n from the exponent bits; the input is clamped
// to [-87.3, 88] so 2^n stays a normal float. Relative error about 2 ulp.
// GELU: 0.5 x (1 + tanh u) = x / (1 + exp(-2u)), with u computed in HF's operation order; no
// cancellation where 1 + tanh u is small, unlike the tanh form.
// SiLU: g / (1 + exp(-g)).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace phi::kernels::cpu::actmath {

/// The scalar instantiation. max/min follow the SIMD max/min instructions' rule (the second
/// operand when the comparison is false), so a NaN input is treated the same at every level.
struct ScalarOps {
    using F = float;
    static F set1(float v) { return v; }
    static F add(F a, F b) { return a + b; }
    static F sub(F a, F b) { return a - b; }
    static F mul(F a, F b) { return a * b; }
    static F div(F a, F b) { return a / b; }
    static F fma(F a, F b, F c) { return std::fma(a, b, c); }
    static F max(F a, F b) { return a > b ? a : b; }
    static F min(F a, F b) { return a < b ? a : b; }
    /// 2^n for an integral n in [-126, 127].
    static F exp2i(F n) {
        const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
        float r;
        std::memcpy(&r, &bits, sizeof r);
        return r;
    }
};

template <class O>
inline typename O::F exp(typename O::F x) {
    using F = typename O::F;
    x = O::min(x, O::set1(88.0f));
    x = O::max(x, O::set1(-87.3f));
    const F magic = O::set1(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
    const F n = O::sub(O::fma(x, O::set1(1.44269504088896341f), magic), magic);
    F r = O::fma(n, O::set1(-0.693359375f), x);
    r = O::fma(n, O::set1(2.12194440e-4f), r);
    const F z = O::mul(r, r);
    F p = O::set1(1.9875691500e-4f);
    p = O::fma(p, r, O::set1(1.3981999507e-3f));
    p = O::fma(p, r, O::set1(8.3334519073e-3f));
    p = O::fma(p, r, O::set1(4.1665795894e-2f));
    p = O::fma(p, r, O::set1(1.6666665459e-1f));
    p = O::fma(p, r, O::set1(5.0000001201e-1f));
    p = O::fma(p, z, r);
    p = O::add(p, O::set1(1.0f));
    return O::mul(p, O::exp2i(n));
}

/// HF's gelu_new ("gelu_pytorch_tanh"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
template <class O>
inline typename O::F gelu_new(typename O::F x) {
    using F = typename O::F;
    F t = O::mul(O::mul(x, x), x);
    t = O::mul(O::set1(0.044715f), t);
    t = O::add(x, t);
    t = O::mul(O::set1(-2.0f * 0.7978845608028654f), t);  // -2u (the factor 2 is exact)
    return O::div(x, O::add(O::set1(1.0f), exp<O>(t)));
}

/// silu(g) * up.
template <class O>
inline typename O::F silu_mul(typename O::F g, typename O::F up) {
    using F = typename O::F;
    const F e = exp<O>(O::sub(O::set1(0.0f), g));
    return O::mul(O::div(g, O::add(O::set1(1.0f), e)), up);
}

}  // namespace phi::kernels::cpu::actmath
