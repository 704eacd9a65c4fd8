// Sampler: logit processing equals HF's processors (and OpenAI's penalty formula) on the expectations in
// tests/fixtures/sampling/hf_processors.json (scripts/make_sampling_expectations.py); Philox known answers;
// seeded draws independent of call order and batch; empirical frequencies match the processed
// distribution; padded ids never sampled; greedy ties; raw logprobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/sampling/philox.h"
#include "coordinator/sampling/sampler.h"

namespace {

using phi::sampling::philox4x32_10;
using phi::sampling::philox_uniform;
using phi::sampling::PhiloxCounter;
using phi::sampling::RngStream;
using phi::sampling::Sampler;
using phi::sampling::SampleResult;
using phi::sampling::SamplingParams;
using phi::sampling::TokenHistory;
using Json = nlohmann::json;

constexpr float k_neg_inf = -std::numeric_limits<float>::infinity();

const Json& expectations() {
    static const Json data = [] {
        // PHI_SAMPLING_EXPECTATIONS: a larger local sweep (make_sampling_expectations.py --count N --out F).
        const char* root = std::getenv("PHI_SOURCE_DIR");
        const char* override_path = std::getenv("PHI_SAMPLING_EXPECTATIONS");
        const std::string path =
            override_path ? std::string(override_path)
                          : std::string(root ? root : ".") + "/tests/fixtures/sampling/hf_processors.json";
        std::ifstream in(path);
        if (!in) throw std::runtime_error("cannot open " + path + " (is PHI_SOURCE_DIR set?)");
        std::stringstream ss;
        ss << in.rdbuf();
        return Json::parse(ss.str());
    }();
    return data;
}

std::vector<float> floats(const Json& j) {  // null is -inf
    std::vector<float> out;
    for (const Json& v : j) out.push_back(v.is_null() ? k_neg_inf : static_cast<float>(v.get<double>()));
    return out;
}

std::vector<int32_t> ids(const Json& j) {
    return j.get<std::vector<int32_t>>();
}

// Finite values within 1e-5 relative (absolute below 1), and the same -inf set.
void expect_same_logits(const std::vector<float>& got, const std::vector<float>& want,
                        const std::string& name) {
    ASSERT_EQ(got.size(), want.size()) << name;
    int bad = 0;
    for (size_t i = 0; i < got.size() && bad < 5; ++i) {
        const bool got_inf = got[i] == k_neg_inf, want_inf = want[i] == k_neg_inf;
        if (got_inf != want_inf) {
            ADD_FAILURE() << name << ": id " << i << " got " << got[i] << ", want " << want[i];
            ++bad;
        } else if (!got_inf && std::fabs(got[i] - want[i]) > 1e-5 * std::max(1.0f, std::fabs(want[i]))) {
            ADD_FAILURE() << name << ": id " << i << " got " << got[i] << ", want " << want[i];
            ++bad;
        }
    }
}

TEST(SamplerHf, ProcessorOrderIsHfs) {
    const std::vector<std::string> order = expectations().at("hf_order");
    EXPECT_EQ(order, (std::vector<std::string>{"RepetitionPenaltyLogitsProcessor", "TemperatureLogitsWarper",
                                               "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper"}));
}

TEST(SamplerHf, ProcessedLogitsMatchHfProcessors) {
    const Json& cases = expectations().at("pipeline");
    ASSERT_GE(cases.size(), 100u);
    Sampler sampler;
    int greedy_cases = 0, filtered_cases = 0;
    for (const Json& c : cases) {
        const std::string name = c.at("name");
        const Json& p = c.at("params");
        SamplingParams params;
        params.temperature = c.at("do_sample").get<bool>() ? p.at("temperature").get<float>() : 0.0f;
        params.top_k = p.at("top_k");
        params.top_p = p.at("top_p");
        params.min_p = p.at("min_p");
        params.repetition_penalty = p.at("repetition_penalty");
        params.presence_penalty = p.at("presence_penalty");
        params.frequency_penalty = p.at("frequency_penalty");
        ASSERT_NO_THROW(params.validate()) << name;
        const std::vector<int32_t> prompt = ids(c.at("prompt")), generated = ids(c.at("generated"));
        const int64_t limit = c.at("limit");
        const std::vector<float> raw = floats(c.at("logits"));
        const std::vector<float> want = floats(c.at("expected"));

        std::vector<float> got = raw;
        sampler.process(got, limit, {prompt, generated}, params);
        expect_same_logits(got, want, name);
        const auto finite_in =
            std::count_if(raw.begin(), raw.begin() + limit, [](float v) { return v != k_neg_inf; });
        const auto finite_out = std::count_if(got.begin(), got.end(), [](float v) { return v != k_neg_inf; });
        filtered_cases += finite_out < finite_in;

        if (c.contains("expected_argmax")) {
            ++greedy_cases;
            const SampleResult r = sampler.sample(raw, limit, {prompt, generated}, params, RngStream{1, 0});
            EXPECT_EQ(r.id, c.at("expected_argmax").get<int32_t>()) << name;
        }
    }
    EXPECT_GE(greedy_cases, 5);
    EXPECT_GE(filtered_cases, 40);  // the fixtures exercise the filters, not only the scalings
}

TEST(SamplerHf, OpenAiPenaltiesMatchTheReferenceFormula) {
    const Json& cases = expectations().at("openai_penalties");
    ASSERT_GE(cases.size(), 20u);
    Sampler sampler;
    for (const Json& c : cases) {
        SamplingParams params;
        params.presence_penalty = c.at("presence_penalty");
        params.frequency_penalty = c.at("frequency_penalty");
        ASSERT_NO_THROW(params.validate());
        const std::vector<int32_t> generated = ids(c.at("generated"));
        std::vector<float> got = floats(c.at("logits"));
        if (std::all_of(got.begin(), got.end(), [](float v) { return v == k_neg_inf; })) continue;
        sampler.process(got, static_cast<int64_t>(got.size()), {{}, generated}, params);
        expect_same_logits(got, floats(c.at("expected")), c.at("name"));
    }
}

TEST(SamplerPenalties, RepetitionCountsPromptAndPresenceOnlyGenerated) {
    Sampler sampler;
    const std::vector<int32_t> prompt = {1, 1, 3};
    const std::vector<int32_t> generated = {2, 2};
    SamplingParams params;
    params.repetition_penalty = 2.0f;
    std::vector<float> x = {1.0f, 4.0f, -2.0f, 6.0f, 1.0f};
    sampler.process(x, 5, {prompt, generated}, params);
    EXPECT_EQ(x, (std::vector<float>{1.0f, 2.0f, -4.0f, 3.0f, 1.0f}));  // once per distinct id

    params = {};
    params.presence_penalty = 0.5f;
    params.frequency_penalty = 0.25f;
    x = {1.0f, 4.0f, -2.0f, 6.0f, 1.0f};
    sampler.process(x, 5, {prompt, generated}, params);
    EXPECT_EQ(x, (std::vector<float>{1.0f, 4.0f, -3.0f, 6.0f, 1.0f}));  // prompt ids untouched
}

TEST(Philox, RandomKnownAnswers) {  // Random123's kat_vectors
    EXPECT_EQ(philox4x32_10({0, 0, 0, 0}, {0, 0}),
              (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
    EXPECT_EQ(philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
              (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
    EXPECT_EQ(philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
              (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Philox, UniformIsInUnitIntervalAndKeyed) {
    double sum = 0.0;
    for (uint64_t i = 0; i < 10000; ++i) {
        const double u = philox_uniform(42, 0, i);
        ASSERT_GE(u, 0.0);
        ASSERT_LT(u, 1.0);
        sum += u;
    }
    EXPECT_NEAR(sum / 10000, 0.5, 0.01);
    EXPECT_NE(philox_uniform(42, 0, 7), philox_uniform(43, 0, 7));
    EXPECT_NE(philox_uniform(42, 0, 7), philox_uniform(42, 1, 7));
    EXPECT_EQ(philox_uniform(42, 0, 7), philox_uniform(42, 0, 7));
}

// Deterministic pseudo-logits for a toy "model": depend only on the sequence so far.
std::vector<float> toy_logits(const std::vector<int32_t>& seq, int32_t vocab_padded) {
    std::vector<float> x(vocab_padded);
    uint64_t h = 1469598103934665603ull;
    for (int32_t t : seq) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
    for (int32_t i = 0; i < vocab_padded; ++i) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = static_cast<float>((h >> 40) % 1000) / 250.0f;  // [0, 4), with ties
    }
    return x;
}

struct ToyRequest {
    SamplingParams params;
    RngStream rng;
    std::vector<int32_t> prompt;
    std::vector<int32_t> generated;
};

std::vector<ToyRequest> toy_requests() {
    std::vector<ToyRequest> reqs(5);
    reqs[0].params.seed = 7;
    reqs[1].params.seed = 7;
    reqs[1].params.temperature = 0.6f;
    reqs[1].params.top_k = 20;
    reqs[2].params.seed = 123456789;
    reqs[2].params.top_p = 0.8f;
    reqs[2].params.min_p = 0.05f;
    reqs[2].params.repetition_penalty = 1.3f;
    reqs[3].params.seed = 7;
    reqs[3].params.presence_penalty = 1.0f;
    reqs[3].params.frequency_penalty = 0.5f;
    reqs[4].params.temperature = 0.0f;
    for (size_t r = 0; r < reqs.size(); ++r) {
        reqs[r].rng = {reqs[r].params.seed.value_or(99), 0};
        reqs[r].prompt = {static_cast<int32_t>(r), 5, 9};
    }
    return reqs;
}

// Runs every request for `steps` tokens; `order` picks which request steps next (a batch's makeup).
std::vector<std::vector<int32_t>> run(std::vector<ToyRequest> reqs, const std::vector<size_t>& order,
                                      Sampler& sampler) {
    constexpr int32_t k_vocab = 300, k_limit = 290;
    for (size_t r : order) {
        ToyRequest& q = reqs[r];
        std::vector<int32_t> seq = q.prompt;
        seq.insert(seq.end(), q.generated.begin(), q.generated.end());
        const SampleResult res =
            sampler.sample(toy_logits(seq, k_vocab), k_limit, {q.prompt, q.generated}, q.params, q.rng);
        q.generated.push_back(res.id);
    }
    std::vector<std::vector<int32_t>> out;
    for (const ToyRequest& q : reqs) out.push_back(q.generated);
    return out;
}

TEST(SamplerSeed, SameTokensAloneInAnyBatchAndOrder) {
    constexpr int k_steps = 40;
    const std::vector<ToyRequest> reqs = toy_requests();
    Sampler a;
    std::vector<std::vector<int32_t>> alone(reqs.size());
    for (size_t r = 0; r < reqs.size(); ++r) {
        std::vector<ToyRequest> one = {reqs[r]};
        alone[r] = run(one, std::vector<size_t>(k_steps, 0), a)[0];
    }
    std::vector<size_t> round_robin, reversed, bursts;
    for (int s = 0; s < k_steps; ++s)
        for (size_t r = 0; r < reqs.size(); ++r) {
            round_robin.push_back(r);
            reversed.push_back(reqs.size() - 1 - r);
        }
    for (size_t r = 0; r < reqs.size(); ++r)  // each request joins and finishes at its own time
        for (int s = 0; s < k_steps; ++s) bursts.push_back((r * 3 + 2) % reqs.size());
    Sampler b, c;
    EXPECT_EQ(run(reqs, round_robin, b), alone);
    EXPECT_EQ(run(reqs, reversed, b), alone);
    EXPECT_EQ(run(reqs, bursts, c), alone);

    EXPECT_NE(alone[0], alone[3]);  // penalties change the stream's tokens
    ToyRequest other = reqs[0];
    other.rng.seed = 8;
    EXPECT_NE(run({other}, std::vector<size_t>(k_steps, 0), a)[0], alone[0]);
    other.rng = {7, 1};  // another choice of the same seeded request
    EXPECT_NE(run({other}, std::vector<size_t>(k_steps, 0), a)[0], alone[0]);
}

TEST(SamplerDistribution, FrequenciesMatchProcessedProbabilities) {
    const std::vector<float> logits = {0.5f, 2.0f,  1.0f, -1.0f, 1.5f, 0.0f,
                                       3.0f, -4.0f, 1.2f, 2.5f,  9.0f, 9.0f};
    constexpr int64_t k_limit = 10;  // ids 10, 11 are padding with the largest logits
    SamplingParams params;
    params.temperature = 1.3f;
    params.top_k = 8;
    params.top_p = 0.97f;
    params.min_p = 0.02f;
    params.repetition_penalty = 1.1f;
    params.presence_penalty = 0.2f;
    const std::vector<int32_t> prompt = {2, 3}, generated = {6};
    Sampler sampler;
    std::vector<float> processed = logits;
    sampler.process(processed, k_limit, {prompt, generated}, params);
    std::vector<double> prob(logits.size(), 0.0);
    double total = 0.0;
    for (size_t i = 0; i < processed.size(); ++i)
        if (processed[i] != k_neg_inf) total += prob[i] = std::exp(static_cast<double>(processed[i]));
    int kept = 0;
    for (double& p : prob) {
        p /= total;
        kept += p > 0.0;
    }
    ASSERT_GE(kept, 4);
    ASSERT_LT(kept, k_limit);

    constexpr int k_draws = 40000;
    std::vector<int> counts(logits.size(), 0);
    for (int d = 0; d < k_draws; ++d) {
        const SampleResult r =
            sampler.sample(logits, k_limit, {prompt, generated}, params, RngStream{2024, uint64_t(d)});
        ASSERT_GE(r.id, 0);
        ASSERT_LT(r.id, k_limit);
        ASSERT_GT(prob[r.id], 0.0) << "drew filtered id " << r.id;
        ++counts[r.id];
    }
    double chi2 = 0.0;
    for (size_t i = 0; i < prob.size(); ++i) {
        if (prob[i] == 0.0) continue;
        const double e = prob[i] * k_draws;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    RecordProperty("chi2", std::to_string(chi2));
    RecordProperty("kept", kept);
    EXPECT_LT(chi2, 30.0) << "chi-square over " << kept << " ids (p < 0.001 bound for <= 9 dof is 27.9)";
}

TEST(SamplerLimit, IdsAtOrBeyondLimitAreNeverSampled) {
    std::vector<float> logits(64, 0.0f);
    for (int i = 50; i < 64; ++i) logits[i] = 50.0f;  // padding rows that would otherwise win
    Sampler sampler;
    SamplingParams params;
    params.logprobs = 20;
    for (uint64_t s = 0; s < 500; ++s) {
        const SampleResult r = sampler.sample(logits, 50, {}, params, RngStream{s, 0});
        ASSERT_LT(r.id, 50);
        for (const auto& t : r.top_logprobs) ASSERT_LT(t.id, 50);
        EXPECT_NEAR(r.logprob, -std::log(50.0f), 1e-5);
    }
    params.temperature = 0.0f;
    EXPECT_EQ(sampler.sample(logits, 50, {}, params, RngStream{}).id, 0);
}

TEST(SamplerGreedy, LowestIdOnTiesAndPenaltiesApply) {
    Sampler sampler;
    SamplingParams params;
    params.temperature = 0.0f;
    const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 3.0f};
    EXPECT_EQ(sampler.sample(logits, 5, {}, params, RngStream{}).id, 1);
    const std::vector<int32_t> prompt = {1};
    params.repetition_penalty = 1.5f;
    EXPECT_EQ(sampler.sample(logits, 5, {prompt, {}}, params, RngStream{}).id, 3);
    params.temperature = 1e-6f;  // below k_greedy_temperature: greedy, not a division by ~0
    EXPECT_EQ(sampler.sample(logits, 5, {prompt, {}}, params, RngStream{}).id, 3);
}

TEST(SamplerLogprobs, RawDistributionTopNBestFirst) {
    const std::vector<float> logits = {1.0f, 3.0f, k_neg_inf, 3.0f, -1.0f, 0.5f, 7.0f};
    double sum = 0.0;
    for (int i = 0; i < 6; ++i)
        if (logits[i] != k_neg_inf) sum += std::exp(static_cast<double>(logits[i]));
    const double lse = std::log(sum);  // id 6 is beyond the limit
    Sampler sampler;
    SamplingParams params;
    params.logprobs = 4;
    params.temperature = 0.5f;  // sampling settings do not change the reported logprobs
    params.top_k = 2;
    params.repetition_penalty = 1.7f;
    const std::vector<int32_t> prompt = {1};
    const SampleResult r = sampler.sample(logits, 6, {prompt, {}}, params, RngStream{5, 0});
    ASSERT_EQ(r.top_logprobs.size(), 4u);
    const int32_t want_ids[] = {1, 3, 0, 5};
    for (int k = 0; k < 4; ++k) {
        EXPECT_EQ(r.top_logprobs[k].id, want_ids[k]);
        EXPECT_NEAR(r.top_logprobs[k].logprob, logits[want_ids[k]] - lse, 1e-6);
    }
    EXPECT_TRUE(r.id == 1 || r.id == 3);
    EXPECT_NEAR(r.logprob, logits[r.id] - lse, 1e-6);

    params.logprobs = 20;  // fewer finite ids than asked: only those
    EXPECT_EQ(sampler.sample(logits, 6, {}, params, RngStream{5, 0}).top_logprobs.size(), 5u);
    params.logprobs = 0;  // the chosen token's only
    const SampleResult chosen_only = sampler.sample(logits, 6, {}, params, RngStream{5, 0});
    EXPECT_TRUE(chosen_only.top_logprobs.empty());
    EXPECT_NEAR(chosen_only.logprob, logits[chosen_only.id] - lse, 1e-6);
}

TEST(SamplerErrors, InvalidLogitsAndIdsAreReported) {
    Sampler sampler;
    SamplingParams params;
    std::vector<float> logits = {0.0f, std::nanf(""), 1.0f};
    try {
        sampler.sample(logits, 3, {}, params, RngStream{});
        FAIL() << "NaN accepted";
    } catch (const phi::Error& e) {
        EXPECT_NE(std::string(e.what()).find("logit of id 1"), std::string::npos) << e.what();
    }
    logits = {k_neg_inf, k_neg_inf, 1.0f};
    EXPECT_THROW(sampler.sample(logits, 2, {}, params, RngStream{}), phi::Error);
    EXPECT_THROW(sampler.sample(logits, 4, {}, params, RngStream{}), phi::Error);
    logits = {0.0f, 1.0f, 2.0f};
    params.repetition_penalty = 1.2f;
    const std::vector<int32_t> bad = {3};
    EXPECT_THROW(sampler.sample(logits, 3, {bad, {}}, params, RngStream{}), phi::Error);
    const std::vector<int32_t> bad_late = {2, 2, 1, 3};  // a bad id after good ones marks nothing
    params.presence_penalty = 1.0f;
    EXPECT_THROW(sampler.sample(logits, 3, {{}, bad_late}, params, RngStream{}), phi::Error);
    const std::vector<int32_t> good = {2, 2, 1};
    std::vector<float> x = logits, fresh = logits;
    sampler.process(x, 3, {good, good}, params);
    Sampler().process(fresh, 3, {good, good}, params);
    EXPECT_EQ(x, fresh);
    EXPECT_NE(x, logits);
}

}  // namespace
