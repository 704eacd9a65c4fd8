// StepTimes: how long steps of each kind and size took recently, for the watchdog's allowance
// (StepExecutor). Sizes are grouped by powers of two of the step's tokens; each group keeps a slowly
// decaying maximum of its steps' times, scaled up to the group's largest size.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>

#include "cluster/step_plan.h"

namespace phi {

class StepTimes {
public:
    /// Each new time t of a group sets it to max(t, decay x its previous value).
    explicit StepTimes(double decay = 0.98) : decay_(decay) {}

    void record(StepKind kind, int64_t tokens, double seconds);
    /// Expected seconds of a step of `kind` with `tokens` tokens: the recent time of the smallest
    /// measured group at least as large (more tokens never take less); beyond the largest measured
    /// group, its time scaled linearly by tokens. Nullopt when nothing of this kind was measured.
    std::optional<double> expected(StepKind kind, int64_t tokens) const;

private:
    static constexpr int k_groups = 40;
    static int group(int64_t tokens);
    double decay_;
    std::map<StepKind, std::array<double, k_groups>> seconds_;  // 0: not measured
};

}  // namespace phi
