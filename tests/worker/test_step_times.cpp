// Issue 13: the watchdog's allowance comes from measured step times (StepTimes), with a start-up
// calibration, not from an assumed FLOP rate; a heartbeat is a round trip.
#include <gtest/gtest.h>

#include "cluster/communicator.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/load_model.h"
#include "worker/step_executor.h"
#include "worker/step_times.h"

namespace phi {
namespace {

TEST(StepTimes, NearestLargerMeasuredSizeOrLinearBeyond) {
    StepTimes t;
    EXPECT_FALSE(t.expected(StepKind::Forward, 10));
    t.record(StepKind::Forward, 512, 2.0);
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 512), 2.0);
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 100), 2.0);   // fewer tokens never take longer
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 1024), 4.0);  // beyond: scaled by tokens
    EXPECT_FALSE(t.expected(StepKind::Heartbeat, 0));             // kinds are apart
    t.record(StepKind::Forward, 1, 0.01);
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 1), 0.01);
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 2), 2.0);
    t.record(StepKind::Forward, 48, 0.3);  // group (32, 64]: scaled to 64 tokens
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 40), 0.4);
}

TEST(StepTimes, ASlowStepIsRememberedThenDecays) {
    StepTimes t(0.5);
    t.record(StepKind::Forward, 1, 1.0);
    t.record(StepKind::Forward, 1, 0.01);
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 1), 0.5);
    for (int i = 0; i < 20; ++i) t.record(StepKind::Forward, 1, 0.01);
    EXPECT_DOUBLE_EQ(*t.expected(StepKind::Forward, 1), 0.01);
}

TEST(StepExecutor, AllowanceFollowsTheCalibrationNotAFlopRate) {
    LocalCommunicator comm;
    ModelOptions opts;
    opts.isa = kernels::cpu::choose_isa();
    opts.kv = KvCacheConfig{64, 8};
    auto model = load_model(test::fixture_dir("phi3_mini_4k_swa"), comm, opts);
    WatchdogOptions wd;
    wd.step_base = std::chrono::milliseconds(1);
    wd.step_factor = 3.0;
    wd.unmeasured = std::chrono::milliseconds(123456);
    StepExecutor exec(*model, comm, wd);
    StepPlan big;
    SeqPlan s;
    s.tokens.assign(256, 0);
    big.seqs.push_back(s);
    EXPECT_EQ(exec.allowance(big), wd.unmeasured);  // nothing measured yet
    StepPlan beat;
    beat.kind = StepKind::Heartbeat;
    EXPECT_EQ(exec.allowance(beat), wd.step_base);

    const auto t0 = std::chrono::steady_clock::now();
    exec.calibrate(256);
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto a = exec.allowance(big);
    EXPECT_GE(a, wd.step_base);
    EXPECT_LE(a.count(), int64_t(3.0 * took * 1000.0) + 2);
    // A decode step is bounded by the calibrated step too (more tokens never take less).
    StepPlan one;
    SeqPlan d;
    d.tokens = {1};
    one.seqs.push_back(d);
    EXPECT_LE(exec.allowance(one), a);
    // The floor holds for fast steps.
    wd.step_base = std::chrono::milliseconds(60000);
    StepExecutor floored(*model, comm, wd);
    floored.calibrate(256);
    EXPECT_EQ(floored.allowance(big), wd.step_base);
}

}  // namespace
}  // namespace phi
