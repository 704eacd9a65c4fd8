// Paged attention, one CUDA block per (query token, head), for decode and causal prefill alike:
// the keys a query sees are streamed in chunks of k_chunk; scores go to shared memory (fp32), an
// online softmax (running max and sum, rescaled per chunk) keeps any context length in fixed
// shared memory, and each thread accumulates two output dims in fp32.
//
// Performance notes (correctness first): a decode step of one sequence launches n_heads blocks
// (no split over the context, flash-decoding style), and prefill re-reads the keys once per query
// (no tiling across queries). Both are the known next steps.
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {
using namespace detail;

namespace {

constexpr int k_threads = 128;  // 4 warps; thread i owns dims i and i + 128
constexpr int k_max_head_dim = 2 * k_threads;
constexpr int k_chunk = 128;  // keys per chunk

template <class OutT>
__global__ void __launch_bounds__(k_threads)
    paged_attention_kernel(OutT* out, const float* q, int64_t q_stride, const bf16* k_cache,
                           const bf16* v_cache, int64_t bs, int64_t nkv, int64_t hd, const int32_t* tok_seq,
                           const int32_t* tok_pos, const int32_t* block_tables, int64_t table_stride,
                           int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t window) {
    __shared__ float qs[k_max_head_dim];
    __shared__ float sc[k_chunk];
    __shared__ float red[32];
    const int64_t t = blockIdx.x, h = blockIdx.y;
    const int tid = threadIdx.x, lane = tid % k_warp, warp = tid / k_warp, warps = k_threads / k_warp;
    const int32_t* table = block_tables + int64_t(tok_seq[t]) * table_stride;
    const int64_t pos = tok_pos[t];
    const int64_t kvh = q_to_kv[h];
    const float* qt = q + t * q_stride + h * hd;
    for (int64_t j = tid; j < hd; j += k_threads) qs[j] = qt[j];
    __syncthreads();

    auto row = [&](const bf16* cache, int64_t p) {
        const int64_t blk = table[p / bs];
        return cache + ((blk * bs + p % bs) * nkv + kvh) * hd;
    };

    const int64_t lo = window > 0 ? (pos - window + 1 > 0 ? pos - window + 1 : 0) : 0;
    const int j0 = tid, j1 = tid + k_threads;
    float m = -INFINITY, l = 0.0f, acc0 = 0.0f, acc1 = 0.0f;
    for (int64_t c0 = lo; c0 <= pos; c0 += k_chunk) {
        const int nk = int((pos + 1 - c0) < k_chunk ? (pos + 1 - c0) : k_chunk);
        for (int kk = warp; kk < nk; kk += warps) {
            const bf16* k = row(k_cache, c0 + kk);
            float s = 0.0f;
            for (int64_t j = lane; j < hd; j += k_warp) s += qs[j] * __bfloat162float(k[j]);
            s = warp_sum(s);
            if (lane == 0) sc[kk] = s * scale;
        }
        __syncthreads();
        float lm = -INFINITY;
        for (int kk = tid; kk < nk; kk += k_threads) lm = fmaxf(lm, sc[kk]);
        const float new_m = fmaxf(m, block_max(lm, red));
        const float factor = expf(m - new_m);  // 0 on the first chunk (m = -inf)
        float ls = 0.0f;
        for (int kk = tid; kk < nk; kk += k_threads) {
            const float e = expf(sc[kk] - new_m);
            sc[kk] = e;
            ls += e;
        }
        const float cs = block_sum(ls, red);  // its barriers also publish sc
        l = l * factor + cs;
        acc0 *= factor;
        acc1 *= factor;
        for (int kk = 0; kk < nk; ++kk) {
            const bf16* v = row(v_cache, c0 + kk);
            const float pr = sc[kk];
            if (j0 < hd) acc0 += pr * __bfloat162float(v[j0]);
            if (j1 < hd) acc1 += pr * __bfloat162float(v[j1]);
        }
        m = new_m;
        __syncthreads();  // sc is rewritten by the next chunk
    }
    OutT* o = out + (t * n_heads + h) * hd;
    const float inv = 1.0f / l;
    if (j0 < hd) store(o + j0, acc0 * inv);
    if (j1 < hd) store(o + j1, acc1 * inv);
}

}  // namespace

void paged_attention(void* out, DType out_dtype, const float* q, int64_t q_stride, const bf16* k_cache,
                     const bf16* v_cache, const CacheLayout& layout, const AttentionBatch& batch,
                     int64_t n_heads, const int32_t* q_to_kv, float scale, int64_t sliding_window,
                     cudaStream_t s) {
    PHI_CUDA_REQUIRE(
        layout.num_blocks > 0 && layout.block_size > 0 && layout.n_kv_heads > 0 && layout.head_dim > 0,
        "paged_attention: bad cache layout");
    PHI_CUDA_REQUIRE(layout.head_dim <= k_max_head_dim,
                     "paged_attention: head_dim %lld exceeds the supported %d", (long long)layout.head_dim,
                     k_max_head_dim);
    PHI_CUDA_REQUIRE(n_heads > 0 && n_heads <= 65535, "paged_attention: bad n_heads %lld",
                     (long long)n_heads);
    PHI_CUDA_REQUIRE(batch.n >= 0 && q_stride >= n_heads * layout.head_dim && q_to_kv != nullptr,
                     "paged_attention: bad n %lld, q stride %lld or missing q_to_kv", (long long)batch.n,
                     (long long)q_stride);
    if (batch.n == 0) return;
    const dim3 grid(unsigned(batch.n), unsigned(n_heads));
    PHI_CUDA_DISPATCH_OUT(
        out_dtype, "paged_attention",
        paged_attention_kernel<OutT><<<grid, k_threads, 0, s>>>(
            static_cast<OutT*>(out), q, q_stride, k_cache, v_cache, layout.block_size, layout.n_kv_heads,
            layout.head_dim, batch.tok_seq, batch.tok_pos, batch.block_tables, batch.block_table_stride,
            n_heads, q_to_kv, scale, sliding_window));
    CUDA_CHECK_LAUNCH();
}

}  // namespace phi::kernels::cuda
