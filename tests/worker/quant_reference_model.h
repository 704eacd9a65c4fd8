// The exactness anchor's references for int8/int4 models (docs/QUANT.md).
//  - Weight-only mode: the fp32 forward run on the DEQUANTIZED weights (each linear weight quantized
//    as a whole, unsharded tensor, then dequantized to fp32; an untied LM head likewise from its int8
//    blocks), with the embedding in bf16 as the quantized model holds it. The fp32 forward is pinned to HF transformers by the golden
//    tests, so this is "HF on the dequantized weights" within the golden tolerance.
//  - Int8-activation mode: the same forward, with every quantized linear computed by the scalar
//    reference of that mode (quant_reference.cpp) on the whole tensor's blocks: the same input
//    rounding AND the same documented arithmetic. (An fp32 product of the rounded inputs differs by
//    an ulp, and the next linear's rounding of a value that close to a tie then flips by one step:
//    measured 0.09 on a logit; see docs/QUANT.md.)
#pragma once

#include <filesystem>
#include <memory>

#include "cluster/communicator.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant.h"
#include "worker/phi_model.h"

namespace phi::test {

/// A TP-1 model on `comm` (one rank) computing the reference described above at ISA level `isa`.
std::unique_ptr<PhiModel> dequantized_reference_model(const std::filesystem::path& model_dir, Communicator& comm,
                                                      kernels::cpu::QuantFormat format,
                                                      kernels::cpu::QuantActivations acts, kernels::cpu::Isa isa,
                                                      const KvCacheConfig& kv);

}  // namespace phi::test
