// The CPU backend: the Backend operations on host memory through the CPU kernels of this folder,
// at one ISA level. Weights in the checkpoint's format (F32, BF16) are read where they lie, so the
// model keeps one resident copy of each; Q8/Q4 weights are quantized at upload and owned here.
#pragma once

#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant.h"

namespace phi::kernels::cpu {

/// `quant_acts` says how linears with Q8/Q4 weights treat their inputs: F32 (weight-only, the
/// default) or Int8 (opt-in, docs/QUANT.md). Linears with F32/BF16 weights are not affected.
std::unique_ptr<Backend> make_cpu_backend(Isa isa, QuantActivations quant_acts = QuantActivations::F32);

}  // namespace phi::kernels::cpu
