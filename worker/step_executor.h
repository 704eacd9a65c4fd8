// StepExecutor: how a StepPlan reaches every rank and runs. Rank 0 broadcasts the encoded plan,
// every rank runs PhiModel::forward on its shard, then all ranks compare a hash of the state they
// applied; ranks > 0 sit in follow() until a Shutdown plan arrives. The watchdog deadline of each
// step's collectives is derived from the step's work.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "cluster/communicator.h"
#include "cluster/step_plan.h"
#include "worker/phi_model.h"

namespace phi {

struct WatchdogOptions {
    /// Deadline of a step's collectives = base + per-token allowance x tokens in the step.
    std::chrono::milliseconds step_base{10000};
    std::chrono::microseconds per_token{0};  // 0: derived from the model size (see executor)
    /// How long ranks > 0 wait for the next plan; rank 0 sends heartbeats more often while idle.
    std::chrono::milliseconds plan_wait{120000};
};

class StepExecutor {
public:
    StepExecutor(PhiModel& model, Communicator& comm, const WatchdogOptions& watchdog);

    /// Rank 0: broadcast `plan`, run it, check the ranks agree. Returns logit rows (see
    /// PhiModel::forward); `logits` receives them.
    int64_t run(const StepPlan& plan, std::vector<float>* logits);
    /// Rank 0: an empty plan that keeps the followers' plan-wait deadline from expiring.
    void heartbeat();
    /// Rank 0: tells every rank to leave follow().
    void shutdown();
    /// Ranks > 0: receive and run plans until Shutdown.
    void follow();

    uint64_t steps() const { return next_step_; }
    /// Per rank (rank 0 only; as of the last step): cumulative forward seconds and the part of
    /// them spent in all-reduces.
    struct RankTimes {
        double forward_seconds = 0;
        double all_reduce_seconds = 0;
    };
    const std::vector<RankTimes>& rank_times() const { return rank_times_; }
    PhiModel& model() { return model_; }
    const Communicator& comm() const { return comm_; }
    /// Hash of the residual stream after the last step (bit-identical on every rank).
    uint64_t last_activation_hash() const { return last_activation_hash_; }

private:
    StepPlan receive();
    void send(const StepPlan& plan);
    int64_t execute(const StepPlan& plan, std::vector<float>* logits);
    std::chrono::milliseconds step_deadline(const StepPlan& plan) const;

    PhiModel& model_;
    Communicator& comm_;
    WatchdogOptions wd_;
    uint64_t next_step_ = 0;
    uint64_t last_activation_hash_ = 0;
    double forward_seconds_ = 0;
    std::vector<RankTimes> rank_times_;
};

}  // namespace phi
