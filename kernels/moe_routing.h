// PhiMoE routing on the host: the reference every backend's MoE routing is checked against (the
// CPU backend runs it; the CUDA moe_route kernel computes the same choices on the device).
#pragma once

#include <cstdint>

namespace phi::kernels {

/// PhiMoE sparsemixer, eval path (HF modeling_phimoe.py): top-1 from the max, then top-2 from the
/// rest, each weight a softmax over the scores within a relative threshold of that max. The
/// weights are NOT renormalised. scores: [n_experts]; idx, weight: [2].
void sparsemixer_top2(const float* scores, int64_t n_experts, float jitter_eps, int32_t* idx, float* weight);

}  // namespace phi::kernels
