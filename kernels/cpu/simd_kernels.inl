// Shared body of the SIMD levels (linear, layer_norm, rms_norm, paged_attention). Included by
// simd_avx2.cpp and simd_avx512.cpp inside their own namespace (phi::kernels::cpu::avx2 / avx512),
// after each defines `struct V`: the vector type F, k_width lanes, the register tile of linear
// (k_rows weight rows x k_tokens tokens), loads (float or bf16 pointers), tail loads/stores of
// rem in [1, k_width] lanes (zero-filled), keep (zero lanes >= rem), FMA and the horizontal sum.
// Everything here has internal linkage, so each file's code stays compiled with its own flags.
//
// Numerics (per level): a dot product or row sum of length K uses ONE vector accumulator; lane j
// gets the elements k = c*k_width + j in order c = 0, 1, ... (FMA each), the tail is a zero-filled
// partial vector, and V::hsum reduces the lanes with a fixed tree. Register tiles only run several
// of these independent chains side by side, so a result does not depend on n, the batch's other
// rows, the tile it fell in or the thread count.

namespace {

#ifndef PHI_PF_HINT
#define PHI_PF_HINT _MM_HINT_T1
#endif
using F = V::F;

/// y[t, r] = dot(x[t, :], w[r, :]) (+ bias[r]) for a tile of R weight rows and T tokens.
/// pf (or null): the next R-row weight block, prefetched at the rate this one is consumed, so the
/// weight stream stays one block ahead of the loads (short rows defeat the hardware prefetcher).
template <typename W, int R, int T>
inline void linear_tile(float* y, int64_t ldy, const float* x, int64_t ldx, const W* w, int64_t ldw,
                        int64_t k_total, const float* bias, const char* pf) {
    constexpr int k_pf_lines = int(R * sizeof(W) * V::k_width / 64);  // lines consumed per step
    F acc[T][R];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[t][r] = V::zero();
    }
    int64_t k = 0;
    for (; k + V::k_width <= k_total; k += V::k_width) {
        if (k_pf_lines > 0 && pf != nullptr) {
#pragma GCC unroll 8
            for (int l = 0; l < k_pf_lines; ++l) _mm_prefetch(pf + 64 * l, PHI_PF_HINT);
            pf += 64 * k_pf_lines;
        }
        F wv[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) wv[r] = V::load(w + r * ldw + k);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
            const F xv = V::load(x + t * ldx + k);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) acc[t][r] = V::fma(xv, wv[r], acc[t][r]);
        }
    }
    const int rem = int(k_total - k);
    if (rem > 0) {
        F wv[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) wv[r] = V::load_tail(w + r * ldw + k, rem);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
            const F xv = V::load_tail(x + t * ldx + k, rem);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) acc[t][r] = V::fma(xv, wv[r], acc[t][r]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            float s = V::hsum(acc[t][r]);
            if (bias != nullptr) s += bias[r];
            y[t * ldy + r] = s;
        }
    }
}

/// linear_tile with T = tn (1 <= tn <= V::k_tokens) chosen at run time.
template <typename W, int R, int T = V::k_tokens>
inline void linear_tile_n(int64_t tn, float* y, int64_t ldy, const float* x, int64_t ldx, const W* w,
                          int64_t ldw, int64_t k_total, const float* bias, const char* pf) {
    if constexpr (T > 1) {
        if (tn < T) {
            linear_tile_n<W, R, T - 1>(tn, y, ldy, x, ldx, w, ldw, k_total, bias, pf);
            return;
        }
    }
    linear_tile<W, R, T>(y, ldy, x, ldx, w, ldw, k_total, bias, pf);
}

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/// Threads take fixed chunks of output rows (never a split dot product). Within a chunk, tokens go
/// in super-blocks whose x rows fit in L2, each R-row weight block is loaded from memory once per
/// super-block and reused for all its token tiles.
template <typename W>
void linear_impl(float* y, const float* x, int64_t n, const W* w, int64_t rows, int64_t cols,
                 const float* bias) {
    constexpr int R = V::k_rows;
    constexpr int T = V::k_tokens;
    constexpr int64_t chunk = 4 * R;  // output rows per OpenMP work item
    const int64_t n_chunks = (rows + chunk - 1) / chunk;
    // Token super-block: about 384 KiB of x, a multiple of the tile.
    const int64_t tb = max64(T, (384 * 1024) / (4 * max64(cols, 1)) / T * T);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t o_lo = c * chunk;
        const int64_t o_hi = min64(rows, o_lo + chunk);
        for (int64_t t0 = 0; t0 < n; t0 += tb) {
            const int64_t t_hi = min64(n, t0 + tb);
            int64_t o = o_lo;
            for (; o + R <= o_hi; o += R) {
                // Prefetch the next block while the first token tile streams this one.
#ifndef PHI_PF_AHEAD
#define PHI_PF_AHEAD 1
#endif
                const char* pf = o + (PHI_PF_AHEAD + 1) * R <= rows && PHI_PF_AHEAD > 0 ? reinterpret_cast<const char*>(w + (o + PHI_PF_AHEAD * R) * cols) : nullptr;
                for (int64_t t = t0; t < t_hi; t += T) {
                    linear_tile_n<W, R>(min64(T, t_hi - t), y + t * rows + o, rows, x + t * cols, cols,
                                        w + o * cols, cols, cols, bias ? bias + o : nullptr, t == t0 ? pf : nullptr);
                }
            }
            for (; o < o_hi; ++o) {
                for (int64_t t = t0; t < t_hi; t += T) {
                    linear_tile_n<W, 1>(min64(T, t_hi - t), y + t * rows + o, rows, x + t * cols, cols,
                                        w + o * cols, cols, cols, bias ? bias + o : nullptr, nullptr);
                }
            }
        }
    }
}

