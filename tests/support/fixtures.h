// Test support: locating the repository (PHI_SOURCE_DIR, set by CTest) and reading HF golden
// fixtures written by scripts/make_goldens.py.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace phi::test {

std::filesystem::path source_dir();
std::filesystem::path fixture_dir(const std::string& name);

struct Golden {
    std::string name;
    int64_t tokenizer_size = 0;
    std::vector<int32_t> prompt;
    std::vector<std::vector<float>> prompt_logits;       // [len][vocab]
    std::vector<std::vector<float>> prompt_logits_bf16;  // [len][vocab]
    std::vector<int32_t> greedy;
    std::vector<std::vector<float>> greedy_logits;       // [steps][vocab]
    std::vector<float> greedy_margins;
    std::vector<int32_t> long_prompt;                    // optional
    std::vector<std::vector<float>> long_prompt_logits;  // optional
    /// kv_bf16.json (scripts/make_kv_bf16_goldens.py), when the fixture has one: HF's prompt logits
    /// with fp32 weights and K, V rounded to bf16 before attention.
    std::vector<std::vector<float>> prompt_logits_kv_bf16;  // [len][vocab]
};

Golden load_golden(const std::string& name);

/// A PEFT adapter fixture (scripts/make_lora_goldens.py): tests/fixtures/<fixture>/lora/<name>/.
struct LoraGolden {
    std::string fixture, name;
    std::filesystem::path dir;  // the adapter folder
    int64_t tokenizer_size = 0;
    std::vector<int32_t> prompt;
    std::vector<std::vector<float>> prompt_logits;  // HF + PEFT fp32, [len][vocab]
    /// The same with every base parameter rounded to bf16 (the reference for `dtype: bf16`).
    std::vector<std::vector<float>> prompt_logits_bf16_base;
    std::vector<int32_t> greedy;
    std::vector<float> greedy_margins;
    double base_max_abs_diff = 0;  // how far the adapter moves the base prompt logits
    bool base_greedy_differs = false;
};

LoraGolden load_lora_golden(const std::string& fixture, const std::string& name);

/// Every adapter fixture as {fixture, adapter name}.
std::vector<std::pair<std::string, std::string>> lora_fixture_names();

/// Every fixture folder holding a golden.json.
std::vector<std::string> golden_fixture_names();

}  // namespace phi::test
