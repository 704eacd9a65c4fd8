// config.json -> ModelConfig for every Phi variant of reference/phi-models.md §1, the rope
// spellings (rope_scaling type/rope_type, "su", v5 rope_parameters), the refusals and the
// generation_config.json reader.
#include <gtest/gtest.h>

#include <cmath>

#include "sharding/model_config.h"
#include "sharding_test_util.h"

namespace phi {
namespace {

using test::expect_error;
using test::json;
using test::TempDir;
using test::write_file;

constexpr const char* k_origin = "test/config.json";

ModelConfig parse(const json& j) {
    return parse_model_config(j.dump(), k_origin);
}

std::function<void()> parser(const json& j) {
    return [j] { parse(j); };
}

std::vector<double> factors(size_t n, double first) {
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = first + 0.5 * double(i);
    return v;
}

// sqrt(1 + ln(131072/4096) / ln(4096)) = sqrt(17/12)
const float k_longrope_32x = float(std::sqrt(17.0 / 12.0));

json phi1() {
    return {{"architectures", {"PhiForCausalLM"}},
            {"model_type", "phi"},
            {"hidden_size", 2048},
            {"intermediate_size", 8192},
            {"num_hidden_layers", 24},
            {"num_attention_heads", 32},
            {"num_key_value_heads", nullptr},
            {"partial_rotary_factor", 0.5},
            {"rope_theta", 10000.0},
            {"rope_scaling", nullptr},
            {"max_position_embeddings", 2048},
            {"layer_norm_eps", 1e-05},
            {"hidden_act", "gelu_new"},
            {"vocab_size", 51200},
            {"tie_word_embeddings", false},
            {"qk_layernorm", false},
            {"resid_pdrop", 0.0},
            {"bos_token_id", nullptr},
            {"eos_token_id", nullptr},
            {"torch_dtype", "float32"}};
}

json phi3_mini_4k() {
    return {{"architectures", {"Phi3ForCausalLM"}},
            {"model_type", "phi3"},
            {"hidden_size", 3072},
            {"intermediate_size", 8192},
            {"num_hidden_layers", 32},
            {"num_attention_heads", 32},
            {"num_key_value_heads", 32},
            {"rope_theta", 10000.0},
            {"rope_scaling", nullptr},
            {"original_max_position_embeddings", 4096},
            {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-05},
            {"hidden_act", "silu"},
            {"sliding_window", 2047},
            {"vocab_size", 32064},
            {"tie_word_embeddings", false},
            {"attention_bias", false},
            {"bos_token_id", 1},
            {"eos_token_id", 32000},
            {"pad_token_id", 32000},
            {"torch_dtype", "bfloat16"}};
}

json phi35_mini() {
    json j = phi3_mini_4k();
    j["max_position_embeddings"] = 131072;
    j["sliding_window"] = 262144;
    j["rope_scaling"] = {
        {"type", "longrope"}, {"short_factor", factors(48, 1.0)}, {"long_factor", factors(48, 1.08)}};
    return j;
}

json phi4_mini() {
    json j = phi35_mini();
    j["num_attention_heads"] = 24;
    j["num_key_value_heads"] = 8;
    j["partial_rotary_factor"] = 0.75;
    j["vocab_size"] = 200064;
    j["tie_word_embeddings"] = true;
    j["lm_head_bias"] = false;
    j["mlp_bias"] = false;
    j["full_attn_mod"] = 1;
    j["bos_token_id"] = 199999;
    j["eos_token_id"] = 199999;
    j["rope_scaling"] = {
        {"type", "longrope"}, {"short_factor", factors(48, 1.0)}, {"long_factor", factors(48, 1.0)}};
    return j;
}

json phimoe(const char* arch) {
    return {{"architectures", {arch}},
            {"model_type", "phimoe"},
            {"hidden_size", 4096},
            {"intermediate_size", 6400},
            {"num_hidden_layers", 32},
            {"num_attention_heads", 32},
            {"num_key_value_heads", 8},
            {"num_local_experts", 16},
            {"num_experts_per_tok", 2},
            {"router_jitter_noise", 0.01},
            {"input_jitter_noise", 0.01},
            {"vocab_size", 32064},
            {"max_position_embeddings", 131072},
            {"rms_norm_eps", 1e-05},
            {"hidden_act", "silu"},
            {"rope_theta", 10000.0},
            {"rope_scaling",
             {{"type", "longrope"},
              {"short_factor", factors(64, 1.0)},
              {"long_factor", factors(64, 1.1)},
              {"short_mscale", 1.243163121016122},
              {"long_mscale", 1.243163121016122},
              {"original_max_position_embeddings", 4096}}},
            {"attention_bias", true},
            {"lm_head_bias", true},
            {"sliding_window", 131072},
            {"bos_token_id", 1},
            {"eos_token_id", 32000},
            {"tie_word_embeddings", false}};
}

TEST(ModelConfig, Phi1NullKvHeads) {
    ModelConfig c = parse(phi1());
    EXPECT_EQ(c.arch, Arch::Phi);
    EXPECT_EQ(c.architecture, "PhiForCausalLM");
    EXPECT_EQ(c.vocab_size, 51200);
    EXPECT_EQ(c.d_model, 2048);
    EXPECT_EQ(c.d_ff, 8192);
    EXPECT_EQ(c.n_layers, 24);
    EXPECT_EQ(c.n_heads, 32);
    EXPECT_EQ(c.n_kv_heads, 32);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.rotary_dim, 32);
    EXPECT_FLOAT_EQ(c.partial_rotary_factor, 0.5f);
    EXPECT_EQ(c.rope_theta, 10000.0f);
    EXPECT_EQ(c.max_position_embeddings, 2048);
    EXPECT_EQ(c.norm, NormKind::LayerNorm);
    EXPECT_TRUE(c.norm_bias);
    EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
    EXPECT_EQ(c.act, Activation::GeluNew);
    EXPECT_TRUE(c.parallel_residual);
    EXPECT_FALSE(c.qk_layernorm);
    EXPECT_TRUE(c.attention_bias);
    EXPECT_TRUE(c.mlp_bias);
    EXPECT_TRUE(c.lm_head_bias);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(c.sliding_window, 0);
    EXPECT_EQ(c.rope_scaling, RopeScaling::None);
    EXPECT_FALSE(c.bos_token_id.has_value());
    EXPECT_TRUE(c.eos_token_ids.empty());
    EXPECT_EQ(c.n_experts, 0);
}

TEST(ModelConfig, Phi1DefaultsWhenKeysAbsent) {
    json j = phi1();
    j.erase("partial_rotary_factor");
    j.erase("num_key_value_heads");
    j.erase("rope_theta");
    ModelConfig c = parse(j);
    EXPECT_EQ(c.n_kv_heads, 32);
    EXPECT_EQ(c.rotary_dim, 32);  // Phi default partial_rotary_factor 0.5
    EXPECT_EQ(c.rope_theta, 10000.0f);
}

TEST(ModelConfig, Phi2) {
    json j = phi1();
    j["hidden_size"] = 2560;
    j["intermediate_size"] = 10240;
    j["num_hidden_layers"] = 32;
    j["num_key_value_heads"] = 32;
    j["partial_rotary_factor"] = 0.4;
    j["bos_token_id"] = 50256;
    j["eos_token_id"] = 50256;
    ModelConfig c = parse(j);
    EXPECT_EQ(c.head_dim, 80);
    EXPECT_EQ(c.rotary_dim, 32);
    EXPECT_EQ(c.n_layers, 32);
    EXPECT_EQ(c.bos_token_id, 50256);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{50256}));
}

