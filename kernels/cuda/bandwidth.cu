// Streaming-read bandwidth: every byte read once with 16-byte loads, folded into a register that
// is stored only if it equals a sentinel (so nothing is written, and nothing can be skipped).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {
using namespace detail;

namespace {

__global__ void stream_read_kernel(const uint4* __restrict__ data, size_t n, uint32_t* sink) {
    uint32_t acc = 0;
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
         i += size_t(gridDim.x) * blockDim.x) {
        const uint4 v = __ldcs(data + i);  // streaming: do not keep in L2
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) sink[0] = acc;
}

}  // namespace

void stream_read(const void* data, size_t bytes, uint32_t* sink, cudaStream_t s) {
    PHI_CUDA_REQUIRE(bytes % 16 == 0, "stream_read: %zu bytes is not a multiple of 16", bytes);
    if (bytes == 0) return;
    int device = 0, sms = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    stream_read_kernel<<<unsigned(sms * 8), 512, 0, s>>>(static_cast<const uint4*>(data), bytes / 16, sink);
    CUDA_CHECK_LAUNCH();
}

}  // namespace phi::kernels::cuda
