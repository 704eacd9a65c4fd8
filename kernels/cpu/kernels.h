// CPU kernels: free functions on raw fp32 buffers with explicit sizes. Each function takes the
// Isa to run at; every level computes each output with a FIXED reduction order that does not
// depend on the batch size, the batch's other rows or the thread count (so a request's output
// does not depend on what else runs). Levels may differ from each other within rounding.
//
// Threading: functions parallelise internally with OpenMP over independent outputs only.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa.h"
#include "common/dtype.h"

namespace phi::kernels::cpu {

/// A weight matrix in PyTorch Linear layout: `rows` outputs, each a contiguous row of `cols`
/// inputs (`[out, in]`), stored as F32 or BF16 (F16 is converted at load time).
struct WeightView {
    const void* data = nullptr;  // [rows, cols]
    DType dtype = DType::F32;
    int64_t rows = 0;
    int64_t cols = 0;
};

/// y[t, o] = sum_i x[t, i] * W[o, i] (+ bias[o]) for t < n.  x: [n, W.cols], y: [n, W.rows],
/// bias: [W.rows] or null. The bias is added after the full dot product (one rounding).
void linear(Isa isa, float* y, const float* x, int64_t n, const WeightView& w, const float* bias);

/// LayerNorm over the last dim d: y = (x - mean) / sqrt(var + eps) * w + b  (biased variance).
/// b may be null. y may alias x.
void layer_norm(Isa isa, float* y, const float* x, const float* w, const float* b, int64_t n, int64_t d,
                float eps);

/// RMSNorm: y = x * rsqrt(mean(x^2) + eps) * w. y may alias x.
void rms_norm(Isa isa, float* y, const float* x, const float* w, int64_t n, int64_t d, float eps);

/// In place: x = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (HF gelu_new), evaluated as
/// x / (1 + exp(-2u)) with activation_math.h's polynomial exp: bitwise equal at every ISA level.
void gelu_new(Isa isa, float* x, int64_t count);

/// out[t, j] = silu(gate[t, j]) * up[t, j], where gate = in[t, 0:d] and up = in[t, d:2d]
/// (gate_up layout [n, 2d]). out: [n, d].
void silu_mul(Isa isa, float* out, const float* in, int64_t n, int64_t d);

/// y[i] += x[i].
void add_inplace(Isa isa, float* y, const float* x, int64_t count);

/// NeoX rotate-half RoPE on the first `rotary_dim` dims of each head, in place.
/// x: [n, n_heads, head_dim]; pos: [n] absolute positions; inv_freq: [rotary_dim/2];
/// cos and sin are multiplied by attn_scale (LongRoPE attention factor, 1 otherwise).
/// Angles are computed in fp32 as float(pos) * inv_freq[i], as HF does.
void rope(Isa isa, float* x, const int32_t* pos, int64_t n, int64_t n_heads, int64_t head_dim,
          int64_t rotary_dim, const float* inv_freq, float attn_scale);

/// Shape of a paged KV cache of one layer on one rank. K and V each:
/// [num_blocks, block_size, n_kv_heads, head_dim] fp32.
struct KvLayout {
    int64_t num_blocks = 0;
    int64_t block_size = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
};

/// Writes n tokens' K and V (k, v: [n, n_kv_heads, head_dim]) at positions start_pos..start_pos+n-1
/// of the sequence whose blocks are block_table (position p lives in block_table[p / block_size],
/// slot p % block_size).
void kv_write(float* k_cache, float* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v);

/// The same into a bf16 cache (`kv_cache.dtype: bf16`): each K and V element rounded to bf16 (nearest
/// even, as torch's `.to(torch.bfloat16)`), halving the cache's bytes per token.
void kv_write(uint16_t* k_cache, uint16_t* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v);

/// Causal attention of one sequence's n new queries over its cached keys/values (which already
/// hold the new tokens). Query i sits at position start_pos + i and sees keys at positions
/// p <= start_pos + i, and p > start_pos + i - sliding_window when sliding_window > 0.
/// q, out: [n, n_heads, head_dim]; q_to_kv: [n_heads] local KV head of each local query head.
/// Scores and softmax in fp32, scaled by `scale`, accumulated in position order.
void paged_attention(Isa isa, float* out, const float* q, const float* k_cache, const float* v_cache,
                     const KvLayout& layout, const int32_t* block_table, int64_t start_pos, int64_t n,
                     int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t sliding_window);

/// The same over a bf16 cache: K and V are widened to fp32 exactly as they are read, so the result is
/// bitwise that of the fp32 overload over a cache holding the same rounded values.
void paged_attention(Isa isa, float* out, const float* q, const uint16_t* k_cache, const uint16_t* v_cache,
                     const KvLayout& layout, const int32_t* block_table, int64_t start_pos, int64_t n,
                     int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t sliding_window);

/// Row gather from an embedding table with `emb.cols` columns: out[t] = emb[ids[t] - row_offset]
/// for ids in [row_offset, row_offset + emb.rows), zeros otherwise (vocab-parallel shards).
void embedding(float* out, const WeightView& emb, const int32_t* ids, int64_t n, int64_t row_offset);

}  // namespace phi::kernels::cpu
