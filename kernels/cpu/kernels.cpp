// Public CPU kernel entry points: cheap shape/argument checks, then dispatch to the level's
// implementation (impl.h). Ops without a reduction have one portable implementation for all levels.
#include "kernels/cpu/kernels.h"

#include <omp.h>

#include <algorithm>
#include <memory>

#include "common/error.h"
#include "kernels/cpu/impl.h"

namespace phi::kernels::cpu {
namespace {

void check_weight(const WeightView& w, const char* what) {
    PHI_CHECK(w.data != nullptr || w.rows * w.cols == 0, "{}: weight data is null", what);
    PHI_CHECK(w.rows >= 0 && w.cols >= 0, "{}: weight shape [{}, {}] is negative", what, w.rows, w.cols);
    PHI_CHECK(w.dtype == DType::F32 || w.dtype == DType::BF16,
              "{}: weights must be F32 or BF16, got {} (convert F16 at load time)", what,
              dtype_name(w.dtype));
}

void check_layout(const KvLayout& l, const char* what) {
    PHI_CHECK(l.num_blocks > 0 && l.block_size > 0 && l.n_kv_heads > 0 && l.head_dim > 0,
              "{}: bad KV layout [{}, {}, {}, {}]", what, l.num_blocks, l.block_size, l.n_kv_heads,
              l.head_dim);
}

/// Every block that positions [0, end_pos) use must exist in the cache.
void check_blocks(const KvLayout& l, const int32_t* block_table, int64_t end_pos, const char* what) {
    PHI_CHECK(block_table != nullptr || end_pos == 0, "{}: block_table is null", what);
    const int64_t used = (end_pos + l.block_size - 1) / l.block_size;
    for (int64_t b = 0; b < used; ++b) {
        PHI_CHECK(block_table[b] >= 0 && block_table[b] < l.num_blocks,
                  "{}: block_table[{}] = {} is outside the cache's {} blocks", what, b, block_table[b],
                  l.num_blocks);
    }
}

}  // namespace

void linear(Isa isa, float* y, const float* x, int64_t n, const WeightView& w, const float* bias) {
    check_weight(w, "linear");
    PHI_CHECK(n >= 0, "linear: n = {} is negative", n);
    if (n == 0 || w.rows == 0) return;
    switch (isa) {
        case Isa::Scalar:
            ref::linear(y, x, n, w, bias);
            return;
        case Isa::Avx2:
            avx2::linear(y, x, n, w, bias);
            return;
        case Isa::Avx512:
            avx512::linear(y, x, n, w, bias);
            return;
    }
}

void layer_norm(Isa isa, float* y, const float* x, const float* w, const float* b, int64_t n, int64_t d,
                float eps) {
    PHI_CHECK(n >= 0 && d > 0, "layer_norm: bad shape [{}, {}]", n, d);
    switch (isa) {
        case Isa::Scalar:
            ref::layer_norm(y, x, w, b, n, d, eps);
            return;
        case Isa::Avx2:
            avx2::layer_norm(y, x, w, b, n, d, eps);
            return;
        case Isa::Avx512:
            avx512::layer_norm(y, x, w, b, n, d, eps);
            return;
    }
}

void rms_norm(Isa isa, float* y, const float* x, const float* w, int64_t n, int64_t d, float eps) {
    PHI_CHECK(n >= 0 && d > 0, "rms_norm: bad shape [{}, {}]", n, d);
    switch (isa) {
        case Isa::Scalar:
            ref::rms_norm(y, x, w, n, d, eps);
            return;
        case Isa::Avx2:
            avx2::rms_norm(y, x, w, n, d, eps);
            return;
        case Isa::Avx512:
            avx512::rms_norm(y, x, w, n, d, eps);
            return;
    }
}

void gelu_new(Isa isa, float* x, int64_t count) {
    PHI_CHECK(count >= 0, "gelu_new: count = {} is negative", count);
    switch (isa) {
        case Isa::Scalar:
            ref::gelu_new(x, count);
            return;
        case Isa::Avx2:
            avx2::gelu_new(x, count);
            return;
        case Isa::Avx512:
            avx512::gelu_new(x, count);
            return;
    }
}

void silu_mul(Isa isa, float* out, const float* in, int64_t n, int64_t d) {
    PHI_CHECK(n >= 0 && d >= 0, "silu_mul: bad shape [{}, {}]", n, d);
    switch (isa) {
        case Isa::Scalar:
            ref::silu_mul(out, in, n, d);
            return;
        case Isa::Avx2:
            avx2::silu_mul(out, in, n, d);
            return;
        case Isa::Avx512:
            avx512::silu_mul(out, in, n, d);
            return;
    }
}

void add_inplace(Isa, float* y, const float* x, int64_t count) {
    PHI_CHECK(count >= 0, "add_inplace: count = {} is negative", count);
    ref::add_inplace(y, x, count);
}

void rope(Isa, float* x, const int32_t* pos, int64_t n, int64_t n_heads, int64_t head_dim, int64_t rotary_dim,
          const float* inv_freq, float attn_scale) {
    PHI_CHECK(n >= 0 && n_heads >= 0 && head_dim > 0, "rope: bad shape [{}, {}, {}]", n, n_heads, head_dim);
    PHI_CHECK(rotary_dim >= 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim,
              "rope: rotary_dim {} must be even and at most head_dim {}", rotary_dim, head_dim);
    PHI_CHECK(rotary_dim / 2 <= k_rope_max_half, "rope: rotary_dim {} exceeds the supported {}", rotary_dim,
              2 * k_rope_max_half);
    ref::rope(x, pos, n, n_heads, head_dim, rotary_dim, inv_freq, attn_scale);
}

void kv_write(float* k_cache, float* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v) {
    check_layout(layout, "kv_write");
    PHI_CHECK(start_pos >= 0 && n >= 0, "kv_write: bad start_pos {} or n {}", start_pos, n);
    check_blocks(layout, block_table, start_pos + n, "kv_write");
    ref::kv_write(k_cache, v_cache, layout, block_table, start_pos, n, k, v);
}

void kv_write(uint16_t* k_cache, uint16_t* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v) {
    check_layout(layout, "kv_write");
    PHI_CHECK(start_pos >= 0 && n >= 0, "kv_write: bad start_pos {} or n {}", start_pos, n);
    check_blocks(layout, block_table, start_pos + n, "kv_write");
    ref::kv_write(k_cache, v_cache, layout, block_table, start_pos, n, k, v);
}

namespace {

template <typename T>
void paged_attention_checked(Isa isa, float* out, const float* q, const T* k_cache, const T* v_cache,
                             const KvLayout& layout, const int32_t* block_table, int64_t start_pos, int64_t n,
                             int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t sliding_window) {
    check_layout(layout, "paged_attention");
    PHI_CHECK(start_pos >= 0 && n >= 0 && n_heads > 0,
              "paged_attention: bad start_pos {}, n {} or n_heads {}", start_pos, n, n_heads);
    for (int64_t h = 0; h < n_heads; ++h) {
        PHI_CHECK(q_to_kv[h] >= 0 && q_to_kv[h] < layout.n_kv_heads,
                  "paged_attention: q_to_kv[{}] = {} is outside the {} KV heads", h, q_to_kv[h],
                  layout.n_kv_heads);
    }
    check_blocks(layout, block_table, start_pos + n, "paged_attention");
    if (n == 0) return;
    // Work item = a block of up to 8 queries x a run of heads, sized so its q and out rows stay in
    // L1 (about 64 rows of head_dim): each K/V row of the item's heads (contiguous in the cache) is
    // loaded once for all its queries. Heads are split further only to give every thread work.
    const int64_t threads = omp_get_max_threads();
    const int64_t qb = std::min<int64_t>(n, 8);
    const int64_t q_chunks = (n + qb - 1) / qb;
    int64_t h_chunks = (n_heads + 64 / qb - 1) / (64 / qb);
    if (q_chunks * h_chunks < threads) h_chunks = std::min(n_heads, (threads + q_chunks - 1) / q_chunks);
    const int64_t hb = (n_heads + h_chunks - 1) / h_chunks;
    // Scores of one (query, head): at most min(context, window) visible keys, padded.
    const int64_t max_keys = sliding_window > 0 ? std::min(start_pos + n, sliding_window) : start_pos + n;
    const int64_t stride = (max_keys + 15) / 16 * 16;
    // Uninitialised (every score is written before it is read); one allocation per call.
    const std::unique_ptr<float[]> scratch(new float[size_t(threads * qb * hb * stride)]);
    const AttentionArgsT<T> a{out,       q,  k_cache,       v_cache, layout, block_table,
                              start_pos, n,  n_heads,       q_to_kv, scale,  sliding_window,
                              qb,        hb, scratch.get(), stride};
    switch (isa) {
        case Isa::Scalar:
            ref::paged_attention(a);
            return;
        case Isa::Avx2:
            avx2::paged_attention(a);
            return;
        case Isa::Avx512:
            avx512::paged_attention(a);
            return;
    }
}

}  // namespace

void paged_attention(Isa isa, float* out, const float* q, const float* k_cache, const float* v_cache,
                     const KvLayout& layout, const int32_t* block_table, int64_t start_pos, int64_t n,
                     int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t sliding_window) {
    paged_attention_checked(isa, out, q, k_cache, v_cache, layout, block_table, start_pos, n, n_heads, q_to_kv,
                            scale, sliding_window);
}

void paged_attention(Isa isa, float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                     const KvLayout& layout, const int32_t* block_table, int64_t start_pos, int64_t n,
                     int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t sliding_window) {
    paged_attention_checked(isa, out, q, k_cache, v_cache, layout, block_table, start_pos, n, n_heads, q_to_kv,
                            scale, sliding_window);
}

void embedding(float* out, const WeightView& emb, const int32_t* ids, int64_t n, int64_t row_offset) {
    check_weight(emb, "embedding");
    PHI_CHECK(n >= 0, "embedding: n = {} is negative", n);
    ref::embedding(out, emb, ids, n, row_offset);
}

}  // namespace phi::kernels::cpu
