// Int8-activation mode of the quantized linear at a SIMD level (see simd_quant.inl, which includes
// this file twice: PHI_QUANT_DOT(u, s) is the 8-lane int32 sum of u (unsigned bytes) times s
// (signed bytes), by VPMADDUBSW + VPMADDWD or by VPDPBUSD). No saturation can occur: |u| <= 127.

namespace {

/// One weight block in the unsigned form the instructions take: Q8: w itself (for the sign) and
/// |w|; Q4: q + 8 in [0, 15] (low nibbles are elements 0..15, high nibbles 16..31).
struct WBlock {
    __m256i w;
    __m256i u;
};

template <QuantFormat Fmt>
inline WBlock load_wblock(const uint8_t* wq) {
    if constexpr (Fmt == QuantFormat::Q8) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq));
        return {w, _mm256_sign_epi8(w, w)};
    } else {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wq));
        const __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0f));
        return {u, u};
    }
}

/// Lanes summing exactly to the block's dot product (Q4: of q + 8; the caller subtracts 8 sum(x)).
template <QuantFormat Fmt>
inline __m256i block_dot(const WBlock& wb, __m256i xv) {
    if constexpr (Fmt == QuantFormat::Q8) {
        return PHI_QUANT_DOT(wb.u, _mm256_sign_epi8(xv, wb.w));  // |w| times x * sign(w)
    } else {
        return PHI_QUANT_DOT(wb.u, xv);
    }
}

/// y[t + j, o + r] for a tile of R rows x T tokens (j < T, r < R). Blocks go in groups of 8 whose
/// integer sums are gathered into one vector (lane j = block b0 + j) by a tree of VPHADDD built
/// pairwise as the blocks are produced (few registers live) and a final 128-bit-lane swap, then scaled and
/// added to the 8-lane fp32 accumulator of that output: the order of simd_quant.inl. pf: the next R rows'
/// bytes, prefetched as these are read (or null).
template <QuantFormat Fmt, int R, int T>
inline void tile(float* y, int64_t ldy, const QuantActs& a, int64_t t, const QuantWeightView& w, int64_t o,
                 const float* bias, const char* pf) {
    constexpr int64_t bb = quant_block_bytes(Fmt);
    const int64_t cols = w.cols, nb = cols / k_quant_block, row_bytes = nb * bb;
    __m256 acc[R][T];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) acc[r][j] = _mm256_setzero_ps();
    }
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int g = int(min64(8, nb - b0));
        if (pf != nullptr) {
#pragma GCC unroll 4
            for (int64_t l = 0; l < R * 8 * bb; l += 64) _mm_prefetch(pf + R * b0 * bb + l, _MM_HINT_T0);
        }
        // Pairwise tree of quant_reduce8: h[k] = hadd(v[2k], v[2k+1]); q[m] = hadd(h[2m], h[2m+1]).
        __m256i qh[R][T][2];
        for (int m = 0; m < 2; ++m) {
            __m256i h[R][T][2];
            for (int k = 0; k < 2; ++k) {
                __m256i v[R][T][2];
                for (int e = 0; e < 2; ++e) {
                    const int jb = 4 * m + 2 * k + e;  // block b0 + jb
                    if (jb < g) {
                        WBlock wb[R];
#pragma GCC unroll 4
                        for (int r = 0; r < R; ++r)
                            wb[r] = load_wblock<Fmt>(w.qs + (o + r) * row_bytes + (b0 + jb) * bb);
#pragma GCC unroll 4
                        for (int j = 0; j < T; ++j) {
                            const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                a.q + (t + j) * cols + (b0 + jb) * k_quant_block));
#pragma GCC unroll 4
                            for (int r = 0; r < R; ++r) v[r][j][e] = block_dot<Fmt>(wb[r], xv);
                        }
                    } else {
#pragma GCC unroll 4
                        for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
                            for (int j = 0; j < T; ++j) v[r][j][e] = _mm256_setzero_si256();
                        }
                    }
                }
#pragma GCC unroll 4
                for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
                    for (int j = 0; j < T; ++j) h[r][j][k] = _mm256_hadd_epi32(v[r][j][0], v[r][j][1]);
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
                for (int j = 0; j < T; ++j) qh[r][j][m] = _mm256_hadd_epi32(h[r][j][0], h[r][j][1]);
            }
        }
        // Scales and activation sums of the group; missing blocks add 0 * 0 = +0 (no change).
        __m128i wd[R];
        __m256 xd[T];
        __m256i xs[T];
        if (g == 8) {
#pragma GCC unroll 4
            for (int r = 0; r < R; ++r)
                wd[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales + (o + r) * nb + b0));
