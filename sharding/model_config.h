// ModelConfig: everything the forward needs, parsed and validated once from an HF config.json
// (PhiForCausalLM, Phi3ForCausalLM, PhiMoEForCausalLM / PhimoeForCausalLM, and the legacy
// remote-code `phi-msft` layout of Phi-1.5/Phi-2). Global sizes only; per-rank sizes live in the
// ShardPlan.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace phi {

enum class Arch { Phi, Phi3, PhiMoE };
enum class NormKind { LayerNorm, RmsNorm };
enum class Activation { GeluNew, Silu };
enum class RopeScaling { None, LongRope };
/// How the checkpoint spells its tensors (sharding/weight_names.cpp maps both to the same roles).
enum class WeightLayout {
    HfNative,  ///< transformers' own classes: model.layers.N.self_attn.q_proj ...
    PhiMsft,   ///< pre-2024 remote code: transformer.h.N.mixer.Wqkv (fused [Q|K|V]), lm_head.linear ...
};

struct ModelConfig {
    Arch arch = Arch::Phi;
    WeightLayout layout = WeightLayout::HfNative;
    std::string architecture;  // as spelled in config.json
    int64_t vocab_size = 0;    // embedding / lm_head rows
    int64_t d_model = 0;       // hidden_size
    int64_t d_ff = 0;          // intermediate_size (per expert for MoE)
    int64_t n_layers = 0;
    int64_t n_heads = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    int64_t rotary_dim = 0;  // int(head_dim * partial_rotary_factor)
    float partial_rotary_factor = 1.0f;
    float rope_theta = 10000.0f;
    int64_t max_position_embeddings = 0;
    float norm_eps = 1e-5f;
    NormKind norm = NormKind::LayerNorm;
    Activation act = Activation::GeluNew;
    bool parallel_residual = false;  // Phi-1/1.5/2: attn and MLP both read one norm
    bool qk_layernorm = false;
    bool attention_bias = false;     // q/k/v (and o/dense) biases
    bool mlp_bias = false;           // fc1/fc2 biases
    bool lm_head_bias = false;
    bool norm_bias = false;          // LayerNorm with bias
    bool tie_word_embeddings = false;
    int64_t sliding_window = 0;  // 0 = none; otherwise keys with p > q_pos - W are visible

    // LongRoPE
    RopeScaling rope_scaling = RopeScaling::None;
    int64_t original_max_position_embeddings = 0;
    std::vector<float> rope_short_factor;  // [rotary_dim/2]
    std::vector<float> rope_long_factor;   // [rotary_dim/2]
    float rope_attention_factor = 1.0f;    // multiplies cos and sin (Phi3 LongRoPE)
    // PhiMoE: cos/sin multiplied by short_mscale or long_mscale depending on sequence length.
    std::optional<float> rope_short_mscale;
    std::optional<float> rope_long_mscale;

    // MoE
    int64_t n_experts = 0;
    int64_t n_experts_per_tok = 0;
    float router_jitter_noise = 0.0f;

    // Token ids from config.json (generation_config.json may override stop ids).
    std::optional<int64_t> bos_token_id;
    std::vector<int64_t> eos_token_ids;
};

/// Parses and validates `path` (a config.json). Errors name the key and the file.
ModelConfig load_model_config(const std::filesystem::path& path);

/// Same, from the JSON text (for tests); `origin` names the source in messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& origin);

struct GenerationConfig {
    std::optional<int64_t> bos_token_id;
    std::vector<int64_t> eos_token_ids;
    std::optional<int64_t> pad_token_id;
    std::optional<float> temperature;
    std::optional<float> top_p;
    std::optional<int64_t> top_k;
    std::optional<bool> do_sample;
    std::optional<int64_t> max_new_tokens;
};

/// Reads generation_config.json when present in `model_dir`; a default (empty) one otherwise.
GenerationConfig load_generation_config(const std::filesystem::path& model_dir);

}  // namespace phi
