// Element-wise and row-wise kernels: embedding, norms, RoPE, activations, residual adds, dtype
// conversion, row gathers and the KV-cache write. Grid-stride loops; one block per row for the
// norms (fp32 block reductions in a fixed order).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {
using namespace detail;

namespace {

constexpr int k_threads = 256;

__global__ void embedding_kernel(float* out, const bf16* emb, int64_t rows, int64_t d, const int32_t* ids,
                                 int64_t row_offset) {
    const int64_t t = blockIdx.x;
    const int64_t r = int64_t(ids[t]) - row_offset;
    float* o = out + t * d;
    if (r < 0 || r >= rows) {
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) o[j] = 0.0f;
    } else {
        const bf16* e = emb + r * d;
        for (int64_t j = threadIdx.x; j < d; j += blockDim.x) o[j] = __bfloat162float(e[j]);
    }
}

template <class OutT>
__global__ void layer_norm_kernel(OutT* y, const float* x, const float* w, const float* b, int64_t d,
                                  float eps) {
    __shared__ float red[32];
    const int64_t t = blockIdx.x;
    const float* xt = x + t * d;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += xt[i];
    const float mean = block_sum(s, red) / float(d);
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        const float v = xt[i] - mean;
        q += v * v;
    }
    const float var = block_sum(q, red) / float(d);
    const float rstd = 1.0f / sqrtf(var + eps);
    OutT* yt = y + t * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
        float v = (xt[i] - mean) * rstd * w[i];
        if (b != nullptr) v += b[i];
        store(yt + i, v);
    }
}

template <class OutT>
__global__ void rms_norm_kernel(OutT* y, const float* x, const float* w, int64_t d, float eps) {
    __shared__ float red[32];
    const int64_t t = blockIdx.x;
    const float* xt = x + t * d;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) s += xt[i] * xt[i];
    const float r = 1.0f / sqrtf(block_sum(s, red) / float(d) + eps);
    OutT* yt = y + t * d;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) store(yt + i, xt[i] * r * w[i]);
}

// One block per token; threads over (head, i < half).
__global__ void rope_kernel(float* x, int64_t x_stride, const int32_t* pos, const int32_t* table,
                            const float* inv_freq, const float* scale, int64_t n_heads, int64_t head_dim,
                            int64_t half) {
    const int64_t t = blockIdx.x;
    const int32_t tab = table != nullptr ? table[t] : 0;
    const float* f = inv_freq + int64_t(tab) * half;
    const float sc = scale != nullptr ? scale[tab] : 1.0f;
    const float fp = float(pos[t]);
    float* xt = x + t * x_stride;
    for (int64_t k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
        const int64_t h = k / half, i = k % half;
        const float ang = fp * f[i];
        const float c = cosf(ang) * sc, s = sinf(ang) * sc;
        float* xh = xt + h * head_dim;
        const float x1 = xh[i], x2 = xh[i + half];
        xh[i] = x1 * c - x2 * s;
        xh[i + half] = x2 * c + x1 * s;
    }
}

template <class OutT>
__global__ void gelu_new_kernel(OutT* y, const float* x, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x) {
        const float v = x[i];
        float t = v * v * v;
        t = 0.044715f * t;
        t = v + t;
        t = 0.7978845608028654f * t;
        t = tanhf(t);
        t = 1.0f + t;
        store(y + i, (0.5f * v) * t);
    }
}

template <class OutT>
__global__ void silu_mul_kernel(OutT* y, const float* in, int64_t n, int64_t d) {
    const int64_t count = n * d;
    for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < count;
         k += int64_t(gridDim.x) * blockDim.x) {
        const int64_t t = k / d, j = k % d;
        const float g = in[t * 2 * d + j];
        const float up = in[t * 2 * d + d + j];
        store(y + k, g / (1.0f + expf(-g)) * up);
    }
}

__global__ void add_kernel(float* y, const float* x, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        y[i] += x[i];
}

