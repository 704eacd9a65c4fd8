// The engine under mpirun -np 1 and 2 on tiny fixtures: a request's tokens are the same alone and
// in a batch of 32 joining at different steps, under preemption, with prefix-cache hits, with
// chunked prefill, seeded sampling alone and batched, and across TP sizes; cancelling frees blocks.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "cluster/mpi_communicator.h"
#include "cluster/step_plan.h"
#include "coordinator/engine/engine.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/load_model.h"

namespace phi::engine {
namespace {

// Loads a fixture on every rank; rank 0 gets an engine, the others follow its plans.
class Harness {
public:
    Harness(const std::string& fixture, int64_t kv_blocks, int64_t block_size, EngineConfig cfg = {},
            Communicator* comm = nullptr)
    {
        if (comm == nullptr) {
            mpi_ = std::make_unique<MpiCommunicator>();
            mpi_->set_timeout(std::chrono::milliseconds(60000));
            comm = mpi_.get();
        }
        comm_ = comm;
        const test::Golden g = test::load_golden(fixture);
        ModelOptions opts;
        opts.isa = kernels::cpu::choose_isa();
        opts.kv = KvCacheConfig{kv_blocks, block_size};
        model_ = load_model(test::fixture_dir(fixture), *comm_, opts);
        WatchdogOptions wd;
        wd.plan_wait = std::chrono::milliseconds(60000);
        exec_ = std::make_unique<StepExecutor>(*model_, *comm_, wd);
        cfg.vocab_limit = g.tokenizer_size;
        if (comm_->rank() == 0) engine_ = std::make_unique<Engine>(*exec_, cfg);
        vocab_limit_ = g.tokenizer_size;
    }
    ~Harness() { finish(); }
    /// Rank 0: releases the followers (they return from follow()).
    void finish() {
        if (comm_->rank() == 0 && !finished_) exec_->shutdown();
        finished_ = true;
    }
    bool leader() const { return comm_->rank() == 0; }
    void follow() { exec_->follow(); }
    Engine& engine() { return *engine_; }
    int64_t vocab_limit() const { return vocab_limit_; }

private:
    std::unique_ptr<MpiCommunicator> mpi_;
    Communicator* comm_ = nullptr;
    bool finished_ = false;
    std::unique_ptr<PhiModel> model_;
    std::unique_ptr<StepExecutor> exec_;
    std::unique_ptr<Engine> engine_;
    int64_t vocab_limit_ = 0;
};

struct Outcome {
    std::vector<int32_t> tokens;
    FinishReason reason = FinishReason::Error;
    bool done = false;
    int64_t cached = 0;  // prompt tokens served from the prefix cache
    bool operator==(const Outcome& o) const { return tokens == o.tokens && reason == o.reason; }
};

std::vector<EngineRequest> make_requests(int n, int64_t vocab, int max_tokens, bool sampled) {
    std::mt19937 rng(2024);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
    std::vector<EngineRequest> reqs;
    const std::vector<int32_t> shared = {5, 17, 33, 2, 9, 41, 7, 11, 3, 19, 23, 29};  // common prefix for some
    for (int i = 0; i < n; ++i) {
        EngineRequest r;
        if (i % 4 == 0) r.prompt = shared;
        const int len = 1 + (i * 7) % 23;
        for (int k = 0; k < len; ++k) r.prompt.push_back(tok(rng) % int32_t(vocab));
        r.params.max_tokens = max_tokens;
        if (sampled) {
            r.params.temperature = 0.9f;
            r.params.top_p = 0.95f;
            r.params.top_k = 50;
            r.params.seed = 1000 + i;
        } else {
            r.params.temperature = 0.0f;
        }
        reqs.push_back(r);
    }
    return reqs;
}

// Submits requests[i] at step `join_step(i)` and steps until all finished.
std::vector<Outcome> run_all(Engine& e, const std::vector<EngineRequest>& reqs, int per_step_join) {
    std::vector<Outcome> out(reqs.size());
    size_t next = 0;
    int guard = 0;
    auto all_done = [&] { return std::all_of(out.begin(), out.end(), [](const Outcome& o) { return o.done; }); };
    while (!all_done()) {
        for (int k = 0; k < per_step_join && next < reqs.size(); ++k, ++next) {
            const size_t i = next;
            e.submit(reqs[i], [&out, i](const Event& ev) {
                if (ev.kind == Event::Kind::Token) out[i].tokens.push_back(ev.token);
                if (ev.kind == Event::Kind::Finished) {
                    out[i].reason = ev.reason;
                    out[i].done = true;
                    out[i].cached = ev.cached_prompt_tokens;
                }
            });
        }
        e.step();
        EXPECT_LT(++guard, 100000) << "engine made no progress";
        if (guard >= 100000) break;
    }
    return out;
}

std::vector<Outcome> solo(Engine& e, const std::vector<EngineRequest>& reqs) {
    std::vector<Outcome> out;
    for (const auto& r : reqs) out.push_back(run_all(e, {r}, 1)[0]);
    return out;
}

TEST(Engine, BatchOf32EqualsSolo) {
    EngineConfig cfg;
    cfg.max_num_seqs = 32;
    cfg.max_batched_tokens = 64;
    Harness h("phi3_mini_4k_swa", 512, 4, cfg);
    if (!h.leader()) return h.follow();
    const auto reqs = make_requests(32, h.vocab_limit(), 10, false);
    const auto alone = solo(h.engine(), reqs);
    const auto batched = run_all(h.engine(), reqs, 3);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(batched[i], alone[i]) << "request " << i;
    EXPECT_EQ(h.engine().stats().kv_blocks_used, 0);
}

TEST(Engine, PreemptionRecomputesExactly) {
    EngineConfig cfg;
    cfg.max_num_seqs = 16;
    cfg.max_batched_tokens = 48;
    cfg.prefix_caching = false;
    Harness h("phi1", 40, 4, cfg);  // too few blocks for 16 sequences of ~30 tokens
    if (!h.leader()) return h.follow();
    const auto reqs = make_requests(16, h.vocab_limit(), 12, false);
    const auto alone = solo(h.engine(), reqs);
    const auto batched = run_all(h.engine(), reqs, 16);
    EXPECT_GT(h.engine().stats().preemptions, 0);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(batched[i], alone[i]) << "request " << i;
}

TEST(Engine, PrefixCacheHitsGiveColdOutputs) {
    EngineConfig warm_cfg;
    warm_cfg.prefix_caching = true;
    Harness h("phi4_mini", 256, 4, warm_cfg);
    if (!h.leader()) return h.follow();
    auto reqs = make_requests(12, h.vocab_limit(), 8, false);
    const auto first = run_all(h.engine(), reqs, 12);  // fills the cache
    const auto second = solo(h.engine(), reqs);        // hits it
    EXPECT_GT(h.engine().stats().prefix_cache_hits, 0);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(second[i], first[i]) << "request " << i;
}

TEST(Engine, ChunkedPrefillEqualsOnePrefill) {
    EngineConfig chunked_cfg;
    chunked_cfg.prefix_caching = false;
    chunked_cfg.max_batched_tokens = 5;  // every prompt longer than 5 tokens goes in several chunks
    EngineConfig whole_cfg;
    whole_cfg.prefix_caching = false;
    whole_cfg.max_batched_tokens = 4096;
    Harness a("phi4_mini", 256, 4, chunked_cfg);
    if (!a.leader()) {
        a.follow();
        Harness b("phi4_mini", 256, 4, whole_cfg);
        return b.follow();
    }
    const auto reqs = make_requests(12, a.vocab_limit(), 8, false);
    const auto chunked = run_all(a.engine(), reqs, 12);
    a.finish();
    Harness b("phi4_mini", 256, 4, whole_cfg);
    const auto whole = solo(b.engine(), reqs);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(chunked[i], whole[i]) << "request " << i;
}

// N-gram speculative decoding (issue 20) on every golden fixture: greedy and seeded-sampled
// requests, alone and 16 at a time with chunked prefill beside verification steps, give the tokens
// they give without speculation, for k in {1, 3, 5}, at TP 1 and 2. phi3_128k_longrope's requests
// cross original_max_position_embeddings (16), so the LongRoPE cut of proposals runs too.
TEST(Engine, NgramSpeculationGivesThePlainTokensOnEveryFixture) {
    for (const char* fixture : {"phi1", "phi2_qkln", "phi3_128k_longrope", "phi3_mini_4k_swa",
                                "phi3_rope_params", "phi4_mini", "phi_40q10kv", "phimoe"}) {
        std::vector<std::vector<Outcome>> plain;  // this fixture's k = 0 results (rank 0)
        for (int32_t k : {0, 1, 3, 5}) {
            EngineConfig cfg;
            cfg.max_num_seqs = 16;
            cfg.max_batched_tokens = 40;
            if (k > 0) {
                cfg.speculative.method = SpeculativeConfig::Method::Ngram;
                cfg.speculative.k = k;
            }
            Harness h(fixture, 256, 4, cfg);
            if (!h.leader()) {
                h.follow();
                continue;
            }
            std::vector<EngineRequest> reqs = make_requests(16, h.vocab_limit(), 20, false);
            const std::vector<EngineRequest> sampled = make_requests(16, h.vocab_limit(), 20, true);
            for (size_t i = 1; i < reqs.size(); i += 2) reqs[i] = sampled[i];
            std::vector<std::vector<Outcome>> got = {run_all(h.engine(), reqs, 16),
                                                     solo(h.engine(), {reqs[0], reqs[1]})};
            const EngineStats s = h.engine().stats();
            if (k == 0) {
                plain = got;
                continue;
            }
            for (size_t g = 0; g < got.size(); ++g)
                for (size_t i = 0; i < got[g].size(); ++i)
                    EXPECT_EQ(got[g][i], plain[g][i]) << fixture << " k " << k << " run " << g << " request " << i;
            EXPECT_GT(s.spec_proposed, 0) << fixture << " k " << k;
            EXPECT_GT(s.spec_accepted, 0) << fixture << " k " << k;
            EXPECT_LT(s.spec_accepted, s.spec_proposed) << fixture << " k " << k;
            std::printf("%s k %d: acceptance %.3f (%lld of %lld)\n", fixture, k,
                        double(s.spec_accepted) / double(s.spec_proposed), (long long)s.spec_accepted,
                        (long long)s.spec_proposed);
        }
    }
}

TEST(Engine, SeededSamplingAloneEqualsBatched) {
    Harness h("phimoe", 256, 4);
    if (!h.leader()) return h.follow();
    const auto reqs = make_requests(12, h.vocab_limit(), 10, true);
    const auto alone = solo(h.engine(), reqs);
    const auto batched = run_all(h.engine(), reqs, 4);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(batched[i], alone[i]) << "request " << i;
}

TEST(Engine, CancelFreesBlocksAtTheNextStep) {
    Harness h("phi2_qkln", 64, 4);
    if (!h.leader()) return h.follow();
    Engine& e = h.engine();
    EngineRequest r;
    r.prompt = {1, 2, 3, 4, 5, 6, 7};
    r.params.temperature = 0;
    r.params.max_tokens = 100;
    Outcome o;
    const uint64_t id = e.submit(r, [&](const Event& ev) {
        if (ev.kind == Event::Kind::Token) o.tokens.push_back(ev.token);
        if (ev.kind == Event::Kind::Finished) {
            o.reason = ev.reason;
            o.done = true;
        }
    });
    for (int i = 0; i < 4; ++i) e.step();
    EXPECT_GT(e.stats().kv_blocks_used, 0);
    e.cancel(id);
    e.step();
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.reason, FinishReason::Cancelled);
    EXPECT_EQ(e.stats().kv_blocks_used, 0);
    EXPECT_EQ(e.stats().finished_cancelled, 1);
}

TEST(Engine, RefusesWhatCanNeverRunAndWhenFull) {
    EngineConfig cfg;
    cfg.max_queued = 2;
    cfg.max_context = 20;
    Harness h("phi1", 8, 4, cfg);
    if (!h.leader()) return h.follow();
    Engine& e = h.engine();
    EngineRequest r;
    r.prompt.assign(25, 1);
    EXPECT_THROW(e.submit(r, nullptr), SubmitError);  // longer than the context
    r.prompt = {1, 2};
    r.params.top_p = 1.5f;
    EXPECT_THROW(e.submit(r, nullptr), SubmitError);  // invalid parameter
    r.params.top_p = 1.0f;
    e.submit(r, nullptr);
    e.submit(r, nullptr);
    try {
        e.submit(r, nullptr);
        ADD_FAILURE() << "third request was admitted past max_queued";
    } catch (const SubmitError& err) {
        EXPECT_EQ(err.kind, SubmitError::Kind::Overloaded);
    }
    e.abort_all(FinishReason::Cancelled, "test over");
}

EngineRequest greedy_request(std::vector<int32_t> prompt, int max_tokens, std::string salt = "") {
    EngineRequest r;
    r.prompt = std::move(prompt);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.cache_salt = std::move(salt);
    return r;
}

TEST(Engine, CacheSaltSeparatesPrefixCaches) {
    Harness h("phi4_mini", 64, 4);
    if (!h.leader()) return h.follow();
    const std::vector<int32_t> prompt = {5, 17, 33, 2, 9, 41, 7, 11, 3, 19, 23, 29, 31};  // 3 full blocks + 1
    auto cached = [&](const std::string& salt) {
        return run_all(h.engine(), {greedy_request(prompt, 2, salt)}, 1)[0].cached;
    };
    EXPECT_EQ(cached(""), 0);
    EXPECT_EQ(cached(""), 12);  // the shared cache works
    EXPECT_EQ(cached("tenant-a"), 0);
    EXPECT_EQ(cached("tenant-a"), 12);
    EXPECT_EQ(cached("tenant-b"), 0);
    EXPECT_EQ(cached(""), 12);
}

// Keys computed with LongRoPE's short factors are never reused for a sequence that needs the long
// ones (original_max_position_embeddings is 16 in this fixture).
TEST(Engine, PrefixCacheKeyIncludesTheRopeMode) {
    Harness h("phi3_128k_longrope", 64, 4);
    if (!h.leader()) return h.follow();
    std::vector<int32_t> short_prompt = {5, 17, 33, 2, 9, 41, 7, 11, 3};
    std::vector<int32_t> long_prompt = short_prompt;
    for (int32_t t = 50; long_prompt.size() < 20; ++t) long_prompt.push_back(t);
    EXPECT_EQ(run_all(h.engine(), {greedy_request(short_prompt, 1)}, 1)[0].cached, 0);
    EXPECT_EQ(run_all(h.engine(), {greedy_request(short_prompt, 1)}, 1)[0].cached, 8);
    EXPECT_EQ(run_all(h.engine(), {greedy_request(long_prompt, 1)}, 1)[0].cached, 0);
}

// The 64-bit FNV-1a the prefix cache used to key blocks by (chained from 0, then the RoPE mode).
uint64_t old_block_hash(const std::vector<int32_t>& block) {
    const uint64_t previous = 0;
    uint64_t h = fnv1a(&previous, sizeof(previous));
    h = fnv1a(block.data(), block.size() * sizeof(int32_t), h);
    const uint8_t mode = 0;
    return fnv1a(&mode, 1, h);
}

// Two 8-token blocks with equal old keys, found with a distinguished-point collision search
// (2^32 hash evaluations; the note of issue 14 has the program). A client that sends raw token ids
// could use such a pair to be handed K/V another client computed.
TEST(Engine, PrefixCacheIsNotFooledByA64BitHashCollision) {
    const std::vector<int32_t> block_a = {55, 138, 26, 187, 175, 144, 124, 252};
    const std::vector<int32_t> block_b = {51, 249, 149, 202, 69, 88, 10, 17};
    ASSERT_NE(block_a, block_b);
    ASSERT_EQ(old_block_hash(block_a), old_block_hash(block_b));
    EngineConfig cold_cfg;
    cold_cfg.prefix_caching = false;
    Harness h("phi3_mini_4k_swa", 64, 8);
    if (!h.leader()) {
        h.follow();
        Harness cold("phi3_mini_4k_swa", 64, 8, cold_cfg);
        return cold.follow();
    }
    const std::vector<int32_t> tail = {5, 17, 33, 2};
    std::vector<int32_t> prompt_a = block_a, prompt_b = block_b;
    prompt_a.insert(prompt_a.end(), tail.begin(), tail.end());
    prompt_b.insert(prompt_b.end(), tail.begin(), tail.end());
    const Outcome a = run_all(h.engine(), {greedy_request(prompt_a, 8)}, 1)[0];
    const Outcome b = run_all(h.engine(), {greedy_request(prompt_b, 8)}, 1)[0];
    EXPECT_EQ(run_all(h.engine(), {greedy_request(prompt_a, 8)}, 1)[0].cached, 8);  // the cache is on
    EXPECT_EQ(b.cached, 0) << "the second prompt reused the first one's cached block";
    h.finish();
    Harness cold("phi3_mini_4k_swa", 64, 8, cold_cfg);
    EXPECT_EQ(run_all(cold.engine(), {greedy_request(prompt_b, 8)}, 1)[0], b);
    EXPECT_EQ(run_all(cold.engine(), {greedy_request(prompt_a, 8)}, 1)[0], a);
}

// Issue 13: what can never fit the KV cache is refused at admission; a sequence without max_tokens
// ends with `length` exactly where the next step would need more blocks than the whole cache, alone
// or among other traffic, and what was queued behind it runs.
TEST(Engine, RefusesWhatCanNeverFitTheCacheAndEndsAtTheWholeCache) {
    EngineConfig cfg;
    cfg.max_num_seqs = 4;
    cfg.max_batched_tokens = 16;
    cfg.prefix_caching = false;
    Harness h("phi1", 8, 4, cfg);  // 32 token slots; the model's context is far longer
    if (!h.leader()) return h.follow();
    Engine& e = h.engine();
    EXPECT_EQ(e.max_sequence_tokens(), 33);
    EngineRequest r;
    r.prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    r.params.temperature = 0;
    r.params.max_tokens = 24;  // 34 tokens: one more than the cache can ever hold
    try {
        e.submit(r, nullptr);
        ADD_FAILURE() << "a request that can never fit the KV cache was admitted";
    } catch (const SubmitError& err) {
        EXPECT_EQ(err.kind, SubmitError::Kind::Invalid);
        EXPECT_EQ(err.param, "max_tokens");
        EXPECT_NE(std::string(err.what()).find("at most 23"), std::string::npos) << err.what();
    }
    r.params.max_tokens = 23;  // exactly fits
    const auto fits = run_all(e, {r}, 1);
    EXPECT_EQ(fits[0].reason, FinishReason::Length);
    EXPECT_EQ(fits[0].tokens.size(), 23u);

    r.params.max_tokens.reset();  // grows until the whole cache is its
    const auto alone = run_all(e, {r}, 1);
    EXPECT_EQ(alone[0].reason, FinishReason::Length);
    EXPECT_EQ(alone[0].tokens.size(), 23u);
    EXPECT_EQ(alone[0].tokens, fits[0].tokens);
    // Among other traffic (which preempts it for blocks) its output is the same, and the requests
    // queued behind it all finish.
    auto others = make_requests(6, h.vocab_limit(), 6, false);
    std::vector<EngineRequest> mixed = {r};
    mixed.insert(mixed.end(), others.begin(), others.end());
    const auto together = run_all(e, mixed, 7);
    EXPECT_EQ(together[0], alone[0]);
    for (size_t i = 1; i < together.size(); ++i) EXPECT_EQ(together[i].reason, FinishReason::Length) << i;
    EXPECT_EQ(e.stats().kv_blocks_used, 0);
}

// Issue 13: an exception in one request's sink (rank 0's own output handling) ends that request with
// an error; the step goes on and the other requests are untouched.
TEST(Engine, SinkExceptionEndsOnlyItsRequest) {
    Harness h("phi1", 64, 4);
    if (!h.leader()) return h.follow();
    Engine& e = h.engine();
    const auto reqs = make_requests(3, h.vocab_limit(), 8, false);
    const auto alone = solo(e, reqs);
    std::vector<Outcome> out(reqs.size());
    std::string error;
    int finished_calls = 0;
    for (size_t i = 0; i < reqs.size(); ++i)
        e.submit(reqs[i], [&, i](const Event& ev) {
            if (i == 1 && ev.kind == Event::Kind::Token && ev.index == 2) throw std::runtime_error("detokenizer broke");
            if (i == 2 && ev.kind == Event::Kind::Finished) {
                ++finished_calls;
                throw std::runtime_error("transport broke at the end");
            }
            if (ev.kind == Event::Kind::Token) out[i].tokens.push_back(ev.token);
            if (ev.kind == Event::Kind::Finished) {
                out[i].reason = ev.reason;
                out[i].done = true;
                if (i == 1) error = ev.error;
            }
        });
    int guard = 0;
    do {
        ASSERT_NO_THROW(e.step());
    } while (!e.idle() && ++guard < 1000);
    EXPECT_TRUE(e.idle());
    EXPECT_EQ(out[0], alone[0]);
    EXPECT_EQ(out[1].reason, FinishReason::Error);
    EXPECT_NE(error.find("detokenizer broke"), std::string::npos) << error;
    EXPECT_EQ(out[1].tokens, std::vector<int32_t>(alone[1].tokens.begin(), alone[1].tokens.begin() + 2));
    EXPECT_EQ(out[2].tokens, alone[2].tokens);
    EXPECT_EQ(finished_calls, 1);  // a failing final event is not retried
    EXPECT_EQ(e.stats().kv_blocks_used, 0);
    EXPECT_EQ(e.stats().finished_error, 1);
}

// Seeded sampled and greedy tokens at this world size equal a single-rank engine's in-process.
TEST(Engine, SameTokensAtEveryTpSize) {
    Harness h("phi3_128k_longrope", 256, 4);  // crosses LongRoPE's original length
    if (!h.leader()) return h.follow();
    auto reqs = make_requests(6, h.vocab_limit(), 20, true);
    auto greedy = make_requests(4, h.vocab_limit(), 20, false);
    reqs.insert(reqs.end(), greedy.begin(), greedy.end());
    const auto here = run_all(h.engine(), reqs, 3);
    LocalCommunicator local;
    Harness ref("phi3_128k_longrope", 256, 4, {}, &local);
    const auto single = run_all(ref.engine(), reqs, 3);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(here[i], single[i]) << "request " << i;
}

}  // namespace
}  // namespace phi::engine
