// LoRA against HF transformers + PEFT (scripts/make_lora_goldens.py): for every adapter fixture, the
// prompt logits at every position within 1e-5 and HF's 32 greedy tokens at TP 1, with the fixture
// proven meaningful (the adapter moves the base logits by >= 100x the tolerance and changes the
// greedy continuation; HF's greedy margins >= 1e-3). Mixed batches: base and two adapters in one
// forward give each sequence bitwise its logits alone. TP 2/4: tests/cluster/test_tp.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "cluster/communicator.h"
#include "common/error.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/generate.h"
#include "worker/load_model.h"
#include "worker/lora_weights.h"

namespace phi {
namespace {

constexpr float k_tolerance = 1e-5f;
constexpr float k_min_margin = 1e-3f;

struct LoraCase {
    std::string fixture, adapter;
};

std::string case_name(const ::testing::TestParamInfo<LoraCase>& info) { return info.param.adapter; }

// Spelled out (test names are listed before PHI_SOURCE_DIR is known); AllAdapterFixturesAreListed
// keeps the list equal to the folders on disk.
const std::vector<LoraCase> k_cases = {{"phi2_qkln", "phi2_r4_rslora_regex"},
                                       {"phi2_qkln", "phi2_r8_all"},
                                       {"phi3_mini_4k_swa", "phi3_r4_layers"},
                                       {"phi3_mini_4k_swa", "phi3_r8_pattern"},
                                       {"phi_40q10kv", "phi40_r8_qkv_down"}};

TEST(LoraFixtures, AllAdapterFixturesAreListed) {
    std::vector<std::pair<std::string, std::string>> listed;
    for (const LoraCase& c : k_cases) listed.emplace_back(c.fixture, c.adapter);
    EXPECT_EQ(listed, test::lora_fixture_names());
}

std::unique_ptr<PhiModel> load_fixture(const std::string& fixture, Communicator& comm, DType dtype = DType::F32) {
    ModelOptions opts;
    opts.isa = kernels::cpu::choose_isa();
    opts.weight_dtype = dtype;
    opts.kv = KvCacheConfig{64, 4};
    return load_model(test::fixture_dir(fixture), comm, opts);
}

std::vector<int32_t> blocks(int32_t first, int32_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) t[size_t(i)] = first + i;
    return t;
}

/// Largest |logit - reference| over the prompt's rows (logits padded to the model's vocab_padded).
float worst_logit_error(const PhiModel& model, const std::vector<float>& logits,
                        const std::vector<std::vector<float>>& ref) {
    const int64_t vp = model.vocab_padded(), v = model.config().vocab_size;
    float worst = 0.0f;
    for (size_t r = 0; r < ref.size(); ++r)
        for (int64_t j = 0; j < v; ++j)
            worst = std::max(worst, std::fabs(logits[r * size_t(vp) + size_t(j)] - ref[r][size_t(j)]));
    return worst;
}

class LoraGoldenTest : public ::testing::TestWithParam<LoraCase> {
protected:
    LocalCommunicator comm_;
};

TEST_P(LoraGoldenTest, FixtureChangesTheBaseModel) {
    const test::LoraGolden g = test::load_lora_golden(GetParam().fixture, GetParam().adapter);
    EXPECT_GE(g.base_max_abs_diff, 100.0 * k_tolerance);
    EXPECT_TRUE(g.base_greedy_differs);
    EXPECT_NE(g.greedy, test::load_golden(GetParam().fixture).greedy);
    float min_margin = 1e9f;
    for (float m : g.greedy_margins) min_margin = std::min(min_margin, m);
    EXPECT_GE(min_margin, k_min_margin);
}

TEST_P(LoraGoldenTest, PromptLogitsMatchHfPeft) {
    const test::LoraGolden g = test::load_lora_golden(GetParam().fixture, GetParam().adapter);
    auto model = load_fixture(g.fixture, comm_);
    model->add_adapter(1, load_lora_adapter(g.dir, model->config(), model->plan()));
    for (const int32_t adapter : {1, 0}) {
        SeqStep s;
        s.tokens = g.prompt;
        const std::vector<int32_t> table = blocks(adapter == 1 ? 0 : 16, 16);
        s.block_table = table;
        s.all_logits = true;
        s.adapter = adapter;
        std::vector<float> logits;
        ASSERT_EQ(model->forward(std::span<const SeqStep>(&s, 1), &logits), int64_t(g.prompt.size()));
        const float worst = worst_logit_error(*model, logits, g.prompt_logits);
        if (adapter == 1) {
            std::printf("[%s] prompt logits vs HF+PEFT: max abs error %.3g\n", g.name.c_str(), worst);
            EXPECT_LE(worst, k_tolerance);
        } else {
            // The same model without the adapter is the base model again, far from the adapter's logits.
            EXPECT_GE(worst, 100.0f * k_tolerance);
        }
    }
}

// `dtype: bf16` with an adapter: the base weights rounded to bf16, the adapter in fp32, against
// HF + PEFT computing in fp32 with the same rounded base (prompt_logits_bf16_base).
TEST_P(LoraGoldenTest, PromptLogitsMatchHfPeftOnABf16Base) {
    const test::LoraGolden g = test::load_lora_golden(GetParam().fixture, GetParam().adapter);
    auto model = load_fixture(g.fixture, comm_, DType::BF16);
    model->add_adapter(1, load_lora_adapter(g.dir, model->config(), model->plan()));
    SeqStep s;
    s.tokens = g.prompt;
    const std::vector<int32_t> table = blocks(0, 16);
    s.block_table = table;
    s.all_logits = true;
    s.adapter = 1;
    std::vector<float> logits;
    ASSERT_EQ(model->forward(std::span<const SeqStep>(&s, 1), &logits), int64_t(g.prompt.size()));
    const float worst = worst_logit_error(*model, logits, g.prompt_logits_bf16_base);
    std::printf("[%s] bf16 base: prompt logits vs HF+PEFT: max abs error %.3g\n", g.name.c_str(), worst);
    EXPECT_LE(worst, k_tolerance);
}

TEST_P(LoraGoldenTest, GreedyTokensMatchHfPeft) {
    const test::LoraGolden g = test::load_lora_golden(GetParam().fixture, GetParam().adapter);
    auto model = load_fixture(g.fixture, comm_);
    model->add_adapter(3, load_lora_adapter(g.dir, model->config(), model->plan()));
    const GreedyResult res = generate_greedy(*model, g.prompt, int64_t(g.greedy.size()), g.tokenizer_size, 0, 3);
    EXPECT_EQ(res.tokens, g.greedy);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LoraGoldenTest, ::testing::ValuesIn(k_cases), case_name);

// Base, adapter A, adapter B and A again (a prefill chunk and single-token decodes mixed) in one
// forward, in an order that interleaves adapters: each sequence's logits are bitwise its logits alone.
TEST(LoraMixedBatch, EachSequenceBitwiseAsAlone) {
    for (const std::string fixture : {"phi2_qkln", "phi3_mini_4k_swa"}) {
        SCOPED_TRACE(fixture);
        std::vector<std::string> names;
        for (const auto& [f, a] : test::lora_fixture_names())
            if (f == fixture) names.push_back(a);
        ASSERT_GE(names.size(), 2u);
        LocalCommunicator comm;
        auto model = load_fixture(fixture, comm);
        model->add_adapter(7, load_lora_adapter(test::fixture_dir(fixture) / "lora" / names[0], model->config(),
                                                model->plan()));
        model->add_adapter(2, load_lora_adapter(test::fixture_dir(fixture) / "lora" / names[1], model->config(),
                                                model->plan()));
        const test::Golden g = test::load_golden(fixture);
        const std::vector<int32_t> prompt = g.prompt;
        const std::vector<int32_t> adapters = {7, 0, 2, 7};
        // Each sequence: a prefill of the prompt, then one decode step of token 5.
        const int n = int(adapters.size());
        std::vector<std::vector<int32_t>> tables;
        for (int i = 0; i < n; ++i) tables.push_back(blocks(8 * i, 8));
        const std::vector<int32_t> one = {5};
        auto step = [&](int i, bool decode) {
            SeqStep s;
            s.tokens = decode ? std::span<const int32_t>(one) : std::span<const int32_t>(prompt);
            s.start_pos = decode ? int64_t(prompt.size()) : 0;
            s.block_table = tables[size_t(i)];
            s.all_logits = !decode;
            s.adapter = adapters[size_t(i)];
            return s;
        };
        const int64_t vp = model->vocab_padded();
        // Alone: prefill then decode for each sequence, in its own blocks.
        std::vector<std::vector<float>> alone_prefill(static_cast<size_t>(n)), alone_decode(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) {
            const SeqStep p = step(i, false);
            model->forward(std::span<const SeqStep>(&p, 1), &alone_prefill[size_t(i)]);
            const SeqStep d = step(i, true);
            model->forward(std::span<const SeqStep>(&d, 1), &alone_decode[size_t(i)]);
        }
        // Mixed: sequences 0 and 1 prefilled together, then 0 and 1 decode while 2 and 3 prefill.
        std::vector<float> mixed;
        std::vector<SeqStep> first = {step(0, false), step(1, false)};
        model->forward(first, &mixed);
        for (int i = 0; i < 2; ++i)
            EXPECT_EQ(0, std::memcmp(mixed.data() + size_t(i) * prompt.size() * size_t(vp),
                                     alone_prefill[size_t(i)].data(), prompt.size() * size_t(vp) * 4))
                << "prefill of sequence " << i;
        std::vector<SeqStep> second = {step(2, false), step(0, true), step(3, false), step(1, true)};
        model->forward(second, &mixed);
        const size_t P = prompt.size() * size_t(vp), V = size_t(vp);
        EXPECT_EQ(0, std::memcmp(mixed.data(), alone_prefill[2].data(), P * 4)) << "prefill of sequence 2";
        EXPECT_EQ(0, std::memcmp(mixed.data() + P, alone_decode[0].data(), V * 4)) << "decode of sequence 0";
        EXPECT_EQ(0, std::memcmp(mixed.data() + P + V, alone_prefill[3].data(), P * 4)) << "prefill of sequence 3";
        EXPECT_EQ(0, std::memcmp(mixed.data() + 2 * P + V, alone_decode[1].data(), V * 4)) << "decode of sequence 1";
        // Sequences 0 and 3 share adapter 7 and inputs: the same logits; adapter 2's differ.
        EXPECT_EQ(alone_prefill[0], alone_prefill[3]);
        EXPECT_NE(alone_prefill[0], alone_prefill[2]);
        EXPECT_NE(alone_prefill[0], alone_prefill[1]);
    }
}

TEST(LoraModel, UnknownAdapterIdAndRemovalAreRefused) {
    LocalCommunicator comm;
    auto model = load_fixture("phi2_qkln", comm);
    const auto dir = test::fixture_dir("phi2_qkln") / "lora" / "phi2_r8_all";
    model->add_adapter(1, load_lora_adapter(dir, model->config(), model->plan()));
    EXPECT_THROW(model->add_adapter(1, load_lora_adapter(dir, model->config(), model->plan())), Error);
    EXPECT_THROW(model->add_adapter(0, load_lora_adapter(dir, model->config(), model->plan())), Error);
    const std::vector<int32_t> tokens = {1, 2, 3};
    const std::vector<int32_t> table = blocks(0, 4);
    SeqStep s;
    s.tokens = tokens;
    s.block_table = table;
    s.adapter = 4;
    std::vector<float> logits;
    try {
        model->forward(std::span<const SeqStep>(&s, 1), &logits);
        ADD_FAILURE() << "an unloaded adapter id ran";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("adapter 4, which is not loaded"), std::string::npos) << e.what();
    }
    model->remove_adapter(1);
    EXPECT_FALSE(model->has_adapter(1));
    s.adapter = 1;
    EXPECT_THROW(model->forward(std::span<const SeqStep>(&s, 1), &logits), Error);
    EXPECT_THROW(model->remove_adapter(1), Error);
}

}  // namespace
}  // namespace phi
