// `backend: cuda` in phi-worker: one rank's GPU and its model (the one forward over the CUDA
// backend, worker/cuda/cuda_model.h). No CUDA type appears here, so phi-worker builds the same
// with or without nvcc: a build without the CUDA backend (gpu_rank_absent.cpp) refuses
// `backend: cuda` at start-up with the reason.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "cluster/mpi_communicator.h"
#include "coordinator/app/gpu_placement.h"
#include "worker/phi_model.h"

namespace phi::app {

/// Whether this build has the CUDA backend and NCCL.
bool cuda_backend_built();

/// This rank's GPU, decided before any collective from the node-local rank (MPI shared-memory
/// split) and the visible GPUs: every rank fails at once, each for itself, when the build has no
/// CUDA backend, the driver reports no GPU (its reason is in the message), or the node has more
/// ranks than GPUs without `allow_shared`.
GpuPlacement choose_gpu(const MpiCommunicator& comm, bool allow_shared);

/// Free bytes of `device` now (for kv_cache.gpu_memory_fraction).
int64_t gpu_free_bytes(int device);

struct GpuModelOptions {
    int64_t kv_blocks = 0;
    int64_t block_size = 16;
    int64_t max_tokens = 512;  // per step: the engine's max_batched_tokens
    int64_t max_seqs = 32;     // per step: the engine's max_num_seqs
    int64_t max_context = 4096;
};

/// A rank's model on its GPU, with the NCCL clique it all-reduces through (none when the
/// cluster's ranks share GPUs: host-staged all-reduce then).
class GpuRank {
public:
    virtual ~GpuRank() = default;
    virtual PhiModel& model() = 0;
    /// "GPU 0 (NVIDIA H100 ..., sm_90 ...), all-reduce NCCL" for the start-up log.
    virtual std::string describe() const = 0;
};

/// Collective over `comm`: agrees whether any rank shares its GPU (then every rank stages its
/// all-reduce through MPI; NCCL refuses two ranks on one device), bootstraps NCCL otherwise (rank 0's
/// unique id broadcast over MPI), reads this rank's shard of `model_dir` and uploads it.
std::unique_ptr<GpuRank> start_gpu_rank(MpiCommunicator& comm, const std::filesystem::path& model_dir,
                                        const GpuPlacement& placement, const GpuModelOptions& opts);

}  // namespace phi::app