__global__ void add_bias_rows_kernel(float* y, const float* b, int64_t n, int64_t d) {
    const int64_t count = n * d;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        y[i] += b[i % d];
}

template <class OutT>
__global__ void broadcast_rows_kernel(OutT* y, const float* b, int64_t n, int64_t d) {
    const int64_t count = n * d;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        store(y + i, b[i % d]);
}

__global__ void convert_kernel(bf16* y, const float* x, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

template <class T>
__global__ void gather_rows_kernel(T* out, const T* x, const int32_t* rows, int64_t d) {
    const int64_t i = blockIdx.x;
    const T* src = x + int64_t(rows[i]) * d;
    T* dst = out + i * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

__global__ void kv_write_kernel(bf16* k_cache, bf16* v_cache, int64_t row, const int32_t* slots,
                                const float* k, const float* v, int64_t src_stride) {
    const int64_t t = blockIdx.x;
    const int64_t off = int64_t(slots[t]) * row;
    for (int64_t j = threadIdx.x; j < row; j += blockDim.x) {
        k_cache[off + j] = __float2bfloat16_rn(k[t * src_stride + j]);
        v_cache[off + j] = __float2bfloat16_rn(v[t * src_stride + j]);
    }
}

}  // namespace

void embedding(float* out, const bf16* emb, int64_t rows, int64_t d, const int32_t* ids, int64_t n,
               int64_t row_offset, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0 && rows >= 0, "embedding: bad shape n %lld, rows %lld, d %lld",
                     (long long)n, (long long)rows, (long long)d);
    if (n == 0) return;
    embedding_kernel<<<unsigned(n), k_threads, 0, s>>>(out, emb, rows, d, ids, row_offset);
    CUDA_CHECK_LAUNCH();
}

void layer_norm(void* y, DType y_dtype, const float* x, const float* w, const float* b, int64_t n, int64_t d,
                float eps, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0, "layer_norm: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n == 0) return;
    PHI_CUDA_DISPATCH_OUT(y_dtype, "layer_norm",
                          layer_norm_kernel<OutT>
                          <<<unsigned(n), k_threads, 0, s>>>(static_cast<OutT*>(y), x, w, b, d, eps));
    CUDA_CHECK_LAUNCH();
}

void rms_norm(void* y, DType y_dtype, const float* x, const float* w, int64_t n, int64_t d, float eps,
              cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0, "rms_norm: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n == 0) return;
    PHI_CUDA_DISPATCH_OUT(y_dtype, "rms_norm",
                          rms_norm_kernel<OutT>
                          <<<unsigned(n), k_threads, 0, s>>>(static_cast<OutT*>(y), x, w, d, eps));
    CUDA_CHECK_LAUNCH();
}

void rope(float* x, int64_t x_stride, const int32_t* pos, const int32_t* table, const float* inv_freq,
          const float* scale, int64_t n, int64_t n_heads, int64_t head_dim, int64_t rotary_dim,
          cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && n_heads >= 0 && head_dim > 0, "rope: bad shape [%lld, %lld, %lld]",
                     (long long)n, (long long)n_heads, (long long)head_dim);
    PHI_CUDA_REQUIRE(rotary_dim >= 0 && rotary_dim % 2 == 0 && rotary_dim <= head_dim,
                     "rope: rotary_dim %lld must be even and at most head_dim %lld", (long long)rotary_dim,
                     (long long)head_dim);
    PHI_CUDA_REQUIRE(x_stride >= n_heads * head_dim, "rope: row stride %lld is shorter than the heads",
                     (long long)x_stride);
    if (n == 0 || n_heads == 0 || rotary_dim == 0) return;
    rope_kernel<<<unsigned(n), 128, 0, s>>>(x, x_stride, pos, table, inv_freq, scale, n_heads, head_dim,
                                            rotary_dim / 2);
    CUDA_CHECK_LAUNCH();
}

