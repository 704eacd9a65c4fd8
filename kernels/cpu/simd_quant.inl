// Shared body of the quantized linear (quant.h, docs/QUANT.md) at the SIMD levels. Included by
// simd_avx2.cpp and simd_avx512.cpp inside their namespace, after simd_kernels.inl (V, F, min64,
// max64) and after each file defines:
//   struct QV { k_rows, k_tokens (register tile of the F32 mode);
//               k_wide_x_bytes (x per token super-block of the F32 mode's widened path);
//               static F q8(const int8_t* p);            // V::k_width int8 values as fp32
//               static F q4_scale(F d);                  // what a Q4 block keeps of its scale d
//               static F q4_scaled(const uint8_t* p, int high, F s); // d * (nibble - 8) as fp32 for
//                                          // the nibbles (high ? >> 4 : & 15) of V::k_width bytes };
//   PHI_QUANT_VNNI_BEGIN / _END: a region compiled with the level's 256-bit VPDPBUSD enabled;
//   PHI_QUANT_VNNI_DPBUSD(u, s): that instruction on a zero accumulator.
// Everything here has internal linkage (see impl.h).
//
// F32 mode: the loop structure and numerics of this level's fp32 `linear` (one vector accumulator
// per output, lane j gets the elements c * k_width + j in order, one FMA each, V::hsum), with each
// weight vector formed as fp32(d) * q, which is exact: bitwise the fp32 kernel on the dequantized
// weights. Int8 mode: 256-bit integer dot products per block (exact), eight blocks' sums gathered
// into one vector whose lane j is block b0 + j, then (fp32(d_w) * d_x) * float(isum) added to an
// 8-lane fp32 accumulator (mul then add, no FMA) and the lanes reduced by the fixed 4+4, 2+2, 1+1
// tree: the scalar reference's order exactly, at both levels.

namespace {

// ---------------------------------------------------------------------------------------------
// Weight-only (F32) mode.

/// What dequant needs of a block's fp16 scale: d broadcast (Q8), QV::q4_scale(d) (Q4).
template <QuantFormat Fmt>
inline F block_scale(uint16_t h) {
    const F d = V::set1(_cvtsh_ss(h));
    if constexpr (Fmt == QuantFormat::Q8) {
        return d;
    } else {
        return QV::q4_scale(d);
    }
}

/// Weight vector k .. k + k_width - 1 of a quantized row (k a multiple of k_width): d * q, exact in
/// fp32. s: block_scale<Fmt> of the block's scale.
template <QuantFormat Fmt>
inline F dequant(const uint8_t* row_qs, int64_t k, F s) {
    if constexpr (Fmt == QuantFormat::Q8) {
        return V::mul(s, QV::q8(reinterpret_cast<const int8_t*>(row_qs) + k));
    } else {
        const int64_t b = k / k_quant_block, c = k % k_quant_block;
        return QV::q4_scaled(row_qs + b * (k_quant_block / 2) + c % (k_quant_block / 2),
                             c >= k_quant_block / 2 ? 1 : 0, s);
    }
}

/// y[t, o + r] for a tile of R rows x T tokens. pf: the next R-row block of quantized values,
/// prefetched at the rate this one is read (as the fp32 kernel does).
template <QuantFormat Fmt, int R, int T>
inline void quant_tile(float* y, int64_t ldy, const float* x, int64_t ldx, const QuantWeightView& w,
                       int64_t o, const float* bias, const char* pf) {
    constexpr int64_t bb = quant_block_bytes(Fmt);
    constexpr int k_pf_lines = int((R * bb + 63) / 64);
    const int64_t nb = w.cols / k_quant_block;
    const uint8_t* wq[R];
    const uint16_t* ws[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        wq[r] = w.qs + (o + r) * nb * bb;
        ws[r] = w.scales + (o + r) * nb;
    }
    F acc[T][R];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[t][r] = V::zero();
    }
    for (int64_t b = 0; b < nb; ++b) {
        if (pf != nullptr) {
#pragma GCC unroll 8
            for (int l = 0; l < k_pf_lines; ++l) _mm_prefetch(pf + 64 * l, _MM_HINT_T1);
            pf += R * bb;
        }
        F d[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) d[r] = block_scale<Fmt>(ws[r][b]);
#pragma GCC unroll 4
        for (int c = 0; c < k_quant_block; c += V::k_width) {
            const int64_t k = b * k_quant_block + c;
            F wv[R];
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) wv[r] = dequant<Fmt>(wq[r], k, d[r]);
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) {
                const F xv = V::load(x + t * ldx + k);
#pragma GCC unroll 8
                for (int r = 0; r < R; ++r) acc[t][r] = V::fma(xv, wv[r], acc[t][r]);
            }
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            float s = V::hsum(acc[t][r]);
            if (bias != nullptr) s += bias[o + r];
            y[t * ldy + o + r] = s;
        }
    }
}

