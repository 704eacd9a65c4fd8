// AVX-512 level of the CPU kernels (compiled with PHI_AVX512_FLAGS): 16-lane vector traits, then
// the shared SIMD body (simd_kernels.inl). bf16 weights are widened in registers (zero-extend,
// shift left 16). Needs AVX512F/BW/VL/DQ (BW+VL for the masked 16-bit tail loads).
// GCC 12 warns falsely about the _mm512_undefined_* placeholders inside its own intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/activation_math.h"
#include "kernels/cpu/impl.h"

namespace phi::kernels::cpu::avx512 {
namespace {

struct V {
    using F = __m512;
    static constexpr int k_width = 16;
    // Register tile of linear: 4 rows x 6 tokens = 24 accumulators + 4 weight vectors + 1 x vector
    // of the 32 zmm registers (n=16 bf16: ~105 GFLOP/s per core, ~90% of the measured FMA peak).
    static constexpr int k_rows = 4;
    static constexpr int k_tokens = 6;

    static __mmask16 mask(int rem) { return rem >= 16 ? __mmask16(0xffff) : __mmask16((1u << rem) - 1u); }
    static F zero() { return _mm512_setzero_ps(); }
    static F set1(float v) { return _mm512_set1_ps(v); }
    static F load(const float* p) { return _mm512_loadu_ps(p); }
    static F load(const uint16_t* p) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    static F load_tail(const float* p, int rem) { return _mm512_maskz_loadu_ps(mask(rem), p); }
    static F load_tail(const uint16_t* p, int rem) {
        const __m256i h = _mm256_maskz_loadu_epi16(mask(rem), p);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
    static void store_tail(float* p, F v, int rem) { _mm512_mask_storeu_ps(p, mask(rem), v); }
    static F keep(F v, int rem) { return _mm512_maskz_mov_ps(mask(rem), v); }
    static F add(F a, F b) { return _mm512_add_ps(a, b); }
    static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
    static F div(F a, F b) { return _mm512_div_ps(a, b); }
    static F max(F a, F b) { return _mm512_max_ps(a, b); }
    static F min(F a, F b) { return _mm512_min_ps(a, b); }
    /// 2^n for integral n in [-126, 127] (activation_math.h).
    static F exp2i(F n) {
        const __m512i e = _mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127));
        return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    }
    /// Fixed tree: 8 + 8, 4 + 4, 2 + 2, 1 + 1.
    static float hsum(F v) {
        const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
        __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
        return _mm_cvtss_f32(s4);
    }
};

/// Quantized weights to fp32 for the F32 mode of the quantized linear (simd_quant.inl).
struct QV {
    // 4 rows x 4 tokens = 16 accumulators + 4 scales + 4 weight vectors + x and temporaries.
    static constexpr int k_rows = 4;
    static constexpr int k_tokens = 4;
    // The widened path keeps x and 4 fp32 rows in L2 (>= 1 MiB on AVX-512 parts): 768 KiB of x
    // gives Phi-2's fc2 (10240 columns) 18-token super-blocks (bench_quant --tokens 128: int4
    // weight-only 0.80 -> 0.85 of bf16 against 384 KiB).
    static constexpr int64_t k_wide_x_bytes = 768 * 1024;
    static __m512 q8(const int8_t* p) {
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    }
    // Q4 as a 16-entry lookup: the block's table d * (j - 8), j = 0..15 (the same products the
    // convert-and-multiply gives), indexed by each nibble with one VPERMPS, which reads only the
    // index's low 4 bits (no mask for the low nibbles). Per 16 weights: widen, [shift], permute,
    // instead of widen, [shift], and, subtract, convert, multiply: weight-only int4 at batch 1 is
    // bound by these vector ops, not by memory.
    static __m512 q4_scale(__m512 d) {
        return _mm512_mul_ps(d, _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
    }
    static __m512 q4_scaled(const uint8_t* p, int high, __m512 table) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        if (high) v = _mm512_srli_epi32(v, 4);
        return _mm512_permutexvar_ps(v, table);
    }
};

}  // namespace

#include "kernels/cpu/simd_kernels.inl"
#include "kernels/cpu/simd_quant_acts.inl"

// The int8-activation mode uses 256-bit integer code at this level too (one block of 32 is one
// ymm); AVX512-VNNI provides its 256-bit VPDPBUSD (with AVX512VL).
// GCC and clang spell "compile this region for one more feature" differently.
#if defined(__clang__)
#define PHI_QUANT_VNNI_BEGIN \
    _Pragma("clang attribute push(__attribute__((target(\"avx512vnni\"))), apply_to = function)")
#define PHI_QUANT_VNNI_END _Pragma("clang attribute pop")
#else
#define PHI_QUANT_VNNI_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx512vnni\")")
#define PHI_QUANT_VNNI_END _Pragma("GCC pop_options")
#endif
#define PHI_QUANT_VNNI_DPBUSD(u, s) _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
#include "kernels/cpu/simd_quant.inl"

// The Int8 mode on Dot16-packed weights: 512-bit VPDPBUSD (AVX512-VNNI), called only when the CPU
// has it (quant_packs_for_int8_dot).
PHI_QUANT_VNNI_BEGIN
#include "kernels/cpu/simd_quant_dot16.inl"
PHI_QUANT_VNNI_END

}  // namespace phi::kernels::cpu::avx512
