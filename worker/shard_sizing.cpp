// Shape arithmetic mirroring load_or_plan in worker/model_weights.cpp.
#include "worker/shard_sizing.h"

#include "common/error.h"
#include "sharding/weight_names.h"

namespace phi {

int64_t shard_weight_bytes(const ModelConfig& cfg, const ShardPlan& plan, const WeightPrecision& precision) {
    const DType weight_dtype = precision.dtype;
    PHI_CHECK(weight_dtype == DType::F32 || weight_dtype == DType::BF16, "CPU weights must be F32 or BF16, not {}",
              dtype_name(weight_dtype));
    const int64_t ws = int64_t(dtype_size(weight_dtype)), f = 4;
    const int64_t d = cfg.d_model, hd = cfg.head_dim, dff = plan.d_ff_local, vocab = plan.vocab_local;
    const int64_t qkv_rows = (plan.n_heads_local + 2 * plan.n_kv_heads_local) * hd;
    const ModelTensorNames mn = model_tensor_names(cfg);
    auto has = [](const std::string& name) { return name.empty() ? 0 : 1; };
    // A layer's linear weight [rows, local cols] of the global input width `width`.
    auto linear = [&](int64_t rows, int64_t cols, int64_t width, const std::string& name) -> int64_t {
        if (!precision.quant) return rows * cols * ws;
        const int64_t blk = kernels::cpu::k_quant_block;
        PHI_CHECK(width % blk == 0,
                  "dtype {}: {} has {} input columns, not a multiple of the {}-column quantization blocks; this "
                  "model cannot run with {} weights (use dtype: bf16 or f32)",
                  precision.name(), name, width, blk, precision.name());
        PHI_CHECK(cols % blk == 0,
                  "dtype {}: tp {} gives each rank {} of the {} input columns of {}, not whole {}-column "
                  "quantization blocks of the unsharded tensor; use a tp size that splits it into multiples of "
                  "{} columns, or dtype: bf16",
                  precision.name(), plan.world, cols, width, name, blk, blk);
        return kernels::cpu::quant_tensor_bytes(*precision.quant, rows, cols, precision.layout);
    };

    int64_t bytes = vocab * d * ws;                          // embedding rows
    bytes += d * f * (1 + has(mn.final_norm_b));             // final norm
    if (!cfg.tie_word_embeddings) {                          // LM head rows
        const auto head = precision.lm_head_quant();
        bytes += head ? kernels::cpu::quant_tensor_bytes(*head, vocab, d, precision.layout) : vocab * d * ws;
    }
    bytes += vocab * f * has(mn.lm_head_b);
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const LayerTensorNames n = layer_tensor_names(cfg, l);
        const int64_t q_width = cfg.n_heads * hd;
        bytes += d * f * (has(n.attn_norm_w) + has(n.attn_norm_b) + has(n.ffn_norm_w) + has(n.ffn_norm_b));
        bytes += linear(qkv_rows, d, d, n.qkv_w.empty() ? n.q_w : n.qkv_w) + qkv_rows * f * has(n.q_b);
        bytes += hd * f * (has(n.q_norm_w) + has(n.q_norm_b) + has(n.k_norm_w) + has(n.k_norm_b));
        bytes += linear(d, plan.n_heads_local * hd, q_width, n.o_w) + d * f * has(n.o_b);
        switch (cfg.arch) {
            case Arch::PhiMoE:
                bytes += cfg.n_experts * d * f;  // router
                for (int64_t e = 0; e < cfg.n_experts; ++e) {
                    const std::string ep = n.expert_prefix + std::to_string(e) + ".";
                    bytes += linear(2 * dff, d, d, ep + "w1.weight") + linear(d, dff, cfg.d_ff, ep + "w2.weight");
                }
                break;
            case Arch::Phi3:
                bytes += linear(2 * dff, d, d, n.up_w) + linear(d, dff, cfg.d_ff, n.down_w);  // gate|up, down
                break;
            case Arch::Phi:
                bytes += linear(dff, d, d, n.up_w) + linear(d, dff, cfg.d_ff, n.down_w) + dff * f + d * f;
                break;
        }
    }
    return bytes;
}

int64_t kv_bytes_per_token(const ModelConfig& cfg, const ShardPlan& plan, DType kv_dtype) {
    return cfg.n_layers * 2 * plan.n_kv_heads_local * cfg.head_dim * int64_t(dtype_size(kv_dtype));
}

}  // namespace phi
