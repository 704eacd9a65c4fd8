// HF config.json -> ModelConfig. All per-architecture knowledge of the Phi family (norm kind,
// activation, biases, residual layout, rope defaults) is decided here, once, so the forward only
// reads behaviour fields. Every key is type-checked; errors name the key and the file.
#include "sharding/model_config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"

namespace phi {

namespace {

using json = nlohmann::json;

/// Typed access to the keys of one JSON object. A null value counts as absent (HF writes
/// `"num_key_value_heads": null`, `"sliding_window": null`, `"rope_scaling": null`).
class Keys {
  public:
    Keys(const json& obj, std::string origin, std::string prefix = "")
        : obj_(obj), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

    bool has(const char* key) const {
        auto it = obj_.find(key);
        return it != obj_.end() && !it->is_null();
    }
    const json* get(const char* key) const {
        auto it = obj_.find(key);
        return it == obj_.end() || it->is_null() ? nullptr : &*it;
    }
    std::string name(const char* key) const { return prefix_ + key; }
    const std::string& origin() const { return origin_; }

    std::optional<int64_t> opt_int(const char* key) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        return to_int(*v, key);
    }
    int64_t req_int(const char* key) const {
        PHI_CHECK(has(key), "{}: required key '{}' is missing", origin_, name(key));
        return *opt_int(key);
    }
    int64_t positive_int(const char* key) const {
        int64_t v = req_int(key);
        PHI_CHECK(v > 0, "{}: '{}' must be > 0, got {}", origin_, name(key), v);
        return v;
    }
    int64_t positive_int_or(const char* key, int64_t dflt) const {
        if (!has(key)) return dflt;
        return positive_int(key);
    }
    std::optional<double> opt_number(const char* key) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        PHI_CHECK(v->is_number(), "{}: '{}' must be a number, got {} {}", origin_, name(key), v->type_name(),
                  v->dump());
        return v->get<double>();
    }
    double positive_number_or(const char* key, double dflt) const {
        auto v = opt_number(key);
        if (!v) return dflt;
        PHI_CHECK(std::isfinite(*v) && *v > 0, "{}: '{}' must be > 0, got {}", origin_, name(key), *v);
        return *v;
    }
    bool bool_or(const char* key, bool dflt) const {
        const json* v = get(key);
        if (!v) return dflt;
        PHI_CHECK(v->is_boolean(), "{}: '{}' must be true or false, got {} {}", origin_, name(key),
                  v->type_name(), v->dump());
        return v->get<bool>();
    }
    std::optional<std::string> opt_string(const char* key) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        PHI_CHECK(v->is_string(), "{}: '{}' must be a string, got {} {}", origin_, name(key), v->type_name(),
                  v->dump());
        return v->get<std::string>();
    }
    /// An int, or a list of ints (eos_token_id).
    std::vector<int64_t> int_or_int_list(const char* key) const {
        const json* v = get(key);
        if (!v) return {};
        if (!v->is_array()) return {to_int(*v, key)};
        std::vector<int64_t> out;
        for (const json& e : *v) out.push_back(to_int(e, key));
        return out;
    }
    std::vector<float> number_list(const char* key) const {
        const json* v = get(key);
        PHI_CHECK(v != nullptr, "{}: required key '{}' is missing", origin_, name(key));
        PHI_CHECK(v->is_array(), "{}: '{}' must be a list of numbers, got {}", origin_, name(key),
                  v->type_name());
        std::vector<float> out;
        out.reserve(v->size());
        for (const json& e : *v) {
            PHI_CHECK(e.is_number(), "{}: '{}' must be a list of numbers, found {}", origin_, name(key),
                      e.dump());
            out.push_back(e.get<float>());
        }
        return out;
    }

  private:
    int64_t to_int(const json& v, const char* key) const {
        if (v.is_number_unsigned()) {
            uint64_t u = v.get<uint64_t>();
            PHI_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), "{}: '{}' = {} is too large",
                      origin_, name(key), u);
            return int64_t(u);
        }
        PHI_CHECK(v.is_number_integer(), "{}: '{}' must be an integer, got {} {}", origin_, name(key),
                  v.type_name(), v.dump());
        return v.get<int64_t>();
    }

    const json& obj_;
    std::string origin_;
    std::string prefix_;
};

std::string read_text(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    PHI_CHECK(in.good(), "cannot open {}", path.string());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

json parse_object(const std::string& text, const std::string& origin) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        PHI_FAIL("{}: not valid JSON: {}", origin, e.what());
    }
    PHI_CHECK(j.is_object(), "{}: must be a JSON object, got {}", origin, j.type_name());
    return j;
}