template <QuantFormat Fmt, int R, int T = QV::k_tokens>
inline void quant_tile_n(int64_t tn, float* y, int64_t ldy, const float* x, int64_t ldx,
                         const QuantWeightView& w, int64_t o, const float* bias, const char* pf) {
    if constexpr (T > 1) {
        if (tn < T) {
            quant_tile_n<Fmt, R, T - 1>(tn, y, ldy, x, ldx, w, o, bias, pf);
            return;
        }
    }
    quant_tile<Fmt, R, T>(y, ldy, x, ldx, w, o, bias, pf);
}

/// Rows [o, o + V::k_rows) of a quantized weight as fp32 values d * q in `out` (row stride cols):
/// the very vectors quant_tile multiplies by. pf: the next block of rows, prefetched at the rate
/// this one is read.
template <QuantFormat Fmt>
inline void dequant_rows(float* out, const QuantWeightView& w, int64_t o, const char* pf) {
    constexpr int R = V::k_rows;
    constexpr int64_t bb = quant_block_bytes(Fmt);
    constexpr int k_pf_lines = int((R * bb + 63) / 64);
    const int64_t nb = w.cols / k_quant_block;
    for (int r = 0; r < R; ++r) {
        const uint8_t* wq = w.qs + (o + r) * nb * bb;
        const uint16_t* ws = w.scales + (o + r) * nb;
        float* dst = out + r * w.cols;
        for (int64_t b = 0; b < nb; ++b) {
            if (pf != nullptr && b % R == 0) {
#pragma GCC unroll 8
                for (int l = 0; l < k_pf_lines; ++l) _mm_prefetch(pf + 64 * l, _MM_HINT_T1);
                pf += R * bb;
            }
            const F d = block_scale<Fmt>(ws[b]);
#pragma GCC unroll 4
            for (int c = 0; c < k_quant_block; c += V::k_width) {
                const int64_t k = b * k_quant_block + c;
                V::store(dst + k, dequant<Fmt>(wq, k, d));
            }
        }
    }
}

/// The F32 mode for prefill and large batches: each V::k_rows-row block widened to fp32 once per
/// token super-block (tb tokens) into a per-thread buffer, then the fp32 `linear` tile on it, so a
/// token costs the fp32 kernel's FMAs only, where quant_tile pays a convert and a multiply per
/// weight vector every QV::k_tokens tokens. Both form the same values d * q and the same FMA
/// chains: bitwise equal to quant_tile (and to `linear` on dequantize(w)).
template <QuantFormat Fmt>
void quant_f32_widened(float* y, const float* x, int64_t n, const QuantWeightView& w, const float* bias,
                       int64_t tb) {
    constexpr int R = V::k_rows;
    constexpr int64_t chunk = 4 * R;
    const int64_t rows = w.rows, cols = w.cols;
    const int64_t row_bytes = cols / k_quant_block * quant_block_bytes(Fmt);
    const int64_t n_chunks = (rows + chunk - 1) / chunk;
#pragma omp parallel
    {
        CacheLineVector<float> buf(size_t(R * cols));
#pragma omp for schedule(static)
        for (int64_t c = 0; c < n_chunks; ++c) {
            const int64_t o_lo = c * chunk;
            const int64_t o_hi = min64(rows, o_lo + chunk);
            for (int64_t t0 = 0; t0 < n; t0 += tb) {
                const int64_t t_hi = min64(n, t0 + tb);
                int64_t o = o_lo;
                for (; o + R <= o_hi; o += R) {
                    const char* pf = o + 2 * R <= rows
                                         ? reinterpret_cast<const char*>(w.qs + (o + R) * row_bytes)
                                         : nullptr;
                    dequant_rows<Fmt>(buf.data(), w, o, pf);
                    for (int64_t t = t0; t < t_hi; t += V::k_tokens) {
                        linear_tile_n<float, R>(
                            min64(V::k_tokens, t_hi - t),
                            TileArgs<float>{y + t * rows + o, rows, x + t * cols, cols, buf.data(), cols,
                                            cols, bias ? bias + o : nullptr, nullptr});
                    }
                }
                for (; o < o_hi; ++o) {
                    for (int64_t t = t0; t < t_hi; t += QV::k_tokens) {
                        quant_tile_n<Fmt, 1>(min64(QV::k_tokens, t_hi - t), y + t * rows, rows, x + t * cols,
                                             cols, w, o, bias, nullptr);
                    }
                }
            }
        }
    }
}

