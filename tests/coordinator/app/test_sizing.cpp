// Start-up sizing: every shipped config fits the context it advertises, computed from the model's
// shape (no weights are present here). The shapes are the released models' config.json values
// (../shared/reference/phi-models.md section 1), written over a fixture's config.json of the same
// architecture so that the real parser reads them.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "coordinator/app/cluster_config.h"
#include "coordinator/app/sizing.h"
#include "kernels/cpu/quant.h"
#include "tests/support/fixtures.h"

namespace phi::app {
namespace {

using nlohmann::json;

std::string read(const std::filesystem::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// config.json of a released model: the fixture of the same architecture with the real sizes.
ModelConfig released(const std::string& fixture, json sizes) {
    json c = json::parse(read(test::fixture_dir(fixture) / "config.json"));
    for (auto& [k, v] : sizes.items()) c[k] = v;
    if (c.contains("rope_scaling") && c["rope_scaling"].is_object()) {
        // LongRoPE factor lists have rotary_dim / 2 entries; their values do not change any size.
        const int64_t head_dim = c["hidden_size"].get<int64_t>() / c["num_attention_heads"].get<int64_t>();
        const double partial = c.value("partial_rotary_factor", 1.0);
        const size_t n = size_t(int64_t(double(head_dim) * partial) / 2);
        c["rope_scaling"]["short_factor"] = std::vector<double>(n, 1.0);
        c["rope_scaling"]["long_factor"] = std::vector<double>(n, 4.0);
        c["rope_scaling"]["original_max_position_embeddings"] = c["original_max_position_embeddings"];
    }
    return parse_model_config(c.dump(), fixture + " as a released model");
}

// The models the shipped configs name, by folder name.
std::map<std::string, ModelConfig> released_models() {
    std::map<std::string, ModelConfig> m;
    m["phi-2"] = released("phi1", {{"hidden_size", 2560}, {"intermediate_size", 10240}, {"num_hidden_layers", 32},
                                   {"num_attention_heads", 32}, {"num_key_value_heads", 32},
                                   {"partial_rotary_factor", 0.4}, {"max_position_embeddings", 2048},
                                   {"vocab_size", 51200}});
    const json phi3_mini = {{"hidden_size", 3072}, {"intermediate_size", 8192}, {"num_hidden_layers", 32},
                            {"num_attention_heads", 32}, {"num_key_value_heads", 32}, {"vocab_size", 32064},
                            {"original_max_position_embeddings", 4096}};
    json p = phi3_mini;
    p.update({{"max_position_embeddings", 4096}, {"rope_scaling", nullptr}, {"sliding_window", 2047}});
    m["Phi-3-mini-4k-instruct"] = released("phi3_128k_longrope", p);
    p = phi3_mini;
    p.update({{"max_position_embeddings", 131072}, {"sliding_window", 262144}});
    m["Phi-3.5-mini-instruct"] = released("phi3_128k_longrope", p);
    m["Phi-3-medium-4k-instruct"] = released(
        "phi3_128k_longrope", {{"hidden_size", 5120}, {"intermediate_size", 17920}, {"num_hidden_layers", 40},
                               {"num_attention_heads", 40}, {"num_key_value_heads", 10}, {"vocab_size", 32064},
                               {"max_position_embeddings", 4096}, {"original_max_position_embeddings", 4096},
                               {"rope_scaling", nullptr}, {"sliding_window", 2047}});
    m["phi-4"] = released("phi3_128k_longrope",
                          {{"hidden_size", 5120}, {"intermediate_size", 17920}, {"num_hidden_layers", 40},
                           {"num_attention_heads", 40}, {"num_key_value_heads", 10}, {"vocab_size", 100352},
                           {"max_position_embeddings", 16384}, {"original_max_position_embeddings", 16384},
                           {"rope_scaling", nullptr}, {"sliding_window", nullptr}, {"rope_theta", 250000.0}});
    m["Phi-4-mini-instruct"] = released(
        "phi4_mini", {{"hidden_size", 3072}, {"intermediate_size", 8192}, {"num_hidden_layers", 32},
                      {"num_attention_heads", 24}, {"num_key_value_heads", 8}, {"vocab_size", 200064},
                      {"max_position_embeddings", 131072}, {"original_max_position_embeddings", 4096}});
    m["Phi-3.5-MoE-instruct"] = released(
        "phimoe", {{"hidden_size", 4096}, {"intermediate_size", 6400}, {"num_hidden_layers", 32},
                   {"num_attention_heads", 32}, {"num_key_value_heads", 8}, {"num_local_experts", 16},
                   {"vocab_size", 32064}, {"max_position_embeddings", 131072},
                   {"original_max_position_embeddings", 4096}});
    m["phi-tiny-code"] = load_model_config(test::source_dir() / "models/phi-tiny-code/config.json");
    return m;
}

std::string refusal(const ClusterSizing& s) {
    try {
        check_sizing(s);
    } catch (const Error& e) {
        return e.what();
    }
    return "<accepted>";
}

TEST(Sizing, ShapesGiveThePublishedParameterCounts) {
    // fp32 weights of every rank together = 4 bytes per parameter (the vocabulary divides evenly here),
    // plus one copy per extra rank of what every rank holds whole (norms; biases added after the all-reduce).
    const auto models = released_models();
    auto params = [&](const std::string& name, int world) {
        int64_t bytes = 0;
        for (int r = 0; r < world; ++r) {
            ClusterConfig c;
            c.dtype = "f32";
            bytes += size_cluster(c, models.at(name), world, r, kernels::cpu::Isa::Scalar).weight_bytes;
        }
        return bytes / 4;
    };
    EXPECT_EQ(params("Phi-3.5-mini-instruct", 1), 3821079552);  // Phi-3.5-mini's model card: 3.8B
    EXPECT_EQ(params("Phi-3.5-mini-instruct", 4), 3821079552 + 3 * (2 * 32 + 1) * 3072);  // 2 RMSNorms a layer
    EXPECT_EQ(params("phi-2", 1), 2779683840);  // phi-2: 2.7B
    // One LayerNorm (weight, bias) and the dense and fc2 biases a layer, the final LayerNorm.
    EXPECT_EQ(params("phi-2", 2), 2779683840 + (4 * 32 + 2) * 2560);
}

TEST(Sizing, Int8AndInt4CountQuantizedBytes) {
    // phi-2's 2,516,582,400 linear weights (qkv, dense, fc1, fc2 of 32 layers: the published count
    // less the bf16 embedding and LM head and the fp32 norms and biases) take 34 bytes (int8) or 18
    // bytes (int4) per block of 32 instead of 64; its untied LM head (51,200 x 2,560, the vocabulary
    // split evenly) takes int8's 34 at either dtype; the rest stays as bf16 sizes it.
    const auto models = released_models();
    const int64_t linear = 2516582400, head = 51200LL * 2560;
    auto bytes = [&](const std::string& dtype, int world, int rank) {
        ClusterConfig c;
        c.dtype = dtype;
        return size_cluster(c, models.at("phi-2"), world, rank, kernels::cpu::Isa::Scalar).weight_bytes;
    };
    const int64_t head_saving = 2 * head - head / 32 * 34;
    EXPECT_EQ(bytes("int8", 1, 0), bytes("bf16", 1, 0) - 2 * linear + linear / 32 * 34 - head_saving);
    EXPECT_EQ(bytes("int4", 1, 0), bytes("bf16", 1, 0) - 2 * linear + linear / 32 * 18 - head_saving);
    // TP 4 splits every linear evenly in whole blocks (dense: 640 of 2560 input columns a rank).
    EXPECT_EQ(bytes("int8", 4, 3), bytes("bf16", 4, 3) - 2 * linear / 4 + linear / 4 / 32 * 34 - head_saving / 4);
    // TP 32 leaves one 80-wide head a rank: the dense weight's input columns cut a block.
    try {
        bytes("int4", 32, 0);
        ADD_FAILURE() << "tp 32 was accepted for int4";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("dtype int4: tp 32 gives each rank 80 of the 2560 input columns of "
                                             "model.layers.0.self_attn.dense.weight"),
                  std::string::npos)
            << e.what();
    }
}

TEST(Sizing, Int8ActivationsCountTheDot16Padding) {
    // With quant_activations: int8 at avx512 with VNNI the backend keeps each row's blocks padded to a
    // multiple of 16 (kernels/cpu/quant.h). phi-2 at TP 2: the dense weight's 1280 input columns a
    // rank are 40 blocks, padded to 48 (8 zero blocks of 34 bytes on each of its 2560 rows, 32
    // layers); qkv and fc1 (80 blocks), fc2 (160) and the LM head (80) need none.
    const auto models = released_models();
    ClusterConfig c;
    c.dtype = "int8";
    const int64_t rows = size_cluster(c, models.at("phi-2"), 2, 0, kernels::cpu::Isa::Avx512).weight_bytes;
    c.quant_activations = "int8";
    const ClusterSizing s = size_cluster(c, models.at("phi-2"), 2, 0, kernels::cpu::Isa::Avx512);
    const bool packs = kernels::cpu::quant_packs_for_int8_dot(kernels::cpu::Isa::Avx512);
    EXPECT_EQ(s.weight.layout, packs ? kernels::cpu::QuantLayout::Dot16 : kernels::cpu::QuantLayout::Rows);
    EXPECT_EQ(s.weight_bytes, rows + (packs ? int64_t(32) * 2560 * 8 * 34 : 0));
    // Below avx512 (and on any level without VNNI) the Int8 mode reads the row layout.
    EXPECT_EQ(size_cluster(c, models.at("phi-2"), 2, 0, kernels::cpu::Isa::Avx2).weight_bytes, rows);
    c.backend = "cuda";
    EXPECT_EQ(size_cluster(c, models.at("phi-2"), 2, 0, kernels::cpu::Isa::Avx512).weight.layout,
              kernels::cpu::QuantLayout::Rows);
}

TEST(Sizing, TheIssuesNumbersAreRefused) {
    // configs/phi3.5-mini-tp4.yaml before the fix: 8 GiB of fp32 K/V per rank hold 43,680 tokens.
    const auto models = released_models();
    ClusterConfig c;
    c.kv_bytes = int64_t(8) << 30;
    ClusterSizing s = size_cluster(c, models.at("Phi-3.5-mini-instruct"), 4, 0, kernels::cpu::Isa::Scalar);
    EXPECT_EQ(s.kv_bytes_per_token, 196608);  // 32 layers x 2 x 8 KV heads x 96 x 4 bytes
    EXPECT_EQ(s.kv_tokens, 43680);
    EXPECT_EQ(s.max_context, 131072);
    EXPECT_EQ(s.largest_request, 43680);
    const std::string e = refusal(s);
    EXPECT_NE(e.find("batching.max_context 131072 (0 in the config: the model's max_position_embeddings) does not "
                     "fit one sequence's KV cache: each rank's cache holds 43680 tokens"),
              std::string::npos)
        << e;
    EXPECT_NE(e.find("at most 43680"), std::string::npos) << e;
    EXPECT_NE(e.find("kv_cache.blocks: 8192"), std::string::npos) << e;
    // configs/phi4-mini-tp4.yaml before the fix: 4 GiB hold 65,536 tokens.
    c.kv_bytes = int64_t(4) << 30;
    s = size_cluster(c, models.at("Phi-4-mini-instruct"), 4, 0, kernels::cpu::Isa::Scalar);
    EXPECT_EQ(s.kv_tokens, 65536);
    EXPECT_NE(refusal(s), "<accepted>");
    // An explicit max_context within the cache is accepted.
    c.max_context = 65536;
    EXPECT_EQ(refusal(size_cluster(c, models.at("Phi-4-mini-instruct"), 4, 0, kernels::cpu::Isa::Scalar)), "<accepted>");
}

TEST(Sizing, EveryShippedConfigFitsItsContext) {
    const auto models = released_models();
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(test::source_dir() / "configs")) {
        const ClusterConfig c = parse_cluster_config(read(e.path()), e.path().string(), e.path().parent_path());
        const std::string name = c.model.filename().string();
        ASSERT_TRUE(models.count(name)) << e.path() << " names " << name
                                        << ": add its config.json sizes to released_models()";
        // tp left out follows mpirun; check the sizes the config's comment shows (2 ranks).
        const int world = c.tp > 0 ? c.tp : 2;
        for (int r = 0; r < world; ++r) {
            const ClusterSizing s = size_cluster(c, models.at(name), world, r, kernels::cpu::Isa::Scalar);
            EXPECT_EQ(refusal(s), "<accepted>") << e.path();
            EXPECT_EQ(s.largest_request, s.max_context) << e.path();
            if (r == 0) std::printf("%s: %s\n", e.path().filename().c_str(), describe_sizing(s).c_str());
        }
        ++n;
    }
    EXPECT_GE(n, 9);
}

}  // namespace
}  // namespace phi::app
