// Speculative decoding on every golden fixture under mpirun -np 1 and 2 (issue 20): with either
// proposer (n-gram lookup, or a draft model: the fixture cut to its first layer, a different model
// with the same vocabulary) and k in {1, 3, 5}, a greedy request alone gives HF's greedy tokens,
// and 16 requests (greedy and seeded sampled, joining at different steps, prefilled in chunks
// beside verification rows) give exactly the tokens they give without speculation. The LongRoPE
// fixtures cross original_max_position_embeddings while generating.
#include <gtest/gtest.h>

#include <cstdio>

#include "cluster/mpi_communicator.h"
#include "coordinator/engine/engine.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/load_model.h"

namespace phi {
namespace {

using Method = engine::SpeculativeConfig::Method;

struct Request {
    std::vector<int32_t> prompt;
    sampling::SamplingParams params;
};

// Runs `reqs` to the end, submitting them a few steps apart; returns each one's tokens.
std::vector<std::vector<int32_t>> run(engine::Engine& engine, const std::vector<Request>& reqs) {
    std::vector<std::vector<int32_t>> got(reqs.size());
    size_t done = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
        engine::EngineRequest r;
        r.prompt = reqs[i].prompt;
        r.params = reqs[i].params;
        engine.submit(r, [&got, &done, i](const engine::Event& e) {
            if (e.kind == engine::Event::Kind::Token) got[i].push_back(e.token);
            if (e.kind == engine::Event::Kind::Finished) ++done;
        });
        if (i % 4 == 3) engine.step();
    }
    while (done < reqs.size()) engine.step();
    return got;
}

class SpeculativeFixtures : public ::testing::TestWithParam<std::string> {};

TEST_P(SpeculativeFixtures, OutputsAreThePlainOnesWithEitherProposer) {
    MpiCommunicator comm;
    comm.set_timeout(std::chrono::milliseconds(120000));
    const auto dir = test::fixture_dir(GetParam());
    const ModelConfig cfg = load_model_config(dir / "config.json");
    if (cfg.n_heads % comm.size() != 0) GTEST_SKIP() << cfg.n_heads << " heads do not split over " << comm.size();
    const test::Golden g = test::load_golden(GetParam());

    ModelOptions opts;
    opts.isa = kernels::cpu::choose_isa();
    opts.kv = KvCacheConfig{512, 4};
    auto model = load_model(dir, comm, opts);
    ModelOptions dopts = opts;
    dopts.layers = 1;
    auto draft = load_model(dir, comm, dopts);
    WatchdogOptions wd;
    wd.plan_wait = std::chrono::milliseconds(120000);
    StepExecutor exec(*model, comm, wd, draft.get());
    if (comm.rank() != 0) return exec.follow();

    engine::EngineConfig ec;
    ec.vocab_limit = g.tokenizer_size;
    ec.max_num_seqs = 16;
    ec.max_batched_tokens = 24;
    // 16 requests: prefixes and rotations of the golden prompt, greedy and seeded sampled.
    std::vector<Request> reqs(16);
    const int64_t P = int64_t(g.prompt.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
        Request& q = reqs[i];
        const int64_t len = 2 + int64_t(i) % (P - 1);
        for (int64_t j = 0; j < len; ++j) q.prompt.push_back(g.prompt[size_t((j + int64_t(i)) % P)]);
        q.params.temperature = i % 3 == 1 ? 0.8f : 0.0f;
        q.params.seed = 70 + i;
        q.params.max_tokens = std::min<int64_t>(24, cfg.max_position_embeddings - len);
    }
    std::vector<std::vector<int32_t>> plain;
    {
        engine::Engine engine(exec, ec);
        plain = run(engine, reqs);
    }
    Request alone;
    alone.prompt = g.prompt;
    alone.params.temperature = 0.0f;
    alone.params.max_tokens = int64_t(g.greedy.size());
    for (Method method : {Method::Ngram, Method::Draft}) {
        int64_t proposed = 0, accepted = 0;
        for (int32_t k : {1, 3, 5}) {
            engine::EngineConfig sc = ec;
            sc.speculative.method = method;
            sc.speculative.k = k;
            engine::Engine engine(exec, sc);
            const char* name = engine::speculative_method_name(method);
            EXPECT_EQ(run(engine, {alone})[0], g.greedy) << name << " alone, k " << k;
            const auto got = run(engine, reqs);
            for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], plain[i]) << name << " request " << i << ", k " << k;
            const engine::EngineStats s = engine.stats();
            EXPECT_EQ(s.kv_blocks_used, 0);
            EXPECT_EQ(s.draft_kv_blocks_used, 0);
            proposed += s.spec_proposed;
            accepted += s.spec_accepted;
        }
        const double rate = proposed > 0 ? double(accepted) / double(proposed) : 0.0;
        std::printf("[%s] %s, tp %d: acceptance %.3f (%lld of %lld)\n", GetParam().c_str(),
                    engine::speculative_method_name(method), comm.size(), rate, (long long)accepted,
                    (long long)proposed);
        EXPECT_GT(proposed, 0) << engine::speculative_method_name(method);
        // Some proposals accepted and some rejected, so acceptance and KV rollback both ran.
        EXPECT_GT(accepted, 0) << engine::speculative_method_name(method);
        EXPECT_LT(accepted, proposed) << engine::speculative_method_name(method);
    }
    exec.shutdown();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SpeculativeFixtures,
                         ::testing::Values("phi1", "phi2_qkln", "phi3_mini_4k_swa", "phi3_128k_longrope",
                                           "phi3_rope_params", "phi4_mini", "phi_40q10kv", "phimoe"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace phi
