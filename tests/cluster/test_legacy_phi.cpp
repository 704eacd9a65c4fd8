// Legacy phi-msft checkpoints (Phi-1.5/Phi-2's first releases, the layout MLC-LLM still loads):
// tests/fixtures/phi1_msft is tests/fixtures/phi1 renamed to that layout with the q/k/v projections
// fused into Wqkv (scripts/make_legacy_phi_fixture.py), so the forward must give bitwise the same
// logits on both folders at TP 1 and TP 2, and HF's greedy tokens; broken legacy folders fail
// naming the tensor.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "kernels/cpu/isa.h"
#include "sharding/model_config.h"
#include "tests/cluster/thread_ranks.h"
#include "tests/support/fixtures.h"
#include "worker/generate.h"
#include "worker/load_model.h"
#include "worker/step_executor.h"

namespace phi {
namespace {

ModelOptions options() {
    ModelOptions opts;
    opts.isa = kernels::cpu::choose_isa();
    opts.kv = KvCacheConfig{64, 4};
    return opts;
}

std::vector<int32_t> block_table() {
    std::vector<int32_t> table(16);
    for (int i = 0; i < 16; ++i) table[size_t(i)] = i;
    return table;
}

// Prompt logits (rows of vocab_size) at TP 1.
std::vector<float> tp1_logits(const std::filesystem::path& dir, const std::vector<int32_t>& prompt) {
    LocalCommunicator local;
    auto model = load_model(dir, local, options());
    const std::vector<int32_t> table = block_table();  // SeqStep only views it
    SeqStep st;
    st.tokens = prompt;
    st.block_table = table;
    st.all_logits = true;
    std::vector<float> padded;
    model->forward(std::span<const SeqStep>(&st, 1), &padded);
    const int64_t vp = model->plan().vocab_padded, v = model->config().vocab_size;
    std::vector<float> out;
    for (size_t r = 0; r < prompt.size(); ++r)
        out.insert(out.end(), padded.begin() + int64_t(r) * vp, padded.begin() + int64_t(r) * vp + v);
    return out;
}

struct TpResult {
    std::vector<float> logits;  // rows of vocab_size
    std::vector<int32_t> greedy;
};

TpResult tp_run(const std::filesystem::path& dir, int n, const test::Golden& g) {
    TpResult res;
    test::run_ranks(n, [&](ThreadCommunicator& comm) {
        omp_set_num_threads(1);
        auto model = load_model(dir, comm, options());
        WatchdogOptions wd;
        wd.plan_wait = std::chrono::milliseconds(60000);
        StepExecutor exec(*model, comm, wd);
        if (comm.rank() != 0) {
            exec.follow();
            return;
        }
        StepPlan plan;
        SeqPlan sp;
        sp.tokens = g.prompt;
        sp.block_table = block_table();
        sp.all_logits = true;
        plan.seqs.push_back(sp);
        std::vector<float> padded;
        exec.run(plan, &padded);
        const int64_t vp = model->plan().vocab_padded, v = model->config().vocab_size;
        for (size_t r = 0; r < g.prompt.size(); ++r)
            res.logits.insert(res.logits.end(), padded.begin() + int64_t(r) * vp,
                              padded.begin() + int64_t(r) * vp + v);
        res.greedy = generate_greedy(exec, g.prompt, int64_t(g.greedy.size()), g.tokenizer_size, 16).tokens;
        exec.shutdown();
    });
    return res;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(LegacyPhiMsft, ConfigDescribesTheSameModel) {
    const ModelConfig hf = load_model_config(test::fixture_dir("phi1") / "config.json");
    const ModelConfig legacy = load_model_config(test::fixture_dir("phi1_msft") / "config.json");
    EXPECT_EQ(legacy.layout, WeightLayout::PhiMsft);
    EXPECT_EQ(hf.layout, WeightLayout::HfNative);
    EXPECT_EQ(legacy.arch, hf.arch);
    EXPECT_EQ(legacy.d_model, hf.d_model);
    EXPECT_EQ(legacy.d_ff, hf.d_ff);
    EXPECT_EQ(legacy.n_layers, hf.n_layers);
    EXPECT_EQ(legacy.n_heads, hf.n_heads);
    EXPECT_EQ(legacy.n_kv_heads, hf.n_kv_heads);
    EXPECT_EQ(legacy.head_dim, hf.head_dim);
    EXPECT_EQ(legacy.rotary_dim, hf.rotary_dim);
    EXPECT_EQ(legacy.rope_theta, hf.rope_theta);
    EXPECT_EQ(legacy.norm_eps, hf.norm_eps);
    EXPECT_EQ(legacy.vocab_size, hf.vocab_size);
    EXPECT_EQ(legacy.max_position_embeddings, hf.max_position_embeddings);
    EXPECT_EQ(legacy.parallel_residual, hf.parallel_residual);
    EXPECT_EQ(legacy.lm_head_bias, hf.lm_head_bias);
}

TEST(LegacyPhiMsft, BitwiseSameLogitsAsTheHfLayoutAtTp1) {
    const test::Golden g = test::load_golden("phi1");
    const auto hf = tp1_logits(test::fixture_dir("phi1"), g.prompt);
    const auto legacy = tp1_logits(test::fixture_dir("phi1_msft"), g.prompt);
    ASSERT_EQ(hf.size(), g.prompt.size() * size_t(g.prompt_logits[0].size()));
    EXPECT_TRUE(bitwise_equal(hf, legacy));
}

TEST(LegacyPhiMsft, BitwiseSameLogitsAsTheHfLayoutAtTp2AndHfGreedyTokens) {
    const test::Golden g = test::load_golden("phi1");
    const TpResult hf = tp_run(test::fixture_dir("phi1"), 2, g);
    const TpResult legacy = tp_run(test::fixture_dir("phi1_msft"), 2, g);
    ASSERT_FALSE(hf.logits.empty());
    EXPECT_TRUE(bitwise_equal(hf.logits, legacy.logits));
    EXPECT_EQ(legacy.greedy, g.greedy);
    EXPECT_EQ(hf.greedy, g.greedy);
}

// A legacy folder whose config and tensors disagree: the error names the tensor to fix.
class BrokenLegacyFolder : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() /
               ("phi_legacy_" + std::to_string(::getpid()) + "_" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_);
        std::filesystem::create_symlink(test::fixture_dir("phi1_msft") / "model.safetensors",
                                        dir_ / "model.safetensors");
        std::ifstream in(test::fixture_dir("phi1_msft") / "config.json");
        config_ = nlohmann::json::parse(in);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string load_error() {
        std::ofstream(dir_ / "config.json") << config_.dump();
        LocalCommunicator local;
        try {
            load_model(dir_, local, options());
        } catch (const phi::Error& e) {
            return e.what();
        }
        return "(loaded)";
    }
    std::filesystem::path dir_;
    nlohmann::json config_;
};

TEST_F(BrokenLegacyFolder, MissingTensorIsNamed) {
    config_["n_layer"] = 3;
    const std::string what = load_error();
    EXPECT_NE(what.find("transformer.h.2.ln.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("not found"), std::string::npos) << what;
}

TEST_F(BrokenLegacyFolder, WrongShapeIsNamed) {
    config_["n_inner"] = 96;
    const std::string what = load_error();
    EXPECT_NE(what.find("transformer.h.0.mlp.fc1.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("96"), std::string::npos) << what;
}

TEST_F(BrokenLegacyFolder, WrongHeadCountIsNamedOnTheFusedQkv) {
    config_["n_head_kv"] = 2;  // Wqkv then must have (4 + 2*2) * 16 rows, not 192
    const std::string what = load_error();
    EXPECT_NE(what.find("transformer.h.0.mixer.Wqkv.weight"), std::string::npos) << what;
}

}  // namespace
}  // namespace phi
