// Level detection and the PHI_CPU_ISA override.
#include <gtest/gtest.h>

#include <cstdlib>

#include "common/error.h"
#include "kernels/cpu/isa.h"

namespace {

using namespace phi::kernels::cpu;

/// Sets PHI_CPU_ISA for a scope and restores the previous value.
class EnvIsa {
  public:
    explicit EnvIsa(const char* value) {
        if (const char* old = std::getenv("PHI_CPU_ISA")) saved_ = old, had_ = true;
        setenv("PHI_CPU_ISA", value, 1);
    }
    ~EnvIsa() {
        if (had_) {
            setenv("PHI_CPU_ISA", saved_.c_str(), 1);
        } else {
            unsetenv("PHI_CPU_ISA");
        }
    }

  private:
    std::string saved_;
    bool had_ = false;
};

TEST(Isa, SupportedStartsWithScalarInOrder) {
    const auto isas = supported_isas();
    ASSERT_FALSE(isas.empty());
    EXPECT_EQ(isas.front(), Isa::Scalar);
    for (size_t i = 1; i < isas.size(); ++i) EXPECT_LT(int(isas[i - 1]), int(isas[i]));
}

TEST(Isa, EnvOverride) {
    const auto isas = supported_isas();
    {
        EnvIsa env("");
        EXPECT_EQ(choose_isa(), isas.back());
    }
    for (Isa isa : isas) {
        EnvIsa env(std::string(isa_name(isa)).c_str());
        EXPECT_EQ(choose_isa(), isa);
    }
    {
        EnvIsa env("sse9");
        EXPECT_THROW(choose_isa(), phi::Error);
    }
    if (isas.back() != Isa::Avx512) {
        EnvIsa env("avx512");
        EXPECT_THROW(choose_isa(), phi::Error);
    }
}

// Our CPUID reading agrees with GCC's __builtin_cpu_supports (which clang 14 cannot compile for
// "f16c": the reason the detection reads CPUID itself).
#if defined(__GNUC__) && !defined(__clang__)
TEST(Isa, CpuFeaturesAgreeWithTheCompiler) {
    __builtin_cpu_init();
    const uint64_t f = cpu_features();
    auto has = [&](uint64_t bit) { return (f & bit) != 0; };
    EXPECT_EQ(has(k_feature_avx2), bool(__builtin_cpu_supports("avx2")));
    EXPECT_EQ(has(k_feature_fma), bool(__builtin_cpu_supports("fma")));
    EXPECT_EQ(has(k_feature_f16c), bool(__builtin_cpu_supports("f16c")));
    EXPECT_EQ(has(k_feature_avx512f), bool(__builtin_cpu_supports("avx512f")));
    EXPECT_EQ(has(k_feature_avx512bw), bool(__builtin_cpu_supports("avx512bw")));
    EXPECT_EQ(has(k_feature_avx512vl), bool(__builtin_cpu_supports("avx512vl")));
    EXPECT_EQ(has(k_feature_avx512dq), bool(__builtin_cpu_supports("avx512dq")));
    EXPECT_EQ(has(k_feature_avx512vnni), bool(__builtin_cpu_supports("avx512vnni")));
    EXPECT_EQ(has(k_feature_avx512bf16), bool(__builtin_cpu_supports("avx512bf16")));
    EXPECT_EQ(has(k_feature_avxvnni), bool(__builtin_cpu_supports("avxvnni")));
}
#endif

TEST(Isa, Names) {
    EXPECT_EQ(isa_name(Isa::Scalar), "scalar");
    EXPECT_EQ(isa_name(Isa::Avx2), "avx2");
    EXPECT_EQ(isa_name(Isa::Avx512), "avx512");
}

}  // namespace

TEST(Isa, LevelFromFeatureBits) {
    EXPECT_EQ(best_isa(0), Isa::Scalar);
    EXPECT_EQ(best_isa(isa_features(Isa::Avx2)), Isa::Avx2);
    EXPECT_EQ(best_isa(isa_features(Isa::Avx2) & ~uint64_t(k_feature_fma)), Isa::Scalar);
    EXPECT_EQ(best_isa(isa_features(Isa::Avx512)), Isa::Avx512);
    EXPECT_EQ(best_isa(isa_features(Isa::Avx512) | k_feature_avx512vnni), Isa::Avx512);
    // AVX-512 without DQ runs the AVX2 kernels.
    EXPECT_EQ(best_isa(isa_features(Isa::Avx512) & ~uint64_t(k_feature_avx512dq)), Isa::Avx2);
    EXPECT_EQ(best_isa(cpu_features()), supported_isas().back());
    EXPECT_EQ(feature_names(k_feature_avx2 | k_feature_avx512bf16), "avx2 avx512bf16");
    EXPECT_EQ(feature_names(0), "none");
}
