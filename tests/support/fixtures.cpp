#include "tests/support/fixtures.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/env.h"
#include "common/error.h"

namespace phi::test {

std::filesystem::path source_dir() {
    auto dir = env_string("PHI_SOURCE_DIR");
    PHI_CHECK(dir.has_value(), "PHI_SOURCE_DIR is not set (CTest sets it to the repository root)");
    return *dir;
}

std::filesystem::path fixture_dir(const std::string& name) { return source_dir() / "tests" / "fixtures" / name; }

namespace {
std::vector<std::vector<float>> matrix(const nlohmann::json& j) {
    std::vector<std::vector<float>> m;
    for (const auto& row : j) m.push_back(row.get<std::vector<float>>());
    return m;
}
}  // namespace

Golden load_golden(const std::string& name) {
    const auto path = fixture_dir(name) / "golden.json";
    std::ifstream f(path);
    PHI_CHECK(f.good(), "cannot open {}", path.string());
    const nlohmann::json j = nlohmann::json::parse(f);
    Golden g;
    g.name = name;
    g.tokenizer_size = j.at("tokenizer_size").get<int64_t>();
    g.prompt = j.at("prompt").get<std::vector<int32_t>>();
    g.prompt_logits = matrix(j.at("prompt_logits"));
    g.prompt_logits_bf16 = matrix(j.at("prompt_logits_bf16"));
    g.greedy = j.at("greedy").get<std::vector<int32_t>>();
    g.greedy_logits = matrix(j.at("greedy_logits"));
    g.greedy_margins = j.at("greedy_margins").get<std::vector<float>>();
    if (j.contains("long_prompt")) {
        g.long_prompt = j.at("long_prompt").get<std::vector<int32_t>>();
        g.long_prompt_logits = matrix(j.at("long_prompt_logits"));
    }
    const auto kv_path = fixture_dir(name) / "kv_bf16.json";
    if (std::filesystem::exists(kv_path)) {
        std::ifstream kf(kv_path);
        const nlohmann::json k = nlohmann::json::parse(kf);
        PHI_CHECK(k.at("prompt").get<std::vector<int32_t>>() == g.prompt, "{}: its prompt is not golden.json's",
                  kv_path.string());
        g.prompt_logits_kv_bf16 = matrix(k.at("prompt_logits_kv_bf16"));
    }
    return g;
}

LoraGolden load_lora_golden(const std::string& fixture, const std::string& name) {
    LoraGolden g;
    g.fixture = fixture;
    g.name = name;
    g.dir = fixture_dir(fixture) / "lora" / name;
    const auto path = g.dir / "golden.json";
    std::ifstream f(path);
    PHI_CHECK(f.good(), "cannot open {}", path.string());
    const nlohmann::json j = nlohmann::json::parse(f);
    g.prompt = j.at("prompt").get<std::vector<int32_t>>();
    g.prompt_logits = matrix(j.at("prompt_logits"));
    g.prompt_logits_bf16_base = matrix(j.at("prompt_logits_bf16_base"));
    g.greedy = j.at("greedy").get<std::vector<int32_t>>();
    g.greedy_margins = j.at("greedy_margins").get<std::vector<float>>();
    g.base_max_abs_diff = j.at("base_max_abs_diff").get<double>();
    g.base_greedy_differs = j.at("base_greedy_differs").get<bool>();
    g.tokenizer_size = load_golden(fixture).tokenizer_size;
    return g;
}

std::vector<std::pair<std::string, std::string>> lora_fixture_names() {
    std::vector<std::pair<std::string, std::string>> names;
    for (const std::string& fixture : golden_fixture_names()) {
        const auto dir = fixture_dir(fixture) / "lora";
        if (!std::filesystem::is_directory(dir)) continue;
        for (const auto& e : std::filesystem::directory_iterator(dir))
            if (std::filesystem::exists(e.path() / "golden.json"))
                names.emplace_back(fixture, e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
}

std::vector<std::string> golden_fixture_names() {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(source_dir() / "tests" / "fixtures"))
        if (std::filesystem::exists(e.path() / "golden.json")) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace phi::test
