#include "worker/step_executor.h"

#include <algorithm>

#include "common/error.h"
#include "common/log.h"

namespace phi {

StepExecutor::StepExecutor(PhiModel& model, Communicator& comm, const WatchdogOptions& watchdog)
    : model_(model), comm_(comm), wd_(watchdog) {
    if (wd_.per_token.count() == 0) {
        // 2 FLOPs per weight per token at a pessimistic 1 GFLOP/s per rank: a hang detector,
        // not a performance bound.
        const ModelConfig& c = model.config();
        const double weights = double(c.n_layers) * double(c.d_model) *
                               double(4 * c.d_model + 3 * c.d_ff) / double(model.plan().world);
        wd_.per_token = std::chrono::microseconds(int64_t(2.0 * weights / 1e9 * 1e6) + 1);
    }
}

std::chrono::milliseconds StepExecutor::step_deadline(const StepPlan& plan) const {
    int64_t tokens = 0;
    for (const SeqPlan& s : plan.seqs) tokens += int64_t(s.tokens.size());
    return wd_.step_base + std::chrono::duration_cast<std::chrono::milliseconds>(wd_.per_token * tokens);
}

void StepExecutor::send(const StepPlan& plan) {
    std::vector<uint8_t> bytes = encode_step_plan(plan);
    uint64_t n = bytes.size();
    comm_.broadcast(&n, sizeof(n), 0);
    comm_.broadcast(bytes.data(), bytes.size(), 0);
}

StepPlan StepExecutor::receive() {
    uint64_t n = 0;
    comm_.set_timeout(wd_.plan_wait);
    comm_.broadcast(&n, sizeof(n), 0);
    PHI_CHECK(n > 0 && n < (uint64_t(1) << 31), "rank {}: step plan of {} bytes announced", comm_.rank(), n);
    std::vector<uint8_t> bytes(n);
    comm_.broadcast(bytes.data(), bytes.size(), 0);
    return decode_step_plan(bytes);
}

int64_t StepExecutor::execute(const StepPlan& plan, std::vector<float>* logits) {
    PHI_CHECK(plan.step == next_step_, "rank {} expected step {} but got step {}", comm_.rank(), next_step_,
              plan.step);
    ++next_step_;
    if (plan.kind != StepKind::Forward) return 0;
    comm_.set_timeout(step_deadline(plan));
    std::vector<SeqStep> seqs;
    seqs.reserve(plan.seqs.size());
    for (const SeqPlan& s : plan.seqs) {
        SeqStep st;
        st.tokens = s.tokens;
        st.start_pos = s.start_pos;
        st.block_table = s.block_table;
        st.long_rope = s.long_rope;
        st.all_logits = s.all_logits;
        st.argmax_limit = s.argmax_limit;
        seqs.push_back(st);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t rows = model_.forward(seqs, logits);
    forward_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    last_activation_hash_ = model_.activation_hash();

    // Every rank must have applied the same state; the comparison is one small collective, which
    // also carries each rank's cumulative forward and all-reduce time (microseconds) to rank 0.
    if (comm_.size() > 1) {
        const uint64_t mine[4] = {step_state_hash(plan), last_activation_hash_, uint64_t(forward_seconds_ * 1e6),
                                  uint64_t(comm_.stats().all_reduce_seconds * 1e6)};
        std::vector<uint64_t> all(size_t(4 * comm_.size()));
        comm_.all_gather_u64(mine, 4, all.data());
        rank_times_.resize(size_t(comm_.size()));
        for (int r = 0; r < comm_.size(); ++r) {
            PHI_CHECK(all[size_t(4 * r)] == all[0],
                      "rank {} applied a different state than rank 0 in step {}: stopping the cluster", r, plan.step);
            PHI_CHECK(all[size_t(4 * r + 1)] == all[1],
                      "rank {} computed different activations than rank 0 in step {}: stopping the cluster", r,
                      plan.step);
            rank_times_[size_t(r)] = {double(all[size_t(4 * r + 2)]) / 1e6, double(all[size_t(4 * r + 3)]) / 1e6};
        }
    } else {
        rank_times_ = {{forward_seconds_, comm_.stats().all_reduce_seconds}};
    }
    return rows;
}

int64_t StepExecutor::run(const StepPlan& plan_in, std::vector<float>* logits) {
    PHI_CHECK(comm_.rank() == 0, "only rank 0 decides steps");
    StepPlan plan = plan_in;
    plan.step = next_step_;
    comm_.set_timeout(step_deadline(plan));
    if (comm_.size() > 1) send(plan);
    return execute(plan, logits);
}

void StepExecutor::heartbeat() {
    StepPlan p;
    p.kind = StepKind::Heartbeat;
    run(p, nullptr);
}

void StepExecutor::shutdown() {
    if (comm_.size() == 1) return;
    StepPlan p;
    p.kind = StepKind::Shutdown;
    p.step = next_step_;
    comm_.set_timeout(wd_.step_base);
    send(p);
    ++next_step_;
}

void StepExecutor::follow() {
    PHI_CHECK(comm_.rank() != 0, "rank 0 does not follow");
    for (;;) {
        StepPlan plan = receive();
        if (plan.kind == StepKind::Shutdown) {
            log().debug("rank {}: shutdown after {} steps", comm_.rank(), next_step_);
            return;
        }
        execute(plan, nullptr);
    }
}

}  // namespace phi