/// Sum of x[0:d], or of (x - mean)^2 when Dev, in the one-accumulator pattern.
template <bool Dev>
inline float row_reduce(const float* x, int64_t d, float mean) {
    const F m = V::set1(mean);
    F acc = V::zero();
    int64_t i = 0;
    for (; i + V::k_width <= d; i += V::k_width) {
        const F v = V::load(x + i);
        if constexpr (Dev) {
            const F dv = V::sub(v, m);
            acc = V::fma(dv, dv, acc);
        } else {
            acc = V::add(acc, v);
        }
    }
    if (i < d) {
        const int rem = int(d - i);
        const F v = V::load_tail(x + i, rem);
        if constexpr (Dev) {
            // Zero-filled lanes must add exactly 0, not mean^2.
            const F dv = V::keep(V::sub(v, m), rem);
            acc = V::fma(dv, dv, acc);
        } else {
            acc = V::add(acc, v);
        }
    }
    return V::hsum(acc);
}

/// Keys per group in the score loop: independent dot products interleaved for ILP.
constexpr int k_keys = 4;

}  // namespace

void linear(float* y, const float* x, int64_t n, const WeightView& w, const float* bias) {
    if (w.dtype == DType::BF16) {
        linear_impl(y, x, n, static_cast<const uint16_t*>(w.data), w.rows, w.cols, bias);
    } else {
        linear_impl(y, x, n, static_cast<const float*>(w.data), w.rows, w.cols, bias);
    }
}

void layer_norm(float* y, const float* x, const float* w, const float* b, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d >= (1 << 15))
    for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * d;  // [d]
        float* yt = y + t * d;        // [d]
        const float mean = row_reduce<false>(xt, d, 0.0f) / float(d);
        const float var = row_reduce<true>(xt, d, mean) / float(d);
        const float rstd = 1.0f / __builtin_sqrtf(var + eps);
        // Same elementwise formula as the reference: ((x - mean) * rstd) * w + b, no FMA.
        const F m = V::set1(mean);
        const F r = V::set1(rstd);
        int64_t i = 0;
        for (; i + V::k_width <= d; i += V::k_width) {
            F v = V::mul(V::mul(V::sub(V::load(xt + i), m), r), V::load(w + i));
            if (b != nullptr) v = V::add(v, V::load(b + i));
            V::store(yt + i, v);
        }
        for (; i < d; ++i) {
            float v = (xt[i] - mean) * rstd * w[i];
            if (b != nullptr) v += b[i];
            yt[i] = v;
        }
    }
}

void rms_norm(float* y, const float* x, const float* w, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d >= (1 << 15))
    for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * d;  // [d]
        float* yt = y + t * d;        // [d]
        F acc = V::zero();
        int64_t i = 0;
        for (; i + V::k_width <= d; i += V::k_width) {
            const F v = V::load(xt + i);
            acc = V::fma(v, v, acc);
        }
        if (i < d) {
            const F v = V::load_tail(xt + i, int(d - i));
            acc = V::fma(v, v, acc);
        }
        const float r = 1.0f / __builtin_sqrtf(V::hsum(acc) / float(d) + eps);
        const F rv = V::set1(r);
        for (i = 0; i + V::k_width <= d; i += V::k_width) {
            V::store(yt + i, V::mul(V::mul(V::load(xt + i), rv), V::load(w + i)));
        }
        for (; i < d; ++i) yt[i] = xt[i] * r * w[i];
    }
}

