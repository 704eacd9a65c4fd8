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
// rows, the tile it fell in or the thread count. Attention: each (query, head) score is such a dot
// product, softmax is scalar fp32 in position order, and each output element is one FMA chain
// over positions in order; blocking queries/heads/positions only shares loads.

namespace {

using F = V::F;

/// One register tile of linear: R weight rows x T tokens.
template <typename W>
struct TileArgs {
    float* y;  // y[t * ldy + r]
    int64_t ldy;
    const float* x;  // x[t * ldx + k]
    int64_t ldx;
    const W* w;  // w[r * ldw + k]
    int64_t ldw;
    int64_t k_total;
    const float* bias;  // [R] or null
    const char* pf;     // the next weight block to prefetch, or null
};

/// y[t, r] = dot(x[t, :], w[r, :]) (+ bias[r]) for a tile of R rows and T tokens.
/// pf: the next R-row weight block, prefetched (into L2) at the rate this one is consumed, so the
/// weight stream stays one block ahead of the loads: rows of a few KiB are too short for the
/// hardware prefetcher alone (measured: n=1 bf16 went from ~55% to ~85-90% of one core's bandwidth).
template <typename W, int R, int T>
inline void linear_tile(const TileArgs<W>& a) {
    constexpr int k_pf_step = int(R * sizeof(W) * V::k_width);  // weight bytes consumed per step
    constexpr int k_pf_lines = (k_pf_step + 63) / 64;
    const float* x = a.x;
    const W* w = a.w;
    const int64_t ldx = a.ldx, ldw = a.ldw;
    const char* pf = a.pf;
    F acc[T][R];
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) acc[t][r] = V::zero();
    }
    int64_t k = 0;
    for (; k + V::k_width <= a.k_total; k += V::k_width) {
        if (pf != nullptr) {
#pragma GCC unroll 8
            for (int l = 0; l < k_pf_lines; ++l) _mm_prefetch(pf + 64 * l, _MM_HINT_T1);
            pf += k_pf_step;
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
    const int rem = int(a.k_total - k);
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
            if (a.bias != nullptr) s += a.bias[r];
            a.y[t * a.ldy + r] = s;
        }
    }
}

/// linear_tile with T = tn (1 <= tn <= V::k_tokens) chosen at run time.
template <typename W, int R, int T = V::k_tokens>
inline void linear_tile_n(int64_t tn, const TileArgs<W>& a) {
    if constexpr (T > 1) {
        if (tn < T) {
            linear_tile_n<W, R, T - 1>(tn, a);
            return;
        }
    }
    linear_tile<W, R, T>(a);
}

inline int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}
inline int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

