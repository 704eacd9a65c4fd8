// Start-up agreement between ranks: one build, one kernel ISA level, threads from the affinity mask.
// The decisions are pure functions of the gathered data; the collectives themselves run in
// tests/cluster/launch_test.sh (mixed ISA under MPI, different builds).
#include <gtest/gtest.h>

#include "common/error.h"
#include "coordinator/app/launch_checks.h"

namespace phi::app {
namespace {

using kernels::cpu::Isa;
using kernels::cpu::isa_features;

TEST(LaunchChecks, ThreadsFollowTheAffinityMask) {
    // Plain `mpirun -np 1` binds the rank to one core: one thread, no warning.
    ThreadPlan p = plan_threads(0, 1, 1);
    EXPECT_EQ(p.threads, 1);
    EXPECT_TRUE(p.warning.empty());
    // Unbound ranks split the node's CPUs.
    p = plan_threads(0, 16, 4);
    EXPECT_EQ(p.threads, 4);
    EXPECT_TRUE(p.warning.empty());
    // Each rank bound to its own 8 cores.
    p = plan_threads(0, 8, 1);
    EXPECT_EQ(p.threads, 8);
    // More ranks than CPUs: one thread each, and a warning that they share cores.
    p = plan_threads(0, 2, 4);
    EXPECT_EQ(p.threads, 1);
    EXPECT_NE(p.warning.find("share cores"), std::string::npos) << p.warning;
    // An explicit count wins, with a warning when it oversubscribes the mask.
    p = plan_threads(4, 1, 1);
    EXPECT_EQ(p.threads, 4);
    EXPECT_NE(p.warning.find("4 thread(s) per rank x 1 rank(s) on the 1 CPU(s)"), std::string::npos) << p.warning;
    EXPECT_TRUE(plan_threads(2, 4, 2).warning.empty());
}

TEST(LaunchChecks, AffinityMaskHasThisProcessCpus) {
    int n = 0;
    for (uint64_t w : affinity_mask()) n += __builtin_popcountll(w);
    EXPECT_GE(n, 1);
}

TEST(LaunchChecks, IsaIsTheLowestCapAndFeaturesAreCommon) {
    const uint64_t avx2 = isa_features(Isa::Avx2);
    const uint64_t avx512 = isa_features(Isa::Avx512) | kernels::cpu::k_feature_avx512vnni;
    // Same CPUs, no override: their best level, nobody named as a limit.
    IsaAgreement a = agree_isa({{avx512, Isa::Avx512}, {avx512, Isa::Avx512}});
    EXPECT_EQ(a.isa, Isa::Avx512);
    EXPECT_EQ(a.features, avx512);
    EXPECT_EQ(a.summary.find("limited"), std::string::npos) << a.summary;
    // An older CPU on rank 2 sets the level and drops the sub-features it lacks.
    a = agree_isa({{avx512, Isa::Avx512}, {avx512, Isa::Avx512}, {avx2, Isa::Avx2}});
    EXPECT_EQ(a.isa, Isa::Avx2);
    EXPECT_EQ(a.features, avx2);
    EXPECT_NE(a.summary.find("kernel ISA avx2 on all 3 rank(s)"), std::string::npos) << a.summary;
    EXPECT_NE(a.summary.find("limited by rank 2 (its CPU)"), std::string::npos) << a.summary;
    // PHI_CPU_ISA on rank 1 caps everyone, though its CPU could do more.
    a = agree_isa({{avx512, Isa::Avx512}, {avx512, Isa::Scalar}});
    EXPECT_EQ(a.isa, Isa::Scalar);
    EXPECT_EQ(a.features, avx512);
    EXPECT_NE(a.summary.find("limited by rank 1 (PHI_CPU_ISA)"), std::string::npos) << a.summary;
}

TEST(LaunchChecks, DifferentBuildsAreRefused) {
    EXPECT_NO_THROW(check_same_build({7, 7, 7}));
    try {
        check_same_build({7, 7, 9});
        FAIL() << "accepted different builds";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("rank 2 runs a different phi-worker build"), std::string::npos)
            << e.what();
    }
    const uint64_t id = binary_build_id();
    EXPECT_NE(id, 0u);
    EXPECT_EQ(binary_build_id(), id);
}

}  // namespace
}  // namespace phi::app
