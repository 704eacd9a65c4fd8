// Jinja lexer (see jinja_lexer.h). The comments name the jinja2/lexer.py rule each branch mirrors;
// the interplay of `-`, `+`, trim_blocks and lstrip_blocks is exactly that file's.
#include "common/utf8.h"
#include "coordinator/chat/jinja_lexer.h"

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>

#include "common/error.h"
#include "coordinator/chat/py_text.h"

namespace phi::chat::jinja {
namespace {

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_name_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
    return is_name_start(c) || is_digit(c);
}
int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

class Lexer {
  public:
    explicit Lexer(std::string_view src) : src_(src) {}

    std::vector<Token> run() {
        bool line_starting = true;
        size_t pos = 0;
        const size_t n = src_.size();
        while (pos < n) {
            // root rule: `(.*?)(?:raw_begin|{#|{%|{{)(\-|\+|)`
            size_t p = pos;
            char kind = 0;
            while (true) {
                p = src_.find('{', p);
                if (p == std::string_view::npos || p + 1 >= n) {
                    p = std::string_view::npos;
                    break;
                }
                const char c = src_[p + 1];
                if (c == '{' || c == '%' || c == '#') {
                    kind = c;
                    break;
                }
                ++p;
            }
            if (p == std::string_view::npos) {
                emit_data(pos, src_.substr(pos));
                break;
            }
            char sign = 0;
            if (p + 2 < n && (src_[p + 2] == '-' || src_[p + 2] == '+')) sign = src_[p + 2];
            if (kind == '%') check_raw(p, sign);

            std::string_view text = src_.substr(pos, p - pos);
            if (sign == '-') {
                // strip all whitespace between the text and the tag
                text = py::rstrip_space(text);
            } else if (sign != '+' && kind != '{') {
                // lstrip_blocks: whitespace between the last newline (or a line start) and the tag
                const size_t nl = text.rfind('\n');
                const size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
                if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
                    py::rstrip_space(text.substr(l_pos)).empty()) {
                    text = text.substr(0, l_pos);
                }
            }
            emit_data(pos, text);
            pos = p + 2 + (sign ? 1 : 0);

            if (kind == '#') {
                pos = skip_comment(p, pos, &line_starting);
                continue;
            }
            push(kind == '{' ? TokenType::VariableBegin : TokenType::BlockBegin, p);
            pos = lex_tag(kind == '{', pos, &line_starting);
        }
        push(TokenType::Eof, n);
        return std::move(tokens_);
    }

  private:
    [[noreturn]] void error_at(size_t offset, const std::string& msg) {
        const auto [line, col] = position(offset);
        throw phi::Error(fmt::format("chat template syntax error at line {}, column {}: {}", line, col, msg));
    }
    [[noreturn]] void unsupported_at(size_t offset, const std::string& what) {
        const auto [line, col] = position(offset);
        throw phi::Error(fmt::format(
            "chat template uses unsupported Jinja construct '{}' at line {}, column {}", what, line, col));
    }

