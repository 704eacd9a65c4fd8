// The CUDA backend: the Backend operations on one GPU through the kernels of this folder. Weights
// and the KV cache are bf16 on the device; activations are fp32 buffers, rounded to bf16 where a
// GEMM reads them (fp32 accumulation everywhere). Decode steps of a batch size seen before are
// recorded once as a CUDA graph and replayed (begin_step returns true) when the caller's
// collectives are recordable and the backend was created with graphs on.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "kernels/backend.h"

namespace phi::kernels::cuda {

struct CudaBackendOptions {
    int device = 0;
    int64_t max_tokens = 2048;          // per step (step metadata is sized once)
    int64_t max_seqs = 64;              // per step
    int64_t max_blocks_per_seq = 256;
    bool use_graphs = true;             // off for models whose steps read the host (MoE dispatch)
};

class CudaBackend : public Backend {
public:
    /// The stream every operation runs on (device collectives join it).
    virtual cudaStream_t stream() const = 0;
    /// Decode steps served by a recorded graph, and graphs recorded.
    virtual int64_t graph_replays() const = 0;
    virtual int64_t graphs_recorded() const = 0;
};

/// Fails with the driver's reason when the device is not there.
std::unique_ptr<CudaBackend> make_cuda_backend(const CudaBackendOptions& opts);

}  // namespace phi::kernels::cuda
