// A PEFT LoRA adapter's adapter_config.json, parsed and checked once, and PEFT's rules for which
// modules it adapts and with what rank and scale (peft 0.21: tuners_utils.check_target_module_exists,
// utils.other.get_pattern_key, LoraLayer.update_layer). Fields that would change the math in ways
// phi-cluster does not implement (DoRA, biases, extra trainable modules, ...) are refused here by name,
// before any tensor is read.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sharding/model_config.h"

namespace phi {

struct LoraConfig {
    std::string origin;  // the file, for error messages
    int64_t r = 8;
    double lora_alpha = 8;
    bool use_rslora = false;
    /// In the file's order: PEFT takes the first key that matches (`(.*\.)?(key)$`).
    std::vector<std::pair<std::string, int64_t>> rank_pattern;
    std::vector<std::pair<std::string, double>> alpha_pattern;
    /// Exactly one of these: a list (a module matches an entry when its name equals it or ends with
    /// "." + entry) or a regex string (PEFT's rule: the whole module name must match).
    std::vector<std::string> target_list;
    std::optional<std::string> target_regex;
    std::vector<std::string> exclude_list;
    std::optional<std::string> exclude_regex;
    /// Only with a target list (PEFT ignores it for a regex): the layer indices adapted.
    std::optional<std::vector<int64_t>> layers_to_transform;
    std::vector<std::string> layers_pattern;
    std::string base_model_name_or_path;
};

/// Parses adapter_config.json text; `origin` names the file in every message.
LoraConfig parse_lora_config(const std::string& json_text, const std::string& origin);

/// Whether PEFT would wrap the module `key` (a name of the HF model's named_modules(), e.g.
/// "model.layers.0.self_attn.q_proj") with this adapter.
bool lora_targets(const LoraConfig& c, const std::string& key);

/// PEFT's rank and scale of the module `key`: rank_pattern / alpha_pattern or r / lora_alpha, scale
/// alpha / r (alpha / sqrt(r) with use_rslora).
int64_t lora_rank(const LoraConfig& c, const std::string& key);
double lora_scale(const LoraConfig& c, const std::string& key);

/// Throws when base_model_name_or_path names a model of another architecture than `cfg` (a local folder
/// with a config.json, or a Microsoft Phi hub id); other names cannot be checked and are accepted.
void check_lora_base_model(const LoraConfig& c, const ModelConfig& cfg);

}  // namespace phi
