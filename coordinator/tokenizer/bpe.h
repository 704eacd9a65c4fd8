// BPE model of tokenizer.json ("model": {"type": "BPE", ...}), with HF tokenizers' semantics: per-character
// initial symbols (with byte fallback / unk), then merges applied lowest rank first, leftmost on ties.
// Byte-level pre-tokenized pieces are tokenized straight from their raw bytes (no byte-to-char string).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "coordinator/tokenizer/string_map.h"

namespace phi::tokenizer {

/// The GPT-2 byte <-> printable character table (ByteLevel pre-tokenizer / decoder).
struct ByteLevelTable {
    char32_t byte_to_char[256];
    int16_t char_to_byte[0x144];  // -1 where the code point is not one of the 256 characters
    std::string byte_to_utf8[256];

    static const ByteLevelTable& get();
    /// Maps a ByteLevel token string back to raw bytes; false if a character is outside the table.
    bool to_bytes(std::string_view token, std::string& out) const;
};

struct BpeOptions {
    std::optional<std::string> unk_token;
    std::optional<std::string> continuing_subword_prefix;
    std::optional<std::string> end_of_word_suffix;
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;
};

/// Reusable buffers for one encode call (keeps the hot path free of per-piece allocation).
struct BpeScratch {
    struct Symbol {
        int32_t id;
        int32_t prev;
        int32_t next;
        uint32_t len;    // bytes of input covered; 0 once merged into its left neighbour
        uint32_t rank;   // rank of the pair (this, next) or k_no_rank
        int32_t merged;  // id of that pair's merge
    };
    std::vector<Symbol> symbols;
    std::vector<uint64_t> heap;
    std::string key;
    WordCache cache;
};

class Bpe {
  public:
    /// Builds the model. `merges` are (left, right) token strings. Throws phi::Error when a merge refers to a
    /// token that is not in the vocabulary, or when unk_token is missing from it.
    Bpe(std::vector<std::pair<std::string, int32_t>> vocab,
        const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options);

    /// Tokenizes one pre-tokenized piece given as model-level text.
    void tokenize(std::string_view piece, BpeScratch& scratch, std::vector<int32_t>& out) const;

    /// Tokenizes one piece of raw bytes that the ByteLevel pre-tokenizer maps to characters.
    void tokenize_byte_level(std::string_view raw, BpeScratch& scratch, std::vector<int32_t>& out) const;

    int32_t find(std::string_view token) const { return vocab_.find(token); }
    /// Token string of a model id, or nullptr.
    const std::string* token(int32_t id) const {
        return (id >= 0 && static_cast<std::size_t>(id) < id_to_token_.size() && has_id_[id])
                   ? &id_to_token_[id]
                   : nullptr;
    }
    std::size_t size() const { return vocab_.size(); }
    int32_t id_bound() const { return static_cast<int32_t>(id_to_token_.size()); }
    const BpeOptions& options() const { return options_; }
    std::size_t num_merges() const { return merges_.size(); }

  private:
    void tokenize_word(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& out) const;
    void merge_all(BpeScratch& scratch) const;
    void emit(const BpeScratch& scratch, std::vector<int32_t>& out) const;

    StringIdMap vocab_;
    std::vector<std::string> id_to_token_;
    std::vector<uint8_t> has_id_;
    PairMap merges_;
    BpeOptions options_;
    int32_t unk_id_ = -1;
    bool metaspace_split_safe_ = false;
    // Byte-level fast path: initial symbol of each byte, and raw-bytes -> id for ignore_merges.
    bool byte_level_ok_ = false;
    int32_t byte_id_[256];
    StringIdMap byte_vocab_;
    int32_t byte_fallback_id_[256];
};

}  // namespace phi::tokenizer
