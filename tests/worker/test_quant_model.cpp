// Int8/int4 models (docs/QUANT.md) end to end through the one forward:
//  - the exactness anchor: logits equal the fp32 forward on the dequantized weights (whole-tensor
//    quantization) within 1e-4 at TP 1 and 2 on every golden fixture whose shapes allow it, in the
//    weight-only mode (bitwise at TP 1: each kernel level equals its fp32 kernel on the dequantized
//    weights) and in the int8-activation mode (the reference rounds every quantized linear's input
//    the same way and computes it by the scalar reference arithmetic; quant_reference_model.h);
//  - fixtures whose input widths are not whole blocks of 32 (or whose TP split cuts a block) are
//    refused by the loader and the sizing, naming the tensor and the tp size;
//  - a rank's blocks are bitwise the slice of the whole tensor's quantization;
//  - one resident copy: the host copies of quantized weights are gone, and the resident bytes equal
//    the sizing arithmetic.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "cluster/communicator.h"
#include "common/error.h"
#include "kernels/cpu/isa.h"
#include "sharding/safetensors.h"
#include "tests/cluster/thread_ranks.h"
#include "tests/support/fixtures.h"
#include "tests/worker/quant_reference_model.h"
#include "worker/load_model.h"
#include "worker/shard_sizing.h"

