// Token choice on the device, one block per logits row: greedy argmax, and temperature + top-k +
// top-p + an inverse-CDF draw. The top-k and top-p cut-offs are found by binary search over the
// bit patterns of the (non-negative) unnormalised probabilities p = exp((x - max) / T), which
// orders them like the floats: no sort, fixed memory, any vocabulary size. Masses in fp64.
#include <cfloat>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {
using namespace detail;

namespace {

constexpr int k_threads = 1024;
constexpr uint32_t k_one_bits = 0x3f800000u;  // 1.0f: the largest p

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ double block_sum_d(double v, double* red) {
    const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp, warps = blockDim.x / k_warp;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < warps ? red[lane] : 0.0;
    return warp_sum_d(v);
}

/// (value, index) of the block's largest value; lowest index on ties; NaN never wins.
__device__ int64_t block_argmax(const float* x, int64_t limit, float* redv, int64_t* redi) {
    float bv = -INFINITY;
    int64_t bi = -1;
    for (int64_t i = threadIdx.x; i < limit; i += blockDim.x) {
        const float v = x[i];
        if (bi < 0 ? !(v != v) : v > bv) {  // first non-NaN, then strictly larger (i ascends)
            bv = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
            bv = ov;
            bi = oi;
        }
    }
    const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp, warps = blockDim.x / k_warp;
    __syncthreads();
    if (lane == 0) {
        redv[warp] = bv;
        redi[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < warps; ++w) {
            if (redi[w] >= 0 &&
                (redi[0] < 0 || redv[w] > redv[0] || (redv[w] == redv[0] && redi[w] < redi[0]))) {
                redv[0] = redv[w];
                redi[0] = redi[w];
            }
        }
    }
    __syncthreads();
    const int64_t best = redi[0];
    __syncthreads();
    return best < 0 ? 0 : best;
}

__global__ void argmax_kernel(int32_t* out, const float* logits, int64_t stride, int64_t limit) {
    __shared__ float redv[32];
    __shared__ int64_t redi[32];
    const int64_t best = block_argmax(logits + blockIdx.x * stride, limit, redv, redi);
    if (threadIdx.x == 0) out[blockIdx.x] = int32_t(best);
}

__global__ void sample_kernel(int32_t* out, const float* logits, int64_t stride, int64_t limit,
                              const float* temperature, const int32_t* top_k, const float* top_p,
                              const float* uniform) {
    __shared__ float redv[32];
    __shared__ int64_t redi[32];
    __shared__ double redd[32];
    __shared__ float red[32];
    __shared__ double prefix[k_threads];
    __shared__ unsigned long long found;
    const int64_t r = blockIdx.x;
    const float* x = logits + r * stride;
    const float temp = temperature[r];
    if (!(temp > 0.0f)) {
        const int64_t best = block_argmax(x, limit, redv, redi);
        if (threadIdx.x == 0) out[r] = int32_t(best);
        return;
    }
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < limit; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_max(mx, red);
    if (mx == -INFINITY) {  // nothing has mass: fall back to index 0's rule (argmax)
        const int64_t best = block_argmax(x, limit, redv, redi);
        if (threadIdx.x == 0) out[r] = int32_t(best);
        return;
    }
    const float mz = mx / temp;
    auto p_of = [&](int64_t i) { return expf(x[i] / temp - mz); };

    // Top-k: the largest threshold tau with count(p >= tau) >= k (ties with the k-th all kept).
    float tau = 0.0f;
    const int64_t k = top_k[r];
    if (k > 0 && k < limit) {
        uint32_t lo = 0, hi = k_one_bits;
        while (lo < hi) {
            const uint32_t mid = lo + (hi - lo + 1) / 2;
            const float t = __uint_as_float(mid);
            float c = 0.0f;
            for (int64_t i = threadIdx.x; i < limit; i += blockDim.x) c += p_of(i) >= t ? 1.0f : 0.0f;
            if (block_sum(c, red) >= float(k)) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        tau = __uint_as_float(lo);
    }
    // Top-p: token i is kept iff the mass of kept tokens with p > p_i is below top_p of the kept
    // mass; that set is p >= the smallest tau_p with mass(p > tau_p) < cut.
    const float tp = top_p[r];
    if (tp < 1.0f) {
        double zk = 0.0;
        for (int64_t i = threadIdx.x; i < limit; i += blockDim.x) {
            const float p = p_of(i);
            if (p >= tau) zk += p;
        }
        const double cut = double(tp) * block_sum_d(zk, redd);
        uint32_t lo = __float_as_uint(tau), hi = k_one_bits;
        while (lo < hi) {
            const uint32_t mid = lo + (hi - lo) / 2;
            const float t = __uint_as_float(mid);
            double above = 0.0;
            for (int64_t i = threadIdx.x; i < limit; i += blockDim.x) {
                const float p = p_of(i);
                if (p >= tau && p > t) above += p;
            }
            if (block_sum_d(above, redd) < cut) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        tau = fmaxf(tau, __uint_as_float(lo));
    }

    // Inverse CDF in index order: each thread owns a contiguous run of indices.
    const int64_t chunk = (limit + blockDim.x - 1) / blockDim.x;
    const int64_t b = int64_t(threadIdx.x) * chunk, e = b + chunk < limit ? b + chunk : limit;
    double mine = 0.0;
    int64_t last_kept = -1;
    for (int64_t i = b; i < e; ++i) {
        const float p = p_of(i);
        if (p >= tau && p > 0.0f) {
            mine += p;
            last_kept = i;
        }
    }
    prefix[threadIdx.x] = mine;
    if (threadIdx.x == 0) found = ~0ull;
    __syncthreads();
    if (threadIdx.x == 0) {  // exclusive scan, fixed order
        double run = 0.0;
        for (int i = 0; i < int(blockDim.x); ++i) {
            const double v = prefix[i];
            prefix[i] = run;
            run += v;
        }
        redd[0] = run;
    }
    __syncthreads();
    const double total = redd[0];
    const double target = double(uniform[r]) * total;
    if (mine > 0.0) {
        double cum = prefix[threadIdx.x];
        for (int64_t i = b; i < e; ++i) {
            const float p = p_of(i);
            if (!(p >= tau && p > 0.0f)) continue;
            cum += p;
            if (cum > target) {
                atomicMin(&found, (unsigned long long)i);
                break;
            }
        }
    }
    // Rounding can leave every cum <= target: the last kept index then (as the CPU sampler does).
    float lk = float(last_kept);
    lk = block_max(lk, red);
    __syncthreads();
    if (threadIdx.x == 0) out[r] = found != ~0ull ? int32_t(found) : int32_t(lk);
}

/// One block per wanted row: (max, global id) over the row's ids below its limit (the distributed
/// greedy step: each rank reduces its vocabulary shard, rank 0 picks among the pairs).
__global__ void argmax_pairs_kernel(float* out_value, int32_t* out_id, const float* logits, int64_t stride,
                                    const int32_t* row_index, const int32_t* limits, int64_t vocab_begin,
                                    int64_t cols) {
    __shared__ float redv[32];
    __shared__ int64_t redi[32];
    const float* row = logits + int64_t(row_index[blockIdx.x]) * stride;
    const int64_t lim = int64_t(limits[blockIdx.x]) - vocab_begin;
    const int64_t end = lim < 0 ? 0 : (lim < cols ? lim : cols);
    const int64_t best = block_argmax(row, end, redv, redi);  // every thread calls it (barriers)
    if (threadIdx.x == 0) {
        out_value[blockIdx.x] = end > 0 ? row[best] : -INFINITY;
        out_id[blockIdx.x] = end > 0 ? int32_t(vocab_begin + best) : -1;
    }
}

}  // namespace

void argmax(int32_t* out, const float* logits, int64_t rows, int64_t stride, int64_t limit, cudaStream_t s) {
    PHI_CUDA_REQUIRE(rows >= 0 && limit > 0 && limit <= stride,
                     "argmax: bad rows %lld, limit %lld or stride %lld", (long long)rows, (long long)limit,
                     (long long)stride);
    if (rows == 0) return;
    argmax_kernel<<<unsigned(rows), k_threads, 0, s>>>(out, logits, stride, limit);
    CUDA_CHECK_LAUNCH();
}

void argmax_pairs(float* out_value, int32_t* out_id, const float* logits, int64_t stride, int64_t cols,
                  const int32_t* row_index, const int32_t* limits, int64_t rows, int64_t vocab_begin, cudaStream_t s) {
    PHI_CUDA_REQUIRE(rows >= 0 && cols >= 0 && cols <= stride, "argmax_pairs: bad rows %lld, cols %lld or stride %lld",
                     (long long)rows, (long long)cols, (long long)stride);
    if (rows == 0) return;
    argmax_pairs_kernel<<<unsigned(rows), k_threads, 0, s>>>(out_value, out_id, logits, stride, row_index, limits,
                                                             vocab_begin, cols);
    CUDA_CHECK_LAUNCH();
}

void sample_top_k_top_p(int32_t* out, const float* logits, int64_t rows, int64_t stride, int64_t limit,
                        const float* temperature, const int32_t* top_k, const float* top_p,
                        const float* uniform, cudaStream_t s) {
    PHI_CUDA_REQUIRE(rows >= 0 && limit > 0 && limit <= stride && limit < (int64_t(1) << 24),
                     "sample_top_k_top_p: bad rows %lld, limit %lld or stride %lld", (long long)rows,
                     (long long)limit, (long long)stride);
    if (rows == 0) return;
    sample_kernel<<<unsigned(rows), k_threads, 0, s>>>(out, logits, stride, limit, temperature, top_k, top_p,
                                                       uniform);
    CUDA_CHECK_LAUNCH();
}

}  // namespace phi::kernels::cuda
