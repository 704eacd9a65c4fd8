// PCRE2 wrapper for the pre-tokenizer patterns of tokenizer.json: UTF + UCP mode with JIT, and a translation
// of the Oniguruma-flavoured patterns HF writes so that \s, \S, \w, \W mean what they mean in HF.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace phi::tokenizer {

/// One compiled pattern. Thread-safe for matching: each call uses its own match data.
class Regex {
  public:
    /// Compiles `pattern` (HF/Oniguruma syntax). Throws phi::Error naming the pattern on failure.
    explicit Regex(const std::string& pattern);
    ~Regex();
    Regex(Regex&&) noexcept;
    Regex& operator=(Regex&&) noexcept;
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    /// Non-overlapping matches of the pattern in `text` (valid UTF-8), as byte ranges [begin, end), with
    /// the empty-match rule of Rust's regex/onig iterators (an empty match right after the previous match is
    /// skipped). Appends to `out`.
    void find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const;

    const std::string& pattern() const { return pattern_; }

    /// The PCRE2 pattern the HF pattern was translated to (for error messages and tests); `widen` adds the
    /// characters Unicode assigned after PCRE2's tables to \p{..} classes.
    static std::string translate(std::string_view hf_pattern);
    static std::string translate(std::string_view hf_pattern, bool widen);

  private:
    struct Impl;
    std::string pattern_;
    std::unique_ptr<Impl> impl_;
};

}  // namespace phi::tokenizer
