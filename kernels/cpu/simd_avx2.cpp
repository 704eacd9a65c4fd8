// AVX2 + FMA level of the CPU kernels (compiled with PHI_AVX2_FLAGS): 8-lane vector traits, then
// the shared SIMD body (simd_kernels.inl). bf16 weights are widened in registers (zero-extend,
// shift left 16).
#include <immintrin.h>
#include <omp.h>

#include "kernels/cpu/activation_math.h"
#include "kernels/cpu/impl.h"

namespace phi::kernels::cpu::avx2 {
namespace {

struct V {
    using F = __m256;
    static constexpr int k_width = 8;
    // Register tile of linear: 3 rows x 4 tokens = 12 accumulators + 3 weight vectors + 1 x vector
    // = the 16 ymm registers (measured best of 4x3, 3x4, 2x6 and 4x2).
    static constexpr int k_rows = 3;
    static constexpr int k_tokens = 4;

    static __m256i mask(int rem) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static F widen(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
    static F zero() { return _mm256_setzero_ps(); }
    static F set1(float v) { return _mm256_set1_ps(v); }
    static F load(const float* p) { return _mm256_loadu_ps(p); }
    static F load(const uint16_t* p) { return widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
    static F load_tail(const float* p, int rem) { return _mm256_maskload_ps(p, mask(rem)); }
    static F load_tail(const uint16_t* p, int rem) {
        alignas(16) uint16_t buf[8] = {};
        for (int i = 0; i < rem; ++i) buf[i] = p[i];
        return widen(_mm_load_si128(reinterpret_cast<const __m128i*>(buf)));
    }
    static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
    static void store_tail(float* p, F v, int rem) { _mm256_maskstore_ps(p, mask(rem), v); }
    static F keep(F v, int rem) { return _mm256_and_ps(v, _mm256_castsi256_ps(mask(rem))); }
    static F add(F a, F b) { return _mm256_add_ps(a, b); }
    static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
    static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    static F div(F a, F b) { return _mm256_div_ps(a, b); }
    static F max(F a, F b) { return _mm256_max_ps(a, b); }
    static F min(F a, F b) { return _mm256_min_ps(a, b); }
    /// 2^n for integral n in [-126, 127] (activation_math.h).
    static F exp2i(F n) {
        const __m256i e = _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127));
        return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    }
    /// Fixed tree: 4 + 4, 2 + 2, 1 + 1.
    static float hsum(F v) {
        __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
        return _mm_cvtss_f32(s4);
    }
};

/// Quantized weights to fp32 for the F32 mode of the quantized linear (simd_quant.inl).
struct QV {
    // 2 rows x 4 tokens = 8 accumulators + 2 scales + 2 weight vectors + x and temporaries.
    static constexpr int k_rows = 2;
    static constexpr int k_tokens = 4;
    static constexpr int64_t k_wide_x_bytes = 384 * 1024;  // the fp32 kernel's super-block (L2)
    static __m256 q8(const int8_t* p) {
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }
    // Q4: the scale itself (a 16-entry table needs two 8-lane permutes and a blend at this width).
    static __m256 q4_scale(__m256 d) { return d; }
    static __m256 q4_scaled(const uint8_t* p, int high, __m256 d) {
        __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        if (high) v = _mm256_srli_epi32(v, 4);
        v = _mm256_sub_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x0f)), _mm256_set1_epi32(8));
        return _mm256_mul_ps(d, _mm256_cvtepi32_ps(v));
    }
};

}  // namespace

#include "kernels/cpu/simd_kernels.inl"

// GCC and clang spell "compile this region for one more feature" differently.
#if defined(__clang__)
#define PHI_QUANT_VNNI_BEGIN \
    _Pragma("clang attribute push(__attribute__((target(\"avxvnni\"))), apply_to = function)")
#define PHI_QUANT_VNNI_END _Pragma("clang attribute pop")
#else
#define PHI_QUANT_VNNI_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avxvnni\")")
#define PHI_QUANT_VNNI_END _Pragma("GCC pop_options")
#endif
#define PHI_QUANT_VNNI_DPBUSD(u, s) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s)
#include "kernels/cpu/simd_quant.inl"

}  // namespace phi::kernels::cpu::avx2
