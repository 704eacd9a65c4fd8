// tokenizer.json, tokenizer_config.json and config.json (the input's three NUL-separated parts):
// Tokenizer::from_json loads them or throws phi::Error; a tokenizer that loads encodes and decodes
// a short text.
#include "common/error.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto parts = phi::fuzz::split(data, size, 3);
    try {
        const phi::tokenizer::Tokenizer tok = phi::tokenizer::Tokenizer::from_json(parts[0], parts[1], parts[2]);
        const std::vector<int32_t> ids = tok.encode("Hello, world! <|user|> 123 \xc3\xa9\n", true);
        tok.decode(ids, false);
        tok.decode(ids, true);
    } catch (const phi::Error&) {
    }
    return 0;
}