/// Architecture from `architectures` (and the refusals: phi-msft, Phi-3-small, unknown).
Arch parse_arch(const Keys& k, const json& j, std::string& spelled) {
    const std::string& origin = k.origin();
    auto model_type = k.opt_string("model_type");
    PHI_CHECK(!j.contains("n_embd") && !j.contains("n_head"),
              "{}: mixes the legacy 'phi-msft' keys (n_embd/n_head) with model_type '{}'; a legacy Phi-1.5/"
              "Phi-2 config has model_type 'phi-msft' (convert it with transformers' "
              "convert_phi_weights_to_hf.py, or use the current revision of the model)",
              origin, model_type.value_or("(none)"));

    const json* archs = k.get("architectures");
    PHI_CHECK(archs != nullptr, "{}: required key 'architectures' is missing", origin);
    PHI_CHECK(archs->is_array() && !archs->empty() && archs->at(0).is_string(),
              "{}: 'architectures' must be a non-empty list of strings, got {}", origin, archs->dump());
    spelled = archs->at(0).get<std::string>();

    PHI_CHECK(spelled != "Phi3SmallForCausalLM" && model_type != "phi3small",
              "{}: Phi3SmallForCausalLM (Phi-3-small) is a different architecture (blocksparse attention "
              "every other layer, gegelu activation, muP multipliers) that phi-cluster does not support",
              origin);
    if (spelled == "PhiForCausalLM") return Arch::Phi;
    if (spelled == "Phi3ForCausalLM") return Arch::Phi3;
    if (spelled == "PhiMoEForCausalLM" || spelled == "PhimoeForCausalLM") return Arch::PhiMoE;
    PHI_FAIL(
        "{}: architecture '{}' is not supported; supported: PhiForCausalLM, Phi3ForCausalLM, "
        "PhiMoEForCausalLM (PhimoeForCausalLM)",
        origin, spelled);
}

