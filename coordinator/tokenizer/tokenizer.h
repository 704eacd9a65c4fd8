// In-process Phi tokenizer: loads a model folder's tokenizer.json (or tokenizer.json.gz),
// tokenizer_config.json and config.json and encodes/decodes exactly as HF transformers' AutoTokenizer (the
// version pinned in scripts/requirements-goldens.txt) does on that folder. No per-model code: the pipeline
// comes from the files, plus what AutoTokenizer's chosen class (TokenizersBackend, GPT2Tokenizer,
// CodeGenTokenizer, LlamaTokenizer) substitutes for parts of it. See docs in coordinator/tokenizer/README.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace phi::tokenizer {

/// An added token as HF's AddedVocabulary holds it after loading.
struct AddedToken {
    int32_t id = -1;
    std::string content;
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
    bool normalized = false;
    bool special = false;
};

class IncrementalDecoder;
struct TokenizerImpl;

class Tokenizer {
  public:
    /// Loads model_dir/{tokenizer.json | tokenizer.json.gz, tokenizer_config.json, config.json,
    /// chat_template.jinja}. Only tokenizer.json is required. Throws phi::Error with a message naming the
    /// file and the problem when something is missing or malformed.
    static Tokenizer load(const std::filesystem::path& model_dir);

    /// The text of model_dir's tokenizer.json, or of tokenizer.json.gz decompressed.
    static std::string read_tokenizer_json(const std::filesystem::path& model_dir);

    /// Same, from file contents (tokenizer_config_json / model_config_json may be empty: file absent).
    static Tokenizer from_json(std::string_view tokenizer_json, std::string_view tokenizer_config_json = {},
                               std::string_view model_config_json = {});

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    /// Token ids of `text`. Bytes that are not valid UTF-8 are first replaced (one U+FFFD per maximal invalid
    /// subpart, as Python's decode(errors="replace")). add_special_tokens applies the post-processor (e.g. a
    /// BOS) the way tokenizer(text) does. Added tokens written in the text are recognised; with
    /// split_special_tokens the special ones are not (they are tokenized as plain text, HF's
    /// split_special_tokens=True), which is how to encode untrusted content. Thread-safe.
    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true,
                                bool split_special_tokens = false) const;

    /// For a rendered chat template: special-token text is recognised and nothing is added around it, as
    /// transformers' apply_chat_template(tokenize=True) does (it encodes with add_special_tokens=False).
    std::vector<int32_t> encode_chat(std::string_view rendered) const { return encode(rendered, false); }

    /// HF tokenizer.decode(ids, skip_special_tokens=...). Ids that are not tokens are skipped, as HF does.
    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

    /// len(tokenizer): distinct token strings, added tokens included.
    int32_t vocab_size() const;
    /// One past the largest token id (ids in [vocab_size, id_bound) may exist when the vocabulary has gaps).
    int32_t id_bound() const;

    std::optional<int32_t> token_to_id(std::string_view token) const;
    std::optional<std::string> id_to_token(int32_t id) const;
    /// True for ids decode(..., skip_special_tokens=true) drops.
    bool is_special(int32_t id) const;
    /// Added tokens in id order (HF's added_tokens_decoder).
    const std::vector<AddedToken>& added_tokens() const;

    const std::optional<std::string>& bos_token() const;
    const std::optional<std::string>& eos_token() const;
    const std::optional<std::string>& pad_token() const;
    const std::optional<std::string>& unk_token() const;
    std::optional<int32_t> bos_token_id() const;
    std::optional<int32_t> eos_token_id() const;
    std::optional<int32_t> pad_token_id() const;
    std::optional<int32_t> unk_token_id() const;

    /// The chat template (chat_template.jinja, else tokenizer_config.json "chat_template", or the entry named
    /// "default" when that is a list); empty when the folder has none.
    const std::string& chat_template() const;

    /// The class AutoTokenizer would instantiate, e.g. "TokenizersBackend", "LlamaTokenizer".
    const std::string& tokenizer_class() const;

    /// A streaming decoder for generated ids.
    IncrementalDecoder incremental_decoder(bool skip_special_tokens = false) const;

  private:
    friend class IncrementalDecoder;
    explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
    std::unique_ptr<TokenizerImpl> impl_;
};

/// Turns generated ids into text pieces as they arrive. Each piece is complete UTF-8 (a character cut
/// between tokens is held back until it is whole), and the pieces of step() followed by flush() concatenate
/// to exactly tokenizer.decode(all ids, skip_special_tokens). Cost per step is bounded (a short window of
/// recent tokens is re-decoded), not proportional to the sequence length. Not thread-safe; one per stream.
class IncrementalDecoder {
  public:
    explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false);

    /// Feeds one id; returns the text that became final (often empty while a character is incomplete).
    std::string step(int32_t id);
    /// Returns whatever is held back (call at end of stream); the decoder is then reset.
    std::string flush();
    void reset();

  private:
    const TokenizerImpl* tok_;
    bool skip_special_;
    std::vector<std::string> window_;  // decoder-level token strings since the window start
    std::size_t context_ = 0;          // leading window tokens that were emitted before the window start
    std::size_t emitted_ = 0;          // bytes of decode(window) already returned
};

}  // namespace phi::tokenizer
