// CUDA kernels: free functions on device buffers with explicit sizes, each launched on the given
// stream (no synchronisation, no allocation unless stated). Storage is bf16 for weights, the KV
// cache and GEMM inputs; every reduction accumulates in fp32; the residual stream stays fp32.
// Each function has a CPU reference in kernels/cpu (tests/cuda compares them).
//
// Numerics differ from the CPU's fixed reduction orders within rounding: cuBLAS chooses its
// algorithm per shape, so GPU results are deterministic run to run for the same shapes but are
// not batch-invariant the way the CPU kernels are.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/device.h"
#include "common/dtype.h"

namespace phi::kernels::cuda {

using bf16 = __nv_bfloat16;

// ---- GEMM -----------------------------------------------------------------------------------

/// y[t, o] = sum_i x[t, i] * w[o, i] (+ bias[o]) for t < n, o < m, i < k (PyTorch Linear layout).
/// x: [n, k] bf16, w: [m, k] bf16, y: [n, m] in y_dtype (F32 or BF16); fp32 accumulation
/// (cublasGemmEx, CUBLAS_COMPUTE_32F). The bias (fp32 values; bf16-exact when y is BF16) is
/// written into y first and accumulated with beta = 1: y is rounded once.
void linear(const CublasHandle& h, void* y, DType y_dtype, const bf16* x, const bf16* w, const float* bias,
            int64_t n, int64_t m, int64_t k);

/// fp32 GEMM without TF32 (the MoE router, whose choices must not move): y[n, m] = x[n, k] w[m, k]^T.
void linear_f32(const CublasHandle& h, float* y, const float* x, const float* w, int64_t n, int64_t m,
                int64_t k);

// ---- element-wise and row-wise ---------------------------------------------------------------

/// out[t] = emb[ids[t] - row_offset] widened to fp32, zeros for ids outside this rank's rows.
/// emb: [rows, d] bf16, ids: [n], out: [n, d].
void embedding(float* out, const bf16* emb, int64_t rows, int64_t d, const int32_t* ids, int64_t n,
               int64_t row_offset, cudaStream_t s);

/// LayerNorm over d (biased variance): y = (x - mean) rsqrt(var + eps) w (+ b). x: [n, d] fp32,
/// w, b: [d] fp32 (b may be null), y: [n, d] in y_dtype.
void layer_norm(void* y, DType y_dtype, const float* x, const float* w, const float* b, int64_t n, int64_t d,
                float eps, cudaStream_t s);

/// RMSNorm: y = x rsqrt(mean(x^2) + eps) w.
void rms_norm(void* y, DType y_dtype, const float* x, const float* w, int64_t n, int64_t d, float eps,
              cudaStream_t s);

/// NeoX rotate-half RoPE on the first rotary_dim dims of each head, in place. Token t's heads
/// start at x + t * x_stride ([n_heads, head_dim] contiguous). Table table[t] (0 when table is
/// null) selects the frequencies inv_freq[table, rotary_dim / 2] and the factor scale[table]
/// multiplying cos and sin (LongRoPE: short and long tables per sequence). Angles in fp32:
/// float(pos[t]) * inv_freq[i], accurate cosf/sinf.
void rope(float* x, int64_t x_stride, const int32_t* pos, const int32_t* table, const float* inv_freq,
          const float* scale, int64_t n, int64_t n_heads, int64_t head_dim, int64_t rotary_dim,
          cudaStream_t s);

/// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (HF gelu_new). x fp32, y in y_dtype; may alias
/// when y_dtype is F32.
void gelu_new(void* y, DType y_dtype, const float* x, int64_t count, cudaStream_t s);

/// y[t, j] = silu(in[t, j]) * in[t, d + j]; in: [n, 2d] fp32 (gate | up), y: [n, d] in y_dtype.
void silu_mul(void* y, DType y_dtype, const float* in, int64_t n, int64_t d, cudaStream_t s);

/// y[i] += x[i] (the residual add).
void add_inplace(float* y, const float* x, int64_t count, cudaStream_t s);

/// y[t, j] += b[j] for t < n, j < d (row-parallel biases after the all-reduce).
void add_bias_rows(float* y, const float* b, int64_t n, int64_t d, cudaStream_t s);

/// y[t, j] = b[j] for t < n, j < d, in y_dtype (a GEMM's bias before it accumulates with beta = 1).
void broadcast_rows(void* y, DType y_dtype, const float* b, int64_t n, int64_t d, cudaStream_t s);

/// y = bf16(x), round to nearest even.
void convert_to_bf16(bf16* y, const float* x, int64_t count, cudaStream_t s);

/// out[i] = x[rows[i]] for i < n; rows of d elements (MoE dispatch, logits row selection).
void gather_rows(bf16* out, const bf16* x, const int32_t* rows, int64_t n, int64_t d, cudaStream_t s);
void gather_rows(float* out, const float* x, const int32_t* rows, int64_t n, int64_t d, cudaStream_t s);

// ---- paged KV cache and attention ------------------------------------------------------------

/// One layer's paged cache on one rank. K and V each: [num_blocks, block_size, n_kv_heads, head_dim]
/// bf16; slot s = block * block_size + offset.
struct CacheLayout {
    int64_t num_blocks = 0;
    int64_t block_size = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t row() const { return n_kv_heads * head_dim; }
};

/// Writes n tokens' K and V (token t's at k + t * src_stride, [n_kv_heads, head_dim] fp32) into
/// cache slot slots[t] (vLLM's slot mapping, computed from the block tables by the caller).
void kv_write(bf16* k_cache, bf16* v_cache, const CacheLayout& layout, const int32_t* slots, const float* k,
              const float* v, int64_t src_stride, int64_t n, cudaStream_t s);

/// Attention of n query tokens of any number of sequences (decode: one per sequence; prefill:
/// causal chunks) over their cached keys and values, which already hold the new tokens.
struct AttentionBatch {
    const int32_t* tok_seq = nullptr;       // [n] sequence of each query token
    const int32_t* tok_pos = nullptr;       // [n] absolute position of each query token
    const int32_t* block_tables = nullptr;  // [n_seqs, block_table_stride]
    int64_t block_table_stride = 0;
    int64_t n = 0;
};

/// Query token t, head h (at q + t * q_stride + h * head_dim, fp32) sees keys at positions
/// p <= tok_pos[t], and p > tok_pos[t] - sliding_window when sliding_window > 0. KV head
/// q_to_kv[h] (GQA). Scores, online softmax and the weighted sum in fp32. out: [n, n_heads, head_dim]
/// in out_dtype. head_dim <= 256.
void paged_attention(void* out, DType out_dtype, const float* q, int64_t q_stride, const bf16* k_cache,
                     const bf16* v_cache, const CacheLayout& layout, const AttentionBatch& batch,
                     int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t sliding_window,
                     cudaStream_t s);

// ---- sampling --------------------------------------------------------------------------------

/// out[r] = index of the largest of logits[r * stride + 0 .. limit) (lowest index on ties).
void argmax(int32_t* out, const float* logits, int64_t rows, int64_t stride, int64_t limit, cudaStream_t s);

/// Per wanted row i (of `rows`): over logits[row_index[i] * stride + j] for j < min(cols,
/// limits[i] - vocab_begin), the largest value and vocab_begin + its index (lowest on ties; NaN
/// never wins unless the row is all NaN); value -inf and id -1 when no id is below the limit.
void argmax_pairs(float* out_value, int32_t* out_id, const float* logits, int64_t stride, int64_t cols,
                  const int32_t* row_index, const int32_t* limits, int64_t rows, int64_t vocab_begin, cudaStream_t s);

/// Per row r: temperature[r] (<= 0: greedy), then top-k (top_k[r] <= 0: off; ties with the k-th
/// value are kept, as HF does), then top-p (top_p[r] >= 1: off; a token is kept while the mass of
/// the tokens strictly more likely is below top_p of the total; ties are kept together), then an
/// inverse-CDF draw in index order at uniform[r] in [0, 1) (the coordinator's sampler's rule).
void sample_top_k_top_p(int32_t* out, const float* logits, int64_t rows, int64_t stride, int64_t limit,
                        const float* temperature, const int32_t* top_k, const float* top_p,
                        const float* uniform, cudaStream_t s);

// ---- mixture of experts ----------------------------------------------------------------------

/// PhiMoE sparsemixer (eval path), top-2: idx[t, 0..1] expert ids, w[t, 0..1] their weights (not
/// renormalised). scores: [n, E] fp32, E <= 64.
void moe_route(int32_t* idx, float* w, const float* scores, int64_t n, int64_t E, float jitter_eps,
               cudaStream_t s);

/// Stable per-expert token lists from idx [n, 2]: expert e's rows are rows[offsets[e] ..
/// offsets[e + 1]) in token order; inv[t * 2 + k] is where (t, idx[t, k]) landed. One block.
void moe_build_lists(int32_t* offsets, int32_t* rows, int32_t* inv, const int32_t* idx, int64_t n, int64_t E,
                     cudaStream_t s);

/// out[t] = (0 + y[lo] w_lo) + y[hi] w_hi with lo the smaller expert id (the CPU's expert order).
void moe_combine(float* out, const float* y, const int32_t* inv, const int32_t* idx, const float* w,
                 int64_t n, int64_t d, cudaStream_t s);

/// Scratch of moe_mlp, grown on demand.
struct MoeWorkspace {
    DeviceBuffer scores, idx, w, offsets, rows, inv, xs, gu, act, y;
    std::vector<int32_t> host_offsets;
};

/// The whole MoE MLP of one rank: route with the fp32 router on h32, gather each expert's tokens
/// (bf16 h16), gate_up GEMM, silu_mul, down GEMM, weighted combine into out [n, d] fp32 (partial:
/// the caller all-reduces). expert_up[e]: [2f, d] (local w1 | w3), expert_down[e]: [d, f] device
/// pointers. Copies the expert counts to the host once (a stream synchronisation).
void moe_mlp(const CublasHandle& h, float* out, const float* h32, const bf16* h16, const float* router,
             const std::vector<const bf16*>& expert_up, const std::vector<const bf16*>& expert_down,
             int64_t n, int64_t d, int64_t f, int64_t E, float jitter_eps, MoeWorkspace& ws);

// ---- benchmarks ------------------------------------------------------------------------------

/// Reads `bytes` (a multiple of 16) at data with 16-byte loads and folds them into sink[0] so the
/// reads cannot be optimised away: the streaming-read bandwidth limit of decode.
void stream_read(const void* data, size_t bytes, uint32_t* sink, cudaStream_t s);

}  // namespace phi::kernels::cuda