/// The fp32 kernel's schedule: fixed chunks of output rows per thread, tokens in super-blocks of
/// about 384 KiB of x so each weight block is read from memory once per super-block. From two of
/// the fp32 tile's token groups on (four for int8), with super-blocks of at least two such groups,
/// quant_f32_widened instead (bench_quant --tokens 128: int8 0.8x, int4 0.66x of bf16 in registers,
/// ~0.88x and ~0.85x widened; at 16 tokens int8 measured ~4 % faster in registers and int4 ~8 %
/// faster widened, hence int8's higher threshold).
template <QuantFormat Fmt>
void quant_f32_impl(float* y, const float* x, int64_t n, const QuantWeightView& w, const float* bias) {
    constexpr int R = QV::k_rows;
    constexpr int T = QV::k_tokens;
    constexpr int64_t bb = quant_block_bytes(Fmt);
    constexpr int64_t chunk = 4 * R;
    const int64_t rows = w.rows, cols = w.cols;
    const int64_t row_bytes = cols / k_quant_block * bb;
    const int64_t tb_wide = QV::k_wide_x_bytes / (4 * max64(cols, 1)) / V::k_tokens * V::k_tokens;
    const int64_t min_wide = (Fmt == QuantFormat::Q8 ? 4 : 2) * V::k_tokens;
    if (n >= min_wide && tb_wide >= 2 * V::k_tokens) {
        quant_f32_widened<Fmt>(y, x, n, w, bias, tb_wide);
        return;
    }
    const int64_t n_chunks = (rows + chunk - 1) / chunk;
    const int64_t tb = max64(T, (384 * 1024) / (4 * max64(cols, 1)) / T * T);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t o_lo = c * chunk;
        const int64_t o_hi = min64(rows, o_lo + chunk);
        for (int64_t t0 = 0; t0 < n; t0 += tb) {
            const int64_t t_hi = min64(n, t0 + tb);
            int64_t o = o_lo;
            for (; o + R <= o_hi; o += R) {
                const char* pf =
                    o + 2 * R <= rows ? reinterpret_cast<const char*>(w.qs + (o + R) * row_bytes) : nullptr;
                for (int64_t t = t0; t < t_hi; t += T) {
                    quant_tile_n<Fmt, R>(min64(T, t_hi - t), y + t * rows, rows, x + t * cols, cols, w, o,
                                         bias, t == t0 ? pf : nullptr);
                }
            }
            for (; o < o_hi; ++o) {
                for (int64_t t = t0; t < t_hi; t += T) {
                    quant_tile_n<Fmt, 1>(min64(T, t_hi - t), y + t * rows, rows, x + t * cols, cols, w, o,
                                         bias, nullptr);
                }
            }
        }
    }
}

/// The fixed tree of the 8-lane fp32 accumulator: 4 + 4, 2 + 2, 1 + 1 (the scalar reduce_lanes).
inline float quant_hsum8(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Int8-activation mode, twice: with the level's multiply-add pair and with VNNI.

namespace quant_i8_plain {
#define PHI_QUANT_DOT(u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
#include "kernels/cpu/simd_quant_i8.inl"
#undef PHI_QUANT_DOT
}  // namespace quant_i8_plain

PHI_QUANT_VNNI_BEGIN
namespace quant_i8_vnni {
#define PHI_QUANT_DOT(u, s) PHI_QUANT_VNNI_DPBUSD(u, s)
#include "kernels/cpu/simd_quant_i8.inl"
#undef PHI_QUANT_DOT
}  // namespace quant_i8_vnni
PHI_QUANT_VNNI_END

void linear_quant_f32(float* y, const float* x, int64_t n, const QuantWeightView& w, const float* bias) {
    if (w.format == QuantFormat::Q8) {
        quant_f32_impl<QuantFormat::Q8>(y, x, n, w, bias);
    } else {
        quant_f32_impl<QuantFormat::Q4>(y, x, n, w, bias);
    }
}

void linear_quant_i8(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias,
                     bool vnni) {
    if (vnni) {
        quant_i8_vnni::run(y, a, n, w, bias);
    } else {
        quant_i8_plain::run(y, a, n, w, bias);
    }
}
