// Int8-activation mode on Dot16-packed weights (quant.h, pack_for_int8_dot) at the avx512 level
// with AVX512-VNNI. Included by simd_avx512.cpp after simd_quant.inl (quant_hsum8, min64, max64),
// inside a region compiled with AVX512-VNNI.
//
// A group of 16 blocks of one row is 8 (Q8) or 4 (Q4) runs of 64 bytes; a run times the same run
// of a token's activations in one VPDPBUSD adds to lane l a part of block 16g + l's dot product,
// so after the group's runs lane l holds that block's exact integer sum (of (q + offset) * x; the
// offset sums are subtracted). The fp32 part is the scalar reference's order: per block,
// (fp32(d_w) * d_x) * float(isum), lanes 0..7 (blocks 16g .. 16g+7) added to the 8-lane
// accumulator, then lanes 8..15 (the next eight blocks), mul then add, no FMA; quant_hsum8 at the
// end. Padding blocks (scale 0, sums 0) add +0, which leaves the accumulator unchanged (it starts
// at +0 and a sum is -0 only if both terms are).

namespace quant_dot16 {
namespace {

/// quant_dot16_blocks, local (impl.h: no inline function shared with other translation units).
inline int64_t padded_blocks(int64_t cols) {
    return (cols / k_quant_block + 15) / 16 * 16;
}

/// y[t + j, o + r] for a tile of R rows x T tokens. pf: the next R rows' bytes (or null).
template <QuantFormat Fmt, int R, int T>
inline void tile(float* y, int64_t ldy, const QuantActs& a, int64_t t, const QuantWeightView& w, int64_t o,
                 const float* bias, const char* pf) {
    constexpr int64_t gb = 16 * quant_block_bytes(Fmt);  // bytes of one row's group of 16 blocks
    constexpr int64_t xgb = 16 * k_quant_block;          // bytes of one token's group
    const int64_t nb = w.cols / k_quant_block, nbp = padded_blocks(w.cols), ng = nbp / 16;
    const int64_t row_bytes = ng * gb, x_bytes = nbp * k_quant_block;
    const uint8_t* wq[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wq[r] = w.qs + (o + r) * row_bytes;
    const int8_t* xq[T];
#pragma GCC unroll 4
    for (int j = 0; j < T; ++j) xq[j] = a.q + (t + j) * x_bytes;
    __m256 acc[R][T];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) acc[r][j] = _mm256_setzero_ps();
    }
    for (int64_t g = 0; g < ng; ++g) {
        if (pf != nullptr) {
#pragma GCC unroll 8
            for (int64_t l = 0; l < R * gb; l += 64) _mm_prefetch(pf + R * g * gb + l, _MM_HINT_T1);
        }
        __m512i is[R][T];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
            for (int j = 0; j < T; ++j) is[r][j] = _mm512_setzero_si512();
        }
        if constexpr (Fmt == QuantFormat::Q8) {
#pragma GCC unroll 8
            for (int i = 0; i < 8; ++i) {
                __m512i wv[R];
#pragma GCC unroll 4
                for (int r = 0; r < R; ++r) wv[r] = _mm512_loadu_si512(wq[r] + g * gb + i * 64);
#pragma GCC unroll 4
                for (int j = 0; j < T; ++j) {
                    const __m512i xv = _mm512_loadu_si512(xq[j] + g * xgb + i * 64);
#pragma GCC unroll 4
                    for (int r = 0; r < R; ++r) is[r][j] = _mm512_dpbusd_epi32(is[r][j], wv[r], xv);
                }
            }
        } else {
            const __m512i low = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
                __m512i lo[R], hi[R];
#pragma GCC unroll 4
                for (int r = 0; r < R; ++r) {
                    const __m512i p = _mm512_loadu_si512(wq[r] + g * gb + i * 64);
                    lo[r] = _mm512_and_si512(p, low);
                    hi[r] = _mm512_and_si512(_mm512_srli_epi16(p, 4), low);
                }
#pragma GCC unroll 4
                for (int j = 0; j < T; ++j) {
                    const __m512i x0 = _mm512_loadu_si512(xq[j] + g * xgb + i * 64);
                    const __m512i x1 = _mm512_loadu_si512(xq[j] + g * xgb + (i + 4) * 64);
#pragma GCC unroll 4
                    for (int r = 0; r < R; ++r) {
                        is[r][j] = _mm512_dpbusd_epi32(is[r][j], lo[r], x0);
                        is[r][j] = _mm512_dpbusd_epi32(is[r][j], hi[r], x1);
                    }
                }
            }
        }
        const bool second_half = 16 * g + 8 < nb;  // lanes 8..15 hold at least one real block
        __m512 dw[R];
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r)
            dw[r] = _mm512_cvtph_ps(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + (o + r) * nbp + g * 16)));
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) {
            const __m512 xd = _mm512_loadu_ps(a.d + (t + j) * nbp + g * 16);
            const __m512i xo = _mm512_loadu_si512(a.sum + (t + j) * nbp + g * 16);
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
                const __m512i isum = _mm512_sub_epi32(is[r][j], xo);
                const __m512 p = _mm512_mul_ps(_mm512_mul_ps(dw[r], xd), _mm512_cvtepi32_ps(isum));
                acc[r][j] = _mm256_add_ps(acc[r][j], _mm512_castps512_ps256(p));
                if (second_half) acc[r][j] = _mm256_add_ps(acc[r][j], _mm512_extractf32x8_ps(p, 1));
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) {
            float s = quant_hsum8(acc[r][j]);
            if (bias != nullptr) s += bias[o + r];
            y[(t + j) * ldy + o + r] = s;
        }
    }
}

