// Building this rank's PhiModel from an HF model folder: config.json -> ModelConfig, ShardPlan for
// the communicator's rank and size, then only this rank's slices of the checkpoint.
#pragma once

#include <filesystem>
#include <memory>

#include "worker/phi_model.h"

namespace phi {

std::unique_ptr<PhiModel> load_model(const std::filesystem::path& model_dir, Communicator& comm,
                                     const ModelOptions& opts);

}  // namespace phi
