// `phi-worker --print-plan N`: what each of N ranks would hold (tensor, shape, bytes), the KV bytes
// per token per rank and the totals, computed from the checkpoint header alone.
#pragma once

#include <filesystem>
#include <string>

namespace phi {

std::string print_plan_report(const std::filesystem::path& model_dir, int world);

}  // namespace phi
