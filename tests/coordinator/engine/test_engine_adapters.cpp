// LoRA adapters in the engine (issue 19), on the fake runner (whose logits depend on the adapter and
// whose KV slots remember the adapter that wrote them, so a prefix-cache block shared across
// adapters throws): mixed batches give each request its solo output, at most max_loras adapters run
// in one step, and a request waiting for an adapter slot is never overtaken.
#include <gtest/gtest.h>

#include <random>

#include "cluster/communicator.h"
#include "coordinator/engine/engine.h"
#include "tests/support/fake_engine.h"

namespace phi::engine {
namespace {

constexpr int64_t k_vocab = 60;

using test::Outcome;

// The shared fake-runner harness serving adapters 1-4 beside the base model (0).
class AdapterEngine : public test::FakeEngine {
public:
    explicit AdapterEngine(EngineConfig cfg)
        : test::FakeEngine(test::fake_options(k_vocab, 256, 4), with_adapters(cfg)) {}
    void submit(std::vector<int32_t> prompt, int32_t adapter, int max_tokens, Outcome* out) {
        test::FakeEngine::submit(test::greedy_request(std::move(prompt), max_tokens, adapter), out);
    }
    void run(const std::vector<Outcome>& outs) { run_until_done(outs, 100000); }

private:
    static EngineConfig with_adapters(EngineConfig cfg) {
        cfg.adapters = {1, 2, 3, 4};
        return cfg;
    }
};

TEST(EngineAdapters, MixedBatchesGiveSoloOutputsAndNeverShareBlocksAcrossAdapters) {
    EngineConfig cfg;
    cfg.max_num_seqs = 16;
    cfg.max_batched_tokens = 40;
    cfg.max_loras = 2;
    AdapterEngine e(cfg);
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(k_vocab - 1));
    const std::vector<int32_t> shared = {5, 9, 13, 2, 7, 7, 1, 30, 4, 8, 11, 3};  // three full blocks
    std::vector<Outcome> outs(32);
    std::vector<std::vector<int32_t>> prompts(outs.size());
    std::vector<int32_t> adapters(outs.size());
    for (size_t i = 0; i < outs.size(); ++i) {
        prompts[i] = shared;
        for (int j = 0; j < 3 + int(i % 5); ++j) prompts[i].push_back(tok(rng));
        adapters[i] = int32_t(i % 5);  // 0 = the base model, adapters 1-4
        e.submit(prompts[i], adapters[i], 12 + int(i % 7), &outs[i]);
        if (i % 3 == 2) e.step();  // later requests join a running batch
    }
    e.run(outs);
    for (size_t i = 0; i < outs.size(); ++i)
        EXPECT_EQ(outs[i].tokens, e.runner().greedy(prompts[i], 12 + int64_t(i % 7), k_vocab, adapters[i]))
            << "request " << i << " (adapter " << adapters[i] << ")";
    EXPECT_LE(e.runner().max_step_adapters(), 2);
    EXPECT_EQ(e.runner().max_step_adapters(), 2);
    const EngineStats s = e.engine().stats();
    EXPECT_GT(s.prefix_cache_hits, 0) << "requests with the same adapter share the prompt's blocks";
    EXPECT_EQ(s.kv_blocks_used, 0);
    // Different adapters give different continuations (the fake model's logits depend on them).
    EXPECT_NE(e.runner().greedy(prompts[0], 12, k_vocab, 1), e.runner().greedy(prompts[0], 12, k_vocab, 2));
}

TEST(EngineAdapters, ARequestWaitingForAnAdapterSlotIsNotOvertaken) {
    EngineConfig cfg;
    cfg.max_num_seqs = 8;
    cfg.max_loras = 1;
    AdapterEngine e(cfg);
    std::vector<Outcome> outs(3);
    e.submit({1, 2, 3}, 1, 20, &outs[0]);
    e.step();
    e.submit({4, 5, 6}, 2, 5, &outs[1]);  // waits: adapter 1 holds the only slot
    e.submit({7, 8, 9}, 1, 5, &outs[2]);  // adapter 1 is running, but it queued after the adapter-2 request
    for (int i = 0; i < 5; ++i) e.step();
    EXPECT_TRUE(outs[1].tokens.empty());
    EXPECT_TRUE(outs[2].tokens.empty()) << "a later request overtook the one waiting for an adapter slot";
    e.run(outs);
    EXPECT_GT(outs[1].first_token_step, outs[0].first_token_step);
    EXPECT_LT(outs[1].first_token_step, outs[2].first_token_step);
    EXPECT_EQ(e.runner().max_step_adapters(), 1);
}

// An adapter unloaded between a request's acceptance and its first step: the request ends with
// the reason; nothing names the adapter in a step; the others run on.
TEST(EngineAdapters, ARequestForAnUnloadedAdapterEndsWithTheReason) {
    EngineConfig cfg;
    AdapterEngine e(cfg);
    std::vector<Outcome> outs(2);
    std::string error;
    EngineRequest r;
    r.prompt = {1, 2, 3};
    r.params.max_tokens = 4;
    r.adapter = 3;
    e.engine().post_control([&] { e.engine().adapter_unloaded(3); });
    e.step();  // the control runs between steps, on the engine thread
    e.engine().submit(std::move(r), [&](const Event& ev) {
        if (ev.kind == Event::Kind::Finished) {
            error = ev.error;
            outs[0].done = true;
        }
    });
    e.submit({4, 5, 6}, 2, 4, &outs[1]);
    e.run(outs);
    EXPECT_NE(error.find("not loaded"), std::string::npos) << error;
    EXPECT_EQ(outs[1].tokens.size(), 4u);
    e.engine().post_control([&] { e.engine().adapter_loaded(3); });
    e.step();
    std::vector<Outcome> again(1);
    e.submit({1, 2, 3}, 3, 4, &again[0]);
    e.run(again);
    EXPECT_EQ(again[0].tokens, e.runner().greedy({1, 2, 3}, 4, k_vocab, 3));
}

}  // namespace
}  // namespace phi::engine
