// Portable scalar implementations: the reference every SIMD level is tested against, the fallback
// on CPUs without AVX2, and the only implementation of the ops without a reduction (gelu_new,
// silu_mul, add_inplace, rope, kv_write, embedding), which are then bitwise equal at every level.
//
// Numerics: plain mul + add (no FMA; the build uses -ffp-contract=off). Dot products and row sums
// use 8 interleaved partial sums (element i goes to lane i % 8) reduced by a fixed tree, so each
// output has one fixed order whatever n, the batch's other rows or the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/activation_math.h"
#include "kernels/cpu/impl.h"

namespace phi::kernels::cpu::ref {
namespace {

constexpr int64_t k_lanes = 8;
// Below this many elements an elementwise op runs on the calling thread only (fork/join costs
// microseconds); ops calling expf/tanhf per element are worth splitting much sooner.
constexpr int64_t k_parallel_min = 1 << 15;
constexpr int64_t k_parallel_min_transcendental = 1 << 12;

float reduce_lanes(float (&s)[k_lanes]) {
    for (int j = 0; j < 4; ++j) s[j] += s[j + 4];
    s[0] += s[2];
    s[1] += s[3];
    return s[0] + s[1];
}

template <typename W>
float weight_at(const W* w, int64_t i) {
    if constexpr (sizeof(W) == 2) {
        return bf16_to_f32(w[i]);
    } else {
        return w[i];
    }
}

template <typename W>
float dot(const float* x, const W* w, int64_t k) {
    float s[k_lanes] = {};
    int64_t i = 0;
    for (; i + k_lanes <= k; i += k_lanes) {
        for (int j = 0; j < k_lanes; ++j) s[j] += x[i + j] * weight_at(w, i + j);
    }
    for (int j = 0; i + j < k; ++j) s[j] += x[i + j] * weight_at(w, i + j);
    return reduce_lanes(s);
}

template <typename W>
void linear_impl(float* y, const float* x, int64_t n, const W* w, int64_t rows, int64_t cols,
                 const float* bias) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < rows; ++o) {
        const W* wo = w + o * cols;  // [cols]
        for (int64_t t = 0; t < n; ++t) {
            float s = dot(x + t * cols, wo, cols);
            if (bias != nullptr) s += bias[o];
            y[t * rows + o] = s;
        }
    }
}

float row_sum(const float* x, int64_t d) {
    float s[k_lanes] = {};
    int64_t i = 0;
    for (; i + k_lanes <= d; i += k_lanes) {
        for (int j = 0; j < k_lanes; ++j) s[j] += x[i + j];
    }
    for (int j = 0; i + j < d; ++j) s[j] += x[i + j];
    return reduce_lanes(s);
}

float row_sq_dev(const float* x, int64_t d, float mean) {
    float s[k_lanes] = {};
    int64_t i = 0;
    for (; i + k_lanes <= d; i += k_lanes) {
        for (int j = 0; j < k_lanes; ++j) {
            const float v = x[i + j] - mean;
            s[j] += v * v;
        }
    }
    for (int j = 0; i + j < d; ++j) {
        const float v = x[i + j] - mean;
        s[j] += v * v;
    }
    return reduce_lanes(s);
}

}  // namespace

void linear(float* y, const float* x, int64_t n, const WeightView& w, const float* bias) {
    if (w.dtype == DType::BF16) {
        linear_impl(y, x, n, static_cast<const uint16_t*>(w.data), w.rows, w.cols, bias);
    } else {
        linear_impl(y, x, n, static_cast<const float*>(w.data), w.rows, w.cols, bias);
    }
}

void layer_norm(float* y, const float* x, const float* w, const float* b, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d >= k_parallel_min)
    for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * d;  // [d]
        float* yt = y + t * d;        // [d]
        const float mean = row_sum(xt, d) / float(d);
        const float var = row_sq_dev(xt, d, mean) / float(d);
        const float rstd = 1.0f / std::sqrt(var + eps);
        for (int64_t i = 0; i < d; ++i) {
            float v = (xt[i] - mean) * rstd * w[i];
            if (b != nullptr) v += b[i];
            yt[i] = v;
        }
    }
}