/// RoPE: rope_theta + rope_scaling (v4) or rope_parameters (v5). Needs head_dim and
/// max_position_embeddings already set; sets partial_rotary_factor, rotary_dim and the LongRoPE
/// fields.
void parse_rope(const Keys& k, ModelConfig& c, double prf_default, double theta_default) {
    const std::string& origin = k.origin();
    const json* params = k.get("rope_parameters");
    const json* scaling = k.get("rope_scaling");
    const json* rope = params ? params : scaling;
    const char* rope_key = params ? "rope_parameters" : "rope_scaling";
    if (rope) {
        PHI_CHECK(rope->is_object(), "{}: '{}' must be an object or null, got {}", origin, rope_key,
                  rope->dump());
    }
    static const json k_empty = json::object();
    Keys r(rope ? *rope : k_empty, origin, std::string(rope_key) + ".");

    // Values inside rope_parameters take precedence over the top-level keys.
    double theta = r.has("rope_theta") ? r.positive_number_or("rope_theta", theta_default)
                                       : k.positive_number_or("rope_theta", theta_default);
    double prf = r.has("partial_rotary_factor") ? r.positive_number_or("partial_rotary_factor", prf_default)
                                                : k.positive_number_or("partial_rotary_factor", prf_default);
    PHI_CHECK(prf <= 1.0, "{}: 'partial_rotary_factor' must be in (0, 1], got {}", origin, prf);
    c.rope_theta = float(theta);
    c.partial_rotary_factor = float(prf);
    // HF: int(head_dim * partial_rotary_factor), in double, truncating.
    c.rotary_dim = int64_t(double(c.head_dim) * prf);
    PHI_CHECK(c.rotary_dim > 0 && c.rotary_dim % 2 == 0,
              "{}: rotary dim int(head_dim {} * partial_rotary_factor {}) = {} must be even and > 0", origin,
              c.head_dim, prf, c.rotary_dim);

    auto top_orig = k.opt_int("original_max_position_embeddings");
    if (top_orig) {
        PHI_CHECK(*top_orig > 0, "{}: 'original_max_position_embeddings' must be > 0, got {}", origin,
                  *top_orig);
        c.original_max_position_embeddings = *top_orig;
    }
    if (!rope) return;

    auto type = r.opt_string("rope_type");
    auto legacy_type = r.opt_string("type");
    PHI_CHECK(!type || !legacy_type || *type == *legacy_type,
              "{}: '{}.type' = '{}' and '{}.rope_type' = '{}' disagree", origin, rope_key, *legacy_type,
              rope_key, *type);
    std::string t = type ? *type : legacy_type ? *legacy_type : std::string("default");
    // HF's Phi3Config rewrites a legacy "type" of "su" or "yarn" to "longrope" (the 128k
    // checkpoints shipped with those names and LongRoPE factor lists).
    bool longrope =
        t == "longrope" || t == "su" ||
        (t == "yarn" && c.arch == Arch::Phi3 && legacy_type && r.has("short_factor") && r.has("long_factor"));
    if (t == "default" && !longrope) return;
    PHI_CHECK(longrope,
              "{}: {} type '{}' is not supported; phi-cluster supports only LongRoPE ('longrope', alias "
              "'su') or no scaling (null / 'default')",
              origin, rope_key, t);

    c.rope_scaling = RopeScaling::LongRope;
    const size_t half = size_t(c.rotary_dim / 2);
    c.rope_short_factor = r.number_list("short_factor");
    c.rope_long_factor = r.number_list("long_factor");
    for (const char* key : {"short_factor", "long_factor"}) {
        const auto& f = std::string(key) == "short_factor" ? c.rope_short_factor : c.rope_long_factor;
        PHI_CHECK(f.size() == half,
                  "{}: '{}.{}' has {} entries but must have rotary_dim/2 = {} (head_dim {} * "
                  "partial_rotary_factor {})",
                  origin, rope_key, key, f.size(), half, c.head_dim, prf);
        for (float v : f) {
            PHI_CHECK(std::isfinite(v) && v > 0, "{}: '{}.{}' entries must be finite and > 0, found {}",
                      origin, rope_key, key, v);
        }
    }

    auto inner_orig = r.opt_int("original_max_position_embeddings");
    if (inner_orig) {
        PHI_CHECK(*inner_orig > 0, "{}: '{}.original_max_position_embeddings' must be > 0, got {}", origin,
                  rope_key, *inner_orig);
        PHI_CHECK(
            !top_orig || *top_orig == *inner_orig,
            "{}: original_max_position_embeddings is {} at the top level but {} in '{}'; they must agree",
            origin, *top_orig, *inner_orig, rope_key);
        c.original_max_position_embeddings = *inner_orig;
    }

    // PhiMoE scales cos/sin by its own mscales instead of the LongRoPE attention factor.
    PHI_CHECK(c.arch != Arch::PhiMoE || r.has("short_mscale") == r.has("long_mscale"),
              "{}: '{}' gives only one of short_mscale / long_mscale; give both or neither", origin,
              rope_key);
    if (c.arch == Arch::PhiMoE && r.has("short_mscale") && r.has("long_mscale")) {
        c.rope_short_mscale = float(r.positive_number_or("short_mscale", 1.0));
        c.rope_long_mscale = float(r.positive_number_or("long_mscale", 1.0));
        c.rope_attention_factor = 1.0f;
        if (c.original_max_position_embeddings == 0)
            c.original_max_position_embeddings = c.max_position_embeddings;
        return;
    }

    if (r.has("attention_factor")) {
        c.rope_attention_factor = float(r.positive_number_or("attention_factor", 1.0));
    } else {
        // HF _compute_longrope_parameters: factor = max_pos / original_max_pos when the original
        // is known, else rope_scaling.factor (default 1) with original = max_pos.
        double factor;
        if (c.original_max_position_embeddings > 0) {
            factor = double(c.max_position_embeddings) / double(c.original_max_position_embeddings);
        } else {
            factor = r.positive_number_or("factor", 1.0);
            c.original_max_position_embeddings = c.max_position_embeddings;
        }
        double orig = double(c.original_max_position_embeddings);
        PHI_CHECK(factor <= 1.0 || orig > 1.0,
                  "{}: original_max_position_embeddings must be > 1 for LongRoPE, got {}", origin, orig);
        c.rope_attention_factor =
            factor <= 1.0 ? 1.0f : float(std::sqrt(1.0 + std::log(factor) / std::log(orig)));
    }
    if (c.original_max_position_embeddings == 0)
        c.original_max_position_embeddings = c.max_position_embeddings;
}

