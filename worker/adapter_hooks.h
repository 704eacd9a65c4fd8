// What every rank does when rank 0's LoadAdapter / UnloadAdapter plan arrives (runtime LoRA loading
// and lora.max_cpu_loras): one definition for the server and the test harnesses.
#pragma once

#include "worker/lora_weights.h"
#include "worker/phi_model.h"
#include "worker/step_executor.h"

namespace phi {

/// Sets exec's adapter hooks to load adapter `id` from a PEFT folder into `model` (with `opts`) and
/// to drop it (a no-op for an id it does not hold). `model` must outlive `exec`'s use of them.
void install_adapter_hooks(StepExecutor& exec, PhiModel& model, LoraLoadOptions opts = {});

}  // namespace phi
