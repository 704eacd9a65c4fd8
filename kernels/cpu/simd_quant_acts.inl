// The int8 activation pass of the Int8 mode written straight into the Dot16 layout, at the avx512
// level (AVX512F/BW/VL/DQ; no VNNI needed). Included by simd_avx512.cpp. Bitwise the portable
// quantize_activations followed by the layout change (quant.h); tests/kernels/test_quant.cpp
// compares every buffer. Per block: |x| and the finiteness test in vectors, amax by an exact max
// reduction, d = amax / 127 in scalar fp32 (as the reference), x / d by a vector division (IEEE,
// the same quotient), round half away from zero as trunc plus a step where the exact remainder
// x - trunc(x) has magnitude >= 0.5 (std::round's result), then the clamp and the integer sum.

namespace quant_acts {
namespace {

/// One block of 32 at `x`: its 32 int8 values in `q`; returns its sum; d through `d_out`.
inline int32_t quantize_block(const float* x, int8_t* q, float* d_out) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const __m512 a0 = _mm512_andnot_ps(sign, v0), a1 = _mm512_andnot_ps(sign, v1);
    const __m512 big = _mm512_set1_ps(3.40282347e38f);
    // NaN compares false (ordered), infinity is above the largest float.
    const bool finite = (_mm512_cmp_ps_mask(a0, big, _CMP_LE_OQ) & _mm512_cmp_ps_mask(a1, big, _CMP_LE_OQ)) ==
                        __mmask16(0xffff);
    if (!finite) {
        *d_out = NAN;
        std::memset(q, 0, k_quant_block);
        return 0;
    }
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
    const float d = amax / 127.0f;
    *d_out = d;
    if (d == 0.0f) {
        std::memset(q, 0, k_quant_block);
        return 0;
    }
    const __m512 dv = _mm512_set1_ps(d);
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    auto quantize16 = [&](__m512 v) {
        const __m512 r = _mm512_div_ps(v, dv);
        __m512 t = _mm512_roundscale_ps(r, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        const __m512 frac = _mm512_andnot_ps(sign, _mm512_sub_ps(r, t));  // exact
        const __mmask16 away = _mm512_cmp_ps_mask(frac, half, _CMP_GE_OQ);
        // copysign(1, r): r's sign bit on 1.0f.
        const __m512 step = _mm512_or_ps(one, _mm512_and_ps(sign, r));
        t = _mm512_mask_add_ps(t, away, t, step);
        t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
        return _mm512_cvttps_epi32(t);
    };
    const __m512i i0 = quantize16(v0), i1 = quantize16(v1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(i1));
    return _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
}

}  // namespace
}  // namespace quant_acts

void quantize_activations_dot16(const float* x, int64_t n, int64_t cols, int32_t offset, int8_t* q, float* d,
                                int32_t* offset_sum) {
    // nbp: quant_dot16_blocks(cols), spelled out (impl.h: no inline function shared across levels).
    const int64_t nb = cols / k_quant_block, nbp = (nb + 15) / 16 * 16;
#pragma omp parallel for schedule(static) if (n * cols >= (1 << 16))
    for (int64_t t = 0; t < n; ++t) {
        for (int64_t b = 0; b < nb; ++b) {
            alignas(32) int8_t block[k_quant_block];
            float db = 0.0f;
            const int32_t s = quant_acts::quantize_block(x + t * cols + b * k_quant_block, block, &db);
            // Dot16: dword i of block l of group g is bytes 64 i + 4 l of the group.
            int8_t* group = q + (t * nbp + b / 16 * 16) * k_quant_block + (b % 16) * 4;
#pragma GCC unroll 8
            for (int i = 0; i < k_quant_block / 4; ++i) std::memcpy(group + i * 64, block + 4 * i, 4);
            d[t * nbp + b] = db;
            offset_sum[t * nbp + b] = s * offset;
        }
    }
}
