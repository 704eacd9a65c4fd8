// Speculative decoding (issue 20) on the fake runner: the output with n-gram speculation must be
// token for token the output without it, greedy and seeded-sampled, alone and in mixed batches
// with chunked prefill and preemption; rejected proposals' KV must be rolled back (the fake model
// reads its history back from the KV slots, so a stale slot or block changes the next token); and
// every block must be free after many requests, cancelled ones included.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <random>

#include "cluster/communicator.h"
#include "coordinator/engine/engine.h"
#include "coordinator/engine/speculative.h"
#include "tests/support/fake_engine.h"

namespace phi::engine {
namespace {

constexpr int64_t k_vocab = 50;

using test::Outcome;

struct Req {
    std::vector<int32_t> prompt;
    sampling::SamplingParams params;
    bool speculative = true;
};

using DraftSpec = test::FakeDraft;

// The shared fake-runner harness with repetitive models (copy period 7) and requests from Req.
class SpecEngine : public test::FakeEngine {
public:
    SpecEngine(int64_t kv_blocks, int64_t block_size, EngineConfig cfg, std::optional<DraftSpec> draft = std::nullopt)
        : test::FakeEngine(options(kv_blocks, block_size, draft), std::move(cfg)) {}
    using test::FakeEngine::submit;
    uint64_t submit(const Req& q, Outcome* out) {
        EngineRequest r;
        r.prompt = q.prompt;
        r.params = q.params;
        r.want_logprobs = q.params.logprobs > 0;
        r.speculative = q.speculative;
        return submit(std::move(r), out);
    }

private:
    static test::FakeEngineOptions options(int64_t kv_blocks, int64_t block_size, std::optional<DraftSpec> draft) {
        test::FakeEngineOptions o = test::fake_options(k_vocab, kv_blocks, block_size);
        o.copy_period = 7;
        o.draft = draft;
        return o;
    }
};

std::vector<int32_t> random_prompt(std::mt19937& rng, int len) { return test::random_prompt(rng, len, k_vocab); }

EngineConfig with_ngram(EngineConfig cfg, int32_t k) {
    cfg.speculative.method = SpeculativeConfig::Method::Ngram;
    cfg.speculative.k = k;
    cfg.speculative.ngram_min = 1;
    cfg.speculative.ngram_max = 3;
    return cfg;
}

struct RunResult {
    std::vector<Outcome> outs;
    EngineStats stats;
};

// Submits every request (later ones joining a running batch), runs to the end.
RunResult run_all(const std::vector<Req>& reqs, EngineConfig cfg, int64_t kv_blocks = 512,
                  std::optional<DraftSpec> draft = std::nullopt) {
    SpecEngine e(kv_blocks, 4, cfg, draft);
    RunResult r;
    r.outs.resize(reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
        e.submit(reqs[i], &r.outs[i]);
        if (i % 3 == 1) e.engine().step();
    }
    e.run_until_done(r.outs);
    r.stats = e.engine().stats();
    EXPECT_EQ(r.stats.kv_blocks_used, 0) << "blocks still referenced after every request finished";
    EXPECT_EQ(r.stats.draft_kv_blocks_used, 0) << "draft blocks still referenced after every request finished";
    return r;
}

void expect_same(const RunResult& plain, const RunResult& spec) {
    ASSERT_EQ(plain.outs.size(), spec.outs.size());
    for (size_t i = 0; i < plain.outs.size(); ++i) {
        EXPECT_EQ(spec.outs[i].tokens, plain.outs[i].tokens) << "request " << i;
        EXPECT_EQ(spec.outs[i].logprobs, plain.outs[i].logprobs) << "request " << i;
        EXPECT_EQ(spec.outs[i].reason, plain.outs[i].reason) << "request " << i;
        EXPECT_TRUE(spec.outs[i].indices_contiguous) << "request " << i;
    }
}

EngineConfig with_draft(EngineConfig cfg, int32_t k) {
    cfg.speculative.method = SpeculativeConfig::Method::Draft;
    cfg.speculative.k = k;
    return cfg;
}

double acceptance(const EngineStats& s) {
    return s.spec_proposed > 0 ? double(s.spec_accepted) / double(s.spec_proposed) : 0.0;
}

std::vector<Req> greedy_requests(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<Req> reqs(n);
    for (size_t i = 0; i < n; ++i) {
        reqs[i].prompt = random_prompt(rng, 5 + int(i * 7) % 40);
        reqs[i].params.temperature = 0.0f;
        reqs[i].params.max_tokens = 30 + int(i % 11);
    }
    return reqs;
}

TEST(NgramPropose, TakesTheMostRecentLongestMatch) {
    const std::vector<int32_t> h = {1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 2, 3};
    // Suffix {2, 3} (n = 2; {5, 2, 3} never occurred before): most recent earlier match at 5.
    EXPECT_EQ(ngram_propose(h, 1, 3, 3), (std::vector<int32_t>{7, 8, 5}));
    EXPECT_EQ(ngram_propose(h, 1, 3, 1), (std::vector<int32_t>{7}));
    // Only n = 3 allowed: nothing matches.
    EXPECT_TRUE(ngram_propose(h, 3, 3, 3).empty());
    // The continuation is cut where the history ends.
    EXPECT_EQ(ngram_propose(std::vector<int32_t>{4, 4}, 1, 1, 5), (std::vector<int32_t>{4}));
    EXPECT_TRUE(ngram_propose(std::vector<int32_t>{4}, 1, 3, 5).empty());
}

TEST(EngineSpeculative, GreedyAloneIsTokenForTokenThePlainOutput) {
    for (int32_t k : {1, 3, 5}) {
        const std::vector<Req> reqs = greedy_requests(1, 100 + uint32_t(k));
        const RunResult plain = run_all(reqs, EngineConfig{});
        const RunResult spec = run_all(reqs, with_ngram(EngineConfig{}, k));
        expect_same(plain, spec);
        test::FakeRunner ref(k_vocab, 512, 1, 4);
        ref.set_copy_period(7);
        EXPECT_EQ(spec.outs[0].tokens, ref.greedy(reqs[0].prompt, *reqs[0].params.max_tokens, k_vocab));
        EXPECT_GT(spec.stats.spec_proposed, 0) << "k " << k;
        EXPECT_GT(acceptance(spec.stats), 0.1) << "k " << k;
        EXPECT_LT(acceptance(spec.stats), 0.9) << "k " << k;
        EXPECT_LT(spec.stats.steps, plain.stats.steps) << "k " << k;
    }
}

TEST(EngineSpeculative, MixedBatchOfSixteenWithChunkedPrefillIsUnchanged) {
    for (int32_t k : {1, 3, 5}) {
        EngineConfig cfg;
        cfg.max_num_seqs = 16;
        cfg.max_batched_tokens = 24;  // prompts go in chunks beside verification rows
        std::vector<Req> reqs = greedy_requests(16, 200 + uint32_t(k));
        for (size_t i = 0; i < reqs.size(); i += 4) reqs[i].speculative = false;  // the per-request switch
        for (size_t i = 1; i < reqs.size(); i += 5) reqs[i].params.stop_token_ids = {int32_t(i * 3 % k_vocab)};
        const RunResult plain = run_all(reqs, cfg);
        const RunResult spec = run_all(reqs, with_ngram(cfg, k));
        expect_same(plain, spec);
        EXPECT_GT(acceptance(spec.stats), 0.1) << "k " << k;
        EXPECT_LT(acceptance(spec.stats), 0.9) << "k " << k;
    }
}

TEST(EngineSpeculative, SeededSampledRequestsDrawTheirPlainTokens) {
    for (int32_t k : {1, 3, 5}) {
        EngineConfig cfg;
        cfg.max_num_seqs = 16;
        std::mt19937 rng(300 + uint32_t(k));
        std::vector<Req> reqs(16);
        for (size_t i = 0; i < reqs.size(); ++i) {
            reqs[i].prompt = random_prompt(rng, 6 + int(i) * 3);
            reqs[i].params.temperature = 0.7f;
            reqs[i].params.top_p = i % 2 ? 0.9f : 1.0f;
            reqs[i].params.top_k = i % 3 ? 0 : 10;
            reqs[i].params.seed = 1000 + i;
            reqs[i].params.max_tokens = 40;
            reqs[i].params.logprobs = i % 4 == 0 ? 2 : 0;
            if (i % 5 == 2) reqs[i].params.frequency_penalty = 0.5f;  // penalties see the accepted history
            if (i % 5 == 3) reqs[i].params.repetition_penalty = 1.2f;
        }
        const RunResult plain = run_all(reqs, cfg);
        const RunResult spec = run_all(reqs, with_ngram(cfg, k));
        expect_same(plain, spec);
        EXPECT_GT(acceptance(spec.stats), 0.1) << "k " << k;
        EXPECT_LT(acceptance(spec.stats), 0.9) << "k " << k;
    }
}

TEST(EngineSpeculative, PreemptionUnderAFullCacheKeepsOutputsExact) {
    EngineConfig cfg;
    cfg.max_num_seqs = 16;
    cfg.prefix_caching = false;
    const std::vector<Req> reqs = greedy_requests(16, 400);
    const RunResult plain = run_all(reqs, cfg, 40);
    const RunResult spec = run_all(reqs, with_ngram(cfg, 5), 40);
    expect_same(plain, spec);
    EXPECT_GT(spec.stats.preemptions, 0);
    EXPECT_GT(spec.stats.spec_accepted, 0);
}

// 1000 requests (greedy and sampled, some cancelled mid-generation, some while queued) through a
// small cache; returns the engine's counters at the end.
EngineStats thousand_requests_with_cancels(EngineConfig cfg, std::optional<DraftSpec> draft, uint32_t seed) {
    cfg.max_num_seqs = 16;
    cfg.max_queued = 2000;
    cfg.max_batched_tokens = 32;
    SpecEngine e(96, 4, cfg, draft);
    std::mt19937 rng(seed);
    std::vector<Outcome> outs(1000);
    std::vector<uint64_t> ids;
    for (size_t i = 0; i < outs.size(); ++i) {
        Req q;
        q.prompt = random_prompt(rng, 3 + int(i % 13));
        q.params.temperature = i % 2 ? 0.0f : 0.9f;
        q.params.seed = i;
        q.params.max_tokens = 5 + int(i % 17);
        ids.push_back(e.submit(q, &outs[i]));
        if (i % 8 == 7) {
            e.engine().step();
            e.engine().step();
            e.engine().cancel(ids[i - 3]);  // some mid-generation, some still queued
        }
    }
    e.run_until_done(outs);
    return e.engine().stats();
}

TEST(EngineSpeculative, AThousandRequestsWithCancelsLeaveEveryBlockFree) {
    const EngineStats s = thousand_requests_with_cancels(with_ngram(EngineConfig{}, 4), std::nullopt, 500);
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
    EXPECT_GT(s.finished_cancelled, 0);
    EXPECT_GT(s.spec_accepted, 0);
    EXPECT_LT(s.spec_accepted, s.spec_proposed);
}

TEST(EngineSpeculative, ProposalsStopAtTheContextEnd) {
    EngineConfig cfg = with_ngram(EngineConfig{}, 5);
    cfg.max_context = 40;
    std::vector<Req> reqs = greedy_requests(4, 600);
    for (Req& q : reqs) q.params.max_tokens.reset();
    EngineConfig plain_cfg;
    plain_cfg.max_context = 40;
    const RunResult plain = run_all(reqs, plain_cfg);
    const RunResult spec = run_all(reqs, cfg);
    expect_same(plain, spec);
    for (size_t i = 0; i < reqs.size(); ++i)
        EXPECT_EQ(int64_t(reqs[i].prompt.size() + spec.outs[i].tokens.size()), 40) << "request " << i;
}

// The draft method: the draft runs ahead on its own cache (catching up over whole prompts, within
// the step's token budget), its rejected proposals' slots are rolled back; the output never changes.
TEST(EngineSpeculativeDraft, GreedyMixedBatchesWithChunkedPrefillAreUnchanged) {
    for (int32_t k : {1, 3, 5}) {
        EngineConfig cfg;
        cfg.max_num_seqs = 16;
        cfg.max_batched_tokens = 24;  // prompts reach the draft over several steps too
        std::vector<Req> reqs = greedy_requests(16, 700 + uint32_t(k));
        for (size_t i = 0; i < reqs.size(); i += 4) reqs[i].speculative = false;
        for (size_t i = 1; i < reqs.size(); i += 5) reqs[i].params.stop_token_ids = {int32_t(i * 3 % k_vocab)};
        const RunResult plain = run_all(reqs, cfg);
        const RunResult spec = run_all(reqs, with_draft(cfg, k), 512, DraftSpec{});
        expect_same(plain, spec);
        EXPECT_GT(spec.stats.draft_steps, 0) << "k " << k;
        EXPECT_GT(acceptance(spec.stats), 0.1) << "k " << k;
        EXPECT_LT(acceptance(spec.stats), 0.9) << "k " << k;
        // Alone, too.
        const std::vector<Req> one(reqs.begin() + 1, reqs.begin() + 2);
        expect_same(run_all(one, cfg), run_all(one, with_draft(cfg, k), 512, DraftSpec{}));
    }
}

TEST(EngineSpeculativeDraft, SeededSampledRequestsDrawTheirPlainTokens) {
    for (int32_t k : {1, 3, 5}) {
        EngineConfig cfg;
        cfg.max_num_seqs = 16;
        std::mt19937 rng(800 + uint32_t(k));
        std::vector<Req> reqs(16);
        for (size_t i = 0; i < reqs.size(); ++i) {
            reqs[i].prompt = random_prompt(rng, 6 + int(i) * 3);
            reqs[i].params.temperature = 0.7f;
            reqs[i].params.top_p = i % 2 ? 0.9f : 1.0f;
            reqs[i].params.seed = 2000 + i;
            reqs[i].params.max_tokens = 40;
            reqs[i].params.logprobs = i % 4 == 0 ? 2 : 0;
            if (i % 5 == 2) reqs[i].params.frequency_penalty = 0.5f;
        }
        const RunResult plain = run_all(reqs, cfg);
        const RunResult spec = run_all(reqs, with_draft(cfg, k), 512, DraftSpec{});
        expect_same(plain, spec);
        EXPECT_GT(acceptance(spec.stats), 0.1) << "k " << k;
        EXPECT_LT(acceptance(spec.stats), 0.9) << "k " << k;
    }
}

// A draft equal to the target proposes exactly the target's greedy tokens, so every proposal is
// accepted only if the draft's cache holds the right tokens after every rollback and catch-up (the
// fake model reads its history back from its slots): acceptance is then exactly 1.
TEST(EngineSpeculativeDraft, ADraftEqualToTheTargetHasEveryProposalAccepted) {
    EngineConfig cfg;
    cfg.max_num_seqs = 16;
    cfg.max_batched_tokens = 24;
    const std::vector<Req> reqs = greedy_requests(16, 900);
    const RunResult plain = run_all(reqs, cfg);
    const RunResult spec = run_all(reqs, with_draft(cfg, 4), 512, DraftSpec{0, 512});
    expect_same(plain, spec);
    EXPECT_GT(spec.stats.spec_proposed, 100);
    EXPECT_EQ(spec.stats.spec_accepted, spec.stats.spec_proposed);
    EXPECT_LT(spec.stats.steps, plain.stats.steps);
}

// Preemption frees both caches; a draft cache too small for the batch leaves some sequences
// without proposals, never with another output.
TEST(EngineSpeculativeDraft, PreemptionAndAFullDraftCacheKeepOutputsExact) {
    EngineConfig cfg;
    cfg.max_num_seqs = 16;
    cfg.prefix_caching = false;
    const std::vector<Req> reqs = greedy_requests(16, 1000);
    const RunResult plain = run_all(reqs, cfg, 40);
    const RunResult spec = run_all(reqs, with_draft(cfg, 5), 40, DraftSpec{1, 512});
    expect_same(plain, spec);
    EXPECT_GT(spec.stats.preemptions, 0);
    EXPECT_GT(spec.stats.spec_accepted, 0);
    const RunResult small = run_all(reqs, with_draft(cfg, 3), 512, DraftSpec{1, 12});
    expect_same(plain, small);
    EXPECT_GT(small.stats.spec_accepted, 0);
}

TEST(EngineSpeculativeDraft, AThousandRequestsWithCancelsLeaveBothCachesFree) {
    const EngineStats s = thousand_requests_with_cancels(with_draft(EngineConfig{}, 4), DraftSpec{1, 96}, 1100);
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.draft_kv_blocks_used, 0);
    EXPECT_EQ(s.draft_kv_blocks_total, 96);
    EXPECT_GT(s.finished_cancelled, 0);
    EXPECT_GT(s.spec_accepted, 0);
    EXPECT_LT(s.spec_accepted, s.spec_proposed);
}

// A sink that throws under speculation ends only its own request, with the reason, as without it.
TEST(EngineSpeculativeDraft, AThrowingSinkEndsOnlyItsRequest) {
    for (auto method : {SpeculativeConfig::Method::Ngram, SpeculativeConfig::Method::Draft}) {
        EngineConfig cfg;
        cfg.speculative.method = method;
        cfg.speculative.k = 4;
        SpecEngine e(512, 4, cfg, DraftSpec{});
        const std::vector<Req> reqs = greedy_requests(3, 1200);
        std::vector<Outcome> outs(3);
        FinishReason bad_reason = FinishReason::Stop;
        std::string bad_error;
        int bad_tokens = 0;
        EngineRequest r;
        r.prompt = reqs[0].prompt;
        r.params = reqs[0].params;
        e.engine().submit(std::move(r), [&](const Event& ev) {
            if (ev.kind == Event::Kind::Finished) {
                bad_reason = ev.reason;
                bad_error = ev.error;
                return;
            }
            if (++bad_tokens == 5) throw std::runtime_error("client transport broke");
        });
        e.submit(reqs[1], &outs[1]);
        e.submit(reqs[2], &outs[2]);
        outs[0].done = true;
        e.run_until_done(outs);
        EXPECT_EQ(bad_reason, FinishReason::Error);
        EXPECT_NE(bad_error.find("client transport broke"), std::string::npos) << bad_error;
        EXPECT_EQ(bad_tokens, 5);
        const RunResult plain = run_all({reqs[1], reqs[2]}, EngineConfig{});
        EXPECT_EQ(outs[1].tokens, plain.outs[0].tokens);
        EXPECT_EQ(outs[2].tokens, plain.outs[1].tokens);
    }
}

// Rejection sampling (opt-in, draft method): over many seeds, the first verified token follows the
// target's distribution p although the proposals come from a different q; accepting by a wrong rule
// makes the same chi-square test fail. The target here is context-free (every row the same logits),
// so each position's distribution is p.
double chi_square_first_token(AcceptRule rule, int k) {
    constexpr int64_t V = 8;
    const std::vector<float> logits = {0.3f, 1.2f, -0.5f, 2.0f, 0.0f, 1.7f, -1.0f, 0.9f};
    const std::vector<double> q = {0.30, 0.05, 0.10, 0.05, 0.20, 0.05, 0.20, 0.05};
    sampling::SamplingParams params;
    params.temperature = 1.0f;
    sampling::Sampler sampler;
    std::vector<double> p;
    sampler.distribution(logits, V, {}, params, p);
    std::vector<float> rows;
    for (int j = 0; j <= k; ++j) rows.insert(rows.end(), logits.begin(), logits.end());
    std::vector<double> qs;
    for (int j = 0; j < k; ++j) qs.insert(qs.end(), q.begin(), q.end());
    const std::vector<int32_t> prompt = {1, 2, 3};
    constexpr int n = 20000;
    std::vector<int64_t> counts(V, 0);
    std::vector<sampling::SampleResult> out;
    for (int i = 0; i < n; ++i) {
        const sampling::RngStream rng{uint64_t(i) * 7919 + 13, 0};
        std::vector<int32_t> proposals;
        for (int j = 0; j < k; ++j) proposals.push_back(draw_inverse_cdf(q, spec_uniform(rng, SpecDraw::Draft, j)));
        out.clear();
        verify_rejection(sampler, rows, V, V, prompt, {}, proposals, qs, params, rng, out, rule);
        ++counts[size_t(out[0].id)];
    }
    double chi2 = 0;
    for (int64_t t = 0; t < V; ++t) {
        const double expected = p[size_t(t)] * n;
        chi2 += (double(counts[size_t(t)]) - expected) * (double(counts[size_t(t)]) - expected) / expected;
    }
    return chi2;
}

TEST(RejectionSampling, FirstTokenFollowsTheTargetDistribution) {
    constexpr double critical = 24.32;  // chi-square, 7 degrees of freedom, p = 0.001
    for (int k : {1, 3}) {
        const double ok = chi_square_first_token(accept_min_ratio, k);
        EXPECT_LT(ok, critical) << "k " << k;
        const double always = chi_square_first_token([](double, double) { return 1.0; }, k);
        EXPECT_GT(always, critical) << "accepting every proposal must fail, k " << k;
        const double by_p = chi_square_first_token([](double p, double) { return p; }, k);
        EXPECT_GT(by_p, critical) << "accepting with probability p must fail, k " << k;
        std::printf("k %d: chi-square %.1f (min(1, p/q)), %.1f (always), %.1f (p); critical %.2f\n", k, ok, always,
                    by_p, critical);
    }
}

// In the engine: a seeded sampled request gives the same tokens alone and in any batch (its steps
// carry its own k proposals whatever the load, preemption included); greedy requests are still
// the plain output; both caches are free afterwards.
TEST(RejectionSampling, SeededOutputsDependOnTheRequestAlone) {
    EngineConfig cfg = with_draft(EngineConfig{}, 3);
    cfg.speculative.rejection_sampling = true;
    cfg.max_num_seqs = 16;
    cfg.max_batched_tokens = 64;
    cfg.prefix_caching = false;
    std::mt19937 rng(1300);
    std::vector<Req> reqs(16);
    for (size_t i = 0; i < reqs.size(); ++i) {
        reqs[i].prompt = random_prompt(rng, 5 + int(i) * 2);
        reqs[i].params.temperature = i % 4 == 3 ? 0.0f : 0.9f;
        reqs[i].params.top_p = i % 2 ? 0.95f : 1.0f;
        reqs[i].params.seed = 3000 + i;
        reqs[i].params.max_tokens = 30;
        if (i % 5 == 1) reqs[i].params.presence_penalty = 0.4f;
    }
    const RunResult batch = run_all(reqs, cfg, 512, DraftSpec{});
    const RunResult tight = run_all(reqs, cfg, 48, DraftSpec{1, 64});  // preemptions
    EXPECT_GT(tight.stats.preemptions, 0);
    const RunResult plain = run_all(reqs, EngineConfig{});
    for (size_t i = 0; i < reqs.size(); ++i) {
        const RunResult alone = run_all({reqs[i]}, cfg, 512, DraftSpec{});
        EXPECT_EQ(batch.outs[i].tokens, alone.outs[0].tokens) << "request " << i;
        EXPECT_EQ(tight.outs[i].tokens, alone.outs[0].tokens) << "request " << i;
        EXPECT_EQ(batch.outs[i].tokens.size(), 30u) << "request " << i;
        EXPECT_TRUE(batch.outs[i].indices_contiguous) << "request " << i;
        if (reqs[i].params.greedy()) {
            EXPECT_EQ(batch.outs[i].tokens, plain.outs[i].tokens) << "request " << i;
        }
    }
    EXPECT_GT(acceptance(batch.stats), 0.1);
    EXPECT_LT(acceptance(batch.stats), 0.9);
}

TEST(RejectionSampling, NeedsTheDraftMethodAndABudgetForEveryVerification) {
    EngineConfig ngram = with_ngram(EngineConfig{}, 3);
    ngram.speculative.rejection_sampling = true;
    EXPECT_THROW(SpecEngine(64, 4, ngram, DraftSpec{}), Error);
    EngineConfig small = with_draft(EngineConfig{}, 3);
    small.speculative.rejection_sampling = true;
    small.max_num_seqs = 16;
    small.max_batched_tokens = 63;  // < 16 x 4
    EXPECT_THROW(SpecEngine(64, 4, small, DraftSpec{}), Error);
}

}  // namespace
}  // namespace phi::engine
