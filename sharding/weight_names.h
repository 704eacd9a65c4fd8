// The one place where Hugging Face tensor names are spelled (per architecture). Model code sees
// only the roles below.
#pragma once

#include <string>

#include "sharding/model_config.h"

namespace phi {

struct LayerTensorNames {
    std::string attn_norm_w, attn_norm_b;  // input_layernorm
    std::string ffn_norm_w, ffn_norm_b;    // post_attention_layernorm (sequential blocks only)
    std::string qkv_w, qkv_b;              // fused [Q|K|V] (Phi3, phi-msft Wqkv) or empty
    std::string q_w, k_w, v_w;             // separate (Phi, PhiMoE)
    std::string q_b, k_b, v_b;
    std::string q_norm_w, q_norm_b, k_norm_w, k_norm_b;  // qk_layernorm (Phi)
    std::string o_w, o_b;
    std::string up_w, up_b;      // fc1 (Phi) or gate_up_proj (Phi3, fused [gate|up])
    std::string down_w, down_b;  // fc2 / down_proj
    std::string router_w;        // PhiMoE gate
    std::string expert_prefix;   // PhiMoE: prefix + "E.w1.weight" etc.
};

struct ModelTensorNames {
    std::string embed;
    std::string final_norm_w, final_norm_b;
    std::string lm_head_w, lm_head_b;
};

ModelTensorNames model_tensor_names(const ModelConfig& cfg);
LayerTensorNames layer_tensor_names(const ModelConfig& cfg, int64_t layer);

}  // namespace phi
