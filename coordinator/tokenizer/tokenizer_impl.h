// Internal representation of a loaded tokenizer: the pipeline components of tokenizer.json (normalizer,
// pre-tokenizer, BPE model, post-processor, decoder) and HF's AddedVocabulary, shared by the loader
// (tokenizer_load.cpp), the encoder/decoder (tokenizer.cpp) and the incremental decoder.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "coordinator/tokenizer/bpe.h"
#include "coordinator/tokenizer/regex.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace phi::tokenizer {

/// A match span over a string: [begin, end) and whether it is a pattern match.
struct Span {
    std::size_t begin;
    std::size_t end;
    bool is_match;
};

/// tokenizer.json's SplitPattern: {"String": s} or {"Regex": r}.
class Pattern {
  public:
    static Pattern literal(std::string s);
    static Pattern regex(const std::string& r);
    /// Spans covering `text` (HF's Pattern::find_matches): matches and the gaps between them.
    void find_matches(std::string_view text, std::vector<Span>& out) const;

  private:
    std::string literal_;
    std::shared_ptr<Regex> regex_;  // shared: components are copied when class profiles are applied
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
enum class PrependScheme { Always, First, Never };

struct NormalizerOp {
    enum class Kind { Prepend, Replace };
    Kind kind;
    std::string text;  // Prepend: the prefix; Replace: the content
    std::optional<Pattern> pattern;
};

struct PreTokenizerOp {
    enum class Kind { ByteLevel, Split, Metaspace };
    Kind kind;
    // ByteLevel
    bool add_prefix_space = false;
    bool use_regex = true;
    // Split
    std::optional<Pattern> pattern;
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    // Metaspace
    std::string replacement;  // UTF-8 of the replacement character
    PrependScheme prepend_scheme = PrependScheme::Always;
    bool split = true;
};

struct DecoderOp {
    enum class Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace };
    Kind kind;
    std::optional<Pattern> pattern;  // Replace
    std::string content;             // Replace: content; Strip: the character; Metaspace: replacement
    std::size_t start = 0;           // Strip
    std::size_t stop = 0;            // Strip
    PrependScheme prepend_scheme = PrependScheme::Always;  // Metaspace
};

struct PostProcessorOp {
    enum class Kind { Template, ByteLevel, Wrap };
    Kind kind;
    std::vector<std::vector<int32_t>>
        single;  // Template: pieces, each the ids of a special token or empty=$A
    std::vector<bool> single_is_sequence;
    std::vector<int32_t> prefix;  // Wrap (Bert/Roberta): cls
    std::vector<int32_t> suffix;  // Wrap: sep
};

/// HF's AddedVocabulary: content -> id (never shrinks), id -> token (re-adding overwrites), the set of
/// special contents (only grows) and the leftmost-longest matchers over raw and normalized text.
struct AddedVocab {
    std::unordered_map<std::string, int32_t> content_to_id;
    std::map<int32_t, AddedToken> by_id;
    std::unordered_set<std::string> special_contents;
    std::unordered_map<int32_t, std::string> normalized_form;  // when normalizing the content changes it

    struct Trie {
        struct Node {
            int32_t token_id = -1;
            std::vector<std::pair<uint8_t, int32_t>> children;
        };
        std::vector<Node> nodes;
        bool can_start[256] = {};
        void insert(std::string_view s, int32_t id);
        /// Longest token starting at text[pos]: end offset and id, or false.
        bool longest_at(std::string_view text, std::size_t pos, std::size_t& end, int32_t& id) const;
        bool empty() const { return nodes.size() <= 1; }
    };
    Trie raw_trie;         // normalized == false: matched on the input text
    Trie normalized_trie;  // normalized == true: matched on normalized segments
};

struct TokenizerImpl {
    std::string tokenizer_class;
    std::vector<NormalizerOp> normalizer;
    std::vector<PreTokenizerOp> pre_tokenizer;
    bool byte_level_pre_tokenizer = false;  // the pre-tokenizer ends with ByteLevel
    std::unique_ptr<Bpe> model;
    bool has_decoder = false;
    std::vector<DecoderOp> decoder;
    std::vector<PostProcessorOp> post_processor;
    AddedVocab added;
    std::vector<AddedToken> added_list;  // by id

    std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
    std::string chat_template;
    int32_t vocab_size = 0;
    int32_t id_bound = 0;
    // Incremental decoding: what the decoder chain needs held back at the end of a stream.
    bool decoder_has_byte_level = false;
    bool decoder_has_byte_fallback = false;
    bool decoder_strips_end = false;

    // --- runtime (tokenizer.cpp) ---
    void apply_normalizer(std::string& s) const;
    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens,
                                bool split_special_tokens) const;
    /// The string the decoder sees for `id` (HF simple_id_to_token), or nullopt when the id is unknown or
    /// skipped as special.
    std::optional<std::string_view> decode_token(int32_t id, bool skip_special_tokens) const;
    std::string decode_tokens(std::span<const std::string> tokens) const;
    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;
    /// How many trailing tokens of `window` may still change their decoded text when more tokens come.
    std::size_t unstable_tail(std::span<const std::string> window) const;
    std::optional<int32_t> token_to_id(std::string_view token) const;

    // --- loading (tokenizer_load.cpp) ---
    /// HF AddedVocabulary::add_tokens: ids for contents already known are kept; others get the next free id.
    void add_tokens(const std::vector<AddedToken>& tokens, std::vector<std::string>* warnings);
    void rebuild_added_matchers();
};

}  // namespace phi::tokenizer
