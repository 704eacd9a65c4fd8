// HF (hub) tensor names of PhiForCausalLM, Phi3ForCausalLM and PhiMoEForCausalLM checkpoints
// (reference section 2), and of the legacy remote-code phi-msft layout of Phi-1.5/Phi-2
// (transformer.h.N.mixer.Wqkv ...; the names transformers' convert_phi_weights_to_hf.py maps).
#include "sharding/weight_names.h"

#include <fmt/format.h>

namespace phi {

namespace {

ModelTensorNames phi_msft_model_names(const ModelConfig& cfg) {
    ModelTensorNames n;
    n.embed = "transformer.embd.wte.weight";
    n.final_norm_w = "lm_head.ln.weight";
    n.final_norm_b = "lm_head.ln.bias";
    n.lm_head_w = "lm_head.linear.weight";
    if (cfg.lm_head_bias) n.lm_head_b = "lm_head.linear.bias";
    return n;
}

// Wqkv is [Q | K | V] along its rows (MixFormer's MHA: rearrange "(three h d)"); the loader splits
// it into those sections before sharding, as it does for Phi-3's qkv_proj.
LayerTensorNames phi_msft_layer_names(int64_t layer) {
    const std::string p = fmt::format("transformer.h.{}.", layer);
    LayerTensorNames n;
    n.attn_norm_w = p + "ln.weight";
    n.attn_norm_b = p + "ln.bias";
    n.qkv_w = p + "mixer.Wqkv.weight";
    n.qkv_b = p + "mixer.Wqkv.bias";
    n.o_w = p + "mixer.out_proj.weight";
    n.o_b = p + "mixer.out_proj.bias";
    n.up_w = p + "mlp.fc1.weight";
    n.up_b = p + "mlp.fc1.bias";
    n.down_w = p + "mlp.fc2.weight";
    n.down_b = p + "mlp.fc2.bias";
    return n;
}

}  // namespace

ModelTensorNames model_tensor_names(const ModelConfig& cfg) {
    if (cfg.layout == WeightLayout::PhiMsft) return phi_msft_model_names(cfg);
    ModelTensorNames n;
    n.embed = "model.embed_tokens.weight";
    switch (cfg.arch) {
        case Arch::Phi:
            n.final_norm_w = "model.final_layernorm.weight";
            n.final_norm_b = "model.final_layernorm.bias";
            break;
        case Arch::Phi3:
            n.final_norm_w = "model.norm.weight";
            break;
        case Arch::PhiMoE:
            n.final_norm_w = "model.norm.weight";
            n.final_norm_b = "model.norm.bias";
            break;
    }
    n.lm_head_w = "lm_head.weight";
    if (cfg.lm_head_bias) n.lm_head_b = "lm_head.bias";
    return n;
}

LayerTensorNames layer_tensor_names(const ModelConfig& cfg, int64_t layer) {
    if (cfg.layout == WeightLayout::PhiMsft) return phi_msft_layer_names(layer);
    const std::string p = fmt::format("model.layers.{}.", layer);
    LayerTensorNames n;
    n.attn_norm_w = p + "input_layernorm.weight";
    switch (cfg.arch) {
        case Arch::Phi:
            n.attn_norm_b = p + "input_layernorm.bias";
            n.q_w = p + "self_attn.q_proj.weight";
            n.k_w = p + "self_attn.k_proj.weight";
            n.v_w = p + "self_attn.v_proj.weight";
            n.q_b = p + "self_attn.q_proj.bias";
            n.k_b = p + "self_attn.k_proj.bias";
            n.v_b = p + "self_attn.v_proj.bias";
            if (cfg.qk_layernorm) {
                n.q_norm_w = p + "self_attn.q_layernorm.weight";
                n.q_norm_b = p + "self_attn.q_layernorm.bias";
                n.k_norm_w = p + "self_attn.k_layernorm.weight";
                n.k_norm_b = p + "self_attn.k_layernorm.bias";
            }
            n.o_w = p + "self_attn.dense.weight";
            n.o_b = p + "self_attn.dense.bias";
            n.up_w = p + "mlp.fc1.weight";
            n.up_b = p + "mlp.fc1.bias";
            n.down_w = p + "mlp.fc2.weight";
            n.down_b = p + "mlp.fc2.bias";
            break;
        case Arch::Phi3:
            n.ffn_norm_w = p + "post_attention_layernorm.weight";
            n.qkv_w = p + "self_attn.qkv_proj.weight";
            n.o_w = p + "self_attn.o_proj.weight";
            n.up_w = p + "mlp.gate_up_proj.weight";
            n.down_w = p + "mlp.down_proj.weight";
            break;
        case Arch::PhiMoE:
            n.attn_norm_b = p + "input_layernorm.bias";
            n.ffn_norm_w = p + "post_attention_layernorm.weight";
            n.ffn_norm_b = p + "post_attention_layernorm.bias";
            n.q_w = p + "self_attn.q_proj.weight";
            n.k_w = p + "self_attn.k_proj.weight";
            n.v_w = p + "self_attn.v_proj.weight";
            n.o_w = p + "self_attn.o_proj.weight";
            if (cfg.attention_bias) {
                n.q_b = p + "self_attn.q_proj.bias";
                n.k_b = p + "self_attn.k_proj.bias";
                n.v_b = p + "self_attn.v_proj.bias";
                n.o_b = p + "self_attn.o_proj.bias";
            }
            n.router_w = p + "block_sparse_moe.gate.weight";
            n.expert_prefix = p + "block_sparse_moe.experts.";
            break;
    }
    return n;
}

}  // namespace phi
