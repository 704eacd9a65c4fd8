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
std::vector<int32_t> stop_ids_for(const std::filesystem::path& model_dir, const tokenizer::Tokenizer& tok);

}  // namespace phi::app
