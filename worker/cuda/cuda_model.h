// CudaModel: PhiModel's forward on one GPU, for this rank's shard. Same contract as
// PhiModel::forward (SeqStep batches, paged KV cache addressed by block tables, logits of the
// requested rows on rank 0, -inf on padded vocabulary ids); same TP collectives at the same
// places, on device buffers through a DeviceCommunicator: NCCL (one GPU per rank) or host staging
// through any Communicator (ranks as threads sharing one GPU: tests, and the GPU machine without
// MPI).
//
// Numerics: bf16 weights, bf16 KV cache and bf16 GEMM inputs (norm outputs, activations,
// attention output), fp32 accumulation everywhere, fp32 residual stream, fp32 attention scores
// and softmax. Results match the CPU model with bf16 weights within bf16 rounding of the
// activations, not bitwise.
//
// Decode steps (every sequence adds one token) can replay a CUDA graph captured per batch size
// (CudaModelOptions::use_graphs) when the all-reduce can be captured (NCCL, or one rank) and the
// model is dense (the MoE dispatch reads expert counts on the host).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <vector>

#include "cluster/communicator.h"
#include "cluster/nccl_communicator.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kernels.h"
#include "sharding/model_config.h"
#include "sharding/shard_plan.h"
#include "worker/model_weights.h"
#include "worker/phi_model.h"

namespace phi {

/// The all-reduce of ranks that share a GPU or have no NCCL: device -> host, the host
/// communicator's fixed-order all-reduce, host -> device (synchronises the stream; not capturable).
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
    int64_t max_tokens = 2048;  // per step: scratch is sized once, so graphs stay valid
    int64_t max_seqs = 64;      // per step
    int64_t max_blocks_per_seq = 256;
    bool use_graphs = true;  // decode steps replay captured graphs where possible
};

class CudaModel {
  public:
    /// Uploads `weights` (any dtype; linear weights and embeddings become bf16). `comm` carries the
    /// host-side collectives (logits gather); `dcomm` the device all-reduce (NCCL), or null for
    /// host staging through `comm`.
    CudaModel(const ModelConfig& cfg, const ShardPlan& plan, const ModelWeights& weights, Communicator& comm,
              DeviceCommunicator* dcomm, const CudaModelOptions& opts);
    ~CudaModel();
    CudaModel(const CudaModel&) = delete;
    CudaModel& operator=(const CudaModel&) = delete;

    /// PhiModel::forward's contract.
    int64_t forward(std::span<const SeqStep> seqs, std::vector<float>* logits);

    const ModelConfig& config() const { return cfg_; }
    const ShardPlan& plan() const { return plan_; }
    int64_t block_size() const { return opts_.block_size; }
    /// FNV-1a of the residual stream after the last forward (downloads it; for cross-rank checks).
    uint64_t activation_hash();
    /// Decode steps served by a graph (captured on a batch size's second decode step), and graphs.
    int64_t graph_replays() const { return graph_replays_; }
    int64_t graphs_captured() const { return int64_t(graphs_.size()); }

  private:
    struct Layer;
    struct Scratch;
    void upload_step(std::span<const SeqStep> seqs, int64_t T, int64_t R);
    /// Every kernel of one step on stream_ (captured into a graph for decode).
    void run_layers(int64_t T, int64_t R, int64_t S);
    void attention(const Layer& lw, int64_t layer, int64_t T, int64_t S, float* out);
    void dense_mlp(const Layer& lw, const kernels::cuda::bf16* h16, float* out, int64_t T);
    void norm(void* y, DType y_dtype, const float* x, const kernels::cuda::DeviceBuffer& w,
              const kernels::cuda::DeviceBuffer& b, int64_t rows);
    void all_reduce(float* data, int64_t count);

    ModelConfig cfg_;
    ShardPlan plan_;
    Communicator& comm_;
    std::unique_ptr<StagedDeviceCommunicator> staged_;
    DeviceCommunicator* dcomm_;
    CudaModelOptions opts_;
    bool capturable_ = false;

    std::unique_ptr<kernels::cuda::Stream> stream_;
    std::unique_ptr<kernels::cuda::CublasHandle> blas_;
    std::vector<Layer> layers_;
    kernels::cuda::DeviceBuffer embed_, lm_head_, lm_head_b_, final_norm_w_, final_norm_b_;
    kernels::cuda::DeviceBuffer inv_freq_, rope_scale_, q_to_kv_;  // [2, rotary/2], [2], [nq_local]
    std::vector<kernels::cuda::DeviceBuffer> k_cache_, v_cache_;
    kernels::cuda::CacheLayout layout_;
    std::unique_ptr<Scratch> s_;
    kernels::cuda::MoeWorkspace moe_ws_;

    std::set<int64_t> warmed_;                   // decode batch sizes run once eagerly
    std::map<int64_t, cudaGraphExec_t> graphs_;  // decode batch size -> graph
    int64_t graph_replays_ = 0;
    int64_t last_T_ = 0;
};

}  // namespace phi