void paged_attention(const AttentionArgs& a) {
    const int64_t d = a.layout.head_dim;
    const int64_t bs = a.layout.block_size;
    const int64_t nkv = a.layout.n_kv_heads;
    const int64_t pairs = a.n * a.n_heads;
    const int64_t d_full = d / V::k_width * V::k_width;
    const int rem = int(d - d_full);
#pragma omp parallel for schedule(static, 1)
    for (int64_t pair = 0; pair < pairs; ++pair) {
        const int64_t i = pair / a.n_heads;
        const int64_t h = pair % a.n_heads;
        const int64_t qpos = a.start_pos + i;
        const int64_t lo = a.sliding_window > 0 ? max64(0, qpos - a.sliding_window + 1) : 0;
        const int64_t count = qpos + 1 - lo;  // visible keys
        const int64_t kvh = a.q_to_kv[h];
        const float* q = a.q + pair * d;  // [d]
        float* out = a.out + pair * d;    // [d]
        float* sc = a.scratch + int64_t(omp_get_thread_num()) * a.scratch_stride;  // [count]
        auto row_off = [&](int64_t p) {
            const int64_t blk = a.block_table[p / bs];
            return ((blk * bs + p % bs) * nkv + kvh) * d;
        };

        // Scores in position order; k_keys keys at a time, each with its own accumulator.
        int64_t j = 0;
        for (; j + k_keys <= count; j += k_keys) {
            const float* kr[k_keys];
            F acc[k_keys];
            for (int u = 0; u < k_keys; ++u) {
                kr[u] = a.k_cache + row_off(lo + j + u);
                acc[u] = V::zero();
            }
            int64_t e = 0;
            for (; e < d_full; e += V::k_width) {
                const F qv = V::load(q + e);
                for (int u = 0; u < k_keys; ++u) acc[u] = V::fma(qv, V::load(kr[u] + e), acc[u]);
            }
            if (rem > 0) {
                const F qv = V::load_tail(q + e, rem);
                for (int u = 0; u < k_keys; ++u) acc[u] = V::fma(qv, V::load_tail(kr[u] + e, rem), acc[u]);
            }
            for (int u = 0; u < k_keys; ++u) sc[j + u] = V::hsum(acc[u]) * a.scale;
        }
        for (; j < count; ++j) {
            const float* kr = a.k_cache + row_off(lo + j);
            F acc = V::zero();
            int64_t e = 0;
            for (; e < d_full; e += V::k_width) acc = V::fma(V::load(q + e), V::load(kr + e), acc);
            if (rem > 0) acc = V::fma(V::load_tail(q + e, rem), V::load_tail(kr + e, rem), acc);
            sc[j] = V::hsum(acc) * a.scale;
        }

        // Softmax in fp32: max, then exp and the sum in position order, then the probabilities.
        float mx = sc[0];
        for (j = 1; j < count; ++j) mx = sc[j] > mx ? sc[j] : mx;
        float sum = 0.0f;
        for (j = 0; j < count; ++j) {
            const float ev = __builtin_expf(sc[j] - mx);
            sc[j] = ev;
            sum += ev;
        }
        for (j = 0; j < count; ++j) sc[j] = sc[j] / sum;

        // out = sum_p prob_p V_p in position order, up to 4 vectors of out held in registers.
        for (int64_t e0 = 0; e0 < d; e0 += 4 * V::k_width) {
            const int64_t e_hi = min64(d, e0 + 4 * V::k_width);
            const int nv = int((e_hi - e0 + V::k_width - 1) / V::k_width);
            const int last = int(e_hi - e0) - (nv - 1) * V::k_width;  // lanes in the last vector
            F acc[4] = {V::zero(), V::zero(), V::zero(), V::zero()};
            for (j = 0; j < count; ++j) {
                const F pv = V::set1(sc[j]);
                const float* vr = a.v_cache + row_off(lo + j) + e0;
                for (int u = 0; u < nv; ++u) {
                    const F vv = (u == nv - 1) ? V::load_tail(vr + u * V::k_width, last)
                                               : V::load(vr + u * V::k_width);
                    acc[u] = V::fma(pv, vv, acc[u]);
                }
            }
            for (int u = 0; u < nv; ++u) {
                if (u == nv - 1) {
                    V::store_tail(out + e0 + u * V::k_width, acc[u], last);
                } else {
                    V::store(out + e0 + u * V::k_width, acc[u]);
                }
            }
        }
    }
}
