// Pieces of the forward's math that the CPU model (phi_model.cpp) and the GPU model
// (cuda/cuda_model.cpp) must compute identically: RoPE frequency tables and PhiMoE routing.
#pragma once

#include <cstdint>
#include <vector>

#include "sharding/model_config.h"

namespace phi {

/// Inverse frequencies and cos/sin scales for short and long sequences (LongRoPE), or the plain
/// RoPE table in both slots. HF: inv_freq = 1 / (ext * base ** (arange(0, dim, 2) / dim)), fp32.
struct RopeTables {
    std::vector<float> inv_freq_short;  // [rotary_dim / 2]
    std::vector<float> inv_freq_long;   // [rotary_dim / 2]
    float scale_short = 1.0f;
    float scale_long = 1.0f;
};
RopeTables make_rope_tables(const ModelConfig& cfg);

/// PhiMoE sparsemixer, eval path (HF modeling_phimoe.py): top-1 from the max, then top-2 from the
/// rest, each weight a softmax over the scores within a relative threshold of that max. The
/// weights are NOT renormalised. scores: [n_experts]; idx, weight: [2].
void sparsemixer_top2(const float* scores, int64_t n_experts, float jitter_eps, int32_t* idx, float* weight);

}  // namespace phi
