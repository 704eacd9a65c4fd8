// adapter_config.json -> LoraConfig, and PEFT's matching rules. Regexes use std::regex (ECMAScript),
// which covers what target_modules regexes are written with (`.*`, `\.`, groups, alternation,
// classes, lazy quantifiers); a Python-only construct such as `(?P<name>...)` is refused by name
// rather than silently matched differently.
#include "sharding/lora_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "common/error.h"

namespace phi {

namespace {

// Ordered: rank_pattern / alpha_pattern are searched in the file's order, as PEFT does.
using json = nlohmann::ordered_json;

std::regex compile(const std::string& pattern, const std::string& origin, const char* field) {
    try {
        return std::regex(pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
        PHI_FAIL("{}: '{}' regex \"{}\" is not supported ({}); write it with ECMAScript syntax (no (?P<...>) "
                 "groups or inline flags)",
                 origin, field, pattern, e.what());
    }
}

bool full_match(const std::string& pattern, const std::string& key, const std::string& origin, const char* field) {
    return std::regex_match(key, compile(pattern, origin, field));
}

// PEFT's list rule: the name equals the entry or ends with "." + entry.
bool list_match(const std::vector<std::string>& entries, const std::string& key) {
    for (const std::string& e : entries) {
        if (key == e) return true;
        if (key.size() > e.size() && key.ends_with(e) && key[key.size() - e.size() - 1] == '.') return true;
    }
    return false;
}

bool truthy(const json& v) {
    if (v.is_null()) return false;
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_array() || v.is_object() || v.is_string()) return !v.empty();
    return true;
}

void refuse_if_set(const json& j, const char* field, const std::string& origin, const char* why) {
    auto it = j.find(field);
    if (it != j.end() && truthy(*it))
        PHI_FAIL("{}: '{}' = {} is not supported: {}", origin, field, it->dump(), why);
}

std::vector<std::string> string_list(const json& v, const std::string& origin, const char* field) {
    PHI_CHECK(v.is_array(), "{}: '{}' must be a list of strings or a string, got {}", origin, field, v.dump());
    std::vector<std::string> out;
    for (const json& e : v) {
        PHI_CHECK(e.is_string(), "{}: '{}' must be a list of strings, found {}", origin, field, e.dump());
        out.push_back(e.get<std::string>());
    }
    return out;
}

int64_t positive_int(const json& v, const std::string& origin, const std::string& field) {
    PHI_CHECK(v.is_number_integer() && v.get<int64_t>() > 0, "{}: '{}' must be a positive integer, got {}", origin,
              field, v.dump());
    return v.get<int64_t>();
}

double finite_number(const json& v, const std::string& origin, const std::string& field) {
    PHI_CHECK(v.is_number() && std::isfinite(v.get<double>()), "{}: '{}' must be a number, got {}", origin, field,
              v.dump());
    return v.get<double>();
}

// PEFT's get_pattern_key: the first key such that the name matches `(.*\.)?(key)$`.
template <class T>
const std::pair<std::string, T>* pattern_for(const std::vector<std::pair<std::string, T>>& pats, const std::string& key,
                                             const std::string& origin, const char* field) {
    for (const auto& p : pats)
        if (full_match("(.*\\.)?(" + p.first + ")", key, origin, field)) return &p;
    return nullptr;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return s;
}

// The architecture of a Microsoft Phi hub id, or "" when the name says nothing we can rely on.
std::string hub_architecture(const std::string& name) {
    const std::string n = lower(name);
    const size_t slash = n.rfind('/');
    const std::string org = slash == std::string::npos ? "" : n.substr(0, slash);
    const std::string model = slash == std::string::npos ? n : n.substr(slash + 1);
    if (org != "microsoft") return "";
    if (model.starts_with("phi-3.5-moe") || model.starts_with("phi-moe")) return "PhiMoEForCausalLM";
    if (model.starts_with("phi-3") || model.starts_with("phi-4")) return "Phi3ForCausalLM";
    if (model.starts_with("phi-1") || model.starts_with("phi-2")) return "PhiForCausalLM";
    return "";
}

}  // namespace

LoraConfig parse_lora_config(const std::string& json_text, const std::string& origin) {
    json j;
    try {
        j = json::parse(json_text);
    } catch (const json::exception& e) {
        PHI_FAIL("{}: not valid JSON: {}", origin, e.what());
    }
    PHI_CHECK(j.is_object(), "{}: must be a JSON object, got {}", origin, j.type_name());
    LoraConfig c;
    c.origin = origin;

    if (auto it = j.find("peft_type"); it != j.end() && !it->is_null())
        PHI_CHECK(it->is_string() && it->get<std::string>() == "LORA",
                  "{}: 'peft_type' = {}: only LoRA adapters (\"LORA\") are supported", origin, it->dump());
    // Fields that change the forward in ways phi-cluster does not implement.
    refuse_if_set(j, "use_dora", origin, "DoRA adapters need a magnitude vector per weight (merge it into a plain "
                                         "LoRA or retrain without DoRA)");
    refuse_if_set(j, "modules_to_save", origin, "fully trained copies of base modules are not served; only "
                                                "lora_A/lora_B pairs are");
    refuse_if_set(j, "lora_bias", origin, "LoRA B biases are not supported");
    refuse_if_set(j, "fan_in_fan_out", origin, "only nn.Linear weights ([out, in]) are supported, not Conv1D");
    refuse_if_set(j, "layer_replication", origin, "layer replication changes the base model's layer stack");
    refuse_if_set(j, "target_parameters", origin, "LoRA on raw parameters (e.g. MoE experts) is not supported");
    refuse_if_set(j, "use_qalora", origin, "QA-LoRA pools the input and is not supported");
    refuse_if_set(j, "alora_invocation_tokens", origin, "activated LoRA is not supported");
    refuse_if_set(j, "trainable_token_indices", origin, "trainable token embeddings are not supported");
    refuse_if_set(j, "arrow_config", origin, "Arrow routing is not supported");
    refuse_if_set(j, "use_bdlora", origin, "this LoRA variant is not supported");
    refuse_if_set(j, "kasa_config", origin, "this LoRA variant is not supported");
    refuse_if_set(j, "monteclora_config", origin, "this LoRA variant is not supported");
    refuse_if_set(j, "velora_config", origin, "this LoRA variant is not supported");
    if (auto it = j.find("bias"); it != j.end() && !it->is_null())
        PHI_CHECK(it->is_string() && it->get<std::string>() == "none",
                  "{}: 'bias' = {} is not supported: adapters that train biases change the base biases; only "
                  "\"none\" is served",
                  origin, it->dump());

    auto r = j.find("r");
    PHI_CHECK(r != j.end(), "{}: required key 'r' is missing", origin);
    c.r = positive_int(*r, origin, "r");
    auto alpha = j.find("lora_alpha");
    c.lora_alpha = alpha == j.end() || alpha->is_null() ? 8.0 : finite_number(*alpha, origin, "lora_alpha");
    if (auto it = j.find("use_rslora"); it != j.end() && !it->is_null()) {
        PHI_CHECK(it->is_boolean(), "{}: 'use_rslora' must be true or false, got {}", origin, it->dump());
        c.use_rslora = it->get<bool>();
    }
    if (auto it = j.find("rank_pattern"); it != j.end() && !it->is_null()) {
        PHI_CHECK(it->is_object(), "{}: 'rank_pattern' must be an object, got {}", origin, it->dump());
        for (auto& [k, v] : it->items()) c.rank_pattern.emplace_back(k, positive_int(v, origin, "rank_pattern." + k));
    }
    if (auto it = j.find("alpha_pattern"); it != j.end() && !it->is_null()) {
        PHI_CHECK(it->is_object(), "{}: 'alpha_pattern' must be an object, got {}", origin, it->dump());
        for (auto& [k, v] : it->items()) c.alpha_pattern.emplace_back(k, finite_number(v, origin, "alpha_pattern." + k));
    }

    auto tm = j.find("target_modules");
    PHI_CHECK(tm != j.end() && !tm->is_null(), "{}: 'target_modules' is missing: name the modules the adapter adapts",
              origin);
    if (tm->is_string()) {
        c.target_regex = tm->get<std::string>();
        compile(*c.target_regex, origin, "target_modules");
    } else {
        c.target_list = string_list(*tm, origin, "target_modules");
        PHI_CHECK(!c.target_list.empty(), "{}: 'target_modules' is empty", origin);
    }
    if (auto it = j.find("exclude_modules"); it != j.end() && !it->is_null()) {
        if (it->is_string()) {
            c.exclude_regex = it->get<std::string>();
            compile(*c.exclude_regex, origin, "exclude_modules");
        } else {
            c.exclude_list = string_list(*it, origin, "exclude_modules");
        }
    }
    if (auto it = j.find("layers_to_transform"); it != j.end() && !it->is_null()) {
        PHI_CHECK(!c.target_regex, "{}: 'layers_to_transform' cannot be used with a regex 'target_modules' (PEFT "
                                   "refuses it too)",
                  origin);
        std::vector<int64_t> layers;
        if (it->is_number_integer()) {
            layers.push_back(it->get<int64_t>());
        } else {
            PHI_CHECK(it->is_array(), "{}: 'layers_to_transform' must be an integer or a list, got {}", origin,
                      it->dump());
            for (const json& e : *it) {
                PHI_CHECK(e.is_number_integer(), "{}: 'layers_to_transform' must hold integers, found {}", origin,
                          e.dump());
                layers.push_back(e.get<int64_t>());
            }
        }
        if (!layers.empty()) c.layers_to_transform = std::move(layers);
    }
    if (auto it = j.find("layers_pattern"); it != j.end() && !it->is_null()) {
        PHI_CHECK(!c.target_regex, "{}: 'layers_pattern' cannot be used with a regex 'target_modules'", origin);
        c.layers_pattern = it->is_string() ? std::vector<std::string>{it->get<std::string>()}
                                           : string_list(*it, origin, "layers_pattern");
    }
    if (auto it = j.find("base_model_name_or_path"); it != j.end() && it->is_string())
        c.base_model_name_or_path = it->get<std::string>();
    return c;
}

bool lora_targets(const LoraConfig& c, const std::string& key) {
    if (c.exclude_regex ? full_match(*c.exclude_regex, key, c.origin, "exclude_modules")
                        : list_match(c.exclude_list, key))
        return false;
    if (c.target_regex) return full_match(*c.target_regex, key, c.origin, "target_modules");
    if (std::find(c.target_list.begin(), c.target_list.end(), key) != c.target_list.end()) return true;
    if (!list_match(c.target_list, key)) return false;
    if (!c.layers_to_transform) return true;
    // PEFT takes the first numbered segment ("model.layers.3.mlp.fc1" -> 3), or the one after a
    // layers_pattern entry.
    std::smatch m;
    bool found = false;
    if (c.layers_pattern.empty()) {
        static const std::regex any_layer(R"(.*?\.[^.]*\.(\d+)\..*)");
        found = std::regex_match(key, m, any_layer);
    } else {
        for (const std::string& p : c.layers_pattern) {
            const std::regex re("(?:^|.*?\\.)" + p + "\\.(\\d+)\\..*");
            if ((found = std::regex_match(key, m, re))) break;
        }
    }
    if (!found) return false;
    const int64_t layer = std::stoll(m[1].str());
    const auto& ls = *c.layers_to_transform;
    return std::find(ls.begin(), ls.end(), layer) != ls.end();
}

int64_t lora_rank(const LoraConfig& c, const std::string& key) {
    const auto* p = pattern_for(c.rank_pattern, key, c.origin, "rank_pattern");
    return p ? p->second : c.r;
}

double lora_scale(const LoraConfig& c, const std::string& key) {
    const auto* p = pattern_for(c.alpha_pattern, key, c.origin, "alpha_pattern");
    const double alpha = p ? p->second : c.lora_alpha;
    const double r = double(lora_rank(c, key));
    return c.use_rslora ? alpha / std::sqrt(r) : alpha / r;
}

void check_lora_base_model(const LoraConfig& c, const ModelConfig& cfg) {
    const std::string& name = c.base_model_name_or_path;
    if (name.empty()) return;
    std::string arch;
    std::error_code ec;
    const std::filesystem::path local = std::filesystem::path(name) / "config.json";
    if (std::filesystem::is_regular_file(local, ec)) {
        std::ifstream in(local);
        std::stringstream ss;
        ss << in.rdbuf();
        try {
            const json j = json::parse(ss.str());
            if (auto a = j.find("architectures"); a != j.end() && a->is_array() && !a->empty() && (*a)[0].is_string())
                arch = (*a)[0].get<std::string>();
        } catch (const json::exception&) {
            return;  // not something we can read: nothing to compare
        }
    } else {
        arch = hub_architecture(name);
    }
    if (arch.empty()) return;
    PHI_CHECK(arch == cfg.architecture,
              "{}: 'base_model_name_or_path' = \"{}\" is a {} model, but the served model is {}: the adapter was "
              "trained for another architecture",
              c.origin, name, arch, cfg.architecture);
}

}  // namespace phi