TEST(ModelConfig, Phi3Mini4kSlidingWindow) {
    ModelConfig c = parse(phi3_mini_4k());
    EXPECT_EQ(c.arch, Arch::Phi3);
    EXPECT_EQ(c.head_dim, 96);
    EXPECT_EQ(c.rotary_dim, 96);
    EXPECT_FLOAT_EQ(c.partial_rotary_factor, 1.0f);
    EXPECT_EQ(c.norm, NormKind::RmsNorm);
    EXPECT_FALSE(c.norm_bias);
    EXPECT_EQ(c.act, Activation::Silu);
    EXPECT_FALSE(c.parallel_residual);
    EXPECT_FALSE(c.attention_bias);
    EXPECT_FALSE(c.mlp_bias);
    EXPECT_FALSE(c.lm_head_bias);
    EXPECT_EQ(c.sliding_window, 2047);
    EXPECT_EQ(c.rope_scaling, RopeScaling::None);
    EXPECT_EQ(c.original_max_position_embeddings, 4096);
    EXPECT_EQ(c.rope_attention_factor, 1.0f);
    EXPECT_EQ(c.bos_token_id, 1);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{32000}));
}

TEST(ModelConfig, Phi35MiniLongRope) {
    ModelConfig c = parse(phi35_mini());
    EXPECT_EQ(c.rope_scaling, RopeScaling::LongRope);
    ASSERT_EQ(c.rope_short_factor.size(), 48u);
    ASSERT_EQ(c.rope_long_factor.size(), 48u);
    EXPECT_FLOAT_EQ(c.rope_short_factor[1], 1.5f);
    EXPECT_FLOAT_EQ(c.rope_long_factor[0], 1.08f);
    EXPECT_EQ(c.original_max_position_embeddings, 4096);
    EXPECT_EQ(c.max_position_embeddings, 131072);
    EXPECT_FLOAT_EQ(c.rope_attention_factor, k_longrope_32x);
    EXPECT_NEAR(c.rope_attention_factor, 1.1902381f, 1e-6f);
    EXPECT_FALSE(c.rope_short_mscale.has_value());
    EXPECT_EQ(c.sliding_window, 262144);
}