/// The pre-2024 remote-code Phi-1.5/Phi-2 config (model_type 'phi-msft', MixFormer's PhiConfig):
/// the same Phi architecture as PhiForCausalLM under other key names, with the tensors of
/// WeightLayout::PhiMsft.
ModelConfig parse_phi_msft(const Keys& k, const json& j) {
    const std::string& origin = k.origin();
    ModelConfig c;
    c.arch = Arch::Phi;
    c.layout = WeightLayout::PhiMsft;
    c.architecture = "PhiForCausalLM (phi-msft)";
    if (const json* archs = k.get("architectures"); archs && archs->is_array() && !archs->empty() &&
                                                    archs->at(0).is_string()) {
        c.architecture = archs->at(0).get<std::string>() + " (phi-msft)";
    }
    PHI_CHECK(!j.contains("hidden_size"),
              "{}: has both 'hidden_size' (HF-native) and model_type 'phi-msft'; it must be one layout or the "
              "other",
              origin);
    c.d_model = k.positive_int("n_embd");
    c.n_heads = k.positive_int("n_head");
    c.n_kv_heads = k.positive_int_or("n_head_kv", c.n_heads);
    PHI_CHECK(c.n_heads % c.n_kv_heads == 0, "{}: n_head_kv {} must divide n_head {}", origin, c.n_kv_heads,
              c.n_heads);
    PHI_CHECK(c.d_model % c.n_heads == 0, "{}: n_head {} must divide n_embd {}", origin, c.n_heads, c.d_model);
    c.head_dim = c.d_model / c.n_heads;
    c.n_layers = k.positive_int("n_layer");
    c.vocab_size = k.positive_int("vocab_size");
    c.d_ff = k.positive_int_or("n_inner", 4 * c.d_model);  // null means 4 * n_embd
    c.rotary_dim = k.positive_int("rotary_dim");
    PHI_CHECK(c.rotary_dim % 2 == 0 && c.rotary_dim <= c.head_dim,
              "{}: 'rotary_dim' {} must be even and at most the head dim n_embd/n_head = {}", origin,
              c.rotary_dim, c.head_dim);
    c.partial_rotary_factor = float(c.rotary_dim) / float(c.head_dim);
    c.rope_theta = 10000.0f;  // MixFormer's RotaryEmbedding base
    c.max_position_embeddings = k.positive_int_or("n_positions", 2048);
    c.norm_eps = float(k.positive_number_or("layer_norm_epsilon", 1e-5));
    const std::string act = k.opt_string("activation_function").value_or("gelu_new");
    PHI_CHECK(act == "gelu_new", "{}: activation_function '{}' is not supported for phi-msft (expected 'gelu_new')",
              origin, act);
    c.norm = NormKind::LayerNorm;
    c.norm_bias = true;
    c.act = Activation::GeluNew;
    c.parallel_residual = true;
    c.attention_bias = true;
    c.mlp_bias = true;
    c.lm_head_bias = true;
    c.qk_layernorm = false;
    c.tie_word_embeddings = k.bool_or("tie_word_embeddings", false);
    c.bos_token_id = k.opt_int("bos_token_id");
    c.eos_token_ids = k.int_or_int_list("eos_token_id");
    return c;
}

}  // namespace