#pragma GCC unroll 4
            for (int j = 0; j < T; ++j) {
                xd[j] = _mm256_loadu_ps(a.d + (t + j) * nb + b0);
                xs[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sum + (t + j) * nb + b0));
            }
        } else {
            for (int r = 0; r < R; ++r) {
                alignas(16) uint16_t buf[8] = {};
                for (int jb = 0; jb < g; ++jb) buf[jb] = w.scales[(o + r) * nb + b0 + jb];
                wd[r] = _mm_load_si128(reinterpret_cast<const __m128i*>(buf));
            }
            for (int j = 0; j < T; ++j) {
                alignas(32) float dbuf[8] = {};
                alignas(32) int32_t sbuf[8] = {};
                for (int jb = 0; jb < g; ++jb) {
                    dbuf[jb] = a.d[(t + j) * nb + b0 + jb];
                    sbuf[jb] = a.sum[(t + j) * nb + b0 + jb];
                }
                xd[j] = _mm256_load_ps(dbuf);
                xs[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sbuf));
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const __m256 dw = _mm256_cvtph_ps(wd[r]);
#pragma GCC unroll 4
            for (int j = 0; j < T; ++j) {
                __m256i isum = _mm256_add_epi32(_mm256_permute2x128_si256(qh[r][j][0], qh[r][j][1], 0x20),
                                                _mm256_permute2x128_si256(qh[r][j][0], qh[r][j][1], 0x31));
                if constexpr (Fmt == QuantFormat::Q4)
                    isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(xs[j], 3));
                const __m256 scale = _mm256_mul_ps(dw, xd[j]);
                acc[r][j] = _mm256_add_ps(acc[r][j], _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)));
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

/// Tile rows x tokens: 2 x 2, with 1-row / 1-token tiles for the remainders.
template <QuantFormat Fmt, int R>
inline void tile_row(float* y, const QuantActs& a, int64_t t0, int64_t t_hi, const QuantWeightView& w,
                     int64_t o, const float* bias, const char* pf) {
    int64_t t = t0;
    for (; t + 2 <= t_hi; t += 2) tile<Fmt, R, 2>(y, w.rows, a, t, w, o, bias, t == t0 ? pf : nullptr);
    if (t < t_hi) tile<Fmt, R, 1>(y, w.rows, a, t, w, o, bias, t == t0 ? pf : nullptr);
}

/// Threads take fixed chunks of output rows; within a chunk, each pair of rows' weights (a few KiB)
/// stays in L1 while the tokens of a super-block of x run over them.
template <QuantFormat Fmt>
void run_impl(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias) {
    constexpr int64_t bb = quant_block_bytes(Fmt);
    constexpr int64_t chunk = 16;
    const int64_t rows = w.rows, cols = w.cols, nb = cols / k_quant_block;
    const int64_t row_bytes = nb * bb;
    const int64_t n_chunks = (rows + chunk - 1) / chunk;
    const int64_t tb = max64(2, (256 * 1024) / max64(cols, 1) / 2 * 2);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t o_lo = c * chunk;
        const int64_t o_hi = min64(rows, o_lo + chunk);
        for (int64_t t0 = 0; t0 < n; t0 += tb) {
            const int64_t t_hi = min64(n, t0 + tb);
            int64_t o = o_lo;
            for (; o + 2 <= o_hi; o += 2) {
                const char* pf =
                    o + 4 <= rows ? reinterpret_cast<const char*>(w.qs + (o + 2) * row_bytes) : nullptr;
                tile_row<Fmt, 2>(y, a, t0, t_hi, w, o, bias, pf);
            }
            if (o < o_hi) tile_row<Fmt, 1>(y, a, t0, t_hi, w, o, bias, nullptr);
        }
    }
}

void run(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias) {
    if (w.format == QuantFormat::Q8) {
        run_impl<QuantFormat::Q8>(y, a, n, w, bias);
    } else {
        run_impl<QuantFormat::Q4>(y, a, n, w, bias);
    }
}

}  // namespace
