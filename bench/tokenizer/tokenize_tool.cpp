// Developer tool for differential testing against HF: reads hex-encoded inputs, one per line, from stdin and
// prints the ids of each as a JSON list (one line each).
//
// usage: tokenize_tool MODEL_DIR [--no-special] < inputs.hex
#include <cstdio>
#include <iostream>
#include <string>

#include "common/error.h"
#include "coordinator/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL_DIR [--no-special] < inputs.hex\n", argv[0]);
        return 2;
    }
    const bool add_special = !(argc > 2 && std::string(argv[2]) == "--no-special");
    try {
        const auto tok = phi::tokenizer::Tokenizer::load(argv[1]);
        std::string line;
        while (std::getline(std::cin, line)) {
            std::string text;
            for (std::size_t i = 0; i + 1 < line.size(); i += 2)
                text.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
            const auto ids = tok.encode(text, add_special);
            std::string out = "[";
            for (std::size_t i = 0; i < ids.size(); ++i) out += (i ? "," : "") + std::to_string(ids[i]);
            std::puts((out + "]").c_str());
        }
    } catch (const phi::Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
