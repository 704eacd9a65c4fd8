// Instruction-set levels of the CPU kernels and their run-time choice (CPUID, overridable with
// PHI_CPU_ISA=scalar|avx2|avx512 so the fallbacks can be forced and tested).
#pragma once

#include <string_view>
#include <vector>

namespace phi::kernels::cpu {

enum class Isa { Scalar, Avx2, Avx512 };

std::string_view isa_name(Isa isa);

/// Every level this CPU can run, lowest first (Scalar is always there).
std::vector<Isa> supported_isas();

/// The best supported level, or the one PHI_CPU_ISA names (an error if the CPU lacks it).
Isa choose_isa();

}  // namespace phi::kernels::cpu
