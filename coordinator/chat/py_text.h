// Python `str` semantics on UTF-8 text, as the chat-template interpreter needs them: code-point
// indexing, Unicode whitespace (str.isspace), strip/split/replace, repr() of strings and floats,
// and json.dumps string escaping. Python 3.11 / Unicode 14 is the reference (the interpreter HF
// transformers runs templates on).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace phi::chat::py {

/// Decodes the code point starting at byte `pos` of valid UTF-8; `len` receives its byte length.
char32_t decode_at(std::string_view s, size_t pos, size_t* len);

/// Appends `cp` encoded as UTF-8.
void append_utf8(std::string& out, char32_t cp);

/// Number of code points (Python len()).
size_t code_point_count(std::string_view s);

/// Byte offset of every code point, plus a final entry equal to s.size().
std::vector<size_t> code_point_offsets(std::string_view s);

/// Python str.isspace() for one code point (also what `\s` matches in Python's `re`).
bool is_space(char32_t cp);

/// Python str.isprintable() for one code point (used by repr()).
bool is_printable(char32_t cp);

/// Byte length of the whitespace code point at `pos`, 0 when there is none.
size_t space_len_at(std::string_view s, size_t pos);

/// Python str.rstrip() / lstrip() / strip() with no argument (Unicode whitespace).
std::string_view rstrip_space(std::string_view s);
std::string_view lstrip_space(std::string_view s);

/// Python str.strip(chars) family; `chars` nullopt means whitespace.
enum class StripSide { Left, Right, Both };
std::string strip(std::string_view s, const std::optional<std::string>& chars, StripSide side);

/// Python str.split(sep, maxsplit); sep nullopt splits on whitespace runs. `sep` must not be empty.
std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit);

/// Python str.replace(old, new, count); count < 0 means all.
std::string replace(std::string_view s, std::string_view old_text, std::string_view new_text, int64_t count);

/// Python repr() of a str.
std::string repr_string(std::string_view s);

/// Python repr()/str() of a float ("1.0", "1e+16", "inf", "nan").
std::string repr_float(double v);

/// json.dumps() of a str (with quotes); ensure_ascii escapes everything outside printable ASCII.
void append_json_string(std::string& out, std::string_view s, bool ensure_ascii);

/// True when every byte is ASCII.
bool is_ascii(std::string_view s);

}  // namespace phi::chat::py