/// tile with T = tn (1 <= tn <= T) chosen at run time.
template <QuantFormat Fmt, int R, int T>
inline void tile_n(int64_t tn, float* y, int64_t ldy, const QuantActs& a, int64_t t, const QuantWeightView& w,
                   int64_t o, const float* bias, const char* pf) {
    if constexpr (T > 1) {
        if (tn < T) {
            tile_n<Fmt, R, T - 1>(tn, y, ldy, a, t, w, o, bias, pf);
            return;
        }
    }
    tile<Fmt, R, T>(y, ldy, a, t, w, o, bias, pf);
}

/// Tokens of a register tile (32 zmm): Q8 4 rows x 3 tokens (12 integer + 12 fp32 accumulators, 4
/// weight runs, one activation run); Q4 needs two registers per weight run (low and high nibbles),
/// so 4 x 2.
template <QuantFormat Fmt>
constexpr int k_tile_tokens = Fmt == QuantFormat::Q8 ? 3 : 2;

/// Threads take fixed chunks of output rows; within a chunk, each R-row block of weights stays in
/// L1/L2 while the tokens of a super-block of activations run over it. Rows ahead are prefetched
/// into L2 (T0 measured a third slower at batch 1 than T1 here).
template <QuantFormat Fmt, int R>
void run_impl(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias) {
    constexpr int T = k_tile_tokens<Fmt>;
    constexpr int64_t chunk = 16;
    const int64_t rows = w.rows, nbp = padded_blocks(w.cols);
    const int64_t row_bytes = nbp * quant_block_bytes(Fmt), x_bytes = nbp * k_quant_block;
    const int64_t n_chunks = (rows + chunk - 1) / chunk;
    const int64_t tb = max64(T, (256 * 1024) / max64(x_bytes, 1) / T * T);
    // Prefetch about 16 KiB ahead: one R-row block of int4 rows is only 2.5 KiB at Phi-2's width,
    // too close to hide DRAM latency (measured at batch 1: int4 -16 %, int8 -10 % time vs one block).
    const int64_t lead = max64(1, (16 * 1024) / max64(R * row_bytes, 1));
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t o_lo = c * chunk;
        const int64_t o_hi = min64(rows, o_lo + chunk);
        for (int64_t t0 = 0; t0 < n; t0 += tb) {
            const int64_t t_hi = min64(n, t0 + tb);
            int64_t o = o_lo;
            for (; o + R <= o_hi; o += R) {
                const int64_t ahead = o + R * lead;  // the R-row block `lead` blocks ahead
                const char* pf =
                    ahead + R <= rows ? reinterpret_cast<const char*>(w.qs + ahead * row_bytes) : nullptr;
                for (int64_t t = t0; t < t_hi; t += T)
                    tile_n<Fmt, R, T>(min64(T, t_hi - t), y, rows, a, t, w, o, bias, t == t0 ? pf : nullptr);
            }
            for (; o < o_hi; ++o) {
                for (int64_t t = t0; t < t_hi; t += T)
                    tile_n<Fmt, 1, T>(min64(T, t_hi - t), y, rows, a, t, w, o, bias, nullptr);
            }
        }
    }
}

}  // namespace
}  // namespace quant_dot16

void linear_quant_i8_dot16(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias) {
    // One token streams the weights: 2-row tiles measured faster there (fewer streams at once);
    // several tokens reuse each weight run from registers: 4-row tiles. The tile never changes a
    // result (each output's order is its own).
    using quant_dot16::run_impl;
    if (w.format == QuantFormat::Q8) {
        if (n == 1) {
            run_impl<QuantFormat::Q8, 2>(y, a, n, w, bias);
        } else {
            run_impl<QuantFormat::Q8, 4>(y, a, n, w, bias);
        }
    } else {
        if (n == 1) {
            run_impl<QuantFormat::Q4, 2>(y, a, n, w, bias);
        } else {
            run_impl<QuantFormat::Q4, 4>(y, a, n, w, bias);
        }
    }
}
