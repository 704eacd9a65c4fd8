// A rank's model on one GPU: the one forward (PhiModel) over the CUDA backend, with the all-reduces
// on device buffers through NCCL (one GPU per rank) or host staging through any Communicator
// (ranks as threads sharing one GPU: tests, and the GPU machine without MPI).
//
// Numerics: bf16 weights, bf16 KV cache and bf16 GEMM inputs, fp32 accumulation everywhere, fp32
// residual stream, fp32 attention scores and softmax: within bf16 rounding of the CPU model with
// bf16 weights, not bitwise.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "cluster/communicator.h"
#include "cluster/nccl_communicator.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/phi_model.h"

namespace phi {

/// The all-reduce of ranks that share a GPU or have no NCCL: device -> host, the host
/// communicator's fixed-order all-reduce, host -> device (synchronises the stream; not recordable).
class StagedDeviceCommunicator final : public DeviceCommunicator {
public:
    explicit StagedDeviceCommunicator(Communicator& comm) : comm_(comm) {}
    void all_reduce_sum_device(float* data, int64_t count, cudaStream_t stream) override;

private:
    Communicator& comm_;
    std::vector<float> host_;
};

struct CudaModelOptions {
    int device = 0;
    int64_t kv_blocks = 256;
    int64_t block_size = 16;
    int64_t max_tokens = 2048;  // per step: scratch is sized once, so recorded steps stay valid
    int64_t max_seqs = 64;      // per step
    int64_t max_blocks_per_seq = 256;
    bool use_graphs = true;  // decode steps replay recorded graphs where possible
};

/// Uploads `weights` (any dtype; linear weights and embeddings become bf16) and frees the host
/// copy. `comm` carries the host-side collectives (logits gather); `dcomm` the device all-reduce
/// (NCCL), or null for host staging through `comm`.
std::unique_ptr<PhiModel> make_cuda_model(const ModelConfig& cfg, const ShardPlan& plan, ModelWeights weights,
                                          Communicator& comm, DeviceCommunicator* dcomm,
                                          const CudaModelOptions& opts);

}  // namespace phi