namespace phi {
namespace {

using kernels::cpu::QuantActivations;
using kernels::cpu::QuantFormat;

constexpr float k_anchor_tolerance = 1e-4f;  // the bound on |logit - reference logit|
const KvCacheConfig k_kv{32, 4};

struct AnchorCase {
    std::string fixture;
    QuantFormat format;
    QuantActivations acts;
    int tp;
};

std::string case_name(const AnchorCase& c) {
    return c.fixture + (c.format == QuantFormat::Q8 ? "_int8" : "_int4") +
           (c.acts == QuantActivations::Int8 ? "_act8" : "_weightonly") + "_tp" + std::to_string(c.tp);
}

// Fixtures whose linear input widths are whole blocks of 32 at TP 1, and those that stay so at TP 2.
const std::vector<std::string> k_fit_tp1 = {"phi1", "phi3_128k_longrope", "phi3_mini_4k_swa", "phi4_mini",
                                            "phi_40q10kv"};
const std::vector<std::string> k_fit_tp2 = {"phi1", "phi3_128k_longrope", "phi3_mini_4k_swa"};

void PrintTo(const AnchorCase& c, std::ostream* os) { *os << case_name(c); }

std::vector<AnchorCase> anchor_cases() {
    std::vector<AnchorCase> out;
    for (int tp : {1, 2})
        for (const std::string& f : tp == 1 ? k_fit_tp1 : k_fit_tp2)
            for (QuantFormat q : {QuantFormat::Q8, QuantFormat::Q4})
                for (QuantActivations a : {QuantActivations::F32, QuantActivations::Int8}) out.push_back({f, q, a, tp});
    return out;
}

ModelOptions quant_options(QuantFormat q, QuantActivations a) {
    ModelOptions o;
    o.isa = kernels::cpu::choose_isa();
    o.weight_dtype = DType::BF16;
    o.quant = q;
    o.quant_activations = a;
    o.kv = k_kv;
    return o;
}

// The golden prompt followed by HF's greedy tokens: every position's logits in one prefill.
std::vector<int32_t> anchor_tokens(const test::Golden& g) {
    std::vector<int32_t> t = g.prompt;
    t.insert(t.end(), g.greedy.begin(), g.greedy.end());
    return t;
}

std::vector<float> all_logits(PhiModel& m, const std::vector<int32_t>& tokens) {
    std::vector<int32_t> table(size_t(k_kv.num_blocks));
    std::iota(table.begin(), table.end(), 0);
    SeqStep s;
    s.tokens = tokens;
    s.block_table = table;
    s.all_logits = true;
    std::vector<float> logits;
    m.forward(std::span<const SeqStep>(&s, 1), &logits);
    return logits;
}

class QuantAnchor : public ::testing::TestWithParam<AnchorCase> {};

TEST_P(QuantAnchor, LogitsEqualFp32ForwardOnDequantizedWeights) {
    const AnchorCase c = GetParam();
    const auto dir = test::fixture_dir(c.fixture);
    const test::Golden g = test::load_golden(c.fixture);
    const std::vector<int32_t> tokens = anchor_tokens(g);
    const ModelOptions opts = quant_options(c.format, c.acts);

    LocalCommunicator local;
    auto ref = test::dequantized_reference_model(dir, local, c.format, c.acts, opts.isa, k_kv);
    const std::vector<float> want = all_logits(*ref, tokens);

    std::vector<float> got;
    int64_t vp = 0;
    test::run_ranks(c.tp, [&](ThreadCommunicator& comm) {
        auto model = load_model(dir, comm, opts);
        std::vector<float> logits = all_logits(*model, tokens);
        if (comm.rank() == 0) {
            got = std::move(logits);
            vp = model->plan().vocab_padded;
        }
    });
    const int64_t vocab = ref->config().vocab_size, vp_ref = ref->plan().vocab_padded;
    ASSERT_EQ(got.size(), tokens.size() * size_t(vp));
    float worst = 0.0f;
    bool bitwise = true;
    for (size_t r = 0; r < tokens.size(); ++r)
        for (int64_t j = 0; j < vocab; ++j) {
            const float a = got[r * size_t(vp) + size_t(j)], b = want[r * size_t(vp_ref) + size_t(j)];
            ASSERT_TRUE(std::isfinite(a)) << "row " << r << " id " << j;
            worst = std::max(worst, std::fabs(a - b));
            bitwise = bitwise && a == b;
        }
    std::printf("[%s] max |logit - reference| = %.3g over %zu positions\n", case_name(c).c_str(), double(worst),
                tokens.size());
    EXPECT_LE(worst, k_anchor_tolerance);
    // At TP 1 the model computes what its reference computes, in the same order: weight-only runs
    // the fp32 kernel's order on the dequantized values, and every level of the int8 mode equals
    // the scalar reference bitwise.
    if (c.tp == 1) {
        EXPECT_TRUE(bitwise) << "max difference " << worst;
    }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantAnchor, ::testing::ValuesIn(anchor_cases()),
                         [](const auto& info) { return case_name(info.param); });

std::string load_error(const std::string& fixture, int world, QuantFormat q) {
    const auto dir = test::fixture_dir(fixture);
    const ModelConfig cfg = load_model_config(dir / "config.json");
    const ShardPlan plan = make_shard_plan(cfg, world, 0);
    Checkpoint ckpt(dir);
    try {
        load_model_weights(ckpt, cfg, plan, WeightPrecision(DType::BF16, q));
    } catch (const Error& e) {
        return e.what();
    }
    return "<accepted>";
}

std::string sizing_error(const std::string& fixture, int world, QuantFormat q) {
    const ModelConfig cfg = load_model_config(test::fixture_dir(fixture) / "config.json");
    try {
        shard_weight_bytes(cfg, make_shard_plan(cfg, world, 0), WeightPrecision(DType::BF16, q));
    } catch (const Error& e) {
        return e.what();
    }
    return "<accepted>";
}

struct RefusalCase {
    std::string fixture;
    int tp;
    std::string says;  // what the loader's and the sizing's errors both name
};

TEST(QuantRefusal, WidthsThatAreNotWholeBlocksAreRefusedNamingTensorAndTp) {
    const std::vector<RefusalCase> cases = {
        {"phi2_qkln", 1, "dtype int8: model.layers.0.self_attn.q_proj.weight has 80 input columns"},
        {"phi3_rope_params", 1, "dtype int8: model.layers.0.mlp.down_proj.weight has 112 input columns"},
        {"phimoe", 1, "dtype int8: model.layers.0.block_sparse_moe.experts.0.w2.weight has 48 input columns"},
        {"phi4_mini", 2, "dtype int8: tp 2 gives each rank 48 of the 96 input columns of "
                         "model.layers.0.self_attn.o_proj.weight"},
        {"phi_40q10kv", 2, "dtype int8: tp 2 gives each rank 80 of the 160 input columns of "
                           "model.layers.0.self_attn.o_proj.weight"},
        {"phi1", 4, "dtype int8: tp 4 gives each rank 16 of the 64 input columns of "
                    "model.layers.0.self_attn.dense.weight"},
    };
    for (const RefusalCase& c : cases) {
        const std::string load = load_error(c.fixture, c.tp, QuantFormat::Q8);
        EXPECT_NE(load.find(c.says), std::string::npos) << c.fixture << " tp " << c.tp << ": " << load;
        const std::string size = sizing_error(c.fixture, c.tp, QuantFormat::Q8);
        EXPECT_NE(size.find(c.says), std::string::npos) << c.fixture << " tp " << c.tp << ": " << size;
    }
    // The same shapes are fine in 16 bits, and int4 refuses them as int8 does.
    EXPECT_EQ(load_error("phi1", 2, QuantFormat::Q4), "<accepted>");
    EXPECT_NE(load_error("phi2_qkln", 1, QuantFormat::Q4).find("dtype int4: model.layers.0.self_attn.q_proj.weight"),
              std::string::npos);
}

void expect_same_blocks(const kernels::cpu::QuantTensor& a, const kernels::cpu::QuantTensor& b, const std::string& what) {
    EXPECT_EQ(a.rows, b.rows) << what;
    EXPECT_EQ(a.cols, b.cols) << what;
    EXPECT_TRUE(a.qs == b.qs) << what << ": values differ";
    EXPECT_TRUE(a.scales == b.scales) << what << ": scales differ";
}

TEST(QuantSlices, EachRanksBlocksAreTheSliceOfTheWholeTensorsQuantization) {
    const auto dir = test::fixture_dir("phi1");
    const ModelConfig cfg = load_model_config(dir / "config.json");
    Checkpoint ckpt(dir);
    for (QuantFormat q : {QuantFormat::Q8, QuantFormat::Q4}) {
        const WeightPrecision p(DType::BF16, q);
        const ModelWeights whole = load_model_weights(ckpt, cfg, make_shard_plan(cfg, 1, 0), p);
        for (int r = 0; r < 2; ++r) {
            const ShardPlan plan = make_shard_plan(cfg, 2, r);
            const ModelWeights part = load_model_weights(ckpt, cfg, plan, p);
            for (size_t l = 0; l < whole.layers.size(); ++l) {
                const LayerWeights &w = whole.layers[l], &s = part.layers[l];
                const auto qw = [&](const OwnedTensor& t) { return kernels::cpu::quantize(q, view_of(t)); };
                const int64_t o0 = plan.q_heads.begin * cfg.head_dim, o1 = plan.q_heads.end * cfg.head_dim;
                const std::string at = fmt::format("{} rank {} layer {}", kernels::cpu::quant_format_name(q), r, l);
                // Row-parallel: input columns split.
                expect_same_blocks(qw(s.wo), kernels::cpu::quant_slice(qw(w.wo).view(), 0, cfg.d_model, o0, o1),
                                   at + " dense");
                expect_same_blocks(qw(s.w_down),
                                   kernels::cpu::quant_slice(qw(w.w_down).view(), 0, cfg.d_model, plan.ff.begin,
                                                             plan.ff.end),
                                   at + " fc2");
                // Column-parallel: output rows split.
                expect_same_blocks(qw(s.w_up),
                                   kernels::cpu::quant_slice(qw(w.w_up).view(), plan.ff.begin, plan.ff.end, 0,
                                                             cfg.d_model),
                                   at + " fc1");
            }
        }
    }
}

TEST(QuantModel, OneResidentCopyAndResidentBytesEqualTheSizing) {
    const auto dir = test::fixture_dir("phi3_mini_4k_swa");
    const ModelConfig cfg = load_model_config(dir / "config.json");
    for (auto [q, acts] : {std::pair{QuantFormat::Q8, QuantActivations::F32}, std::pair{QuantFormat::Q4, QuantActivations::F32},
                           std::pair{QuantFormat::Q8, QuantActivations::Int8}, std::pair{QuantFormat::Q4, QuantActivations::Int8}}) {
        test::run_ranks(2, [&](ThreadCommunicator& comm) {
            const ModelOptions opts = quant_options(q, acts);
            auto model = load_model(dir, comm, opts);
            const ModelWeights& w = model->weights();
            // The backend holds the blocks; the host copies of the linear weights are gone.
            for (const LayerWeights& l : w.layers) {
                EXPECT_TRUE(l.wqkv.empty() && l.wo.empty() && l.w_up.empty() && l.w_down.empty());
            }
            EXPECT_FALSE(w.embed.empty());  // bf16, read in place
            EXPECT_EQ(w.embed.dtype, DType::BF16);
            // Int8 activations at avx512 with VNNI: the blocks padded to the Dot16 layout's groups of
            // 16 (this fixture's rows have far fewer blocks, so the padding is most of the bytes).
            WeightPrecision p(DType::BF16, q);
            p.layout = kernels::cpu::quant_weight_layout(acts, opts.isa);
            const ShardPlan& plan = model->plan();
            EXPECT_EQ(int64_t(w.resident_bytes), shard_weight_bytes(cfg, plan, p));
            size_t planned = 0;
            for (const HeldTensor& h : plan_model_weights(Checkpoint(dir), cfg, plan, p)) planned += h.bytes;
            EXPECT_EQ(int64_t(planned), shard_weight_bytes(cfg, plan, p));
            // Per linear weight: (block bytes + a 2-byte scale) per 32 weights, e.g. the local QKV.
            const int64_t d = cfg.d_model, qkv_rows = (plan.n_heads_local + 2 * plan.n_kv_heads_local) * cfg.head_dim;
            const int64_t per_block = q == QuantFormat::Q8 ? 34 : 18;
            const int64_t qkv_blocks = p.layout == kernels::cpu::QuantLayout::Dot16 ? (d / 32 + 15) / 16 * 16 : d / 32;
            EXPECT_EQ(kernels::cpu::quant_tensor_bytes(q, qkv_rows, d, p.layout), qkv_rows * qkv_blocks * per_block);
            if (p.layout == kernels::cpu::QuantLayout::Rows) {
                EXPECT_LT(shard_weight_bytes(cfg, plan, p), shard_weight_bytes(cfg, plan, WeightPrecision(DType::BF16)));
            }
        });
    }
}

TEST(QuantModel, Int8ActivationsNeedQuantizedWeights) {
    LocalCommunicator comm;
    ModelOptions o;
    o.weight_dtype = DType::BF16;
    o.quant_activations = QuantActivations::Int8;
    o.kv = k_kv;
    try {
        load_model(test::fixture_dir("phi1"), comm, o);
        FAIL() << "bf16 weights with int8 activations were accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("int8 activations (quant_activations: int8) apply to int8/int4 weights "
                                             "only; the weights are bf16"),
                  std::string::npos)
            << e.what();
    }
}

}  // namespace
}  // namespace phi
