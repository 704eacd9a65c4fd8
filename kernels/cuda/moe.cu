// MoE device kernels: the sparsemixer router (one thread per token, as the CPU's loop), stable
// per-expert token lists (block scans in token order: no atomics, so the lists and therefore every
// expert GEMM's row order are deterministic), and the weighted combine in the CPU's expert order.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {
using namespace detail;

namespace {

constexpr int k_max_experts = 64;

__global__ void moe_route_kernel(int32_t* idx, float* w, const float* scores, int64_t n, int E, float eps) {
    const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t >= n) return;
    const float* s = scores + t * E;
    float s2[k_max_experts], g[k_max_experts];
    for (int j = 0; j < E; ++j) s2[j] = s[j];
    for (int k = 0; k < 2; ++k) {
        const float* sc = k == 0 ? s : s2;
        int best = 0;
        for (int j = 1; j < E; ++j)
            if (sc[j] > sc[best]) best = j;
        const float m = sc[best];
        float mx = -INFINITY;
        for (int j = 0; j < E; ++j) {
            const float factor = fmaxf(fabsf(s[j]), m);
            const bool masked = ((m - s[j]) / factor) > 2.0f * eps;
            g[j] = masked ? -INFINITY : sc[j];
            mx = fmaxf(mx, g[j]);
        }
        float sum = 0.0f;
        for (int j = 0; j < E; ++j) {
            g[j] = expf(g[j] - mx);
            sum += g[j];
        }
        idx[t * 2 + k] = best;
        w[t * 2 + k] = g[best] / sum;
        s2[best] = -INFINITY;
    }
}

/// Exclusive scan of one int per thread over the block, in thread order; returns the block total
/// in *total. `sh` is __shared__ int[32].
__device__ int block_exclusive_scan(int v, int* sh, int* total) {
    const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp, warps = blockDim.x / k_warp;
    int incl = v;
    for (int o = 1; o < k_warp; o <<= 1) {
        const int u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
    }
    __syncthreads();
    if (lane == k_warp - 1) sh[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        int w = lane < warps ? sh[lane] : 0;
        for (int o = 1; o < k_warp; o <<= 1) {
            const int u = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += u;
        }
        if (lane < warps) sh[lane] = w;  // inclusive over warps
    }
    __syncthreads();
    const int before = warp > 0 ? sh[warp - 1] : 0;
    *total = sh[warps - 1];
    return before + incl - v;
}

// One block: for each expert in order, a scan over the tokens in order.
__global__ void moe_build_lists_kernel(int32_t* offsets, int32_t* rows, int32_t* inv, const int32_t* idx,
                                       int64_t n, int E) {
    __shared__ int sh[32];
    int base = 0;
    for (int e = 0; e < E; ++e) {
        if (threadIdx.x == 0) offsets[e] = base;
        for (int64_t c = 0; c < n; c += blockDim.x) {
            const int64_t t = c + threadIdx.x;
            int k = -1;
            if (t < n) k = idx[t * 2] == e ? 0 : (idx[t * 2 + 1] == e ? 1 : -1);
            int total = 0;
            const int at = base + block_exclusive_scan(k >= 0 ? 1 : 0, sh, &total);
            if (k >= 0) {
                rows[at] = int32_t(t);
                inv[t * 2 + k] = at;
            }
            base += total;
        }
    }
    if (threadIdx.x == 0) offsets[E] = base;
}

__global__ void moe_combine_kernel(float* out, const float* y, const int32_t* inv, const int32_t* idx,
                                   const float* w, int64_t d) {
    const int64_t t = blockIdx.x;
    const int lo = idx[t * 2] < idx[t * 2 + 1] ? 0 : 1, hi = 1 - lo;
    const float* ylo = y + int64_t(inv[t * 2 + lo]) * d;
    const float* yhi = y + int64_t(inv[t * 2 + hi]) * d;
    const float wlo = w[t * 2 + lo], whi = w[t * 2 + hi];
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
        float o = 0.0f;
        o = __fadd_rn(o, __fmul_rn(ylo[j], wlo));  // the CPU's order and roundings (no FMA)
        o = __fadd_rn(o, __fmul_rn(yhi[j], whi));
        out[t * d + j] = o;
    }
}

}  // namespace

void moe_route(int32_t* idx, float* w, const float* scores, int64_t n, int64_t E, float jitter_eps,
               cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && E >= 2 && E <= k_max_experts,
                     "moe_route: n %lld, experts %lld (2..%d supported)", (long long)n, (long long)E,
                     k_max_experts);
    if (n == 0) return;
    moe_route_kernel<<<grid_for(n, 128), 128, 0, s>>>(idx, w, scores, n, int(E), jitter_eps);
    CUDA_CHECK_LAUNCH();
}

void moe_build_lists(int32_t* offsets, int32_t* rows, int32_t* inv, const int32_t* idx, int64_t n, int64_t E,
                     cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && E >= 2 && E <= k_max_experts, "moe_build_lists: n %lld, experts %lld",
                     (long long)n, (long long)E);
    moe_build_lists_kernel<<<1, 1024, 0, s>>>(offsets, rows, inv, idx, n, int(E));
    CUDA_CHECK_LAUNCH();
}

void moe_combine(float* out, const float* y, const int32_t* inv, const int32_t* idx, const float* w,
                 int64_t n, int64_t d, cudaStream_t s) {
    PHI_CUDA_REQUIRE(n >= 0 && d > 0, "moe_combine: bad shape [%lld, %lld]", (long long)n, (long long)d);
    if (n == 0) return;
    moe_combine_kernel<<<unsigned(n), 256, 0, s>>>(out, y, inv, idx, w, d);
    CUDA_CHECK_LAUNCH();
}

}  // namespace phi::kernels::cuda
