// One rank's slice of a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors),
// cut like the base weights (sharding/shard_plan.h LinearShards):
//  - column-parallel base (q/k/v, qkv_proj, fc1, gate_up_proj): A replicated, B's rows split like
//    the base weight's (fused ones cut into the same Q/K/V or gate/up sections first);
//  - row-parallel base (dense/o_proj, fc2/down_proj): A's input columns split like the base, B
//    replicated, so (x_i A_i^T) B^T is a partial sum that the layer's existing all-reduce adds up.
// The adapted modules of one layer are grouped by the base linear they add to (the forward holds
// q/k/v as one fused [Q | K | V] weight): A's of the group are stacked, B's placed block-diagonally
// with each module's PEFT scale folded in, so one shrink and one expand GEMM serve the group.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "sharding/lora_config.h"
#include "sharding/model_config.h"
#include "sharding/shard_plan.h"
#include "sharding/tensor_slice.h"

namespace phi {

struct LoraLoadOptions {
    /// Largest rank of any module (`max_lora_rank`); a larger one is refused.
    int64_t max_lora_rank = 64;
};

/// The adapter's part of one base linear on this rank; empty when no module of the group is adapted.
struct LoraPair {
    OwnedTensor a;  // [r_sum, in_local] fp32: the group's A's stacked (r_sum = sum of their ranks)
    OwnedTensor b;  // [out_local, r_sum] fp32: scale * B of each module, block-diagonal
    bool empty() const { return a.empty(); }
    int64_t rank() const { return a.rows(); }
};

struct LoraLayerWeights {
    LoraPair qkv;   // adds to the fused [Q | K | V] output
    LoraPair out;   // dense / o_proj (row-parallel: partial sums)
    LoraPair up;    // fc1 / gate_up_proj (before the activation)
    LoraPair down;  // fc2 / down_proj (row-parallel: partial sums)
};

struct LoraAdapterWeights {
    std::string name;  // the folder's name
    LoraConfig config;
    std::vector<LoraLayerWeights> layers;  // [n_layers]
    int64_t max_rank = 0;                  // the largest r_sum of any pair (shrink scratch width)
    size_t bytes_read = 0;                 // adapter bytes this rank copied out of the file
};

/// Loads rank plan.rank's slice of the adapter in `dir` for the base model `cfg`. Every refusal names
/// the field, the tensor or the file (PEFT options that change the math, `.bin` weights, unknown or
/// unsupported target modules, a rank above the limit, shapes that do not match the base, a missing
/// tensor, a base model of another architecture).
LoraAdapterWeights load_lora_adapter(const std::filesystem::path& dir, const ModelConfig& cfg, const ShardPlan& plan,
                                     const LoraLoadOptions& opts = {});

}  // namespace phi
