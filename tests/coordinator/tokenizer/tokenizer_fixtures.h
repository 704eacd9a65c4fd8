// Shared helpers for the tokenizer tests: where the fixtures are, and loading a fixture folder with an
// expectation file's patch applied in memory (the large vocabularies are stored once per family).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "coordinator/tokenizer/tokenizer.h"

namespace phi::tokenizer::testing {

inline std::filesystem::path source_dir() {
    if (const char* env = std::getenv("PHI_SOURCE_DIR")) return env;
    return PHI_SOURCE_DIR_FALLBACK;
}

inline std::filesystem::path fixtures_dir() {
    return source_dir() / "tests" / "fixtures" / "tokenizers";
}

inline std::string read_text(const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

inline nlohmann::json read_json(const std::filesystem::path& p) {
    return nlohmann::json::parse(read_text(p));
}

/// Loads expectations/<name>.json and the tokenizer it describes (cached: the o200k vocabulary takes a
/// while).
struct Fixture {
    nlohmann::json expectations;
    std::shared_ptr<Tokenizer> tokenizer;
};

inline const Fixture& fixture(const std::string& name) {
    static std::map<std::string, Fixture> cache;
    auto it = cache.find(name);
    if (it != cache.end()) return it->second;
    Fixture f;
    f.expectations = read_json(fixtures_dir() / "expectations" / (name + ".json"));
    const std::filesystem::path dir = fixtures_dir() / f.expectations["fixture"].get<std::string>();
    const nlohmann::json& patch = f.expectations["patch"];
    if (patch.is_null()) {
        f.tokenizer = std::make_shared<Tokenizer>(Tokenizer::load(dir));
    } else {
        std::string tj = Tokenizer::read_tokenizer_json(dir);
        if (patch.contains("tokenizer_json")) {
            nlohmann::json j = nlohmann::json::parse(tj);
            for (auto kv = patch["tokenizer_json"].begin(); kv != patch["tokenizer_json"].end(); ++kv)
                j[kv.key()] = kv.value();
            tj = j.dump();
        }
        std::string tc = read_text(dir / "tokenizer_config.json");
        if (patch.contains("tokenizer_config")) tc = patch["tokenizer_config"].dump();
        std::string mc =
            std::filesystem::exists(dir / "config.json") ? read_text(dir / "config.json") : std::string();
        if (patch.contains("config")) mc = patch["config"].is_null() ? std::string() : patch["config"].dump();
        f.tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_json(tj, tc, mc));
    }
    return cache.emplace(name, std::move(f)).first->second;
}

inline std::string from_hex(const std::string& hex) {
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

}  // namespace phi::tokenizer::testing
