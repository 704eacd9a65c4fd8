#include "worker/step_executor.h"

#include <algorithm>

#include "common/error.h"
#include "common/log.h"

#include <fmt/format.h>

namespace phi {

StepExecutor::StepExecutor(ModelRunner& model, Communicator& comm, const WatchdogOptions& watchdog,
                           ModelRunner* draft)
    : model_(model), draft_(draft), comm_(comm), wd_(watchdog) {}

ModelRunner& StepExecutor::runner(StepModel m) {
    if (m == StepModel::Target) return model_;
    PHI_CHECK(draft_, "rank {}: the step plan runs the draft model, but this rank loaded none (ranks were started "
              "with different speculative settings)", comm_.rank());
    return *draft_;
}

namespace {
int64_t plan_tokens(const StepPlan& plan) {
    int64_t tokens = 0;
    for (const SeqPlan& s : plan.seqs) tokens += int64_t(s.tokens.size());
    return tokens;
}
}  // namespace

std::chrono::milliseconds StepExecutor::allowance(const StepPlan& plan) const {
    if (plan.kind == StepKind::LoadAdapter || plan.kind == StepKind::UnloadAdapter) return wd_.adapter_load;
    const int64_t tokens = plan_tokens(plan);
    const std::optional<double> expected = times(plan.model).expected(plan.kind, tokens);
    // A step of real work larger than anything measured: no basis for a tight deadline yet.
    if (!expected) return plan.kind == StepKind::Forward && tokens > 0 ? wd_.unmeasured : wd_.step_base;
    const auto scaled = std::chrono::milliseconds(int64_t(wd_.step_factor * *expected * 1000.0) + 1);
    return std::max(wd_.step_base, scaled);
}

void StepExecutor::record(const StepPlan& plan, std::chrono::steady_clock::time_point start) {
    times(plan.model).record(plan.kind, plan_tokens(plan),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

void StepExecutor::calibrate(int64_t tokens) {
    PHI_CHECK(comm_.rank() == 0, "only rank 0 decides steps");
    const int64_t block_size = model_.block_size();
    tokens = std::min({tokens, model_.kv_blocks() * block_size, model_.config().max_position_embeddings});
    if (tokens <= 0) return;
    StepPlan plan;
    SeqPlan s;
    s.tokens.assign(size_t(tokens), 0);
    for (int32_t b = 0; b < int32_t((tokens + block_size - 1) / block_size); ++b) s.block_table.push_back(b);
    s.argmax_limit = 1;  // no logits gather: the forward is what is timed
    plan.seqs.push_back(std::move(s));
    std::vector<float> logits;
    if (draft_ && int64_t(plan.seqs[0].block_table.size()) <= draft_->kv_blocks() &&
        tokens <= draft_->config().max_position_embeddings) {
        plan.model = StepModel::Draft;
        run(plan, &logits);
        plan.model = StepModel::Target;
    }
    const auto t0 = std::chrono::steady_clock::now();
    run(plan, &logits);
    log().info("watchdog calibration: a {}-token step took {:.3f} s; a step's collectives may take {}x the recent "
               "time of steps of its size, at least {} ms",
               tokens, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               wd_.step_factor, wd_.step_base.count());
}

void StepExecutor::send(const StepPlan& plan) {
    std::vector<uint8_t> bytes = encode_step_plan(plan);
    uint64_t n = bytes.size();
    comm_.broadcast(&n, sizeof(n), 0);
    comm_.broadcast(bytes.data(), bytes.size(), 0);
}

StepPlan StepExecutor::receive() {
    uint64_t n = 0;
    comm_.set_timeout(next_step_ == 0 ? std::max(wd_.plan_wait, wd_.first_plan_wait) : wd_.plan_wait);
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
    if (plan.kind == StepKind::Heartbeat && comm_.size() > 1) {
        // A round trip: a broadcast alone completes on rank 0 without a stalled follower.
        comm_.set_timeout(allowance(plan));
        const uint64_t mine[1] = {plan.step};
        std::vector<uint64_t> all(size_t(comm_.size()));
        comm_.all_gather_u64(mine, 1, all.data());
        return 0;
    }
    if (plan.kind == StepKind::LoadAdapter || plan.kind == StepKind::UnloadAdapter) {
        execute_adapter(plan);
        return 0;
    }
    if (plan.kind != StepKind::Forward) return 0;
    comm_.set_timeout(allowance(plan));
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
        st.adapter = s.adapter;
        seqs.push_back(st);
    }
    const auto t0 = std::chrono::steady_clock::now();
    ModelRunner& m = runner(plan.model);
    const int64_t rows = m.forward(seqs, logits);
    forward_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    last_activation_hash_ = m.activation_hash();

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

void StepExecutor::execute_adapter(const StepPlan& plan) {
    if (plan.kind == StepKind::UnloadAdapter) {
        if (drop_adapter_) drop_adapter_(plan.adapter_id);
        return;
    }
    std::string error;
    if (!load_adapter_) {
        error = "this rank has no adapter loader (runtime loading is off)";
    } else {
        try {
            load_adapter_(plan.adapter_id, plan.adapter_path);
        } catch (const std::exception& e) {
            error = e.what();
        }
    }
    if (!error.empty()) log().error("rank {}: LoRA adapter {}: {}", comm_.rank(), plan.adapter_path, error);
    // All ranks agree before any step may name the adapter; a failure anywhere drops it everywhere.
    comm_.set_timeout(wd_.adapter_load);
    const std::string failed = ranks_that_failed(comm_, error.empty());
    adapter_error_.clear();
    if (failed.empty()) return;
    if (error.empty() && drop_adapter_) drop_adapter_(plan.adapter_id);
    adapter_error_ = error.empty() ? fmt::format("rank(s) {} could not load it (their logs say why)", failed)
                                   : fmt::format("rank(s) {} could not load it: {}", failed, error);
}

std::string StepExecutor::load_adapter(int32_t id, const std::string& path) {
    StepPlan p;
    p.kind = StepKind::LoadAdapter;
    p.adapter_id = id;
    p.adapter_path = path;
    run(p, nullptr);
    return adapter_error_;
}

void StepExecutor::unload_adapter(int32_t id) {
    StepPlan p;
    p.kind = StepKind::UnloadAdapter;
    p.adapter_id = id;
    run(p, nullptr);
}

int64_t StepExecutor::run(const StepPlan& plan_in, std::vector<float>* logits) {
    PHI_CHECK(comm_.rank() == 0, "only rank 0 decides steps");
    StepPlan plan = plan_in;
    plan.step = next_step_;
    const auto t0 = std::chrono::steady_clock::now();
    comm_.set_timeout(allowance(plan));
    if (comm_.size() > 1) send(plan);
    const int64_t rows = execute(plan, logits);
    record(plan, t0);
    return rows;
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
        const auto t0 = std::chrono::steady_clock::now();
        execute(plan, nullptr);
        record(plan, t0);
    }
}

}  // namespace phi
