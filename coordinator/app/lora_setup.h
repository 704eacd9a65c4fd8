// Loading LoRA adapters at start-up on every rank (phi-worker --adapter, YAML lora.adapters).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "cluster/communicator.h"
#include "worker/phi_model.h"

namespace phi::app {

/// Loads each adapter (name, PEFT folder) into `model` under ids 1, 2, ... in order: every rank reads
/// its slices, then all ranks agree in one all-gather per adapter before any step can name it, so a
/// rank that cannot load one stops start-up on every rank (with its reason on that rank, and which
/// rank failed on the others) instead of failing inside a step.
void load_adapters(PhiModel& model, Communicator& comm,
                   const std::vector<std::pair<std::string, std::filesystem::path>>& adapters, int64_t max_lora_rank);

}  // namespace phi::app
