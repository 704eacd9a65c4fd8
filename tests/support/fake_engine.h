// The engine on the fake runner (fake_runner.h), shared by the engine tests that need no model and
// no MPI: a LocalCommunicator, a FakeRunner (and, for the draft-model proposer, a second one), a
// StepExecutor and an Engine. Each request's events are recorded into an Outcome. Header-only: the
// test executables that include it link phi_engine and GoogleTest themselves.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "cluster/communicator.h"
#include "coordinator/engine/engine.h"
#include "tests/support/fake_runner.h"

namespace phi::test {

/// What a request's events left behind.
struct Outcome {
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    engine::FinishReason reason = engine::FinishReason::Error;
    int64_t cached_prompt_tokens = 0;
    bool done = false;
    bool indices_contiguous = true;  // every token event carried the next index
    int64_t first_token_step = -1;   // FakeEngine::steps() when the first token arrived
};

/// A draft model for the draft-method proposer: the fake model with another salt (it agrees with
/// the target where both copy, about half the time), or the target itself (salt 0).
struct FakeDraft {
    uint64_t salt = 1;
    int64_t kv_blocks = 512;
};

struct FakeEngineOptions {
    int64_t vocab = 50;
    int64_t context = 512;
    int64_t kv_blocks = 256;
    int64_t block_size = 4;
    int64_t copy_period = 0;  // FakeRunner::set_copy_period on the target and the draft (0: never)
    std::optional<FakeDraft> draft;
};

/// Options with the given shape and the defaults otherwise.
inline FakeEngineOptions fake_options(int64_t vocab, int64_t kv_blocks, int64_t block_size, int64_t context = 512) {
    FakeEngineOptions o;
    o.vocab = vocab;
    o.kv_blocks = kv_blocks;
    o.block_size = block_size;
    o.context = context;
    return o;
}

class FakeEngine {
public:
    FakeEngine(const FakeEngineOptions& o, engine::EngineConfig cfg)
        : runner_(o.vocab, o.context, o.kv_blocks, o.block_size),
          draft_(o.draft ? std::make_unique<FakeRunner>(o.vocab, o.context, o.draft->kv_blocks, o.block_size)
                         : nullptr),
          exec_(runner_, comm_, WatchdogOptions{}, draft_.get()) {
        if (o.copy_period > 0) runner_.set_copy_period(o.copy_period);
        if (draft_) {
            if (o.copy_period > 0) draft_->set_copy_period(o.copy_period);
            draft_->set_salt(o.draft->salt);
        }
        engine_ = std::make_unique<engine::Engine>(exec_, std::move(cfg));
    }

    uint64_t submit(engine::EngineRequest r, Outcome* out) {
        return engine_->submit(std::move(r), [this, out](const engine::Event& e) {
            if (e.kind == engine::Event::Kind::Token) {
                if (out->tokens.empty()) out->first_token_step = steps_;
                if (e.index != int64_t(out->tokens.size())) out->indices_contiguous = false;
                out->tokens.push_back(e.token);
                out->logprobs.push_back(e.logprob);
            } else {
                out->reason = e.reason;
                out->cached_prompt_tokens = e.cached_prompt_tokens;
                out->done = true;
            }
        });
    }

    void step() {
        engine_->step();
        ++steps_;
    }
    int64_t steps() const { return steps_; }

    /// Steps until every outcome is done; a test failure after max_steps.
    void run_until_done(const std::vector<const Outcome*>& outs, int max_steps = 200000) {
        for (int i = 0; i < max_steps; ++i) {
            bool all = true;
            for (const Outcome* o : outs) all = all && o->done;
            if (all) return;
            step();
        }
        FAIL() << "requests did not finish within " << max_steps << " steps";
    }
    void run_until_done(const std::vector<Outcome>& outs, int max_steps = 200000) {
        std::vector<const Outcome*> ptrs;
        for (const Outcome& o : outs) ptrs.push_back(&o);
        run_until_done(ptrs, max_steps);
    }

    engine::Engine& engine() { return *engine_; }
    FakeRunner& runner() { return runner_; }

private:
    LocalCommunicator comm_;
    FakeRunner runner_;
    std::unique_ptr<FakeRunner> draft_;
    StepExecutor exec_;
    std::unique_ptr<engine::Engine> engine_;
    int64_t steps_ = 0;
};

/// A greedy request for `prompt` of at most max_tokens tokens (adapter 0: the base model).
inline engine::EngineRequest greedy_request(std::vector<int32_t> prompt, int32_t max_tokens, int32_t adapter = 0) {
    engine::EngineRequest r;
    r.prompt = std::move(prompt);
    r.params.temperature = 0.0f;
    r.params.max_tokens = max_tokens;
    r.adapter = adapter;
    return r;
}

/// `len` ids drawn uniformly below `vocab`.
inline std::vector<int32_t> random_prompt(std::mt19937& rng, int len, int64_t vocab) {
    std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
    std::vector<int32_t> p;
    for (int i = 0; i < len; ++i) p.push_back(tok(rng));
    return p;
}

}  // namespace phi::test
