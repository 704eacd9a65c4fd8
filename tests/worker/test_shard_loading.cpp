// Each rank reads exactly its ShardPlan's slices (plus the replicated tensors), and the shards of
// every split tensor put back together equal the original (fused QKV and gate_up split by section).
#include <gtest/gtest.h>

#include <cstring>

#include "common/error.h"
#include "sharding/safetensors.h"
#include "sharding/weight_names.h"
#include "tests/support/fixtures.h"
#include "worker/model_weights.h"
#include "worker/shard_sizing.h"

namespace phi {
namespace {

// Bytes rank `p.rank` must read from an F32 checkpoint, from the plan alone.
size_t expected_bytes(const ModelConfig& c, const ShardPlan& p) {
    const int64_t d = c.d_model, hd = c.head_dim;
    const int64_t vocab_rows = std::max<int64_t>(0, std::min(p.vocab.end, c.vocab_size) - p.vocab.begin);
    int64_t n = vocab_rows * d;                                   // embedding rows
    if (!c.tie_word_embeddings) n += vocab_rows * d;              // LM head rows
    if (c.lm_head_bias) n += vocab_rows;
    n += d * (c.norm_bias ? 2 : 1);                               // final norm (replicated)
    const int64_t qkv_rows = (p.n_heads_local + 2 * p.n_kv_heads_local) * hd;
    for (int64_t l = 0; l < c.n_layers; ++l) {
        const int norms = c.parallel_residual ? 1 : 2;
        n += norms * d * (c.norm_bias ? 2 : 1);
        n += qkv_rows * d + d * p.n_heads_local * hd;             // column-parallel QKV, row-parallel o
        if (c.attention_bias) n += qkv_rows + d;
        if (c.qk_layernorm) n += 4 * hd;
        const int64_t f = p.d_ff_local;
        switch (c.arch) {
            case Arch::Phi: n += f * d + f + d * f + d; break;
            case Arch::Phi3: n += 2 * f * d + d * f; break;
            case Arch::PhiMoE: n += c.n_experts * d + c.n_experts * (2 * f * d + d * f); break;
        }
    }
    return size_t(n) * 4;
}

class ShardLoading : public ::testing::TestWithParam<std::string> {};

TEST_P(ShardLoading, EachRankReadsItsPlanAndShardsReassemble) {
    const auto dir = test::fixture_dir(GetParam());
    const ModelConfig cfg = load_model_config(dir / "config.json");
    Checkpoint ckpt(dir);
    for (int world : {1, 2, 4, 8}) {
        if (cfg.n_heads % world != 0) continue;
        size_t resident_max = 0;
        std::vector<ModelWeights> ranks;
        for (int r = 0; r < world; ++r) {
            const ShardPlan plan = make_shard_plan(cfg, world, r);
            ranks.push_back(load_model_weights(ckpt, cfg, plan, DType::F32));
            EXPECT_EQ(ranks.back().checkpoint_bytes_read, expected_bytes(cfg, plan)) << "world " << world << " rank " << r;
            // The start-up sizing, from the shape alone, agrees with what is loaded (f32) and planned (bf16).
            EXPECT_EQ(int64_t(ranks.back().resident_bytes), shard_weight_bytes(cfg, plan, DType::F32))
                << "world " << world << " rank " << r;
            size_t planned_bf16 = 0;
            for (const HeldTensor& h : plan_model_weights(ckpt, cfg, plan, DType::BF16)) planned_bf16 += h.bytes;
            EXPECT_EQ(int64_t(planned_bf16), shard_weight_bytes(cfg, plan, DType::BF16))
                << "world " << world << " rank " << r;
            resident_max = std::max(resident_max, ranks.back().resident_bytes);
        }
        std::printf("[%s] tp %d: %zu bytes resident per rank (max)\n", GetParam().c_str(), world, resident_max);

        // Query rows of layer 0's QKV across ranks, in rank order, equal the checkpoint's Q section.
        const LayerTensorNames names = layer_tensor_names(cfg, 0);
        const TensorInfo& q = ckpt.get(names.qkv_w.empty() ? names.q_w : names.qkv_w);
        const size_t q_bytes = size_t(cfg.n_heads * cfg.head_dim * cfg.d_model) * 4;
        std::vector<uint8_t> gathered;
        for (const ModelWeights& w : ranks) {
            const auto* p = reinterpret_cast<const uint8_t*>(w.layers[0].wqkv.bytes.data());
            const size_t n = size_t(w.layers[0].wqkv.cols()) * size_t(cfg.n_heads / world * cfg.head_dim) * 4;
            gathered.insert(gathered.end(), p, p + n);
        }
        ASSERT_EQ(gathered.size(), q_bytes);
        EXPECT_EQ(std::memcmp(gathered.data(), q.data, q_bytes), 0) << "world " << world;

        // The row-parallel output projection's column blocks, side by side, equal the original.
        const TensorInfo& o = ckpt.get(names.o_w);
        for (int64_t row = 0; row < cfg.d_model; row += std::max<int64_t>(1, cfg.d_model / 7)) {
            std::vector<float> joined;
            for (const ModelWeights& w : ranks) {
                const float* p = w.layers[0].wo.f32() + row * w.layers[0].wo.cols();
                joined.insert(joined.end(), p, p + w.layers[0].wo.cols());
            }
            ASSERT_EQ(joined.size(), size_t(cfg.n_heads * cfg.head_dim));
            EXPECT_EQ(std::memcmp(joined.data(), o.data + size_t(row) * joined.size() * 4, joined.size() * 4), 0);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ShardLoading,
                         ::testing::Values("phi1", "phi2_qkln", "phi3_mini_4k_swa", "phi4_mini", "phi_40q10kv",
                                           "phimoe"),
                         [](const auto& info) { return info.param; });

TEST(ShardPlan, KvHeadsReplicateWhenTpDoesNotDivideThem) {
    ModelConfig c;
    c.n_heads = 40;
    c.n_kv_heads = 10;
    c.d_ff = 17920;
    c.vocab_size = 100352;
    c.n_layers = 40;
    const ShardPlan p = make_shard_plan(c, 8, 1);  // query heads 5-9 use KV heads 1 (5-7) and 2 (8-9)
    EXPECT_EQ(p.q_heads.begin, 5);
    EXPECT_EQ(p.kv_heads.begin, 1);
    EXPECT_EQ(p.kv_heads.end, 3);
    EXPECT_EQ(p.q_to_kv, (std::vector<int32_t>{0, 0, 0, 1, 1}));
    EXPECT_TRUE(p.kv_replicated);
    EXPECT_THROW(make_shard_plan(c, 3, 0), Error);
    try {
        make_shard_plan(c, 3, 0);
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tp size 3 does not divide num_attention_heads 40"), std::string::npos);
    }
}

TEST(ShardPlan, VocabIsPaddedToAMultipleOfTp) {
    ModelConfig c;
    c.n_heads = 32;
    c.n_kv_heads = 32;
    c.d_ff = 8192;
    c.vocab_size = 32064 + 3;
    const ShardPlan p = make_shard_plan(c, 8, 7);
    EXPECT_EQ(p.vocab_padded % 8, 0);
    EXPECT_GE(p.vocab_padded, c.vocab_size);
    EXPECT_EQ(p.vocab.end, p.vocab_padded);
}

}  // namespace
}  // namespace phi
