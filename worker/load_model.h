// Building this rank's model from an HF model folder: config.json -> ModelConfig, ShardPlan for
// the communicator's rank and size, then only this rank's slices of the checkpoint, handed to a
// backend.
#pragma once

#include <filesystem>
#include <optional>
#include <memory>

#include "kernels/cpu/isa.h"
#include "worker/phi_model.h"

namespace phi {

/// A CPU model: kernels at `isa`, linear weights in `weight_dtype` (F32 or BF16).
struct ModelOptions {
    kernels::cpu::Isa isa = kernels::cpu::Isa::Scalar;
    DType weight_dtype = DType::F32;
    KvCacheConfig kv;
    /// Where to write named intermediates for diffing against HF; unset: $PHI_DEBUG_DUMP, if set.
    std::optional<std::filesystem::path> debug_dump_dir;
};

std::unique_ptr<PhiModel> load_model(const std::filesystem::path& model_dir, Communicator& comm,
                                     const ModelOptions& opts);

}  // namespace phi