/// Threads take fixed chunks of output rows (never a split dot product). Within a chunk, tokens go
/// in super-blocks of about 384 KiB of x (L2); each R-row weight block is loaded from memory once
/// per super-block (the first token tile prefetches the next block) and reused from cache by the
/// super-block's other token tiles. (Splitting K into L1-sized blocks, passing the partial vector
/// sums between them, measured slower here: 80 vs 105 GFLOP/s per core at n=16.)
template <typename W>
void linear_impl(float* y, const float* x, int64_t n, const W* w, int64_t rows, int64_t cols,
                 const float* bias) {
    constexpr int R = V::k_rows;
    constexpr int T = V::k_tokens;
    constexpr int64_t chunk = 4 * R;  // output rows per OpenMP work item
    const int64_t n_chunks = (rows + chunk - 1) / chunk;
    const int64_t tb = max64(T, (384 * 1024) / (4 * max64(cols, 1)) / T * T);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
        const int64_t o_lo = c * chunk;
        const int64_t o_hi = min64(rows, o_lo + chunk);
        for (int64_t t0 = 0; t0 < n; t0 += tb) {
            const int64_t t_hi = min64(n, t0 + tb);
            auto tile = [&](int64_t o, int64_t t, const char* pf) {
                return TileArgs<W>{
                    y + t * rows + o,          rows, x + t * cols, cols, w + o * cols, cols, cols,
                    bias ? bias + o : nullptr, pf};
            };
            int64_t o = o_lo;
            for (; o + R <= o_hi; o += R) {
                const char* pf =
                    o + 2 * R <= rows ? reinterpret_cast<const char*>(w + (o + R) * cols) : nullptr;
                for (int64_t t = t0; t < t_hi; t += T) {
                    linear_tile_n<W, R>(min64(T, t_hi - t), tile(o, t, t == t0 ? pf : nullptr));
                }
            }
            for (; o < o_hi; ++o) {
                for (int64_t t = t0; t < t_hi; t += T)
                    linear_tile_n<W, 1>(min64(T, t_hi - t), tile(o, t, nullptr));
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

}  // namespace

void linear(float* y, const float* x, int64_t n, const WeightView& w, const float* bias) {
    if (w.dtype == DType::BF16) {
        linear_impl(y, x, n, static_cast<const uint16_t*>(w.data), w.rows, w.cols, bias);
    } else {
        linear_impl(y, x, n, static_cast<const float*>(w.data), w.rows, w.cols, bias);
    }
}

// Activations: activation_math.h's operation sequence on whole vectors; each lane is bitwise the
// scalar reference's element, so chunks and tails change nothing.
namespace {
constexpr int64_t k_act_chunk = 1024;          // elements per OpenMP work item
constexpr int64_t k_act_parallel_min = 1 << 12;  // below: one thread (decode rows are short)

template <typename Op>
inline void map_span(float* y, const float* x, int64_t count, Op op) {
    int64_t i = 0;
    for (; i + V::k_width <= count; i += V::k_width) V::store(y + i, op(V::load(x + i)));
    if (i < count) {
        const int rem = int(count - i);
        V::store_tail(y + i, op(V::load_tail(x + i, rem)), rem);
    }
}
}  // namespace

void gelu_new(float* x, int64_t count) {
    const int64_t chunks = (count + k_act_chunk - 1) / k_act_chunk;
#pragma omp parallel for schedule(static) if (count >= k_act_parallel_min)
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t lo = c * k_act_chunk;
        map_span(x + lo, x + lo, min64(k_act_chunk, count - lo), [](F v) { return actmath::gelu_new<V>(v); });
    }
}

void silu_mul(float* out, const float* in, int64_t n, int64_t d) {
    const int64_t per_row = (d + k_act_chunk - 1) / k_act_chunk;
#pragma omp parallel for schedule(static) if (n * d >= k_act_parallel_min)
    for (int64_t c = 0; c < n * per_row; ++c) {
        const int64_t t = c / per_row, lo = (c % per_row) * k_act_chunk;
        const int64_t len = min64(k_act_chunk, d - lo);
        const float* g = in + t * 2 * d + lo;  // gate = in[t, 0:d]
        const float* up = g + d;               // up = in[t, d:2d]
        float* o = out + t * d + lo;
        int64_t j = 0;
        for (; j + V::k_width <= len; j += V::k_width)
            V::store(o + j, actmath::silu_mul<V>(V::load(g + j), V::load(up + j)));
        if (j < len) {
            const int rem = int(len - j);
            V::store_tail(o + j, actmath::silu_mul<V>(V::load_tail(g + j, rem), V::load_tail(up + j, rem)), rem);
        }
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

namespace {

// One body for both cache element types: V::load widens a bf16 row exactly, so a bf16 cache gives
// the bits an fp32 cache holding the same rounded values gives.
template <typename T>
void paged_attention_impl(const AttentionArgsT<T>& a) {
    const int64_t d = a.layout.head_dim;
    const int64_t bs = a.layout.block_size;
    const int64_t row = a.layout.n_kv_heads * d;  // one position's K (or V), all KV heads
    const int64_t qb = a.queries_per_item;
    const int64_t hb = a.heads_per_item;
    const int64_t q_chunks = (a.n + qb - 1) / qb;
    const int64_t h_chunks = (a.n_heads + hb - 1) / hb;
    const int64_t stride = a.scratch_stride;
    const int64_t d_full = d / V::k_width * V::k_width;
    const int rem = int(d - d_full);
    auto first_visible = [&](int64_t qpos) {
        return a.sliding_window > 0 ? max64(0, qpos - a.sliding_window + 1) : int64_t(0);
    };
    // Calls fn(p, row of position p) for p in [p_lo, p_hi], walking the block table block by block.
    auto for_positions = [&](const T* cache, int64_t p_lo, int64_t p_hi, auto&& fn) {
        for (int64_t p = p_lo; p <= p_hi;) {
            const int64_t slot0 = p % bs;
            const int64_t p_end = min64(p_hi + 1, p - slot0 + bs);
            const T* r = cache + (int64_t(a.block_table[p / bs]) * bs + slot0) * row;  // [n_kv_heads, d]
            for (; p < p_end; ++p, r += row) fn(p, r);
        }
    };
#pragma omp parallel for schedule(static, 1)
    for (int64_t item = 0; item < q_chunks * h_chunks; ++item) {
        const int64_t i0 = (item / h_chunks) * qb;
        const int64_t nq = min64(qb, a.n - i0);
        const int64_t h0 = (item % h_chunks) * hb;
        const int64_t nh = min64(hb, a.n_heads - h0);
        const int64_t pos0 = a.start_pos + i0;  // position of the item's first query
        float* sc = a.scratch + int64_t(omp_get_thread_num()) * qb * hb * stride;  // [nq, nh, stride]
        // Query i (of the item) sees positions [first_visible(pos0 + i), pos0 + i]; its score for
        // position p sits at sc[(i * nh + h) * stride + p - first_visible(pos0 + i)].

        // Scores in position order; each K row is loaded once for all the item's queries.
        for_positions(a.k_cache, first_visible(pos0), pos0 + nq - 1, [&](int64_t p, const T* kp) {
            for (int64_t i = 0; i < nq; ++i) {
                const int64_t lo = first_visible(pos0 + i);
                if (p < lo || p > pos0 + i) continue;
                const float* qi = a.q + ((i0 + i) * a.n_heads + h0) * d;  // [nh, d]
                for (int64_t h = 0; h < nh; ++h) {
                    const float* qh = qi + h * d;
                    const T* kr = kp + int64_t(a.q_to_kv[h0 + h]) * d;
                    F acc = V::zero();
                    int64_t e = 0;
                    for (; e < d_full; e += V::k_width) acc = V::fma(V::load(qh + e), V::load(kr + e), acc);
                    if (rem > 0) acc = V::fma(V::load_tail(qh + e, rem), V::load_tail(kr + e, rem), acc);
                    sc[(i * nh + h) * stride + (p - lo)] = V::hsum(acc) * a.scale;
                }
            }
        });

        // Softmax per (query, head) in fp32: max, exp and the sum in position order, then
        // probabilities e * (1 / sum) as torch's CPU softmax.
        for (int64_t i = 0; i < nq; ++i) {
            const int64_t count = pos0 + i + 1 - first_visible(pos0 + i);
            for (int64_t h = 0; h < nh; ++h) {
                float* s = sc + (i * nh + h) * stride;
                float mx = s[0];
                for (int64_t j = 1; j < count; ++j) mx = s[j] > mx ? s[j] : mx;
                float sum = 0.0f;
                for (int64_t j = 0; j < count; ++j) {
                    const float ev = __builtin_expf(s[j] - mx);
                    s[j] = ev;
                    sum += ev;
                }
                const float inv = 1.0f / sum;
                for (int64_t j = 0; j < count; ++j) s[j] = s[j] * inv;
            }
        }

        // out = sum_p prob_p V_p in position order, one FMA per position per element. Positions go in
        // blocks: the next block's V rows (the item's KV heads, contiguous) are prefetched into L2
        // while register groups of k_pv_q queries x k_pv_v vectors of head_dim work on this one,
        // sharing each V load; the accumulators pass from block to block through out (exact).
        constexpr int k_pv_q = 4;
        constexpr int k_pv_v = 4;
        constexpr int64_t k_pv_block = 16;
        int64_t kv_lo = a.layout.n_kv_heads, kv_hi = 0;
        for (int64_t h = 0; h < nh; ++h) {
            kv_lo = min64(kv_lo, a.q_to_kv[h0 + h]);
            kv_hi = max64(kv_hi, a.q_to_kv[h0 + h] + 1);
        }
        const int64_t span_bytes = (kv_hi - kv_lo) * d * int64_t(sizeof(T));
        const int64_t p_first = first_visible(pos0), p_last = pos0 + nq - 1;
        for (int64_t pb = p_first; pb <= p_last; pb += k_pv_block) {
            const int64_t pe = min64(p_last, pb + k_pv_block - 1);
            if (pe < p_last) {
                for_positions(a.v_cache, pe + 1, min64(p_last, pe + k_pv_block),
                              [&](int64_t, const T* vp) {
                                  const char* base = reinterpret_cast<const char*>(vp + kv_lo * d);
                                  for (int64_t off = 0; off < span_bytes; off += 64)
                                      _mm_prefetch(base + off, _MM_HINT_T1);
                              });
            }
            for (int64_t h = 0; h < nh; ++h) {
                const int64_t kv_off = int64_t(a.q_to_kv[h0 + h]) * d;
                for (int64_t ig = 0; ig < nq; ig += k_pv_q) {
                    const int ng = int(min64(k_pv_q, nq - ig));
                    int64_t lo_g[k_pv_q], hi_g[k_pv_q];
                    const float* prob[k_pv_q];
                    float* out_g[k_pv_q];
                    for (int g = 0; g < k_pv_q; ++g) {
                        const int64_t gi = ig + (g < ng ? g : 0);
                        lo_g[g] = first_visible(pos0 + gi);
                        hi_g[g] = g < ng ? pos0 + gi : -1;                // absent queries see nothing
                        prob[g] = sc + (gi * nh + h) * stride - lo_g[g];  // prob[g][p]
                        out_g[g] = a.out + ((i0 + gi) * a.n_heads + h0 + h) * d;
                    }
                    const int64_t walk_lo = max64(pb, lo_g[0]);
                    const int64_t walk_hi = min64(pe, pos0 + ig + ng - 1);
                    for (int64_t e0 = 0; e0 < d; e0 += k_pv_v * V::k_width) {
                        const int nv = int(min64(k_pv_v, (d - e0 + V::k_width - 1) / V::k_width));
                        const int last = int(min64(V::k_width, d - e0 - int64_t(nv - 1) * V::k_width));
                        F acc[k_pv_q][k_pv_v];
#pragma GCC unroll 4
                        for (int g = 0; g < k_pv_q; ++g) {
#pragma GCC unroll 4
                            for (int u = 0; u < k_pv_v; ++u) {
                                const float* src = out_g[g] + e0 + u * V::k_width;
                                if (pb == p_first || g >= ng || u >= nv) {
                                    acc[g][u] = V::zero();
                                } else if (u < nv - 1) {
                                    acc[g][u] = V::load(src);
                                } else {
                                    acc[g][u] = V::load_tail(src, last);
                                }
                            }
                        }
                        if (walk_lo <= walk_hi) {
                            for_positions(a.v_cache, walk_lo, walk_hi, [&](int64_t p, const T* vp) {
                                const T* vr = vp + kv_off + e0;
                                F vv[k_pv_v];
#pragma GCC unroll 4
                                for (int u = 0; u < k_pv_v; ++u) {
                                    if (u < nv - 1) {
                                        vv[u] = V::load(vr + u * V::k_width);
                                    } else if (u == nv - 1) {
                                        vv[u] = V::load_tail(vr + u * V::k_width, last);
                                    } else {
                                        vv[u] = V::zero();
                                    }
                                }
#pragma GCC unroll 4
                                for (int g = 0; g < k_pv_q; ++g) {
                                    if (p < lo_g[g] || p > hi_g[g]) continue;
                                    const F pv = V::set1(prob[g][p]);
#pragma GCC unroll 4
                                    for (int u = 0; u < k_pv_v; ++u) {
                                        if (u < nv) acc[g][u] = V::fma(pv, vv[u], acc[g][u]);
                                    }
                                }
                            });
                        }
#pragma GCC unroll 4
                        for (int g = 0; g < k_pv_q; ++g) {
                            if (g >= ng) continue;
                            float* dst = out_g[g] + e0;
#pragma GCC unroll 4
                            for (int u = 0; u < k_pv_v; ++u) {
                                if (u < nv - 1) {
                                    V::store(dst + u * V::k_width, acc[g][u]);
                                } else if (u == nv - 1) {
                                    V::store_tail(dst + u * V::k_width, acc[g][u], last);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

}  // namespace

void paged_attention(const AttentionArgs& a) { paged_attention_impl(a); }
void paged_attention(const AttentionArgsBf16& a) { paged_attention_impl(a); }
