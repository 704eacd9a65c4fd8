// Python str semantics on UTF-8 (see py_text.h). Every function here assumes valid UTF-8; the
// interpreter validates templates and context strings once, on entry.
#include "coordinator/chat/py_text.h"

#include "common/utf8.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace phi::chat::py {
namespace {

struct CodePointRange {
    char32_t first;
    char32_t last;
};

// k_nonprintable_ranges: sorted, disjoint ranges of code points >= 0x80 that Python's
// str.isprintable() rejects (categories Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs other than space).
#include "coordinator/chat/unicode_printable.inc"

void append_hex(std::string& out, const char* prefix, uint32_t v, int digits) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "%s%0*x", prefix, digits, v);
    out += buf;
}

}  // namespace

char32_t decode_at(std::string_view s, size_t pos, size_t* len) {
    const auto c = static_cast<unsigned char>(s[pos]);
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    size_t n = 0;
    char32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
    } else {
        n = 4;
        cp = c & 0x07;
    }
    for (size_t k = 1; k < n && pos + k < s.size(); ++k) {
        cp = (cp << 6) | (static_cast<unsigned char>(s[pos + k]) & 0x3F);
    }
    *len = n;
    return cp;
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

size_t code_point_count(std::string_view s) {
    size_t n = 0;
    for (const char c : s) {
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
    }
    return n;
}

std::vector<size_t> code_point_offsets(std::string_view s) {
    std::vector<size_t> offsets;
    offsets.reserve(s.size() + 1);
    for (size_t i = 0; i < s.size(); ++i) {
        if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) offsets.push_back(i);
    }
    offsets.push_back(s.size());
    return offsets;
}

bool is_space(char32_t cp) {
    if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    switch (cp) {
        case 0x85:
        case 0xA0:
        case 0x1680:
        case 0x2028:
        case 0x2029:
        case 0x202F:
        case 0x205F:
        case 0x3000:
            return true;
        default:
            return cp >= 0x2000 && cp <= 0x200A;
    }
}

bool is_printable(char32_t cp) {
    if (cp < 0x80) return cp >= 0x20 && cp < 0x7F;
    const auto* begin = std::begin(k_nonprintable_ranges);
    const auto* end = std::end(k_nonprintable_ranges);
    const auto* it =
        std::upper_bound(begin, end, cp, [](char32_t v, const CodePointRange& r) { return v < r.first; });
    if (it == begin) return true;
    --it;
    return cp > it->last;
}

size_t space_len_at(std::string_view s, size_t pos) {
    if (pos >= s.size()) return 0;
    size_t len = 0;
    const char32_t cp = decode_at(s, pos, &len);
    return is_space(cp) ? len : 0;
}

std::string_view rstrip_space(std::string_view s) {
    size_t end = s.size();
    while (end > 0) {
        size_t start = end - 1;
        while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t len = 0;
        if (!is_space(decode_at(s, start, &len))) break;
        end = start;
    }
    return s.substr(0, end);
}

std::string_view lstrip_space(std::string_view s) {
    size_t pos = 0;
    while (pos < s.size()) {
        const size_t len = space_len_at(s, pos);
        if (len == 0) break;
        pos += len;
    }
    return s.substr(pos);
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, StripSide side) {
    if (!chars) {
        std::string_view v = s;
        if (side != StripSide::Right) v = lstrip_space(v);
        if (side != StripSide::Left) v = rstrip_space(v);
        return std::string(v);
    }
    std::vector<char32_t> set;
    for (size_t i = 0; i < chars->size();) {
        size_t len = 0;
        set.push_back(decode_at(*chars, i, &len));
        i += len;
    }
    auto in_set = [&](char32_t cp) { return std::find(set.begin(), set.end(), cp) != set.end(); };
    const std::vector<size_t> off = code_point_offsets(s);
    size_t lo = 0;
    size_t hi = off.size() - 1;  // number of code points
    size_t len = 0;
    if (side != StripSide::Right) {
        while (lo < hi && in_set(decode_at(s, off[lo], &len))) ++lo;
    }
    if (side != StripSide::Left) {
        while (hi > lo && in_set(decode_at(s, off[hi - 1], &len))) --hi;
    }
    return std::string(s.substr(off[lo], off[hi] - off[lo]));
}

std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit) {
    std::vector<std::string> parts;
    if (maxsplit < 0) maxsplit = INT64_MAX;
    if (!sep) {
        size_t pos = 0;
        const size_t n = s.size();
        while (true) {
            while (pos < n) {
                const size_t l = space_len_at(s, pos);
                if (l == 0) break;
                pos += l;
            }
            if (pos >= n) break;
            if (static_cast<int64_t>(parts.size()) >= maxsplit) {
                parts.emplace_back(s.substr(pos));  // the remainder keeps its trailing whitespace
                break;
            }
            const size_t start = pos;
            while (pos < n && space_len_at(s, pos) == 0) {
                size_t len = 0;
                decode_at(s, pos, &len);
                pos += len;
            }
            parts.emplace_back(s.substr(start, pos - start));
        }
        return parts;
    }
    size_t start = 0;
    while (static_cast<int64_t>(parts.size()) < maxsplit) {
        const size_t found = s.find(*sep, start);
        if (found == std::string_view::npos) break;
        parts.emplace_back(s.substr(start, found - start));
        start = found + sep->size();
    }
    parts.emplace_back(s.substr(start));
    return parts;
}

