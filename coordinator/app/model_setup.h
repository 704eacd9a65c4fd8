// Pieces both modes of phi-worker share: the end-of-sequence ids of a model folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace phi::tokenizer {
class Tokenizer;
}

namespace phi::app {

/// generation_config.json's eos ids, the tokenizer's eos, and the family's end-of-turn tokens
/// (<|end|>, <|im_end|>, <|endoftext|>) when the vocabulary has them (reference section 4: the
/// config's eos alone misses Phi-3's <|end|> and phi-4's <|im_end|>).
/// Without a tokenizer (`tok` null, token-ids-only mode): config.json's and generation_config.json's
/// eos ids below `id_bound`.
std::vector<int32_t> stop_ids_for(const std::filesystem::path& model_dir, const tokenizer::Tokenizer* tok,
                                  int64_t id_bound);

/// True when `dir` holds tokenizer.json (or tokenizer.json.gz).
bool has_tokenizer_file(const std::filesystem::path& dir);

/// Refuses a bare checkpoint (no tokenizer files in `tokenizer_dir`) unless token-ids-only mode is
/// on, naming the YAML keys that fix it (`tokenizer:`, `skip_tokenizer_init:`).
void require_tokenizer_or_ids_only(const std::filesystem::path& tokenizer_dir, bool skip_tokenizer_init);

}  // namespace phi::app