void gelu_new(void* y, DType y_dtype, const float* x, int64_t count, cudaStream_t s) {
    PHI_CUDA_REQUIRE(count >= 0, "gelu_new: count %lld is negative", (long long)count);
    if (count == 0) return;
    PHI_CUDA_DISPATCH_OUT(y_dtype, "gelu_new",
                          gelu_new_kernel<OutT>
                          <<<grid_for(count, k_threads), k_threads, 0, s>>>(static_cast<OutT*>(y), x, count));
    CUDA_CHECK_LAUNCH();
}

void silu_mul(void* y, DType y_dtype, const float* in, int64_t n, int64_t d, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d >= 0, "silu_mul: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n * d == 0) return;
    PHI_CUDA_DISPATCH_OUT(y_dtype, "silu_mul",
                          silu_mul_kernel<OutT>
                          <<<grid_for(n * d, k_threads), k_threads, 0, s>>>(static_cast<OutT*>(y), in, n, d));
    CUDA_CHECK_LAUNCH();
}

void add_inplace(float* y, const float* x, int64_t count, cudaStream_t s) {
    PHI_CUDA_REQUIRE(count >= 0, "add_inplace: count %lld is negative", (long long)count);
    if (count == 0) return;
    add_kernel<<<grid_for(count, k_threads), k_threads, 0, s>>>(y, x, count);
    CUDA_CHECK_LAUNCH();
}

void add_bias_rows(float* y, const float* b, int64_t n, int64_t d, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0, "add_bias_rows: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n == 0) return;
    add_bias_rows_kernel<<<grid_for(n * d, k_threads), k_threads, 0, s>>>(y, b, n, d);
    CUDA_CHECK_LAUNCH();
}

void broadcast_rows(void* y, DType y_dtype, const float* b, int64_t n, int64_t d, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0, "broadcast_rows: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n == 0) return;
    PHI_CUDA_DISPATCH_OUT(y_dtype, "broadcast_rows",
                          broadcast_rows_kernel<OutT>
                          <<<grid_for(n * d, k_threads), k_threads, 0, s>>>(static_cast<OutT*>(y), b, n, d));
    CUDA_CHECK_LAUNCH();
}

void convert_to_bf16(bf16* y, const float* x, int64_t count, cudaStream_t s) {
    PHI_CUDA_REQUIRE(count >= 0, "convert_to_bf16: count %lld is negative", (long long)count);
    if (count == 0) return;
    convert_kernel<<<grid_for(count, k_threads), k_threads, 0, s>>>(y, x, count);
    CUDA_CHECK_LAUNCH();
}

void gather_rows(bf16* out, const bf16* x, const int32_t* rows, int64_t n, int64_t d, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0, "gather_rows: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n == 0) return;
    gather_rows_kernel<bf16><<<unsigned(n), k_threads, 0, s>>>(out, x, rows, d);
    CUDA_CHECK_LAUNCH();
}

void gather_rows(float* out, const float* x, const int32_t* rows, int64_t n, int64_t d, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0, "gather_rows: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n == 0) return;
    gather_rows_kernel<float><<<unsigned(n), k_threads, 0, s>>>(out, x, rows, d);
    CUDA_CHECK_LAUNCH();
}

void kv_write(bf16* k_cache, bf16* v_cache, const CacheLayout& layout, const int32_t* slots, const float* k,
              const float* v, int64_t src_stride, int64_t n, cudaStream_t s) {
    PHI_CUDA_REQUIRE(
        layout.num_blocks > 0 && layout.block_size > 0 && layout.n_kv_heads > 0 && layout.head_dim > 0,
        "kv_write: bad cache layout");
    PHI_CUDA_REQUIRE(n >= 0 && src_stride >= layout.row(), "kv_write: bad n %lld or stride %lld",
                     (long long)n, (long long)src_stride);
    if (n == 0) return;
    kv_write_kernel<<<unsigned(n), k_threads, 0, s>>>(k_cache, v_cache, layout.row(), slots, k, v,
                                                      src_stride);
    CUDA_CHECK_LAUNCH();
}

}  // namespace phi::kernels::cuda
