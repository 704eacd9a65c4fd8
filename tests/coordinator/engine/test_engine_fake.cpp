// The engine on a fake runner (tests/support/fake_runner.h): no model, no MPI. Every output is
// checked against the fake model's own greedy continuation, which the engine reproduces only when
// its block tables, prefix-cache reuse, preemption, chunked prefill and admission are right.
#include <gtest/gtest.h>
#include <omp.h>

#include <map>
#include <random>

#include "cluster/communicator.h"
#include "coordinator/engine/block_manager.h"
#include "coordinator/engine/engine.h"
#include "tests/support/fake_engine.h"

namespace phi::engine {
namespace {

constexpr int64_t k_vocab = 50;

using test::Outcome;

// The shared fake-runner harness with greedy requests of a prompt and a length.
class FakeEngine : public test::FakeEngine {
public:
    FakeEngine(int64_t kv_blocks, int64_t block_size, EngineConfig cfg = {}, int64_t context = 512)
        : test::FakeEngine(test::fake_options(k_vocab, kv_blocks, block_size, context), std::move(cfg)) {}
    using test::FakeEngine::submit;
    uint64_t submit(std::vector<int32_t> prompt, int32_t max_tokens, Outcome* out) {
        return submit(test::greedy_request(std::move(prompt), max_tokens), out);
    }
};

std::vector<int32_t> random_prompt(std::mt19937& rng, int len) { return test::random_prompt(rng, len, k_vocab); }

TEST(EngineFake, OneGreedyRequestFollowsTheModel) {
    FakeEngine e(64, 4);
    Outcome o;
    const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
    e.submit(prompt, 20, &o);
    e.run_until_done(std::vector<const Outcome*>{&o});
    EXPECT_EQ(o.tokens, e.runner().greedy(prompt, 20, k_vocab));
    EXPECT_EQ(o.reason, FinishReason::Length);
    EXPECT_EQ(e.engine().stats().kv_blocks_used, 0);
}

TEST(EngineFake, ThirtyTwoRequestsJoiningAtDifferentStepsEachGetTheirOwnOutput) {
    EngineConfig cfg;
    cfg.max_num_seqs = 8;
    cfg.max_batched_tokens = 24;
    FakeEngine e(256, 4, cfg);
    std::mt19937 rng(7);
    std::vector<Outcome> outs(32);
    std::vector<std::vector<int32_t>> prompts;
    for (size_t i = 0; i < outs.size(); ++i) {
        prompts.push_back(random_prompt(rng, 1 + int(i * 5) % 37));
        e.submit(prompts.back(), 4 + int(i % 9), &outs[i]);
        for (size_t k = 0; k < i % 3; ++k) e.engine().step();  // later requests join a running batch
    }
    e.run_until_done(outs);
    for (size_t i = 0; i < outs.size(); ++i)
        EXPECT_EQ(outs[i].tokens, e.runner().greedy(prompts[i], 4 + int64_t(i % 9), k_vocab)) << "request " << i;
    EXPECT_LE(e.runner().max_step_tokens(), cfg.max_batched_tokens);
    EXPECT_LE(e.runner().max_step_seqs(), cfg.max_num_seqs);
    EXPECT_EQ(e.engine().stats().kv_blocks_used, 0);
}

TEST(EngineFake, ChunkedPrefillStaysWithinTheTokenBudget) {
    EngineConfig cfg;
    cfg.max_batched_tokens = 7;
    FakeEngine e(128, 4, cfg);
    std::mt19937 rng(11);
    const std::vector<int32_t> prompt = random_prompt(rng, 100);
    Outcome o;
    e.submit(prompt, 5, &o);
    e.run_until_done(std::vector<const Outcome*>{&o});
    EXPECT_EQ(o.tokens, e.runner().greedy(prompt, 5, k_vocab));
    EXPECT_LE(e.runner().max_step_tokens(), 7);
    EXPECT_GE(e.runner().steps(), 100 / 7);
    // Every prompt token is computed once, then one token per decode step.
    EXPECT_EQ(e.runner().tokens_computed(), 100 + 5 - 1);
}

TEST(EngineFake, PreemptionUnderAFullCacheKeepsEveryOutputExact) {
    EngineConfig cfg;
    cfg.max_num_seqs = 16;
    cfg.prefix_caching = false;
    FakeEngine e(24, 4, cfg);  // 96 token slots for 16 sequences growing to ~40 tokens each
    std::mt19937 rng(5);
    std::vector<Outcome> outs(16);
    std::vector<std::vector<int32_t>> prompts;
    for (size_t i = 0; i < outs.size(); ++i) {
        prompts.push_back(random_prompt(rng, 8 + int(i % 5)));
        e.submit(prompts.back(), 30, &outs[i]);
    }
    e.run_until_done(outs);
    for (size_t i = 0; i < outs.size(); ++i)
        EXPECT_EQ(outs[i].tokens, e.runner().greedy(prompts[i], 30, k_vocab)) << "request " << i;
    EXPECT_GT(e.engine().stats().preemptions, 0);
    EXPECT_EQ(e.engine().stats().kv_blocks_used, 0);
}

TEST(EngineFake, PrefixCacheReusesBlocksOfAnEarlierRequest) {
    FakeEngine e(64, 4);
    std::mt19937 rng(3);
    const std::vector<int32_t> shared = random_prompt(rng, 17);
    std::vector<int32_t> a = shared, b = shared;
    a.push_back(1);
    b.push_back(2);
    Outcome oa, ob;
    e.submit(a, 6, &oa);
    e.run_until_done(std::vector<const Outcome*>{&oa});
    e.submit(b, 6, &ob);
    e.run_until_done(std::vector<const Outcome*>{&ob});
    EXPECT_EQ(oa.tokens, e.runner().greedy(a, 6, k_vocab));
    EXPECT_EQ(ob.tokens, e.runner().greedy(b, 6, k_vocab));
    EXPECT_EQ(oa.cached_prompt_tokens, 0);
    EXPECT_EQ(ob.cached_prompt_tokens, 16);  // four full blocks of the shared 17 tokens
    EXPECT_GT(e.engine().stats().prefix_cache_hits, 0);
}

TEST(EngineFake, CancelFreesTheBlocksAndOthersContinue) {
    FakeEngine e(64, 4);
    std::mt19937 rng(9);
    const auto p1 = random_prompt(rng, 10), p2 = random_prompt(rng, 12);
    Outcome o1, o2;
    const uint64_t id1 = e.submit(p1, 40, &o1);
    e.submit(p2, 10, &o2);
    for (int i = 0; i < 5; ++i) e.engine().step();
    e.engine().cancel(id1);
    e.run_until_done(std::vector<const Outcome*>{&o1, &o2});
    EXPECT_EQ(o1.reason, FinishReason::Cancelled);
    EXPECT_EQ(o2.tokens, e.runner().greedy(p2, 10, k_vocab));
    EXPECT_EQ(e.engine().stats().kv_blocks_used, 0);
}

TEST(EngineFake, AFullQueueRefusesWithOverloaded) {
    EngineConfig cfg;
    cfg.max_queued = 3;
    FakeEngine e(64, 4, cfg);
    std::vector<Outcome> outs(4);
    for (int i = 0; i < 3; ++i) e.submit({1, 2, 3}, 2, &outs[size_t(i)]);
    try {
        e.submit({1, 2, 3}, 2, &outs[3]);
        FAIL() << "a fourth request was queued";
    } catch (const SubmitError& err) {
        EXPECT_EQ(err.kind, SubmitError::Kind::Overloaded);
    }
    e.run_until_done(std::vector<const Outcome*>{&outs[0], &outs[1], &outs[2]});
}

// Plain samples of a step are drawn in parallel over sequences (Engine::sample_plain): sixteen
// seeded sampled requests with logprobs give the same tokens and logprobs with one OpenMP thread
// and with four, batched or each alone.
TEST(EngineFake, ParallelSamplingGivesTheTokensOfOneThread) {
    struct Sampled {
        std::vector<int32_t> tokens;
        std::vector<float> logprobs;
        std::vector<int32_t> top_ids;
        bool done = false;
    };
    auto run = [](int threads, bool alone) {
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        EngineConfig cfg;
        cfg.max_num_seqs = 16;
        FakeEngine e(512, 4, cfg);
        std::mt19937 rng(11);
        std::vector<Sampled> outs(16);
        for (size_t i = 0; i < outs.size(); ++i) {
            EngineRequest r;
            r.prompt = random_prompt(rng, 3 + int(i));
            r.params.temperature = 0.9f;
            r.params.top_p = 0.95f;
            r.params.top_k = int32_t(i % 3 == 0 ? 0 : 20);
            r.params.repetition_penalty = i % 2 == 0 ? 1.0f : 1.2f;
            r.params.seed = 1000 + i;
            r.params.logprobs = 3;
            r.params.max_tokens = 24;
            r.want_logprobs = true;
            Sampled* o = &outs[i];
            e.engine().submit(std::move(r), [o](const Event& ev) {
                if (ev.kind == Event::Kind::Token) {
                    o->tokens.push_back(ev.token);
                    o->logprobs.push_back(ev.logprob);
                    for (const auto& t : ev.top_logprobs) o->top_ids.push_back(t.id);
                } else {
                    o->done = true;
                }
            });
            if (alone) {
                while (!o->done) e.engine().step();
            }
        }
        for (int step = 0; step < 10000; ++step) {
            bool all = true;
            for (const Sampled& o : outs) all = all && o.done;
            if (all) break;
            e.engine().step();
        }
        omp_set_num_threads(saved);
        return outs;
    };
    // Under OMP_NUM_THREADS=1 (the ThreadSanitizer job: the OpenMP runtime is not instrumented) the
    // parallel runs stay on one thread too.
    const int many = omp_get_max_threads() > 1 ? 4 : 1;
    const std::vector<Sampled> one = run(1, false), four = run(many, false), alone = run(many, true);
    for (size_t i = 0; i < one.size(); ++i) {
        ASSERT_TRUE(one[i].done && four[i].done && alone[i].done) << "request " << i;
        EXPECT_EQ(one[i].tokens.size(), 24u) << "request " << i;
        EXPECT_EQ(four[i].tokens, one[i].tokens) << "request " << i;
        EXPECT_EQ(four[i].logprobs, one[i].logprobs) << "request " << i;
        EXPECT_EQ(four[i].top_ids, one[i].top_ids) << "request " << i;
        EXPECT_EQ(alone[i].tokens, one[i].tokens) << "request " << i;
    }
}

TEST(BlockManagerUnit, AllocatesReleasesAndReusesPublishedBlocks) {
    BlockManager bm(4, 2);
    const BlockKey k42 = block_key(BlockKey{}, std::vector<int32_t>{4, 2}.data(), 2);
    const BlockKey k43 = block_key(BlockKey{}, std::vector<int32_t>{4, 3}.data(), 2);
    EXPECT_EQ(bm.num_available(), 4);
    const auto a = bm.allocate(), b = bm.allocate();
    ASSERT_TRUE(a && b);
    EXPECT_NE(*a, *b);
    EXPECT_EQ(bm.num_used(), 2);
    bm.publish(*a, k42);
    bm.release(*a);
    EXPECT_EQ(bm.num_cached_idle(), 1);  // kept for reuse while unreferenced
    const auto hit = bm.match(k42);
    ASSERT_TRUE(hit);
    EXPECT_EQ(*hit, *a);
    EXPECT_FALSE(bm.match(k43));
    bm.release(*hit);
    bm.release(*b);
    // Four fresh allocations: the idle cached block is evicted last, and then it is gone.
    std::vector<int32_t> got;
    for (int i = 0; i < 4; ++i) {
        const auto x = bm.allocate();
        ASSERT_TRUE(x);
        got.push_back(*x);
    }
    EXPECT_FALSE(bm.allocate());
    EXPECT_FALSE(bm.match(k42));
    EXPECT_EQ(bm.evictions(), 1);
}

}  // namespace
}  // namespace phi::engine