std::string replace(std::string_view s, std::string_view old_text, std::string_view new_text, int64_t count) {
    if (count < 0) count = INT64_MAX;
    std::string out;
    if (old_text.empty()) {
        // Python inserts `new` before every code point and at the end, up to `count` times.
        const std::vector<size_t> off = code_point_offsets(s);
        int64_t done = 0;
        for (size_t k = 0; k + 1 < off.size(); ++k) {
            if (done < count) {
                out += new_text;
                ++done;
            }
            out += s.substr(off[k], off[k + 1] - off[k]);
        }
        if (done < count) out += new_text;
        return out;
    }
    size_t start = 0;
    int64_t done = 0;
    while (done < count) {
        const size_t found = s.find(old_text, start);
        if (found == std::string_view::npos) break;
        out += s.substr(start, found - start);
        out += new_text;
        start = found + old_text.size();
        ++done;
    }
    out += s.substr(start);
    return out;
}

std::string repr_string(std::string_view s) {
    const bool has_single = s.find('\'') != std::string_view::npos;
    const bool has_double = s.find('"') != std::string_view::npos;
    const char quote = (has_single && !has_double) ? '"' : '\'';
    std::string out;
    out.reserve(s.size() + 2);
    out += quote;
    for (size_t i = 0; i < s.size();) {
        size_t len = 0;
        const char32_t cp = decode_at(s, i, &len);
        if (cp == static_cast<char32_t>(quote) || cp == '\\') {
            out += '\\';
            out += static_cast<char>(cp);
        } else if (cp == '\t') {
            out += "\\t";
        } else if (cp == '\n') {
            out += "\\n";
        } else if (cp == '\r') {
            out += "\\r";
        } else if (cp < 0x20 || cp == 0x7F) {
            append_hex(out, "\\x", cp, 2);
        } else if (cp < 0x7F) {
            out += static_cast<char>(cp);
        } else if (is_printable(cp)) {
            out.append(s.substr(i, len));
        } else if (cp <= 0xFF) {
            append_hex(out, "\\x", cp, 2);
        } else if (cp <= 0xFFFF) {
            append_hex(out, "\\u", cp, 4);
        } else {
            append_hex(out, "\\U", cp, 8);
        }
        i += len;
    }
    out += quote;
    return out;
}

std::string repr_float(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    if (v == 0.0) return std::signbit(v) ? "-0.0" : "0.0";
    // Shortest round-trip digits, as Python's repr (David Gay's dtoa, mode 0) picks them.
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
    std::string sci(buf, res.ptr);
    std::string out;
    if (sci[0] == '-') {
        out += '-';
        sci.erase(0, 1);
    }
    const size_t e_pos = sci.find('e');
    std::string digits;
    for (size_t i = 0; i < e_pos; ++i) {
        if (sci[i] != '.') digits += sci[i];
    }
    const int exp10 = std::stoi(sci.substr(e_pos + 1));
    const int decpt = exp10 + 1;  // value = 0.d1d2... * 10^decpt
    const int nd = static_cast<int>(digits.size());
    if (decpt <= -4 || decpt > 16) {
        out += digits[0];
        if (nd > 1) {
            out += '.';
            out.append(digits, 1, std::string::npos);
        }
        char ebuf[16];
        std::snprintf(ebuf, sizeof(ebuf), "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        out += ebuf;
    } else if (decpt <= 0) {
        out += "0.";
        out.append(static_cast<size_t>(-decpt), '0');
        out += digits;
    } else if (decpt >= nd) {
        out += digits;
        out.append(static_cast<size_t>(decpt - nd), '0');
        out += ".0";
    } else {
        out.append(digits, 0, static_cast<size_t>(decpt));
        out += '.';
        out.append(digits, static_cast<size_t>(decpt), std::string::npos);
    }
    return out;
}

void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
    out += '"';
    for (size_t i = 0; i < s.size();) {
        size_t len = 0;
        const char32_t cp = decode_at(s, i, &len);
        switch (cp) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            case '\b':
                out += "\\b";
                break;
            case '\f':
                out += "\\f";
                break;
            default:
                if (cp < 0x20 || (ensure_ascii && cp == 0x7F)) {
                    append_hex(out, "\\u", cp, 4);
                } else if (cp < 0x80 || !ensure_ascii) {
                    out.append(s.substr(i, len));
                } else if (cp <= 0xFFFF) {
                    append_hex(out, "\\u", cp, 4);
                } else {
                    const char32_t v = cp - 0x10000;
                    append_hex(out, "\\u", 0xD800 | (v >> 10), 4);
                    append_hex(out, "\\u", 0xDC00 | (v & 0x3FF), 4);
                }
        }
        i += len;
    }
    out += '"';
}

bool is_ascii(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

}  // namespace phi::chat::py
