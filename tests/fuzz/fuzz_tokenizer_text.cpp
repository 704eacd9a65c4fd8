// Arbitrary bytes through the fixture tokenizers (byte-level BPE and SentencePiece BPE): encode
// never fails on any text, and arbitrary ids decode; the incremental decoder's pieces concatenate
// to the whole decode (its documented contract), checked on every input.
#include <cstdlib>
#include <cstring>
#include <memory>

#include "common/error.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/support/fixtures.h"

namespace {

using phi::tokenizer::Tokenizer;

struct Tokenizers {
    Tokenizer byte_level = Tokenizer::load(phi::test::fixture_dir("serving_tokenizer"));
    Tokenizer sentencepiece = Tokenizer::load(phi::test::fixture_dir("tokenizers/phi3"));
};

void check(const Tokenizer& tok, std::string_view text, const uint8_t* data, size_t size) {
    tok.encode(text, true);
    tok.encode(text, false, true);
    // The input also read as ids (4 bytes each), some out of range on purpose.
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint32_t v;
        std::memcpy(&v, data + i, 4);
        ids.push_back(int32_t(v % uint32_t(tok.vocab_size() + 8)));
    }
    for (bool skip : {false, true}) {
        const std::string whole = tok.decode(ids, skip);
        phi::tokenizer::IncrementalDecoder inc(tok, skip);
        std::string pieces;
        for (int32_t id : ids) pieces += inc.step(id);
        pieces += inc.flush();
        if (pieces != whole) std::abort();  // the decoder's contract is broken
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const Tokenizers toks;  // loaded once per process
    const std::string_view text = phi::fuzz::text(data, size);
    check(toks.byte_level, text, data, size);
    check(toks.sentencepiece, text, data, size);
    return 0;
}