ModelConfig parse_model_config(const std::string& json_text, const std::string& origin) {
    const json j = parse_object(json_text, origin);
    const Keys k(j, origin);
    if (k.opt_string("model_type") == "phi-msft") return parse_phi_msft(k, j);
    ModelConfig c;
    c.arch = parse_arch(k, j, c.architecture);

    c.d_model = k.positive_int("hidden_size");
    c.d_ff = k.positive_int("intermediate_size");
    c.n_layers = k.positive_int("num_hidden_layers");
    c.n_heads = k.positive_int("num_attention_heads");
    c.vocab_size = k.positive_int("vocab_size");
    c.n_kv_heads = k.positive_int_or("num_key_value_heads", c.n_heads);
    PHI_CHECK(c.n_heads % c.n_kv_heads == 0, "{}: num_key_value_heads {} must divide num_attention_heads {}",
              origin, c.n_kv_heads, c.n_heads);
    if (k.has("head_dim")) {
        c.head_dim = k.positive_int("head_dim");
    } else {
        PHI_CHECK(c.d_model % c.n_heads == 0,
                  "{}: num_attention_heads {} must divide hidden_size {} (or give head_dim)", origin,
                  c.n_heads, c.d_model);
        c.head_dim = c.d_model / c.n_heads;
    }

    // HF class defaults for keys a config may omit.
    double prf_default = 1.0, theta_default = 10000.0;
    int64_t max_pos_default = 4096;
    std::string act_expected = "silu";
    switch (c.arch) {
        case Arch::Phi:
            c.norm = NormKind::LayerNorm;
            c.norm_bias = true;
            c.act = Activation::GeluNew;
            act_expected = "gelu_new";
            c.parallel_residual = true;
            c.attention_bias = true;
            c.mlp_bias = true;
            c.lm_head_bias = true;
            c.qk_layernorm = k.bool_or("qk_layernorm", false);
            c.norm_eps = float(k.positive_number_or("layer_norm_eps", 1e-5));
            prf_default = 0.5;
            max_pos_default = 2048;
            break;
        case Arch::Phi3:
            c.norm = NormKind::RmsNorm;
            c.norm_bias = false;
            c.act = Activation::Silu;
            c.parallel_residual = false;
            c.attention_bias = k.bool_or("attention_bias", false);
            c.mlp_bias = false;  // HF Phi3 hard-codes bias=False (Phi-4-mini's mlp_bias key is ignored)
            c.lm_head_bias = false;
            c.norm_eps = float(k.positive_number_or("rms_norm_eps", 1e-5));
            break;
        case Arch::PhiMoE:
            // LayerNorm with bias although the key is rms_norm_eps (reference §5.7).
            c.norm = NormKind::LayerNorm;
            c.norm_bias = true;
            c.act = Activation::Silu;
            c.parallel_residual = false;
            c.attention_bias = k.bool_or("attention_bias", true);
            c.mlp_bias = false;
            c.lm_head_bias = k.bool_or("lm_head_bias", true);
            c.norm_eps = float(k.positive_number_or("rms_norm_eps", 1e-5));
            c.n_experts = k.positive_int_or("num_local_experts", 16);
            c.n_experts_per_tok = k.positive_int_or("num_experts_per_tok", 2);
            PHI_CHECK(c.n_experts_per_tok == 2,
                      "{}: num_experts_per_tok is {} but PhiMoE's sparsemixer router requires top-2 routing "
                      "(num_experts_per_tok = 2)",
                      origin, c.n_experts_per_tok);
            PHI_CHECK(c.n_experts >= c.n_experts_per_tok,
                      "{}: num_local_experts {} is less than "
                      "num_experts_per_tok {}",
                      origin, c.n_experts, c.n_experts_per_tok);
            {
                auto jitter = k.opt_number("router_jitter_noise").value_or(0.01);
                PHI_CHECK(std::isfinite(jitter) && jitter >= 0,
                          "{}: 'router_jitter_noise' must be >= 0, got {}", origin, jitter);
                c.router_jitter_noise = float(jitter);
            }
            theta_default = 1e6;
            max_pos_default = 4096 * 32;
            break;
    }
    if (auto act = k.opt_string("hidden_act")) {
        bool ok = *act == act_expected || (act_expected == "silu" && *act == "swish");
        PHI_CHECK(ok, "{}: hidden_act '{}' is not supported for {} (expected '{}')", origin, *act,
                  c.architecture, act_expected);
    }
    c.tie_word_embeddings = k.bool_or("tie_word_embeddings", false);
    c.max_position_embeddings = k.positive_int_or("max_position_embeddings", max_pos_default);

    parse_rope(k, c, prf_default, theta_default);

    if (auto w = k.opt_int("sliding_window")) {
        PHI_CHECK(*w > 0, "{}: 'sliding_window' must be > 0 or null, got {}", origin, *w);
        c.sliding_window = *w;
    }
    c.bos_token_id = k.opt_int("bos_token_id");
    c.eos_token_ids = k.int_or_int_list("eos_token_id");
    return c;
}

ModelConfig load_model_config(const std::filesystem::path& path) {
    return parse_model_config(read_text(path), path.string());
}

GenerationConfig load_generation_config(const std::filesystem::path& model_dir) {
    GenerationConfig g;
    const auto path = model_dir / "generation_config.json";
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return g;
    const std::string origin = path.string();
    const json j = parse_object(read_text(path), origin);
    const Keys k(j, origin);
    g.bos_token_id = k.opt_int("bos_token_id");
    g.eos_token_ids = k.int_or_int_list("eos_token_id");
    g.pad_token_id = k.opt_int("pad_token_id");
    if (auto t = k.opt_number("temperature")) {
        PHI_CHECK(std::isfinite(*t) && *t >= 0, "{}: 'temperature' must be >= 0, got {}", origin, *t);
        g.temperature = float(*t);
    }
    if (auto p = k.opt_number("top_p")) {
        PHI_CHECK(*p > 0 && *p <= 1, "{}: 'top_p' must be in (0, 1], got {}", origin, *p);
        g.top_p = float(*p);
    }
    if (auto tk = k.opt_int("top_k")) {
        PHI_CHECK(*tk >= 0, "{}: 'top_k' must be >= 0, got {}", origin, *tk);
        g.top_k = *tk;
    }
    if (k.has("do_sample")) g.do_sample = k.bool_or("do_sample", false);
    if (auto m = k.opt_int("max_new_tokens")) {
        PHI_CHECK(*m > 0, "{}: 'max_new_tokens' must be > 0, got {}", origin, *m);
        g.max_new_tokens = *m;
    }
    return g;
}

}  // namespace phi
