// Loading PEFT adapters: PEFT's matching rules (list suffixes, regex full match, layers_to_transform,
// rank/alpha patterns, rsLoRA scale), and every refusal named in issue 19 with the field, tensor or
// file it names: DoRA, modules_to_save, bias, lora_bias, fan_in_fan_out, layer_replication,
// target_parameters, PhiMoE experts, unknown targets, rank above max_lora_rank, shapes of another
// model, another architecture's base model, a truncated file, a missing tensor, a stray tensor, .bin.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "sharding/lora_config.h"
#include "sharding/safetensors.h"
#include "sharding/shard_plan.h"
#include "tests/sharding/sharding_test_util.h"
#include "tests/support/fixtures.h"
#include "worker/lora_weights.h"

namespace phi {
namespace {

using test::expect_error;
using test::json;

LoraConfig config_of(const json& j) { return parse_lora_config(j.dump(), "test adapter_config.json"); }

TEST(LoraConfig, TargetListMatchesNamesAndDotSuffixes) {
    const LoraConfig c = config_of({{"r", 4}, {"target_modules", {"q_proj", "mlp.fc2"}}});
    EXPECT_TRUE(lora_targets(c, "model.layers.0.self_attn.q_proj"));
    EXPECT_TRUE(lora_targets(c, "model.layers.3.mlp.fc2"));
    EXPECT_TRUE(lora_targets(c, "q_proj"));
    EXPECT_FALSE(lora_targets(c, "model.layers.0.self_attn.k_proj"));
    EXPECT_FALSE(lora_targets(c, "model.layers.0.self_attn.xq_proj"));  // a suffix must start at a dot
}

TEST(LoraConfig, TargetRegexMustMatchTheWholeName) {
    const LoraConfig c = config_of({{"r", 4}, {"target_modules", R"(.*\.(q_proj|fc2))"}});
    EXPECT_TRUE(lora_targets(c, "model.layers.0.self_attn.q_proj"));
    EXPECT_TRUE(lora_targets(c, "model.layers.1.mlp.fc2"));
    EXPECT_FALSE(lora_targets(c, "model.layers.1.mlp.fc1"));
    const LoraConfig bare = config_of({{"r", 4}, {"target_modules", "q_proj"}});
    EXPECT_FALSE(lora_targets(bare, "model.layers.0.self_attn.q_proj"));  // re.fullmatch, not search
}

TEST(LoraConfig, LayersToTransformAndExcludeModules) {
    const LoraConfig c = config_of(
        {{"r", 4}, {"target_modules", {"q_proj", "fc1"}}, {"layers_to_transform", {1, 2}}, {"exclude_modules", {"fc1"}}});
    EXPECT_FALSE(lora_targets(c, "model.layers.0.self_attn.q_proj"));
    EXPECT_TRUE(lora_targets(c, "model.layers.1.self_attn.q_proj"));
    EXPECT_TRUE(lora_targets(c, "model.layers.2.self_attn.q_proj"));
    EXPECT_FALSE(lora_targets(c, "model.layers.1.mlp.fc1"));
    const LoraConfig one = config_of({{"r", 4}, {"target_modules", {"q_proj"}}, {"layers_to_transform", 0}});
    EXPECT_TRUE(lora_targets(one, "model.layers.0.self_attn.q_proj"));
    EXPECT_FALSE(lora_targets(one, "model.layers.10.self_attn.q_proj"));
    expect_error([] { config_of({{"r", 4}, {"target_modules", ".*q_proj"}, {"layers_to_transform", {0}}}); },
                 {"layers_to_transform", "regex"});
}

TEST(LoraConfig, RankAndScaleFollowPatternsAndRsLora) {
    const LoraConfig c = config_of({{"r", 8},
                                    {"lora_alpha", 16},
                                    {"target_modules", {"o_proj", "down_proj"}},
                                    {"rank_pattern", {{"o_proj", 4}}},
                                    {"alpha_pattern", {{"layers.1.mlp.down_proj", 2}}}});
    EXPECT_EQ(lora_rank(c, "model.layers.0.self_attn.o_proj"), 4);
    EXPECT_EQ(lora_rank(c, "model.layers.0.mlp.down_proj"), 8);
    EXPECT_DOUBLE_EQ(lora_scale(c, "model.layers.0.self_attn.o_proj"), 16.0 / 4);
    EXPECT_DOUBLE_EQ(lora_scale(c, "model.layers.0.mlp.down_proj"), 16.0 / 8);
    EXPECT_DOUBLE_EQ(lora_scale(c, "model.layers.1.mlp.down_proj"), 2.0 / 8);
    const LoraConfig rs = config_of({{"r", 4}, {"lora_alpha", 8}, {"use_rslora", true}, {"target_modules", {"fc1"}}});
    EXPECT_DOUBLE_EQ(lora_scale(rs, "model.layers.0.mlp.fc1"), 8.0 / std::sqrt(4.0));
}

TEST(LoraConfig, RefusesFieldsThatChangeTheMath) {
    const json base = {{"r", 4}, {"target_modules", {"q_proj"}}};
    const std::vector<std::pair<json, std::string>> cases = {
        {{{"use_dora", true}}, "use_dora"},
        {{{"modules_to_save", {"lm_head"}}}, "modules_to_save"},
        {{{"bias", "lora_only"}}, "'bias'"},
        {{{"lora_bias", true}}, "lora_bias"},
        {{{"fan_in_fan_out", true}}, "fan_in_fan_out"},
        {{{"layer_replication", {{0, 1}}}}, "layer_replication"},
        {{{"target_parameters", {"experts.gate_up_proj"}}}, "target_parameters"},
        {{{"peft_type", "IA3"}}, "peft_type"},
        {{{"target_modules", "(?P<m>q_proj)"}}, "target_modules"},
        {{{"target_modules", nullptr}}, "target_modules"},
    };
    for (const auto& [patch, word] : cases) {
        json j = base;
        j.update(patch);
        SCOPED_TRACE(j.dump());
        expect_error([&] { config_of(j); }, {word});
    }
    // Defaults written by PEFT are accepted.
    config_of({{"r", 4}, {"target_modules", {"q_proj"}}, {"use_dora", false}, {"modules_to_save", nullptr},
               {"bias", "none"}, {"lora_bias", false}, {"fan_in_fan_out", false}, {"layer_replication", nullptr},
               {"target_parameters", nullptr}, {"peft_type", "LORA"}});
}

/// A copy of a fixture adapter whose config and tensors a test may change.
class AdapterCopy {
public:
    AdapterCopy(const std::string& fixture, const std::string& name)
        : src_(test::fixture_dir(fixture) / "lora" / name), dir_(tmp_.path() / name) {
        std::filesystem::create_directories(dir_);
        std::filesystem::copy(src_ / "adapter_config.json", dir_ / "adapter_config.json");
        std::filesystem::copy(src_ / "adapter_model.safetensors", dir_ / "adapter_model.safetensors");
        std::ifstream in(dir_ / "adapter_config.json");
        config_ = json::parse(in);
    }
    json& config() { return config_; }
    void write_config() { test::write_file(dir_ / "adapter_config.json", config_.dump(2)); }
    /// Rewrites the tensors: `keep` decides which survive; `extra` are added.
    void rewrite_tensors(const std::function<bool(const std::string&)>& keep,
                         const std::vector<test::TensorSpec>& extra = {}) {
        std::vector<test::TensorSpec> specs;
        {
            const SafetensorsFile f(src_ / "adapter_model.safetensors");
            for (const auto& [n, t] : f.tensors()) {
                if (!keep(n)) continue;
                specs.push_back({n, std::string(dtype_name(t.dtype)), t.shape,
                                 std::string(reinterpret_cast<const char*>(t.data), t.nbytes)});
            }
        }
        specs.insert(specs.end(), extra.begin(), extra.end());
        test::write_file(dir_ / "adapter_model.safetensors", test::build_safetensors(specs));
    }
    const std::filesystem::path& dir() const { return dir_; }

private:
    test::TempDir tmp_;
    std::filesystem::path src_, dir_;
    json config_;
};

struct Base {
    explicit Base(const std::string& fixture)
        : cfg(load_model_config(test::fixture_dir(fixture) / "config.json")), plan(make_shard_plan(cfg, 1, 0)) {}
    ModelConfig cfg;
    ShardPlan plan;
};

TEST(LoraLoading, RefusalsNameTheFieldTensorOrFile) {
    const Base phi2("phi2_qkln");
    auto load = [&](const AdapterCopy& a, LoraLoadOptions o = {}) { load_lora_adapter(a.dir(), phi2.cfg, phi2.plan, o); };
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        load(a);  // the fixture itself loads
        a.config()["use_dora"] = true;
        a.write_config();
        expect_error([&] { load(a); }, {"use_dora", "DoRA"});
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        expect_error([&] { load(a, LoraLoadOptions{4}); }, {"rank 8", "max_lora_rank 4"});
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        a.config()["target_modules"] = {"q_proj", "foo_proj"};
        a.write_config();
        expect_error([&] { load(a); }, {"target_modules", "foo_proj", "supported"});
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        a.config()["target_modules"] = {"q_proj", "lm_head"};
        a.write_config();
        expect_error([&] { load(a); }, {"lm_head", "not supported"});
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        a.config()["base_model_name_or_path"] = "microsoft/Phi-3-mini-4k-instruct";
        a.write_config();
        expect_error([&] { load(a); }, {"base_model_name_or_path", "Phi3ForCausalLM", "PhiForCausalLM"});
        a.config()["base_model_name_or_path"] = "microsoft/phi-2";
        a.write_config();
        load(a);
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        a.rewrite_tensors([](const std::string& n) { return n != "base_model.model.model.layers.1.mlp.fc2.lora_B.weight"; });
        expect_error([&] { load(a); }, {"base_model.model.model.layers.1.mlp.fc2.lora_B.weight", "missing"});
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        a.rewrite_tensors([](const std::string&) { return true; },
                          {{"base_model.model.lm_head.lora_A.weight", "F32", {1, 1}, std::string(4, '\0')}});
        expect_error([&] { load(a); }, {"base_model.model.lm_head.lora_A.weight", "not the lora_A/lora_B"});
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        const auto path = a.dir() / "adapter_model.safetensors";
        std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
        expect_error([&] { load(a); }, {"adapter_model.safetensors"});
    }
    {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        std::filesystem::remove(a.dir() / "adapter_model.safetensors");
        test::write_file(a.dir() / "adapter_model.bin", "not read");
        expect_error([&] { load(a); }, {"adapter_model.bin", "safetensors"});
    }
    {
        // An adapter for a Phi model of another size: shapes do not match.
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        const Base phi1("phi1");
        expect_error([&] { load_lora_adapter(a.dir(), phi1.cfg, phi1.plan); }, {"lora_A", "expected", "base model"});
    }
    {
        // Phi-3 module names on a Phi-2 model.
        AdapterCopy a("phi3_mini_4k_swa", "phi3_r4_layers");
        expect_error([&] { load(a); }, {"gate_up_proj", "PhiForCausalLM", "supported"});
    }
}

TEST(LoraLoading, PhiMoeExpertsAreRefused) {
    const Base moe("phimoe");
    for (const json& targets : {json{"q_proj", "w1"}, json(".*experts.*"), json{"gate"}}) {
        AdapterCopy a("phi2_qkln", "phi2_r8_all");
        a.config()["target_modules"] = targets;
        a.config().erase("base_model_name_or_path");
        a.write_config();
        SCOPED_TRACE(targets.dump());
        expect_error([&] { load_lora_adapter(a.dir(), moe.cfg, moe.plan); }, {"target_modules", "PhiMoE"});
    }
}

// Each rank reads only its slices: at TP 2 the two ranks' B rows (column-parallel) and A columns
// (row-parallel) put together are the TP 1 tensors.
TEST(LoraLoading, RankSlicesReassembleTheWholeAdapter) {
    const Base phi3("phi3_mini_4k_swa");
    const auto dir = test::fixture_dir("phi3_mini_4k_swa") / "lora" / "phi3_r8_pattern";
    const LoraAdapterWeights whole = load_lora_adapter(dir, phi3.cfg, phi3.plan);
    std::vector<LoraAdapterWeights> parts;
    for (int r = 0; r < 2; ++r) parts.push_back(load_lora_adapter(dir, phi3.cfg, make_shard_plan(phi3.cfg, 2, r)));
    EXPECT_LT(parts[0].bytes_read, whole.bytes_read);
    const int64_t hd = phi3.cfg.head_dim, nh = phi3.cfg.n_heads, f = phi3.cfg.d_ff;
    for (size_t l = 0; l < whole.layers.size(); ++l) {
        const LoraLayerWeights& w = whole.layers[l];
        // o_proj (row-parallel): A's columns split, B replicated.
        const int64_t r_o = w.out.rank(), cols_half = nh * hd / 2;
        for (int rk = 0; rk < 2; ++rk) {
            const LoraPair& p = parts[size_t(rk)].layers[l].out;
            ASSERT_EQ(p.a.cols(), cols_half);
            for (int64_t i = 0; i < r_o; ++i)
                for (int64_t j = 0; j < cols_half; ++j)
                    ASSERT_EQ(p.a.f32()[i * cols_half + j], w.out.a.f32()[i * nh * hd + rk * cols_half + j]);
            ASSERT_EQ(0, std::memcmp(p.b.f32(), w.out.b.f32(), w.out.b.bytes.size()));
        }
        // gate_up (column-parallel, fused): each rank's rows are its gate half then its up half.
        const int64_t r_u = w.up.rank(), fh = f / 2;
        for (int rk = 0; rk < 2; ++rk) {
            const LoraPair& p = parts[size_t(rk)].layers[l].up;
            ASSERT_EQ(0, std::memcmp(p.a.f32(), w.up.a.f32(), w.up.a.bytes.size()));  // A replicated
            for (int64_t i = 0; i < fh; ++i)
                for (int64_t j = 0; j < r_u; ++j) {
                    ASSERT_EQ(p.b.f32()[i * r_u + j], w.up.b.f32()[(rk * fh + i) * r_u + j]);
                    ASSERT_EQ(p.b.f32()[(fh + i) * r_u + j], w.up.b.f32()[(f + rk * fh + i) * r_u + j]);
                }
        }
    }
}

}  // namespace
}  // namespace phi
