// StepExecutor: how a StepPlan reaches every rank and runs. Rank 0 broadcasts the encoded plan,
// every rank runs its ModelRunner's forward on its shard, then all ranks compare a hash of the state they
// applied; ranks > 0 sit in follow() until a Shutdown plan arrives. The watchdog deadline of each
// step's collectives comes from the measured times of earlier steps of that kind and size
// (StepTimes); rank 0 measures the largest step at start-up (calibrate). A heartbeat is a round
// trip, so rank 0 notices a stalled follower while idle too.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cluster/communicator.h"
#include "cluster/step_plan.h"
#include "worker/model_runner.h"
#include "worker/step_times.h"

namespace phi {

struct WatchdogOptions {
    /// Each collective of a step may take max(step_base, step_factor x the step's expected time),
    /// the expected time being the recent time of steps of that kind and size (StepTimes).
    std::chrono::milliseconds step_base{10000};
    double step_factor = 3.0;
    /// A step larger than any measured so far (before calibrate(), or offline) may take this long.
    std::chrono::milliseconds unmeasured{600000};
    /// How long ranks > 0 wait for the next plan; rank 0 sends heartbeats more often while idle.
    std::chrono::milliseconds plan_wait{120000};
    /// The first plan may come later: rank 0 loads its tokenizer and calibrates first.
    std::chrono::milliseconds first_plan_wait{600000};
    /// A LoRA adapter load (reading its file on every rank) may take this long.
    std::chrono::milliseconds adapter_load{300000};
};

class StepExecutor {
public:
    /// `draft`: the draft model of speculative decoding on this rank (same ranks, its own KV
    /// cache), run by plans with StepModel::Draft; null when there is none.
    StepExecutor(ModelRunner& model, Communicator& comm, const WatchdogOptions& watchdog,
                 ModelRunner* draft = nullptr);

    /// Rank 0: broadcast `plan`, run it, check the ranks agree. Returns logit rows (see
    /// ModelRunner::forward); `logits` receives them.
    int64_t run(const StepPlan& plan, std::vector<float>* logits);
    /// Rank 0: an empty plan that keeps the followers' plan-wait deadline from expiring, and a round
    /// trip through every rank (a stalled follower throws CommTimeout here within step_base).
    void heartbeat();
    /// Rank 0, before serving: one timed forward of `tokens` tokens (blocks 0.. of the cache, which
    /// must be unused), so that every rank knows the time of the largest step before any request.
    void calibrate(int64_t tokens);
    /// The deadline each collective of `plan` gets on this rank.
    std::chrono::milliseconds allowance(const StepPlan& plan) const;
    /// Rank 0: tells every rank to leave follow().
    void shutdown();

    /// How a rank loads (throwing a phi::Error with the reason) and drops a LoRA adapter; set on
    /// every rank before serving when runtime adapter loading is on.
    using AdapterLoader = std::function<void(int32_t id, const std::string& path)>;
    using AdapterDropper = std::function<void(int32_t id)>;
    void set_adapter_hooks(AdapterLoader load, AdapterDropper drop) {
        load_adapter_ = std::move(load);
        drop_adapter_ = std::move(drop);
    }
    /// Rank 0: every rank loads the adapter, then all agree in one all-gather under their own
    /// deadline (WatchdogOptions::adapter_load, not a forward step's); when any rank failed every
    /// rank drops it. Returns the empty string, or why it failed (naming the ranks).
    std::string load_adapter(int32_t id, const std::string& path);
    /// Rank 0: every rank drops adapter `id`.
    void unload_adapter(int32_t id);
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
    ModelRunner& model() { return model_; }
    ModelRunner* draft() { return draft_; }
    const Communicator& comm() const { return comm_; }
    /// Hash of the residual stream after the last step (bit-identical on every rank).
    uint64_t last_activation_hash() const { return last_activation_hash_; }

private:
    StepPlan receive();
    void send(const StepPlan& plan);
    int64_t execute(const StepPlan& plan, std::vector<float>* logits);
    void record(const StepPlan& plan, std::chrono::steady_clock::time_point start);
    void execute_adapter(const StepPlan& plan);

    ModelRunner& runner(StepModel m);
    StepTimes& times(StepModel m) { return m == StepModel::Draft ? draft_times_ : times_; }
    const StepTimes& times(StepModel m) const { return m == StepModel::Draft ? draft_times_ : times_; }

    ModelRunner& model_;
    ModelRunner* draft_;
    Communicator& comm_;
    WatchdogOptions wd_;
    uint64_t next_step_ = 0;
    uint64_t last_activation_hash_ = 0;
    double forward_seconds_ = 0;
    std::vector<RankTimes> rank_times_;
    StepTimes times_;
    StepTimes draft_times_;  // a draft step takes a fraction of a target step of the same size
    AdapterLoader load_adapter_;
    AdapterDropper drop_adapter_;
    std::string adapter_error_;  // rank 0: the last adapter load's failure
};

}  // namespace phi
