// Start-up decisions of `backend: cuda`, as pure functions of what a rank can see (tested on any
// machine, GPU or not): which options the CUDA path refuses, which GPU a rank takes, whether ranks
// share a GPU (then the all-reduce is staged through the host instead of NCCL), and how many bytes
// of the device the KV cache gets. The CUDA calls that feed them live in gpu_rank.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/app/cluster_config.h"
#include "sharding/model_config.h"

namespace phi::app {

/// The options of `cfg` the CUDA backend does not implement, each as "key: value (why)"; empty
/// when the config can run on the GPU.
std::vector<std::string> cuda_unsupported_options(const ClusterConfig& cfg);

/// Throws naming every option of cuda_unsupported_options (`origin`: the config file or "offline").
void check_cuda_options(const ClusterConfig& cfg, const std::string& origin);

struct GpuPlacement {
    int device = 0;         // index among the visible GPUs (CUDA_VISIBLE_DEVICES applied by the runtime)
    int visible = 0;        // GPUs this rank sees
    int ranks_per_gpu = 1;  // ranks of this node on the same GPU (1 unless allow_shared_device)
    bool shared() const { return ranks_per_gpu > 1; }
};

/// Local rank `local_rank` of `local_size` ranks on a node with `visible` GPUs takes GPU
/// local_rank % visible. Throws when there is no GPU (naming `no_gpu_reason`, the driver's), and
/// when the node has more ranks than GPUs unless `allow_shared` (naming `cuda_visible_devices`,
/// the variable's value or empty when unset).
GpuPlacement place_on_gpu(int local_rank, int local_size, int visible, bool allow_shared,
                          const std::string& no_gpu_reason, const std::string& cuda_visible_devices);

/// Bytes of KV cache one rank gets from kv_cache.gpu_memory_fraction: fraction of its share of
/// the GPU's free memory (free / ranks_per_gpu) minus its weights and `reserve_bytes` (activations,
/// cuBLAS workspace). Throws when nothing is left, naming the numbers.
int64_t gpu_kv_bytes(double fraction, int64_t free_bytes, int ranks_per_gpu, int64_t weight_bytes,
                     int64_t reserve_bytes);

/// An upper bound of one rank's device memory besides weights and KV cache for steps of up to
/// `max_tokens` tokens: the forward's fp32 scratch at the unsplit model's widths, the logits rows,
/// and 512 MiB for the CUDA context, cuBLAS workspace and the graphs.
int64_t gpu_activation_reserve(const ModelConfig& mc, int64_t max_tokens);

}  // namespace phi::app
