#include "coordinator/app/gpu_rank.h"

#include <cuda_runtime_api.h>

#include <fmt/format.h>

#include "cluster/nccl_communicator.h"
#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "sharding/safetensors.h"
#include "worker/cuda/cuda_model.h"

namespace phi::app {
namespace {

class GpuRankImpl final : public GpuRank {
public:
    PhiModel& model() override { return *model_; }
    std::string describe() const override { return describe_; }

    std::unique_ptr<NcclCommunicator> nccl_;  // outlives the model (declared first)
    std::unique_ptr<PhiModel> model_;
    std::string describe_;
};

}  // namespace

bool cuda_backend_built() { return true; }

GpuPlacement choose_gpu(const MpiCommunicator& comm, bool allow_shared) {
    const int visible = kernels::cuda::cuda_device_count();
    const std::string reason = visible == 0 ? kernels::cuda::cuda_unavailable_reason() : std::string();
    return place_on_gpu(comm.local_rank(), comm.local_size(), visible, allow_shared, reason,
                        env_string("CUDA_VISIBLE_DEVICES").value_or(""));
}

int64_t gpu_free_bytes(int device) {
    CUDA_CHECK(cudaSetDevice(device));
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return int64_t(free_b);
}

std::unique_ptr<GpuRank> start_gpu_rank(MpiCommunicator& comm, const std::filesystem::path& model_dir,
                                        const GpuPlacement& placement, const GpuModelOptions& opts) {
    auto r = std::make_unique<GpuRankImpl>();
    // One rank sharing its GPU makes the whole cluster stage its all-reduce through MPI.
    std::vector<uint64_t> per_gpu(size_t(comm.size()));
    const uint64_t mine = uint64_t(placement.ranks_per_gpu);
    comm.all_gather_u64(&mine, 1, per_gpu.data());
    bool shared = false;
    for (uint64_t n : per_gpu) shared = shared || n > 1;
    CUDA_CHECK(cudaSetDevice(placement.device));
    if (!shared && comm.size() > 1) {
        ncclUniqueId id{};
        if (comm.rank() == 0) id = NcclCommunicator::make_unique_id();
        comm.broadcast(&id, sizeof(id), 0);
        r->nccl_ = std::make_unique<NcclCommunicator>(id, comm.rank(), comm.size(), placement.device, comm.timeout());
    }

    const ModelConfig cfg = load_model_config(model_dir / "config.json");
    const ShardPlan plan = make_shard_plan(cfg, comm.size(), comm.rank());
    Checkpoint ckpt(model_dir);
    ModelWeights w = load_model_weights(ckpt, cfg, plan, DType::BF16);
    CudaModelOptions mo;
    mo.device = placement.device;
    mo.kv_blocks = opts.kv_blocks;
    mo.block_size = opts.block_size;
    mo.max_tokens = opts.max_tokens;
    mo.max_seqs = opts.max_seqs;
    mo.max_blocks_per_seq = (opts.max_context + opts.block_size - 1) / opts.block_size;
    r->model_ = make_cuda_model(cfg, plan, std::move(w), comm, r->nccl_.get(), mo);
    r->describe_ = fmt::format("GPU {} of {} visible ({}), all-reduce {}", placement.device, placement.visible,
                               kernels::cuda::cuda_device_description(placement.device),
                               comm.size() == 1 ? "none (1 rank)"
                               : shared         ? "staged through the host (ranks share a GPU)"
                                                : "NCCL");
    return r;
}

}  // namespace phi::app