TEST(ModelConfig, Phi4MiniPartialRotaryAndTiedEmbeddings) {
    ModelConfig c = parse(phi4_mini());
    EXPECT_EQ(c.n_heads, 24);
    EXPECT_EQ(c.n_kv_heads, 8);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.rotary_dim, 96);
    EXPECT_FLOAT_EQ(c.partial_rotary_factor, 0.75f);
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_FALSE(c.lm_head_bias);
    EXPECT_EQ(c.vocab_size, 200064);
    EXPECT_EQ(c.rope_short_factor.size(), 48u);
    EXPECT_FLOAT_EQ(c.rope_attention_factor, k_longrope_32x);
}

TEST(ModelConfig, Phi4GqaTheta) {
    json j = phi3_mini_4k();
    j["hidden_size"] = 5120;
    j["intermediate_size"] = 17920;
    j["num_hidden_layers"] = 40;
    j["num_attention_heads"] = 40;
    j["num_key_value_heads"] = 10;
    j["rope_theta"] = 250000;
    j["max_position_embeddings"] = 16384;
    j["original_max_position_embeddings"] = 16384;
    j["vocab_size"] = 100352;
    j["sliding_window"] = nullptr;
    j["eos_token_id"] = {100257, 100265};
    ModelConfig c = parse(j);
    EXPECT_EQ(c.n_heads, 40);
    EXPECT_EQ(c.n_kv_heads, 10);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.rotary_dim, 128);
    EXPECT_EQ(c.rope_theta, 250000.0f);
    EXPECT_EQ(c.sliding_window, 0);
    EXPECT_EQ(c.rope_scaling, RopeScaling::None);
    EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{100257, 100265}));
}

TEST(ModelConfig, PhiMoEBothSpellings) {
    for (const char* arch : {"PhiMoEForCausalLM", "PhimoeForCausalLM"}) {
        SCOPED_TRACE(arch);
        ModelConfig c = parse(phimoe(arch));
        EXPECT_EQ(c.arch, Arch::PhiMoE);
        EXPECT_EQ(c.architecture, arch);
        EXPECT_EQ(c.norm, NormKind::LayerNorm);
        EXPECT_TRUE(c.norm_bias);
        EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
        EXPECT_EQ(c.act, Activation::Silu);
        EXPECT_FALSE(c.parallel_residual);
        EXPECT_TRUE(c.attention_bias);
        EXPECT_FALSE(c.mlp_bias);
        EXPECT_TRUE(c.lm_head_bias);
        EXPECT_EQ(c.n_experts, 16);
        EXPECT_EQ(c.n_experts_per_tok, 2);
        EXPECT_FLOAT_EQ(c.router_jitter_noise, 0.01f);
        EXPECT_EQ(c.d_ff, 6400);
        EXPECT_EQ(c.head_dim, 128);
        EXPECT_EQ(c.rotary_dim, 128);
        EXPECT_EQ(c.rope_scaling, RopeScaling::LongRope);
        EXPECT_EQ(c.rope_short_factor.size(), 64u);
        EXPECT_EQ(c.original_max_position_embeddings, 4096);
        EXPECT_EQ(c.rope_attention_factor, 1.0f);  // mscales replace the attention factor
        ASSERT_TRUE(c.rope_short_mscale.has_value());
        ASSERT_TRUE(c.rope_long_mscale.has_value());
        EXPECT_FLOAT_EQ(*c.rope_short_mscale, 1.243163121016122f);
        EXPECT_FLOAT_EQ(*c.rope_long_mscale, 1.243163121016122f);
        EXPECT_EQ(c.sliding_window, 131072);
    }
}

