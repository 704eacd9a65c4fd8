// UTF-8 helpers for the tokenizer: validation and repair the way Python's decode(errors="replace") and
// Rust's String::from_utf8_lossy do it (one U+FFFD per maximal invalid subpart), code point iteration and
// the Unicode White_Space set that HF's regex engines use for \s.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace phi::tokenizer::unicode {

inline constexpr std::string_view k_replacement_char = "\xEF\xBF\xBD";  // U+FFFD

/// Length of the valid UTF-8 sequence starting at s[i], or 0 if the bytes there are not one (invalid lead
/// byte, bad continuation, overlong form, surrogate, > U+10FFFF or truncated).
std::size_t valid_sequence_length(std::string_view s, std::size_t i);

/// True when the whole string is valid UTF-8.
bool is_valid(std::string_view s);

/// Replaces each maximal invalid subpart with U+FFFD (Python errors="replace" / Rust from_utf8_lossy).
std::string repair(std::string_view s);

/// Appends the lossy decoding of `bytes` to `out` (same rule as repair()).
void append_lossy(std::string& out, std::string_view bytes);

/// Length of the trailing bytes of `s` that form a proper prefix of a valid multi-byte sequence (a code point
/// cut in the middle), or 0. Such a tail decodes to U+FFFD now but may become a character when more bytes
/// come.
std::size_t incomplete_tail_length(std::string_view s);

/// Decodes the code point at s[i] (s must be valid UTF-8 there) and advances i.
char32_t next_code_point(std::string_view s, std::size_t& i);

/// Appends the UTF-8 encoding of cp.
void append_utf8(std::string& out, char32_t cp);

/// Unicode White_Space (what \s means in HF's Oniguruma and Rust regex engines).
bool is_white_space(char32_t cp);

/// Number of code points in valid UTF-8.
std::size_t count_code_points(std::string_view s);

}  // namespace phi::tokenizer::unicode
