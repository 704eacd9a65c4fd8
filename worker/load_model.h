// Building this rank's model from an HF model folder: config.json -> ModelConfig, ShardPlan for
// the communicator's rank and size, then only this rank's slices of the checkpoint, handed to a
// backend.
#pragma once

#include <filesystem>
#include <optional>
#include <memory>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant.h"
#include "worker/phi_model.h"

namespace phi {

/// A CPU model: kernels at `isa`, linear weights in `weight_dtype` (F32 or BF16), or quantized to
/// `quant` (int8/int4, docs/QUANT.md) with the embedding and LM head in `weight_dtype`.
struct ModelOptions {
    kernels::cpu::Isa isa = kernels::cpu::Isa::Scalar;
    DType weight_dtype = DType::F32;
    std::optional<kernels::cpu::QuantFormat> quant;
    /// How quantized linears treat their inputs: F32 (weight-only, the default) or Int8 (opt-in).
    kernels::cpu::QuantActivations quant_activations = kernels::cpu::QuantActivations::F32;
    KvCacheConfig kv;
    /// > 0: only the checkpoint's first `layers` decoder layers, then its final norm and LM head
    /// (an early-exit model: a draft for speculative decoding cut from the served checkpoint).
    int64_t layers = 0;
    /// Where to write named intermediates for diffing against HF; unset: $PHI_DEBUG_DUMP, if set.
    std::optional<std::filesystem::path> debug_dump_dir;
};

std::unique_ptr<PhiModel> load_model(const std::filesystem::path& model_dir, Communicator& comm,
                                     const ModelOptions& opts);

}  // namespace phi
