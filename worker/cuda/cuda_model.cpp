#include "worker/cuda/cuda_model.h"

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"

namespace phi {
namespace {

/// All-reduces of device buffers on the backend's stream.
class DeviceCollectives final : public TensorCollectives {
public:
    DeviceCollectives(Communicator& comm, DeviceCommunicator* dcomm, cudaStream_t stream)
        : comm_(comm), stream_(stream) {
        if (dcomm == nullptr) {
            staged_ = std::make_unique<StagedDeviceCommunicator>(comm);
            dcomm = staged_.get();
        }
        dcomm_ = dcomm;
    }
    void all_reduce_sum(const kernels::Tensor& t) override {
        if (comm_.size() == 1) return;
        dcomm_->all_reduce_sum_device(t.f32(), t.numel(), stream_);
    }
    // NCCL's all-reduce joins a CUDA graph; host staging synchronises the stream and cannot.
    bool recordable() const override { return comm_.size() == 1 || staged_ == nullptr; }

private:
    Communicator& comm_;
    cudaStream_t stream_;
    std::unique_ptr<StagedDeviceCommunicator> staged_;
    DeviceCommunicator* dcomm_ = nullptr;
};

}  // namespace

void StagedDeviceCommunicator::all_reduce_sum_device(float* data, int64_t count, cudaStream_t stream) {
    if (comm_.size() == 1) return;
    host_.resize(size_t(count));
    CUDA_CHECK(cudaMemcpyAsync(host_.data(), data, size_t(count) * 4, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    comm_.all_reduce_sum(host_.data(), count);
    CUDA_CHECK(cudaMemcpyAsync(data, host_.data(), size_t(count) * 4, cudaMemcpyHostToDevice, stream));
}

std::unique_ptr<PhiModel> make_cuda_model(const ModelConfig& cfg, const ShardPlan& plan, ModelWeights weights,
                                          Communicator& comm, DeviceCommunicator* dcomm,
                                          const CudaModelOptions& opts) {
    kernels::cuda::CudaBackendOptions bo;
    bo.device = opts.device;
    bo.max_tokens = opts.max_tokens;
    bo.max_seqs = opts.max_seqs;
    bo.max_blocks_per_seq = opts.max_blocks_per_seq;
    // The MoE dispatch reads expert counts on the host: its steps cannot be recorded.
    bo.use_graphs = opts.use_graphs && cfg.arch != Arch::PhiMoE;
    auto backend = kernels::cuda::make_cuda_backend(bo);
    auto collectives = std::make_unique<DeviceCollectives>(comm, dcomm, backend->stream());
    PhiModelOptions mo;
    mo.kv = KvCacheConfig{opts.kv_blocks, opts.block_size, DType::BF16};  // the device cache is bf16
    mo.weight_format = kernels::WeightFormat::BF16;
    mo.reserve_tokens = opts.max_tokens;
    return std::make_unique<PhiModel>(cfg, plan, std::move(weights), comm, std::move(backend),
                                      std::move(collectives), mo);
}

}  // namespace phi
