// Device helpers shared by the .cu files: warp/block reductions and typed stores.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "common/dtype.h"

namespace phi::kernels::cuda::detail {

constexpr int k_warp = 32;

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
/// `red` is __shared__ float[32]. Fixed order for a given blockDim: deterministic.
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp, warps = blockDim.x / k_warp;
    v = warp_sum(v);
    __syncthreads();  // red may still be read by a previous reduction
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < warps ? red[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* red) {
    const int lane = threadIdx.x % k_warp, warp = threadIdx.x / k_warp, warps = blockDim.x / k_warp;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < warps ? red[lane] : -INFINITY;
    return warp_max(v);
}

template <class T>
__device__ __forceinline__ void store(T* p, float v);
template <>
__device__ __forceinline__ void store<float>(float* p, float v) {
    *p = v;
}
template <>
__device__ __forceinline__ void store<__nv_bfloat16>(__nv_bfloat16* p, float v) {
    *p = __float2bfloat16_rn(v);
}

inline unsigned grid_for(int64_t count, int threads, int64_t max_blocks = 65536) {
    int64_t b = (count + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > max_blocks) b = max_blocks;
    return unsigned(b);
}

}  // namespace phi::kernels::cuda::detail

/// Calls f.template operator()<T>() with T = float or __nv_bfloat16 for an F32 or BF16 dtype.
#define PHI_CUDA_DISPATCH_OUT(dtype, what, ...)                                    \
    do {                                                                           \
        if ((dtype) == ::phi::DType::F32) {                                        \
            using OutT = float;                                                    \
            __VA_ARGS__;                                                           \
        } else if ((dtype) == ::phi::DType::BF16) {                                \
            using OutT = __nv_bfloat16;                                            \
            __VA_ARGS__;                                                           \
        } else {                                                                   \
            PHI_CUDA_REQUIRE(false, "%s: output dtype must be F32 or BF16", what); \
        }                                                                          \
    } while (0)
