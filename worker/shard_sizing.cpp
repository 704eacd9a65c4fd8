// Shape arithmetic mirroring load_or_plan in worker/model_weights.cpp.
#include "worker/shard_sizing.h"

#include "common/error.h"
#include "sharding/weight_names.h"

namespace phi {

int64_t shard_weight_bytes(const ModelConfig& cfg, const ShardPlan& plan, DType weight_dtype) {
    PHI_CHECK(weight_dtype == DType::F32 || weight_dtype == DType::BF16, "CPU weights must be F32 or BF16, not {}",
              dtype_name(weight_dtype));
    const int64_t ws = int64_t(dtype_size(weight_dtype)), f = 4;
    const int64_t d = cfg.d_model, hd = cfg.head_dim, dff = plan.d_ff_local, vocab = plan.vocab_local;
    const int64_t qkv_rows = (plan.n_heads_local + 2 * plan.n_kv_heads_local) * hd;
    const ModelTensorNames mn = model_tensor_names(cfg);
    auto has = [](const std::string& name) { return name.empty() ? 0 : 1; };

    int64_t bytes = vocab * d * ws;                          // embedding rows
    bytes += d * f * (1 + has(mn.final_norm_b));             // final norm
    if (!cfg.tie_word_embeddings) bytes += vocab * d * ws;   // LM head rows
    bytes += vocab * f * has(mn.lm_head_b);
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const LayerTensorNames n = layer_tensor_names(cfg, l);
        bytes += d * f * (has(n.attn_norm_w) + has(n.attn_norm_b) + has(n.ffn_norm_w) + has(n.ffn_norm_b));
        bytes += qkv_rows * d * ws + qkv_rows * f * has(n.q_b);
        bytes += hd * f * (has(n.q_norm_w) + has(n.q_norm_b) + has(n.k_norm_w) + has(n.k_norm_b));
        bytes += d * plan.n_heads_local * hd * ws + d * f * has(n.o_b);
        switch (cfg.arch) {
            case Arch::PhiMoE:
                bytes += cfg.n_experts * d * f + cfg.n_experts * 3 * dff * d * ws;  // router; w1|w3, w2
                break;
            case Arch::Phi3:
                bytes += 3 * dff * d * ws;  // gate|up, down
                break;
            case Arch::Phi:
                bytes += 2 * dff * d * ws + dff * f + d * f;  // fc1, fc2 and their biases
                break;
        }
    }
    return bytes;
}

int64_t kv_bytes_per_token(const ModelConfig& cfg, const ShardPlan& plan, DType kv_dtype) {
    return cfg.n_layers * 2 * plan.n_kv_heads_local * cfg.head_dim * int64_t(dtype_size(kv_dtype));
}

}  // namespace phi
