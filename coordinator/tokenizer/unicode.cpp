// UTF-8 validation/repair and White_Space, see unicode.h.
#include "coordinator/tokenizer/unicode.h"

namespace phi::tokenizer::unicode {

namespace {

// Allowed range of the second byte for each lead byte (Unicode Table 3-7); later bytes are 80..BF.
struct LeadInfo {
    uint8_t length;  // 0: invalid lead byte
    uint8_t lo;
    uint8_t hi;
};

inline LeadInfo lead_info(uint8_t b) {
    if (b < 0x80) return {1, 0, 0};
    if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
    if (b == 0xE0) return {3, 0xA0, 0xBF};
    if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {3, 0x80, 0xBF};
    if (b == 0xED) return {3, 0x80, 0x9F};
    if (b == 0xF0) return {4, 0x90, 0xBF};
    if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
    if (b == 0xF4) return {4, 0x80, 0x8F};
    return {0, 0, 0};
}

// Number of bytes starting at i that are a valid prefix of a sequence (>= 1 for a valid lead byte), and
// whether the full sequence is there.
inline std::size_t valid_prefix(std::string_view s, std::size_t i, bool& complete) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    const LeadInfo info = lead_info(b0);
    complete = false;
    if (info.length == 0) return 0;
    if (info.length == 1) {
        complete = true;
        return 1;
    }
    std::size_t k = 1;
    for (; k < info.length; ++k) {
        if (i + k >= s.size()) return k;
        const auto b = static_cast<uint8_t>(s[i + k]);
        const uint8_t lo = k == 1 ? info.lo : 0x80;
        const uint8_t hi = k == 1 ? info.hi : 0xBF;
        if (b < lo || b > hi) return k;
    }
    complete = true;
    return k;
}

}  // namespace

std::size_t valid_sequence_length(std::string_view s, std::size_t i) {
    bool complete = false;
    const std::size_t k = valid_prefix(s, i, complete);
    return complete ? k : 0;
}

bool is_valid(std::string_view s) {
    std::size_t i = 0;
    const std::size_t n = s.size();
    while (i < n) {
        // ASCII fast path, 8 bytes at a time
        while (i + 8 <= n) {
            uint64_t w;
            __builtin_memcpy(&w, s.data() + i, 8);
            if (w & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        if (static_cast<uint8_t>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        const std::size_t k = valid_sequence_length(s, i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

void append_lossy(std::string& out, std::string_view s) {
    std::size_t i = 0;
    std::size_t run_start = 0;  // start of the pending valid run, copied in one go
    const std::size_t n = s.size();
    while (i < n) {
        if (static_cast<uint8_t>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        bool complete = false;
        const std::size_t k = valid_prefix(s, i, complete);
        if (complete) {
            i += k;
            continue;
        }
        out.append(s.data() + run_start, i - run_start);
        out.append(k_replacement_char);
        i += k == 0 ? 1 : k;  // a maximal invalid subpart: the valid prefix, or the single bad byte
        run_start = i;
    }
    out.append(s.data() + run_start, n - run_start);
}

std::string repair(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 16);
    append_lossy(out, s);
    return out;
}

std::size_t incomplete_tail_length(std::string_view s) {
    // A proper prefix of a multi-byte sequence is at most 3 bytes: look for its lead byte in the last 3.
    const std::size_t n = s.size();
    for (std::size_t back = 1; back <= 3 && back <= n; ++back) {
        const std::size_t i = n - back;
        const auto b = static_cast<uint8_t>(s[i]);
        if (b < 0x80) return 0;
        if (b >= 0xC0) {  // a lead byte (valid or not)
            bool complete = false;
            const std::size_t k = valid_prefix(s, i, complete);
            return (!complete && k == back) ? back : 0;
        }
    }
    return 0;
}

char32_t next_code_point(std::string_view s, std::size_t& i) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0x80) {
        ++i;
        return b0;
    }
    if (b0 < 0xE0) {
        const char32_t cp = ((b0 & 0x1F) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3F);
        i += 2;
        return cp;
    }
    if (b0 < 0xF0) {
        const char32_t cp = ((b0 & 0x0F) << 12) | ((static_cast<uint8_t>(s[i + 1]) & 0x3F) << 6) |
                            (static_cast<uint8_t>(s[i + 2]) & 0x3F);
        i += 3;
        return cp;
    }
    const char32_t cp = ((b0 & 0x07) << 18) | ((static_cast<uint8_t>(s[i + 1]) & 0x3F) << 12) |
                        ((static_cast<uint8_t>(s[i + 2]) & 0x3F) << 6) |
                        (static_cast<uint8_t>(s[i + 3]) & 0x3F);
    i += 4;
    return cp;
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

bool is_white_space(char32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return false;
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

std::size_t count_code_points(std::string_view s) {
    std::size_t n = 0;
    for (const char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    return n;
}

}  // namespace phi::tokenizer::unicode
