// Jinja lexer for chat templates, configured as HF transformers configures its environment:
// `{{ }}`, `{% %}`, `{# #}`, whitespace control with `-` and `+`, trim_blocks=True (drop the first
// newline after a block or comment tag), lstrip_blocks=True (drop spaces and tabs — any Unicode
// whitespace, as Python's `\s` — from the start of a line up to a block or comment tag), and
// keep_trailing_newline=False. Mirrors jinja2/lexer.py (Jinja 3.1) rule by rule.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace phi::chat::jinja {

enum class TokenType {
    Data,           ///< template text, whitespace control already applied
    VariableBegin,  ///< {{
    VariableEnd,    ///< }}
    BlockBegin,     ///< {%
    BlockEnd,       ///< %}
    Name,
    String,    ///< value: the unescaped string
    Integer,   ///< int_value
    Float,     ///< float_value
    Operator,  ///< value: the operator text ("+", "//", "[", ...)
    Eof,
};

struct Token {
    TokenType type = TokenType::Eof;
    std::string value;
    int64_t int_value = 0;
    double float_value = 0.0;
    int line = 1;    ///< 1-based, in the template source
    int column = 1;  ///< 1-based, in code points
};

/// Tokenizes a template. Throws phi::Error for lexical errors and for constructs the interpreter
/// refuses at this level (`{% raw %}`, non-ASCII identifiers, `\N{...}` escapes).
std::vector<Token> tokenize(std::string_view source);

/// The source as Jinja sees it: newlines normalised to "\n" and one trailing newline removed.
std::string normalize_source(std::string_view source);

}  // namespace phi::chat::jinja