void rms_norm(float* y, const float* x, const float* w, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d >= k_parallel_min)
    for (int64_t t = 0; t < n; ++t) {
        const float* xt = x + t * d;  // [d]
        float* yt = y + t * d;        // [d]
        float s[k_lanes] = {};
        int64_t i = 0;
        for (; i + k_lanes <= d; i += k_lanes) {
            for (int j = 0; j < k_lanes; ++j) s[j] += xt[i + j] * xt[i + j];
        }
        for (int j = 0; i + j < d; ++j) s[j] += xt[i + j] * xt[i + j];
        const float r = 1.0f / std::sqrt(reduce_lanes(s) / float(d) + eps);
        for (i = 0; i < d; ++i) yt[i] = xt[i] * r * w[i];
    }
}

namespace {

inline float widen(float x) { return x; }
inline float widen(uint16_t x) { return bf16_to_f32(x); }

// One (query, head) pair at a time (the reference ignores the SIMD levels' blocking). T: float,
// or uint16_t for a bf16 cache, widened to fp32 exactly.
template <typename T>
void paged_attention_impl(const AttentionArgsT<T>& a) {
    const int64_t d = a.layout.head_dim;
    const int64_t bs = a.layout.block_size;
    const int64_t nkv = a.layout.n_kv_heads;
    const int64_t pairs = a.n * a.n_heads;
#pragma omp parallel for schedule(static, 1)
    for (int64_t pair = 0; pair < pairs; ++pair) {
        const int64_t i = pair / a.n_heads;
        const int64_t h = pair % a.n_heads;
        const int64_t qpos = a.start_pos + i;
        const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, qpos - a.sliding_window + 1) : 0;
        const int64_t kvh = a.q_to_kv[h];
        const float* q = a.q + pair * d;  // [d]
        float* out = a.out + pair * d;    // [d]
        float* sc = a.scratch + int64_t(omp_get_thread_num()) * a.queries_per_item * a.heads_per_item *
                                    a.scratch_stride;  // [qpos + 1 - lo]
        auto row = [&](const T* cache, int64_t p) {
            const int64_t blk = a.block_table[p / bs];
            return cache + ((blk * bs + p % bs) * nkv + kvh) * d;
        };
        float mx = -INFINITY;
        for (int64_t p = lo; p <= qpos; ++p) {
            const T* k = row(a.k_cache, p);
            float s = 0.0f;
            for (int64_t j = 0; j < d; ++j) s += q[j] * widen(k[j]);
            s *= a.scale;
            sc[p - lo] = s;
            mx = std::max(mx, s);
        }
        float sum = 0.0f;
        for (int64_t p = lo; p <= qpos; ++p) {
            const float e = std::exp(sc[p - lo] - mx);
            sc[p - lo] = e;
            sum += e;
        }
        const float inv = 1.0f / sum;  // probabilities as e * (1 / sum), as torch's CPU softmax
        for (int64_t j = 0; j < d; ++j) out[j] = 0.0f;
        for (int64_t p = lo; p <= qpos; ++p) {
            const float prob = sc[p - lo] * inv;
            const T* v = row(a.v_cache, p);
            for (int64_t j = 0; j < d; ++j) out[j] += prob * widen(v[j]);
        }
    }
}

}  // namespace

void paged_attention(const AttentionArgs& a) { paged_attention_impl(a); }
void paged_attention(const AttentionArgsBf16& a) { paged_attention_impl(a); }

void gelu_new(float* x, int64_t count) {
#pragma omp parallel for schedule(static) if (count >= k_parallel_min_transcendental)
    for (int64_t i = 0; i < count; ++i) x[i] = actmath::gelu_new<actmath::ScalarOps>(x[i]);
}

