// The bundled default model (models/phi-tiny-code), under mpirun -np 1 and 2: phi-cluster's own
// tokenizer gives HF's ids and round-trips like HF's, and greedy continuations through the engine
// equal HF transformers' (tests/fixtures/default_model_expect.json, made by
// scripts/train_default_model.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "cluster/mpi_communicator.h"
#include "coordinator/engine/engine.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/load_model.h"

namespace phi {
namespace {

nlohmann::json expectations() {
    std::ifstream f(test::source_dir() / "tests" / "fixtures" / "default_model_expect.json");
    return nlohmann::json::parse(f);
}

std::filesystem::path model_dir() { return test::source_dir() / "models" / "phi-tiny-code"; }

TEST(DefaultModel, TokenizerMatchesHf) {
    const nlohmann::json ex = expectations();
    const auto tok = tokenizer::Tokenizer::load(model_dir());
    EXPECT_EQ(tok.vocab_size(), ex["tokenizer_size"].get<int>());
    for (const auto& p : ex["prompts"]) EXPECT_EQ(tok.encode(p["text"].get<std::string>()), p["ids"].get<std::vector<int32_t>>());
    int n = 0;
    for (const auto& rt : ex["roundtrip"]) {
        const auto ids = tok.encode(rt["text"].get<std::string>());
        EXPECT_EQ(ids, rt["ids"].get<std::vector<int32_t>>()) << rt["text"];
        EXPECT_EQ(tok.decode(ids), rt["decoded"].get<std::string>());
        ++n;
    }
    EXPECT_GE(n, 40);
}

TEST(DefaultModel, GreedyContinuationsMatchHfAtThisTpSize) {
    MpiCommunicator comm;
    comm.set_timeout(std::chrono::milliseconds(120000));
    const nlohmann::json ex = expectations();
    ModelOptions opts;
    opts.isa = kernels::cpu::choose_isa();
    opts.weight_dtype = DType::BF16;
    opts.kv = KvCacheConfig{256, 16};
    auto model = load_model(model_dir(), comm, opts);
    WatchdogOptions wd;
    wd.plan_wait = std::chrono::milliseconds(120000);
    StepExecutor exec(*model, comm, wd);
    if (comm.rank() != 0) return exec.follow();
    engine::EngineConfig ec;
    ec.vocab_limit = ex["tokenizer_size"].get<int64_t>();
    ec.eos_ids = ex["eos_token_ids"].get<std::vector<int32_t>>();
    engine::Engine engine(exec, ec);
    for (const auto& p : ex["prompts"]) {
        engine::EngineRequest r;
        r.prompt = p["ids"].get<std::vector<int32_t>>();
        r.params.temperature = 0;
        r.params.max_tokens = ex["max_new_tokens"].get<int32_t>();
        std::vector<int32_t> got;
        bool done = false;
        engine.submit(r, [&](const engine::Event& e) {
            if (e.kind == engine::Event::Kind::Token) got.push_back(e.token);
            if (e.kind == engine::Event::Kind::Finished) done = true;
        });
        while (!done) engine.step();
        EXPECT_EQ(got, p["greedy"].get<std::vector<int32_t>>()) << p["name"] << " at tp " << comm.size();
    }
    exec.shutdown();
}

// Speculative decoding (issue 20): the same greedy continuations, alone and 16 at a time (with
// sampled seeded requests beside them that must draw their non-speculative tokens), for k in
// {1, 3, 5}, with some proposals accepted and some rejected. The draft model is the bundled model
// cut to its first 2 layers (an early-exit draft), on the same ranks with its own cache.
void check_speculation(engine::SpeculativeConfig::Method method) {
    MpiCommunicator comm;
    comm.set_timeout(std::chrono::milliseconds(120000));
    const nlohmann::json ex = expectations();
    ModelOptions opts;
    opts.isa = kernels::cpu::choose_isa();
    opts.weight_dtype = DType::BF16;
    opts.kv = KvCacheConfig{256, 16};
    auto model = load_model(model_dir(), comm, opts);
    std::unique_ptr<PhiModel> draft;
    if (method == engine::SpeculativeConfig::Method::Draft) {
        ModelOptions dopts = opts;
        dopts.layers = 2;
        draft = load_model(model_dir(), comm, dopts);
    }
    WatchdogOptions wd;
    wd.plan_wait = std::chrono::milliseconds(120000);
    StepExecutor exec(*model, comm, wd, draft.get());
    if (comm.rank() != 0) return exec.follow();
    const auto& prompts = ex["prompts"];
    // 16 requests: greedy ones with HF's expected continuations, seeded sampled ones between them.
    auto batch = [&](engine::Engine& engine) {
        std::vector<std::vector<int32_t>> got(16);
        int done = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            const auto& p = prompts[i % prompts.size()];
            engine::EngineRequest r;
            r.prompt = p["ids"].get<std::vector<int32_t>>();
            r.params.temperature = i % 2 ? 0.8f : 0.0f;
            r.params.seed = 40 + i;
            r.params.max_tokens = ex["max_new_tokens"].get<int32_t>();
            engine.submit(r, [&, i](const engine::Event& e) {
                if (e.kind == engine::Event::Kind::Token) got[i].push_back(e.token);
                if (e.kind == engine::Event::Kind::Finished) ++done;
            });
        }
        while (done < int(got.size())) engine.step();
        return got;
    };
    engine::EngineConfig ec;
    ec.vocab_limit = ex["tokenizer_size"].get<int64_t>();
    ec.eos_ids = ex["eos_token_ids"].get<std::vector<int32_t>>();
    ec.max_num_seqs = 16;
    ec.max_batched_tokens = 64;  // prompts are prefilled in chunks beside verification steps
    std::vector<std::vector<int32_t>> plain;
    {
        engine::Engine engine(exec, ec);
        plain = batch(engine);
    }
    for (int32_t k : {1, 3, 5}) {
        engine::EngineConfig sc = ec;
        sc.speculative.method = method;
        sc.speculative.k = k;
        engine::Engine engine(exec, sc);
        for (const auto& p : prompts) {
            engine::EngineRequest r;
            r.prompt = p["ids"].get<std::vector<int32_t>>();
            r.params.temperature = 0;
            r.params.max_tokens = ex["max_new_tokens"].get<int32_t>();
            std::vector<int32_t> got;
            bool done = false;
            engine.submit(r, [&](const engine::Event& e) {
                if (e.kind == engine::Event::Kind::Token) got.push_back(e.token);
                if (e.kind == engine::Event::Kind::Finished) done = true;
            });
            while (!done) engine.step();
            EXPECT_EQ(got, p["greedy"].get<std::vector<int32_t>>()) << p["name"] << " alone, k " << k;
        }
        const auto got = batch(engine);
        for (size_t i = 0; i < got.size(); ++i) {
            EXPECT_EQ(got[i], plain[i]) << "request " << i << " of the batch, k " << k;
            if (i % 2 == 0) {
                EXPECT_EQ(got[i], prompts[i % prompts.size()]["greedy"].get<std::vector<int32_t>>()) << "request " << i;
            }
        }
        const engine::EngineStats s = engine.stats();
        const double rate = s.spec_proposed > 0 ? double(s.spec_accepted) / double(s.spec_proposed) : 0.0;
        std::printf("%s, tp %d k %d: acceptance %.3f (%lld of %lld), %.2f tokens per sequence step\n",
                    engine::speculative_method_name(method), comm.size(), k, rate,
                    (long long)s.spec_accepted, (long long)s.spec_proposed,
                    double(s.decode_tokens) / double(s.decode_seq_steps));
        EXPECT_GT(rate, 0.1) << "k " << k;
        EXPECT_LT(rate, 0.9) << "k " << k;
        EXPECT_EQ(s.kv_blocks_used, 0);
        EXPECT_EQ(s.draft_kv_blocks_used, 0);
    }
    exec.shutdown();
}

TEST(DefaultModel, NgramSpeculationKeepsTheContinuationsAtThisTpSize) {
    check_speculation(engine::SpeculativeConfig::Method::Ngram);
}

TEST(DefaultModel, DraftSpeculationKeepsTheContinuationsAtThisTpSize) {
    check_speculation(engine::SpeculativeConfig::Method::Draft);
}

}  // namespace
}  // namespace phi
