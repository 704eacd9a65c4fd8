// Run-time choice of the CPU kernel level: CPUID via __builtin_cpu_supports, overridable with
// PHI_CPU_ISA=scalar|avx2|avx512 (so tests and benchmarks can force each fallback).
#include "kernels/cpu/isa.h"

#include "common/env.h"
#include "common/error.h"

namespace phi::kernels::cpu {

std::string_view isa_name(Isa isa) {
    switch (isa) {
        case Isa::Scalar:
            return "scalar";
        case Isa::Avx2:
            return "avx2";
        case Isa::Avx512:
            return "avx512";
    }
    return "?";
}

std::vector<Isa> supported_isas() {
    std::vector<Isa> out{Isa::Scalar};
    __builtin_cpu_init();
    const bool avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2) out.push_back(Isa::Avx2);
    // The AVX-512 files are also compiled with AVX2/FMA/F16C, so they need both sets.
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (avx512) out.push_back(Isa::Avx512);
    return out;
}

Isa choose_isa() {
    const std::vector<Isa> have = supported_isas();
    const std::optional<std::string> want = env_string("PHI_CPU_ISA");
    if (!want) return have.back();
    Isa isa = Isa::Scalar;
    if (*want == "scalar") {
        isa = Isa::Scalar;
    } else if (*want == "avx2") {
        isa = Isa::Avx2;
    } else if (*want == "avx512") {
        isa = Isa::Avx512;
    } else {
        PHI_FAIL("PHI_CPU_ISA='{}' is not a CPU kernel level; use scalar, avx2 or avx512 (or unset it)",
                 *want);
    }
    bool ok = false;
    for (Isa h : have) ok = ok || h == isa;
    PHI_CHECK(ok,
              "PHI_CPU_ISA={} but this CPU lacks the instructions it needs (best available: {}); "
              "pick a lower level or unset PHI_CPU_ISA",
              *want, isa_name(have.back()));
    return isa;
}

}  // namespace phi::kernels::cpu
