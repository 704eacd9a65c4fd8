// The CPU backend: the Backend operations on host memory through the CPU kernels of this folder,
// at one ISA level. Weights in the checkpoint's format (F32, BF16) are read where they lie, so the
// model keeps one resident copy of each.
#pragma once

#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"

namespace phi::kernels::cpu {

std::unique_ptr<Backend> make_cpu_backend(Isa isa);

}  // namespace phi::kernels::cpu
