// Run-time choice of the CPU kernel level: CPUID via __builtin_cpu_supports, overridable with
// PHI_CPU_ISA=scalar|avx2|avx512 (so tests and benchmarks can force each fallback).
#include "kernels/cpu/isa.h"

#include <utility>

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

uint64_t cpu_features() {
    __builtin_cpu_init();
    uint64_t f = 0;
    auto add = [&](bool has, uint64_t bit) { f |= has ? bit : 0; };
    add(__builtin_cpu_supports("avx2"), k_feature_avx2);
    add(__builtin_cpu_supports("fma"), k_feature_fma);
    add(__builtin_cpu_supports("f16c"), k_feature_f16c);
    add(__builtin_cpu_supports("avx512f"), k_feature_avx512f);
    add(__builtin_cpu_supports("avx512bw"), k_feature_avx512bw);
    add(__builtin_cpu_supports("avx512vl"), k_feature_avx512vl);
    add(__builtin_cpu_supports("avx512dq"), k_feature_avx512dq);
    add(__builtin_cpu_supports("avx512vnni"), k_feature_avx512vnni);
    add(__builtin_cpu_supports("avx512bf16"), k_feature_avx512bf16);
    add(__builtin_cpu_supports("avxvnni"), k_feature_avxvnni);
    return f;
}

uint64_t isa_features(Isa isa) {
    const uint64_t avx2 = k_feature_avx2 | k_feature_fma | k_feature_f16c;
    switch (isa) {
        case Isa::Scalar:
            return 0;
        case Isa::Avx2:
            return avx2;
        case Isa::Avx512:
            // The AVX-512 files are also compiled with AVX2/FMA/F16C, so they need both sets.
            return avx2 | k_feature_avx512f | k_feature_avx512bw | k_feature_avx512vl | k_feature_avx512dq;
    }
    return 0;
}

Isa best_isa(uint64_t features) {
    Isa best = Isa::Scalar;
    for (Isa isa : {Isa::Avx2, Isa::Avx512})
        if ((isa_features(isa) & features) == isa_features(isa)) best = isa;
    return best;
}

std::string feature_names(uint64_t features) {
    static constexpr std::pair<uint64_t, const char*> k_names[] = {
        {k_feature_avx2, "avx2"},         {k_feature_fma, "fma"},
        {k_feature_f16c, "f16c"},         {k_feature_avx512f, "avx512f"},
        {k_feature_avx512bw, "avx512bw"}, {k_feature_avx512vl, "avx512vl"},
        {k_feature_avx512dq, "avx512dq"}, {k_feature_avx512vnni, "avx512vnni"},
        {k_feature_avx512bf16, "avx512bf16"}, {k_feature_avxvnni, "avxvnni"},
    };
    std::string out;
    for (const auto& [bit, name] : k_names)
        if (features & bit) out += out.empty() ? name : std::string(" ") + name;
    return out.empty() ? "none" : out;
}

std::vector<Isa> supported_isas() {
    std::vector<Isa> out{Isa::Scalar};
    const Isa best = best_isa(cpu_features());
    for (Isa isa : {Isa::Avx2, Isa::Avx512})
        if (int(isa) <= int(best)) out.push_back(isa);
    return out;
}

std::optional<Isa> forced_isa() {
    const std::optional<std::string> want = env_string("PHI_CPU_ISA");
    if (!want) return std::nullopt;
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
        if (*want == isa_name(isa)) return isa;
    PHI_FAIL("PHI_CPU_ISA='{}' is not a CPU kernel level; use scalar, avx2 or avx512 (or unset it)", *want);
}

Isa choose_isa() {
    const std::vector<Isa> have = supported_isas();
    const std::optional<Isa> want = forced_isa();
    if (!want) return have.back();
    PHI_CHECK(int(*want) <= int(have.back()),
              "PHI_CPU_ISA={} but this CPU lacks the instructions it needs (best available: {}); "
              "pick a lower level or unset PHI_CPU_ISA",
              isa_name(*want), isa_name(have.back()));
    return *want;
}

}  // namespace phi::kernels::cpu
