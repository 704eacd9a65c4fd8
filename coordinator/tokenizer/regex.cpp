// PCRE2 wrapper, see regex.h.
//
// HF tokenizers compiles tokenizer.json patterns with Oniguruma (Ruby syntax, Unicode): \s is Unicode
// White_Space, \w is Unicode word characters, ^ and $ are line anchors. PCRE2 10.42 in UCP mode differs on
// a few code points (\s includes U+180E; \w lacks combining marks), so those escapes are rewritten to
// explicit classes, and PCRE2_MULTILINE gives Ruby's anchors. Oniguruma also knows a newer Unicode (16) than
// PCRE2 10.42 (14): \p{X} classes are widened with the characters assigned since (unicode_delta.inc).
#include "coordinator/tokenizer/regex.h"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif

#include <pcre2.h>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "coordinator/tokenizer/unicode_delta.inc"

namespace phi::tokenizer {

namespace {

// Unicode White_Space, as a class body.
constexpr std::string_view k_space_class =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}"
    "\\x{3000}";
// Oniguruma's Unicode \w: Alphabetic, marks, decimal digits, connector punctuation, join controls.
constexpr std::string_view k_word_class = "\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}";
constexpr std::string_view k_hex_class = "0-9a-fA-F";

std::string pcre2_message(int code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(code, buf, sizeof(buf));
    return reinterpret_cast<const char*>(buf);
}

}  // namespace

struct Regex::Impl {
    // `code` knows Unicode 14 (PCRE2's tables); `code_widened`, when the pattern uses general categories,
    // also the characters assigned since. The widened classes are slower to match, so they are only used on
    // text that contains such a character.
    pcre2_code* code = nullptr;
    pcre2_code* code_widened = nullptr;
    bool jit = false;
    bool jit_widened = false;
    ~Impl() {
        if (code) pcre2_code_free(code);
        if (code_widened) pcre2_code_free(code_widened);
    }
};