TEST(ModelConfig, PhiMoEBiasDefaultsTrue) {
    json j = phimoe("PhiMoEForCausalLM");
    j.erase("attention_bias");
    j.erase("lm_head_bias");
    j.erase("rope_theta");
    ModelConfig c = parse(j);
    EXPECT_TRUE(c.attention_bias);
    EXPECT_TRUE(c.lm_head_bias);
    EXPECT_EQ(c.rope_theta, 1e6f);  // HF PhimoeConfig default

    // Without mscales PhiMoE falls back to the LongRoPE attention factor; one alone is an error.
    j["rope_scaling"].erase("short_mscale");
    expect_error(parser(j), {"short_mscale", "long_mscale", "both"});
    j["rope_scaling"].erase("long_mscale");
    ModelConfig n = parse(j);
    EXPECT_FALSE(n.rope_short_mscale.has_value());
    EXPECT_FLOAT_EQ(n.rope_attention_factor, k_longrope_32x);
}

TEST(ModelConfig, SuAliasAndRopeType) {
    json j = phi35_mini();
    j["rope_scaling"]["type"] = "su";
    EXPECT_EQ(parse(j).rope_scaling, RopeScaling::LongRope);

    j["rope_scaling"].erase("type");
    j["rope_scaling"]["rope_type"] = "longrope";
    ModelConfig c = parse(j);
    EXPECT_EQ(c.rope_scaling, RopeScaling::LongRope);
    EXPECT_FLOAT_EQ(c.rope_attention_factor, k_longrope_32x);

    j["rope_scaling"]["type"] = "linear";
    expect_error(parser(j), {"rope_scaling.type", "rope_scaling.rope_type", "disagree"});
}

TEST(ModelConfig, LegacyYarnNameOnPhi3MeansLongRope) {
    // HF Phi3Config rewrites {"type": "yarn"} with factor lists to longrope.
    json j = phi35_mini();
    j["rope_scaling"]["type"] = "yarn";
    EXPECT_EQ(parse(j).rope_scaling, RopeScaling::LongRope);
}

TEST(ModelConfig, UnsupportedRopeTypes) {
    for (const char* t : {"linear", "dynamic", "yarn", "llama3"}) {
        SCOPED_TRACE(t);
        json j = phi3_mini_4k();
        j["rope_scaling"] = {{"type", t}, {"factor", 2.0}};
        expect_error(parser(j), {k_origin, t, "not supported", "longrope"});
    }
    json j = phi3_mini_4k();
    j["rope_scaling"] = "longrope";
    expect_error(parser(j), {"rope_scaling", "must be an object"});
}

TEST(ModelConfig, AttentionFactorOverrideAndExplicitOriginal) {
    json j = phi35_mini();
    j["rope_scaling"]["attention_factor"] = 1.5;
    EXPECT_FLOAT_EQ(parse(j).rope_attention_factor, 1.5f);

    // original_max_position_embeddings inside rope_scaling instead of the top level.
    j = phi35_mini();
    j.erase("original_max_position_embeddings");
    j["rope_scaling"]["original_max_position_embeddings"] = 4096;
    ModelConfig c = parse(j);
    EXPECT_EQ(c.original_max_position_embeddings, 4096);
    EXPECT_FLOAT_EQ(c.rope_attention_factor, k_longrope_32x);

    j["original_max_position_embeddings"] = 8192;
    expect_error(parser(j), {"original_max_position_embeddings", "4096", "8192", "agree"});

    // factor <= 1 gives attention factor 1.
    j = phi35_mini();
    j["max_position_embeddings"] = 4096;
    EXPECT_EQ(parse(j).rope_attention_factor, 1.0f);
}

