// Run-time choice of the CPU kernel level: CPUID, overridable with
// PHI_CPU_ISA=scalar|avx2|avx512 (so tests and benchmarks can force each fallback).
#include "kernels/cpu/isa.h"

#include <cpuid.h>

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

namespace {

// XCR0: which register states the OS saves on a context switch.
uint64_t xgetbv0() {
    uint32_t lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t(hi) << 32) | lo;
}

}  // namespace

// CPUID read directly: GCC's __builtin_cpu_supports knows these names, but clang 14 rejects "f16c"
// ("invalid cpu feature string"), and the sanitizer and fuzz builds use clang.
namespace {

uint64_t detect_cpu_features() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    // AVX needs the XMM and YMM states saved (XCR0 bits 1, 2); AVX-512 also opmask, ZMM_Hi256 and
    // Hi16_ZMM (bits 5-7). FMA, F16C and AVX-VNNI are VEX-encoded, so they need the AVX state too.
    const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    const bool os_avx = avx && (xcr0 & 0x6) == 0x6;
    const bool os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;
    uint64_t f = 0;
    auto add = [&](bool has, uint64_t bit) { f |= has ? bit : 0; };
    add(os_avx && (c & (1u << 12)), k_feature_fma);
    add(os_avx && (c & (1u << 29)), k_feature_f16c);
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        const unsigned max_subleaf = a;
        add(os_avx && (b & (1u << 5)), k_feature_avx2);
        add(os_avx512 && (b & (1u << 16)), k_feature_avx512f);
        add(os_avx512 && (b & (1u << 17)), k_feature_avx512dq);
        add(os_avx512 && (b & (1u << 30)), k_feature_avx512bw);
        add(os_avx512 && (b & (1u << 31)), k_feature_avx512vl);
        add(os_avx512 && (c & (1u << 11)), k_feature_avx512vnni);
        if (max_subleaf >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) {
            add(os_avx && (a & (1u << 4)), k_feature_avxvnni);
            add(os_avx512 && (a & (1u << 5)), k_feature_avx512bf16);
        }
    }
    return f;
}

}  // namespace

uint64_t cpu_features() {
    // CPUID traps to the hypervisor in a VM (about 10 us each here); kernels ask per call (VNNI,
    // the int8 layout), so the answer is read once. The CPU does not change under a process.
    static const uint64_t features = detect_cpu_features();
    return features;
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