    // Line and column (code points) of a byte offset; offsets are requested in increasing order
    // almost always, so a cursor makes this linear overall.
    std::pair<int, int> position(size_t offset) {
        if (offset < cursor_offset_) {
            cursor_offset_ = 0;
            cursor_line_ = 1;
            cursor_col_ = 1;
        }
        while (cursor_offset_ < offset && cursor_offset_ < src_.size()) {
            const char c = src_[cursor_offset_];
            if (c == '\n') {
                ++cursor_line_;
                cursor_col_ = 1;
            } else if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
                ++cursor_col_;
            }
            ++cursor_offset_;
        }
        // a continuation byte at the cursor would have been counted with its lead byte
        return {cursor_line_, cursor_col_};
    }

    void push(TokenType type, size_t offset, std::string value = {}) {
        Token t;
        t.type = type;
        t.value = std::move(value);
        const auto [line, col] = position(offset);
        t.line = line;
        t.column = col;
        tokens_.push_back(std::move(t));
    }

    void emit_data(size_t offset, std::string_view text) {
        if (!text.empty()) push(TokenType::Data, offset, std::string(text));
    }

    // raw_begin: `{%(\-|\+|)\s*raw\s*(?:\-%}\s*|%})`
    void check_raw(size_t p, char sign) {
        size_t q = p + 2 + (sign ? 1 : 0);
        while (size_t l = py::space_len_at(src_, q)) q += l;
        if (src_.substr(q, 3) != "raw") return;
        q += 3;
        while (size_t l = py::space_len_at(src_, q)) q += l;
        if (src_.substr(q, 3) == "-%}" || src_.substr(q, 2) == "%}") unsupported_at(p, "raw");
    }

    // comment rule: `(.*?)((?:\+#}|\-#}\s*|#}\n?))`
    size_t skip_comment(size_t begin, size_t pos, bool* line_starting) {
        const size_t n = src_.size();
        for (size_t q = pos; q < n; ++q) {
            size_t end = 0;
            if (src_.substr(q, 3) == "+#}") {
                end = q + 3;
            } else if (src_.substr(q, 3) == "-#}") {
                end = q + 3;
                while (size_t l = py::space_len_at(src_, end)) end += l;
            } else if (src_.substr(q, 2) == "#}") {
                end = q + 2;
                if (end < n && src_[end] == '\n') ++end;  // trim_blocks
            } else {
                continue;
            }
            *line_starting = src_[end - 1] == '\n';
            return end;
        }
        error_at(begin, "missing end of comment tag");
    }

    size_t lex_tag(bool variable, size_t pos, bool* line_starting) {
        const size_t n = src_.size();
        std::vector<char> balancing;
        while (true) {
            if (pos >= n)
                error_at(pos, variable ? "unexpected end of template, expected '}}'"
                                       : "unexpected end of template, expected '%}'");
            if (balancing.empty()) {
                size_t end = 0;
                if (variable) {
                    if (src_.substr(pos, 3) == "-}}") {
                        end = pos + 3;
                        while (size_t l = py::space_len_at(src_, end)) end += l;
                    } else if (src_.substr(pos, 2) == "}}") {
                        end = pos + 2;
                    }
                } else {
                    if (src_.substr(pos, 3) == "+%}") {
                        end = pos + 3;
                    } else if (src_.substr(pos, 3) == "-%}") {
                        end = pos + 3;
                        while (size_t l = py::space_len_at(src_, end)) end += l;
                    } else if (src_.substr(pos, 2) == "%}") {
                        end = pos + 2;
                        if (end < n && src_[end] == '\n') ++end;  // trim_blocks
                    }
                }
                if (end) {
                    push(variable ? TokenType::VariableEnd : TokenType::BlockEnd, pos);
                    *line_starting = src_[end - 1] == '\n';
                    return end;
                }
            }
            if (size_t l = py::space_len_at(src_, pos)) {
                pos += l;
                while (size_t l2 = py::space_len_at(src_, pos)) pos += l2;
                continue;
            }
            if (size_t end = match_float(pos)) {
                std::string text;
                for (size_t k = pos; k < end; ++k) {
                    if (src_[k] != '_') text += src_[k];
                }
                push(TokenType::Float, pos, std::string(src_.substr(pos, end - pos)));
                tokens_.back().float_value = std::strtod(text.c_str(), nullptr);
                pos = end;
                continue;
            }
            if (size_t end = match_integer(pos)) {
                push(TokenType::Integer, pos, std::string(src_.substr(pos, end - pos)));
                tokens_.back().int_value = integer_value(pos, end);
                pos = end;
                continue;
            }
            if (is_name_start(src_[pos])) {
                size_t end = pos + 1;
                while (end < n && is_name_char(src_[end])) ++end;
                if (end < n && static_cast<unsigned char>(src_[end]) >= 0x80) {
                    unsupported_at(pos, "non-ASCII identifier");
                }
                push(TokenType::Name, pos, std::string(src_.substr(pos, end - pos)));
                pos = end;
                continue;
            }
            if (src_[pos] == '\'' || src_[pos] == '"') {
                if (size_t end = match_string(pos)) {
                    push(TokenType::String, pos, unescape(pos + 1, end - 1));
                    pos = end;
                    continue;
                }
            }
            if (size_t len = match_operator(pos)) {
                const std::string op(src_.substr(pos, len));
                if (op == "{" || op == "(" || op == "[") {
                    balancing.push_back(op == "{" ? '}' : op == "(" ? ')' : ']');
                } else if (op == "}" || op == ")" || op == "]") {
                    if (balancing.empty()) error_at(pos, "unexpected '" + op + "'");
                    const char expected = balancing.back();
                    balancing.pop_back();
                    if (expected != op[0]) {
                        error_at(pos, "unexpected '" + op + "', expected '" + std::string(1, expected) + "'");
                    }
                }
                push(TokenType::Operator, pos, op);
                pos += len;
                continue;
            }
            if (static_cast<unsigned char>(src_[pos]) >= 0x80) unsupported_at(pos, "non-ASCII identifier");
            error_at(pos, fmt::format("unexpected char '{}'", src_[pos]));
        }
    }

    // `(\d+_)*\d+`: returns the end, or 0 when there is no digit at pos.
    size_t match_digits(size_t pos) const {
        const size_t n = src_.size();
        if (pos >= n || !is_digit(src_[pos])) return 0;
        size_t q = pos;
        while (q < n && is_digit(src_[q])) ++q;
        while (q + 1 < n && src_[q] == '_' && is_digit(src_[q + 1])) {
            ++q;
            while (q < n && is_digit(src_[q])) ++q;
        }
        return q;
    }

    // `e[+\-]?(\d+_)*\d+`
    size_t match_exponent(size_t pos) const {
        if (pos >= src_.size() || (src_[pos] != 'e' && src_[pos] != 'E')) return 0;
        size_t q = pos + 1;
        if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
        return match_digits(q);
    }

    // float_re: `(?<!\.)(\d+_)*\d+((\.(\d+_)*\d+)?e[+\-]?(\d+_)*\d+|\.(\d+_)*\d+)`
    size_t match_float(size_t pos) const {
        if (pos > 0 && src_[pos - 1] == '.') return 0;
        const size_t p0 = match_digits(pos);
        if (!p0) return 0;
        size_t frac_end = 0;
        if (p0 < src_.size() && src_[p0] == '.') frac_end = match_digits(p0 + 1);
        if (frac_end) {
            if (size_t e = match_exponent(frac_end)) return e;
            return frac_end;
        }
        return match_exponent(p0);
    }

    // integer_re: `0b(_?[01])+|0o(_?[0-7])+|0x(_?[\da-f])+|[1-9](_?\d)*|0(_?0)*` (case-insensitive)
    size_t match_integer(size_t pos) const {
        const size_t n = src_.size();
        if (pos >= n || !is_digit(src_[pos])) return 0;
        auto run = [&](size_t q, auto&& ok) {
            size_t end = q;
            while (true) {
                if (end < n && ok(src_[end])) {
                    ++end;
                } else if (end + 1 < n && src_[end] == '_' && ok(src_[end + 1])) {
                    end += 2;
                } else {
                    return end;
                }
            }
        };
        if (src_[pos] == '0' && pos + 1 < n) {
            const char b = static_cast<char>(src_[pos + 1] | 0x20);
            auto is_bin = [](char c) { return c == '0' || c == '1'; };
            auto is_oct = [](char c) { return c >= '0' && c <= '7'; };
            auto is_hex = [](char c) { return hex_value(c) >= 0; };
            size_t end = pos + 2;
            if (b == 'b') end = run(pos + 2, is_bin);
            if (b == 'o') end = run(pos + 2, is_oct);
            if (b == 'x') end = run(pos + 2, is_hex);
            if ((b == 'b' || b == 'o' || b == 'x') && end > pos + 2) return end;
        }
        if (src_[pos] != '0') return run(pos + 1, is_digit);
        return run(pos + 1, [](char c) { return c == '0'; });
    }

    int64_t integer_value(size_t pos, size_t end) {
        std::string text;
        for (size_t k = pos; k < end; ++k) {
            if (src_[k] != '_') text += src_[k];
        }
        int base = 10;
        size_t start = 0;
        if (text.size() > 1 && text[0] == '0') {
            const char b = static_cast<char>(text[1] | 0x20);
            if (b == 'b') base = 2;
            if (b == 'o') base = 8;
            if (b == 'x') base = 16;
            if (base != 10) start = 2;
        }
        errno = 0;
        char* stop = nullptr;
        const unsigned long long v = std::strtoull(text.c_str() + start, &stop, base);
        if (errno == ERANGE || v > static_cast<unsigned long long>(INT64_MAX)) {
            unsupported_at(pos, "integer literal beyond 64 bits");
        }
        return static_cast<int64_t>(v);
    }

    // string_re: `'([^'\\]*(?:\\.[^'\\]*)*)'` or the double-quoted form; returns the end, 0 if unterminated
    size_t match_string(size_t pos) const {
        const char quote = src_[pos];
        for (size_t q = pos + 1; q < src_.size(); ++q) {
            if (src_[q] == '\\') {
                ++q;
            } else if (src_[q] == quote) {
                return q + 1;
            }
        }
        return 0;
    }

    // Python's `.encode("ascii", "backslashreplace").decode("unicode-escape")` on the literal body.
    std::string unescape(size_t begin, size_t end) {
        std::string out;
        size_t q = begin;
        while (q < end) {
            const char c = src_[q];
            if (c != '\\') {
                out += c;
                ++q;
                continue;
            }
            const size_t esc = q;
            const char e = src_[q + 1];
            q += 2;
            if (static_cast<unsigned char>(e) >= 0x80) {
                unsupported_at(esc, "backslash before a non-ASCII character in a string literal");
            }
            switch (e) {
                case '\n':
                    break;  // line continuation
                case '\\':
                case '\'':
                case '"':
                    out += e;
                    break;
                case 'a':
                    out += '\a';
                    break;
                case 'b':
                    out += '\b';
                    break;
                case 'f':
                    out += '\f';
                    break;
                case 'n':
                    out += '\n';
                    break;
                case 'r':
                    out += '\r';
                    break;
                case 't':
                    out += '\t';
                    break;
                case 'v':
                    out += '\v';
                    break;
                case 'x':
                case 'u':
                case 'U': {
                    const int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    char32_t cp = 0;
                    for (int k = 0; k < digits; ++k) {
                        const int h = q < end ? hex_value(src_[q]) : -1;
                        if (h < 0) error_at(esc, fmt::format("truncated \\{} escape in string literal", e));
                        cp = cp * 16 + static_cast<char32_t>(h);
                        ++q;
                    }
                    if (cp > 0x10FFFF) error_at(esc, "illegal Unicode character in string literal");
                    if (cp >= 0xD800 && cp <= 0xDFFF)
                        unsupported_at(esc, "surrogate escape in a string literal");
                    py::append_utf8(out, cp);
                    break;
                }
                case 'N':
                    unsupported_at(esc, "\\N{...} escape");
                default:
                    if (e >= '0' && e <= '7') {
                        char32_t cp = static_cast<char32_t>(e - '0');
                        for (int k = 0; k < 2 && q < end && src_[q] >= '0' && src_[q] <= '7'; ++k, ++q) {
                            cp = cp * 8 + static_cast<char32_t>(src_[q] - '0');
                        }
                        py::append_utf8(out, cp);
                    } else {
                        out += '\\';  // unknown escapes are kept as written
                        out += e;
                    }
            }
        }
        return out;
    }

    size_t match_operator(size_t pos) const {
        static const char* const k_two[] = {"//", "**", "==", "!=", ">=", "<="};
        for (const char* op : k_two) {
            if (src_.substr(pos, 2) == op) return 2;
        }
        static const std::string_view k_one = "+-/*%~[](){}><=.:|,;";
        return k_one.find(src_[pos]) != std::string_view::npos ? 1 : 0;
    }

    std::string_view src_;
    std::vector<Token> tokens_;
    size_t cursor_offset_ = 0;
    int cursor_line_ = 1;
    int cursor_col_ = 1;
};

}  // namespace

std::string normalize_source(std::string_view source) {
    std::string out;
    out.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
        if (source[i] == '\r') {
            out += '\n';
            if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
        } else {
            out += source[i];
        }
    }
    if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
    return out;
}

std::vector<Token> tokenize(std::string_view source) {
    PHI_CHECK(phi::is_valid_utf8(source), "chat template is not valid UTF-8");
    const std::string normalized = normalize_source(source);
    return Lexer(normalized).run();
}

}  // namespace phi::chat::jinja