TEST(ModelConfig, RopeParametersV5Spelling) {
    json j = phi4_mini();
    j.erase("rope_scaling");
    j.erase("rope_theta");
    j.erase("partial_rotary_factor");
    j.erase("original_max_position_embeddings");
    j["rope_parameters"] = {{"rope_type", "longrope"},          {"rope_theta", 10000.0},
                            {"partial_rotary_factor", 0.75},    {"original_max_position_embeddings", 4096},
                            {"short_factor", factors(48, 1.0)}, {"long_factor", factors(48, 2.0)}};
    ModelConfig c = parse(j);
    EXPECT_EQ(c.rotary_dim, 96);
    EXPECT_EQ(c.rope_scaling, RopeScaling::LongRope);
    EXPECT_EQ(c.original_max_position_embeddings, 4096);
    EXPECT_FLOAT_EQ(c.rope_long_factor[0], 2.0f);
    EXPECT_FLOAT_EQ(c.rope_attention_factor, k_longrope_32x);

    json d = phi3_mini_4k();
    d.erase("rope_scaling");
    d.erase("rope_theta");
    d["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 250000.0}};
    ModelConfig c2 = parse(d);
    EXPECT_EQ(c2.rope_scaling, RopeScaling::None);
    EXPECT_EQ(c2.rope_theta, 250000.0f);

    d["rope_parameters"]["rope_type"] = "yarn";
    expect_error(parser(d), {"rope_parameters", "yarn", "not supported"});
}

TEST(ModelConfig, FactorListWrongLength) {
    json j = phi35_mini();
    j["rope_scaling"]["short_factor"] = factors(47, 1.0);
    expect_error(parser(j), {k_origin, "'rope_scaling.short_factor'", "47", "48"});
    j = phi4_mini();  // rotary_dim 96 -> 48, not head_dim/2 = 64
    j["rope_scaling"]["long_factor"] = factors(64, 1.0);
    expect_error(parser(j), {"long_factor", "64", "48"});
    j = phi35_mini();
    j["rope_scaling"].erase("long_factor");
    expect_error(parser(j), {"long_factor", "missing"});
    j = phi35_mini();
    j["rope_scaling"]["short_factor"][3] = "x";
    expect_error(parser(j), {"short_factor", "list of numbers"});
}

TEST(ModelConfig, RefusesPhi3Small) {
    json j = phi3_mini_4k();
    j["architectures"] = {"Phi3SmallForCausalLM"};
    j["model_type"] = "phi3small";
    expect_error(parser(j),
                 {k_origin, "Phi3SmallForCausalLM", "different architecture", "blocksparse", "gegelu"});
}

json phi2_msft() {  // microsoft/phi-2's config.json before the 2024 HF-native revision
    return {{"architectures", {"PhiForCausalLM"}},
            {"model_type", "phi-msft"},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", 1e-5},
            {"n_embd", 2560},
            {"n_head", 32},
            {"n_head_kv", nullptr},
            {"n_inner", nullptr},
            {"n_layer", 32},
            {"n_positions", 2048},
            {"rotary_dim", 32},
            {"tie_word_embeddings", false},
            {"vocab_size", 51200}};
}

TEST(ModelConfig, PhiMsftMapsToThePhiArchitecture) {
    const ModelConfig c = parse(phi2_msft());
    EXPECT_EQ(c.arch, Arch::Phi);
    EXPECT_EQ(c.layout, WeightLayout::PhiMsft);
    EXPECT_EQ(c.d_model, 2560);
    EXPECT_EQ(c.d_ff, 4 * 2560);  // n_inner null means 4 * n_embd
    EXPECT_EQ(c.n_heads, 32);
    EXPECT_EQ(c.n_kv_heads, 32);
    EXPECT_EQ(c.head_dim, 80);
    EXPECT_EQ(c.rotary_dim, 32);
    EXPECT_EQ(c.n_layers, 32);
    EXPECT_EQ(c.vocab_size, 51200);
    EXPECT_EQ(c.max_position_embeddings, 2048);
    EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
    EXPECT_TRUE(c.parallel_residual);
    EXPECT_TRUE(c.lm_head_bias);
    EXPECT_FALSE(c.qk_layernorm);
    json k = phi2_msft();
    k["n_inner"] = 6000;
    k["n_head_kv"] = 8;
    EXPECT_EQ(parse(k).d_ff, 6000);
    EXPECT_EQ(parse(k).n_kv_heads, 8);
}

TEST(ModelConfig, PhiMsftMissingOrBadKeysAreNamed) {
    for (const char* key : {"n_embd", "n_head", "n_layer", "rotary_dim", "vocab_size"}) {
        json j = phi2_msft();
        j.erase(key);
        expect_error(parser(j), {k_origin, "required key", key});
    }
    json odd = phi2_msft();
    odd["rotary_dim"] = 33;
    expect_error(parser(odd), {k_origin, "rotary_dim", "even"});
    json act = phi2_msft();
    act["activation_function"] = "relu";
    expect_error(parser(act), {k_origin, "activation_function", "gelu_new"});
    json both = phi2_msft();
    both["hidden_size"] = 2560;
    expect_error(parser(both), {k_origin, "hidden_size", "phi-msft"});
    // HF-native keys with a stray legacy key: refused, naming both layouts
    json k = phi1();
    k["n_embd"] = 2048;
    expect_error(parser(k), {"phi-msft", "convert"});
}

TEST(ModelConfig, RefusesUnknownArchitecture) {
    json j = phi3_mini_4k();
    j["architectures"] = {"LlamaForCausalLM"};
    expect_error(parser(j), {k_origin, "LlamaForCausalLM", "not supported", "PhiForCausalLM",
                             "Phi3ForCausalLM", "PhiMoEForCausalLM"});
    j["architectures"] = json::array();
    expect_error(parser(j), {"architectures", "non-empty"});
    j["architectures"] = "Phi3ForCausalLM";
    expect_error(parser(j), {"architectures", "non-empty"});
    j.erase("architectures");
    expect_error(parser(j), {"architectures", "missing"});
}

TEST(ModelConfig, WrongTypesNameKeyAndFile) {
    json j = phi3_mini_4k();
    j["hidden_size"] = "3072";
    expect_error(parser(j), {k_origin, "'hidden_size'", "must be an integer"});
    j = phi3_mini_4k();
    j["num_hidden_layers"] = 32.5;
    expect_error(parser(j), {"'num_hidden_layers'", "must be an integer"});
    j = phi3_mini_4k();
    j["rms_norm_eps"] = "1e-5";
    expect_error(parser(j), {"'rms_norm_eps'", "must be a number"});
    j = phi3_mini_4k();
    j["tie_word_embeddings"] = 1;
    expect_error(parser(j), {"'tie_word_embeddings'", "true or false"});
    j = phi3_mini_4k();
    j["eos_token_id"] = {32000, "x"};
    expect_error(parser(j), {"'eos_token_id'", "must be an integer"});
    j = phi3_mini_4k();
    j.erase("vocab_size");
    expect_error(parser(j), {"'vocab_size'", "missing"});
    j = phi3_mini_4k();
    j["intermediate_size"] = 0;
    expect_error(parser(j), {"'intermediate_size'", "> 0"});
    j = phi3_mini_4k();
    j["sliding_window"] = 0;
    expect_error(parser(j), {"'sliding_window'", "> 0"});
    j = phi3_mini_4k();
    j["hidden_act"] = "gelu";
    expect_error(parser(j), {"hidden_act", "gelu", "silu"});
    expect_error([] { parse_model_config("{\"hidden_size\": ", k_origin); }, {k_origin, "not valid JSON"});
    expect_error([] { parse_model_config("[]", k_origin); }, {k_origin, "JSON object"});
}

TEST(ModelConfig, HeadDivisibility) {
    json j = phi3_mini_4k();
    j["num_key_value_heads"] = 7;
    expect_error(parser(j), {"num_key_value_heads 7", "num_attention_heads 32"});
    j = phi3_mini_4k();
    j["num_attention_heads"] = 10;
    j["num_key_value_heads"] = 10;
    expect_error(parser(j), {"num_attention_heads 10", "hidden_size 3072"});
    j["head_dim"] = 96;  // explicit head_dim needs no divisibility
    EXPECT_EQ(parse(j).head_dim, 96);
    j = phi1();
    j["partial_rotary_factor"] = 0.3;  // int(64 * 0.3) = 19, odd
    expect_error(parser(j), {"rotary dim", "19", "even"});
}

TEST(ModelConfig, MoETopKMustBeTwo) {
    json j = phimoe("PhiMoEForCausalLM");
    j["num_experts_per_tok"] = 4;
    expect_error(parser(j), {k_origin, "num_experts_per_tok", "4", "sparsemixer", "2"});
    j["num_experts_per_tok"] = 1;
    expect_error(parser(j), {"num_experts_per_tok", "1"});
}

TEST(ModelConfig, LoadFromFile) {
    TempDir dir;
    write_file(dir / "config.json", phi4_mini().dump(2));
    ModelConfig c = load_model_config(dir / "config.json");
    EXPECT_EQ(c.rotary_dim, 96);
    write_file(dir / "bad.json", R"({"architectures": ["Phi3ForCausalLM"], "hidden_size": true})");
    expect_error([&] { load_model_config(dir / "bad.json"); }, {"bad.json", "hidden_size"});
    expect_error([&] { load_model_config(dir / "missing.json"); }, {"missing.json"});
}

TEST(GenerationConfig, AbsentGivesDefaults) {
    TempDir dir;
    GenerationConfig g = load_generation_config(dir.path());
    EXPECT_FALSE(g.bos_token_id.has_value());
    EXPECT_TRUE(g.eos_token_ids.empty());
    EXPECT_FALSE(g.temperature.has_value());
    EXPECT_FALSE(g.do_sample.has_value());
}

TEST(GenerationConfig, ReadsAllKeys) {
    TempDir dir;
    write_file(dir / "generation_config.json",
               R"({"_from_model_config": true, "bos_token_id": 199999, "eos_token_id": [200020, 199999],
                   "pad_token_id": 199999, "temperature": 0.7, "top_p": 0.9, "top_k": 50,
                   "do_sample": true, "max_new_tokens": 256, "transformers_version": "4.45.0"})");
    GenerationConfig g = load_generation_config(dir.path());
    EXPECT_EQ(g.bos_token_id, 199999);
    EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{200020, 199999}));
    EXPECT_EQ(g.pad_token_id, 199999);
    EXPECT_FLOAT_EQ(*g.temperature, 0.7f);
    EXPECT_FLOAT_EQ(*g.top_p, 0.9f);
    EXPECT_EQ(g.top_k, 50);
    EXPECT_EQ(g.do_sample, true);
    EXPECT_EQ(g.max_new_tokens, 256);

    write_file(dir / "generation_config.json", R"({"eos_token_id": 32007, "bos_token_id": null})");
    g = load_generation_config(dir.path());
    EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{32007}));
    EXPECT_FALSE(g.bos_token_id.has_value());
}

TEST(GenerationConfig, MalformedNamesFileAndKey) {
    TempDir dir;
    write_file(dir / "generation_config.json", R"({"temperature": "hot"})");
    expect_error([&] { load_generation_config(dir.path()); }, {"generation_config.json", "'temperature'"});
    write_file(dir / "generation_config.json", R"({"eos_token_id": [1, 2.5]})");
    expect_error([&] { load_generation_config(dir.path()); }, {"generation_config.json", "'eos_token_id'"});
    write_file(dir / "generation_config.json", R"({"do_sample": "yes"})");
    expect_error([&] { load_generation_config(dir.path()); }, {"generation_config.json", "'do_sample'"});
    write_file(dir / "generation_config.json", R"({"top_p": 1.5})");
    expect_error([&] { load_generation_config(dir.path()); }, {"'top_p'", "(0, 1]"});
    write_file(dir / "generation_config.json", "{");
    expect_error([&] { load_generation_config(dir.path()); }, {"generation_config.json", "not valid JSON"});
}

}  // namespace
}  // namespace phi