void silu_mul(float* out, const float* in, int64_t n, int64_t d) {
    // collapse(2): a single decode row (n = 1, d = d_ff) is split across threads too.
#pragma omp parallel for collapse(2) schedule(static) if (n * d >= k_parallel_min_transcendental)
    for (int64_t t = 0; t < n; ++t) {
        for (int64_t j = 0; j < d; ++j) {
            const float g = in[t * 2 * d + j];       // gate = in[t, 0:d]
            const float up = in[t * 2 * d + d + j];  // up = in[t, d:2d]
            out[t * d + j] = actmath::silu_mul<actmath::ScalarOps>(g, up);
        }
    }
}

void add_inplace(float* y, const float* x, int64_t count) {
#pragma omp parallel for schedule(static) if (count >= 4 * k_parallel_min)
    for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void rope(float* x, const int32_t* pos, int64_t n, int64_t n_heads, int64_t head_dim, int64_t rotary_dim,
          const float* inv_freq, float attn_scale) {
    const int64_t half = rotary_dim / 2;
#pragma omp parallel for schedule(static) if (n * n_heads * rotary_dim >= k_parallel_min)
    for (int64_t t = 0; t < n; ++t) {
        float cs[k_rope_max_half];  // cos, then sin
        float sn[k_rope_max_half];
        const float fp = float(pos[t]);
        for (int64_t i = 0; i < half; ++i) {
            const float ang = fp * inv_freq[i];
            cs[i] = std::cos(ang) * attn_scale;
            sn[i] = std::sin(ang) * attn_scale;
        }
        for (int64_t h = 0; h < n_heads; ++h) {
            float* xh = x + (t * n_heads + h) * head_dim;  // [head_dim]
            for (int64_t i = 0; i < half; ++i) {
                const float x1 = xh[i];
                const float x2 = xh[i + half];
                xh[i] = x1 * cs[i] - x2 * sn[i];
                xh[i + half] = x2 * cs[i] + x1 * sn[i];
            }
        }
    }
}

void kv_write(float* k_cache, float* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v) {
    const int64_t row = layout.n_kv_heads * layout.head_dim;  // one token's K (or V)
    for (int64_t t = 0; t < n; ++t) {
        const int64_t p = start_pos + t;
        const int64_t blk = block_table[p / layout.block_size];
        const int64_t off = (blk * layout.block_size + p % layout.block_size) * row;
        std::memcpy(k_cache + off, k + t * row, size_t(row) * sizeof(float));
        std::memcpy(v_cache + off, v + t * row, size_t(row) * sizeof(float));
    }
}

void kv_write(uint16_t* k_cache, uint16_t* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v) {
    const int64_t row = layout.n_kv_heads * layout.head_dim;  // one token's K (or V)
    for (int64_t t = 0; t < n; ++t) {
        const int64_t p = start_pos + t;
        const int64_t blk = block_table[p / layout.block_size];
        const int64_t off = (blk * layout.block_size + p % layout.block_size) * row;
        for (int64_t j = 0; j < row; ++j) {
            k_cache[off + j] = f32_to_bf16(k[t * row + j]);
            v_cache[off + j] = f32_to_bf16(v[t * row + j]);
        }
    }
}

void embedding(float* out, const WeightView& emb, const int32_t* ids, int64_t n, int64_t row_offset) {
    const int64_t d = emb.cols;
    for (int64_t t = 0; t < n; ++t) {
        float* o = out + t * d;  // [d]
        const int64_t r = int64_t(ids[t]) - row_offset;
        if (r < 0 || r >= emb.rows) {
            std::fill(o, o + d, 0.0f);
        } else if (emb.dtype == DType::BF16) {
            const uint16_t* e = static_cast<const uint16_t*>(emb.data) + r * d;
            for (int64_t j = 0; j < d; ++j) o[j] = bf16_to_f32(e[j]);
        } else {
            std::memcpy(o, static_cast<const float*>(emb.data) + r * d, size_t(d) * sizeof(float));
        }
    }
}

}  // namespace phi::kernels::cpu::ref
