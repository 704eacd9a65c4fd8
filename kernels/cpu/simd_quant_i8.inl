// Int8-activation mode of the quantized linear at a SIMD level (see simd_quant.inl, which includes
// this file twice: PHI_QUANT_DOT(u, s) is the 8-lane int32 sum of u (unsigned bytes) times s
// (signed bytes), by VPMADDUBSW + VPMADDWD or by VPDPBUSD). No saturation can occur: |u| <= 127.

namespace {

/// Lanes summing exactly to block b's dot product of weights and activations (for Q4: of q + 8,
/// the caller subtracts 8 * sum(x)).
template <QuantFormat Fmt>
inline __m256i block_dot(const uint8_t* wq, const int8_t* xq) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
    if constexpr (Fmt == QuantFormat::Q8) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wq));
        // |w| times x * sign(w): the unsigned x signed form the instructions take.
        return PHI_QUANT_DOT(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
    } else {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wq));
        // Low nibbles are elements 0..15, high nibbles 16..31: q + 8 in [0, 15].
        const __m256i u =
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0f));
        return PHI_QUANT_DOT(u, xv);
    }
}

/// One output: the blocks in groups of 8 (lane j = block b0 + j), see simd_quant.inl.
/// pf: the same bytes of the next row, prefetched as this one is read (or null).
template <QuantFormat Fmt>
inline float row_dot(const uint8_t* wq, const uint16_t* ws, const int8_t* xq, const float* xd, const int32_t* xs,
                     int64_t nb, const char* pf) {
    constexpr int64_t bb = quant_block_bytes(Fmt);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        const int g = int(min64(8, nb - b0));
        if (pf != nullptr) {
#pragma GCC unroll 4
            for (int64_t l = 0; l < 8 * bb; l += 64) _mm_prefetch(pf + b0 * bb + l, _MM_HINT_T0);
        }
        __m256i v[8];
        __m128i wd;
        __m256 d;
        __m256i s8;
        if (g == 8) {
#pragma GCC unroll 8
            for (int j = 0; j < 8; ++j) v[j] = block_dot<Fmt>(wq + (b0 + j) * bb, xq + (b0 + j) * k_quant_block);
            wd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ws + b0));
            d = _mm256_loadu_ps(xd + b0);
            s8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xs + b0));
        } else {
            // Last group: missing blocks add 0 * 0 = +0 to their lanes (no change).
            alignas(32) uint16_t wd_buf[8] = {};
            alignas(32) float d_buf[8] = {};
            alignas(32) int32_t s_buf[8] = {};
            for (int j = 0; j < 8; ++j) {
                if (j < g) {
                    v[j] = block_dot<Fmt>(wq + (b0 + j) * bb, xq + (b0 + j) * k_quant_block);
                    wd_buf[j] = ws[b0 + j];
                    d_buf[j] = xd[b0 + j];
                    s_buf[j] = xs[b0 + j];
                } else {
                    v[j] = _mm256_setzero_si256();
                }
            }
            wd = _mm_load_si128(reinterpret_cast<const __m128i*>(wd_buf));
            d = _mm256_load_ps(d_buf);
            s8 = _mm256_load_si256(reinterpret_cast<const __m256i*>(s_buf));
        }
        __m256i isum = quant_reduce8(v);
        if constexpr (Fmt == QuantFormat::Q4) isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(s8, 3));
        const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(wd), d);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum)));
    }
    return quant_hsum8(acc);
}

/// Threads take fixed chunks of output rows; within a chunk, each row's weights (a few KiB) stay
/// in L1 while the tokens of a super-block of x run over them.
template <QuantFormat Fmt>
void run_impl(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias) {
    constexpr int64_t bb = quant_block_bytes(Fmt);
    constexpr int64_t chunk = 16;
    const int64_t rows = w.rows, cols = w.cols, nb = cols / k_quant_block;
    const int64_t row_bytes = nb * bb;
    const int64_t n_chunks = (rows + chunk - 1) / chunk;
    const int64_t tb = max64(1, (256 * 1024) / max64(cols, 1));
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t o_lo = c * chunk;
        const int64_t o_hi = min64(rows, o_lo + chunk);
        for (int64_t t0 = 0; t0 < n; t0 += tb) {
            const int64_t t_hi = min64(n, t0 + tb);
            for (int64_t o = o_lo; o < o_hi; ++o) {
                const uint8_t* wq = w.qs + o * row_bytes;
                const uint16_t* ws = w.scales + o * nb;
                const char* pf = o + 1 < rows ? reinterpret_cast<const char*>(wq + row_bytes) : nullptr;
                for (int64_t t = t0; t < t_hi; ++t) {
                    float s = row_dot<Fmt>(wq, ws, a.q + t * cols, a.d + t * nb, a.sum + t * nb, nb,
                                           t == t0 ? pf : nullptr);
                    if (bias != nullptr) s += bias[o];
                    y[t * rows + o] = s;
                }
            }
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