namespace {

/// Sorted, merged code point ranges of every unicode_delta.inc class.
const std::vector<std::pair<char32_t, char32_t>>& delta_ranges() {
    static const std::vector<std::pair<char32_t, char32_t>> ranges = [] {
        std::vector<std::pair<char32_t, char32_t>> r;
        for (const UnicodeDelta& d : k_unicode_delta) {
            std::string_view b = d.add;  // "\x{1C89}-\x{1C8A}\x{A7CB}..."
            while (!b.empty()) {
                auto read = [&b]() {
                    const std::size_t close = b.find('}');
                    const auto v =
                        static_cast<char32_t>(std::stoul(std::string(b.substr(3, close - 3)), nullptr, 16));
                    b.remove_prefix(close + 1);
                    return v;
                };
                const char32_t lo = read();
                char32_t hi = lo;
                if (!b.empty() && b[0] == '-') {
                    b.remove_prefix(1);
                    hi = read();
                }
                r.emplace_back(lo, hi);
            }
        }
        std::sort(r.begin(), r.end());
        std::vector<std::pair<char32_t, char32_t>> merged;
        for (const auto& x : r) {
            if (!merged.empty() && x.first <= merged.back().second + 1) {
                merged.back().second = std::max(merged.back().second, x.second);
            } else {
                merged.push_back(x);
            }
        }
        return merged;
    }();
    return ranges;
}

/// True when `text` (valid UTF-8) has a character that Unicode assigned after PCRE2's tables.
bool has_new_character(std::string_view text) {
    const auto& ranges = delta_ranges();
    if (ranges.empty()) return false;
    const char32_t first = ranges.front().first;
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t n = text.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned char b = p[i];
        if (b < 0xE0) {  // code points below U+0800: older than every delta range
            i += b < 0x80 ? 1 : 2;
            continue;
        }
        char32_t cp;
        if (b < 0xF0) {
            cp = ((b & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
            i += 3;
        } else {
            cp = ((b & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) |
                 (p[i + 3] & 0x3Fu);
            i += 4;
        }
        if (cp < first) continue;
        auto it = std::upper_bound(ranges.begin(), ranges.end(), std::make_pair(cp, char32_t{0x10FFFF}));
        if (it != ranges.begin() && cp <= std::prev(it)->second) return true;
    }
    return false;
}

}  // namespace

namespace {

std::string_view delta_for(std::string_view property) {
    for (const UnicodeDelta& d : k_unicode_delta)
        if (d.property == property) return d.add;
    return {};
}

// \w with the characters Unicode assigned after PCRE2's tables.
const std::string& word_class() {
    static const std::string body = std::string(k_word_class) + std::string(delta_for("L")) +
                                    std::string(delta_for("M")) + std::string(delta_for("Nd"));
    return body;
}

const std::string& digit_class() {
    static const std::string body = "\\p{Nd}" + std::string(delta_for("Nd"));
    return body;
}

}  // namespace

std::string Regex::translate(std::string_view p) {
    return translate(p, true);
}

std::string Regex::translate(std::string_view p, bool widen) {
    std::string out;
    out.reserve(p.size() + 64);
    bool in_class = false;
    for (std::size_t i = 0; i < p.size(); ++i) {
        const char c = p[i];
        if (c == '\\' && i + 1 < p.size()) {
            const char d = p[i + 1];
            // \p{X} / \pX / \P{X} / \p{^X}: widen general categories to the Unicode version HF uses.
            if (d == 'p' || d == 'P') {
                std::size_t end = i + 2;
                std::string_view name;
                if (end < p.size() && p[end] == '{') {
                    const std::size_t close = p.find('}', end);
                    PHI_CHECK(close != std::string_view::npos, "regex '{}': unterminated \\{}{{", p, d);
                    name = p.substr(end + 1, close - end - 1);
                    end = close + 1;
                } else if (end < p.size()) {
                    name = p.substr(end, 1);
                    end += 1;
                }
                bool negated = d == 'P';
                if (!name.empty() && name[0] == '^') {
                    negated = !negated;
                    name.remove_prefix(1);
                }
                const std::string_view add = widen ? delta_for(name) : std::string_view();
                const std::string prop = fmt::format("\\p{{{}}}", name);
                if (add.empty() || (in_class && negated)) {
                    out.append(p.substr(i, end - i));  // nothing to add, or not expressible inside a class
                } else if (in_class) {
                    out += prop;
                    out += add;
                } else {
                    out += negated ? "[^" : "[";
                    out += prop;
                    out += add;
                    out += ']';
                }
                i = end - 1;
                continue;
            }
            std::string_view body;
            switch (d) {
                case 's':
                case 'S':
                    body = k_space_class;
                    break;
                case 'w':
                case 'W':
                    body = widen ? std::string_view(word_class()) : k_word_class;
                    break;
                case 'd':
                case 'D':
                    body = widen ? std::string_view(digit_class()) : std::string_view("\\p{Nd}");
                    break;
                case 'h':
                case 'H':
                    body = k_hex_class;
                    break;
                default:
                    break;
            }
            if (!body.empty()) {
                const bool negated = d == 'S' || d == 'W' || d == 'H' || d == 'D';
                if (!in_class) {
                    out += negated ? "[^" : "[";
                    out += body;
                    out += ']';
                } else if (!negated) {
                    out += body;
                } else if (d == 'H') {
                    PHI_FAIL("regex '{}': \\H inside a character class is not supported", p);
                } else {
                    // A negated class escape inside a class cannot be spelled out in PCRE2: keep PCRE2's own
                    // meaning (differs from Oniguruma only on U+180E and combining marks).
                    out += c;
                    out += d;
                }
                ++i;
                continue;
            }
            out += c;
            out += d;
            ++i;
            continue;
        }
        if (c == '[') {
            if (!in_class) {
                in_class = true;
                out += c;
                if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
                if (i + 1 < p.size() && p[i + 1] == ']') {  // a leading ']' is a literal
                    out += "\\]";
                    ++i;
                }
                continue;
            }
            if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX class [:alpha:]
                const std::size_t end = p.find(":]", i + 2);
                PHI_CHECK(end != std::string_view::npos, "regex '{}': unterminated POSIX class", p);
                out.append(p.substr(i, end + 2 - i));
                i = end + 1;
                continue;
            }
            PHI_FAIL("regex '{}': nested character classes (Oniguruma syntax) are not supported", p);
        }
        if (c == ']' && in_class) in_class = false;
        out += c;
    }
    return out;
}

Regex::Regex(const std::string& pattern) : pattern_(pattern), impl_(std::make_unique<Impl>()) {
    auto compile = [&](const std::string& translated, bool& jit) {
        int err = 0;
        PCRE2_SIZE err_off = 0;
        pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                         PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &err_off, nullptr);
        PHI_CHECK(code != nullptr, "cannot compile the tokenizer regex '{}' (as PCRE2 '{}'): {} at offset {}",
                  pattern, translated, pcre2_message(err), err_off);
        jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
        return code;
    };
    const std::string plain = translate(pattern, false);
    const std::string widened = translate(pattern, true);
    impl_->code = compile(plain, impl_->jit);
    if (widened != plain) impl_->code_widened = compile(widened, impl_->jit_widened);
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

void Regex::find_all(std::string_view text, std::vector<std::pair<std::size_t, std::size_t>>& out) const {
    const bool widened = impl_->code_widened != nullptr && has_new_character(text);
    pcre2_code* code = widened ? impl_->code_widened : impl_->code;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    PHI_CHECK(md != nullptr, "out of memory creating PCRE2 match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    const std::size_t n = text.size();
    std::size_t last_end = 0;
    bool have_last = false;
    std::size_t last_match_end = 0;
    bool use_jit = widened ? impl_->jit_widened : impl_->jit;
    while (last_end <= n) {
        int rc = use_jit ? pcre2_jit_match(code, subject, n, last_end, 0, md, nullptr)
                         : pcre2_match(code, subject, n, last_end, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // deep backtracking: the interpreter has no such limit
            use_jit = false;
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            pcre2_match_data_free(md);
            PHI_FAIL("tokenizer regex '{}' failed on a {}-byte input: {}", pattern_, n, pcre2_message(rc));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const std::size_t s = ov[0];
        const std::size_t e = ov[1];
        if (s == e && have_last && last_match_end == e) {
            // Oniguruma/Rust iterator rule: no empty match right after the previous one; step one character.
            if (last_end >= n) break;
            std::size_t step = 1;
            while (last_end + step < n && (static_cast<unsigned char>(text[last_end + step]) & 0xC0) == 0x80)
                ++step;
            last_end += step;
            continue;
        }
        last_end = e;
        have_last = true;
        last_match_end = e;
        out.emplace_back(s, e);
    }
    pcre2_match_data_free(md);
}

}  // namespace phi::tokenizer
