// Instruction-set levels of the CPU kernels and their run-time choice (CPUID, overridable with
// PHI_CPU_ISA=scalar|avx2|avx512 so the fallbacks can be forced and tested). Ranks of one cluster
// agree on one level through the feature bits below (coordinator/app/launch_checks).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace phi::kernels::cpu {

enum class Isa { Scalar, Avx2, Avx512 };

std::string_view isa_name(Isa isa);

/// CPU features the kernels dispatch on, one bit each. A level needs a set of them
/// (isa_features); the others (VNNI, BF16) are sub-features a kernel may use only when every rank
/// has them. New bits go at the end: ranks exchange these numbers.
enum CpuFeature : uint64_t {
    k_feature_avx2 = 1u << 0,
    k_feature_fma = 1u << 1,
    k_feature_f16c = 1u << 2,
    k_feature_avx512f = 1u << 3,
    k_feature_avx512bw = 1u << 4,
    k_feature_avx512vl = 1u << 5,
    k_feature_avx512dq = 1u << 6,
    k_feature_avx512vnni = 1u << 7,
    k_feature_avx512bf16 = 1u << 8,
    k_feature_avxvnni = 1u << 9,
};

/// The features of this CPU (CPUID).
uint64_t cpu_features();

/// The features a level's kernels need.
uint64_t isa_features(Isa isa);

/// The highest level whose needs are all in `features`.
Isa best_isa(uint64_t features);

/// "avx2 fma f16c ..." for logs.
std::string feature_names(uint64_t features);

/// Every level this CPU can run, lowest first (Scalar is always there).
std::vector<Isa> supported_isas();

/// The level PHI_CPU_ISA names, nullopt when unset; an unknown name is an error.
std::optional<Isa> forced_isa();

/// The best supported level, or the one PHI_CPU_ISA names (an error if the CPU lacks it).
Isa choose_isa();

}  // namespace phi::kernels::cpu
