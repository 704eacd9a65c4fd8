// Encoding and decoding with a loaded tokenizer, following HF tokenizers'
// TokenizerImpl::encode_single_sequence (added tokens -> normalizer -> pre-tokenizer -> BPE ->
// post-processor) and TokenizerImpl::decode.
#include <algorithm>
#include <deque>

#include "common/error.h"
#include "coordinator/tokenizer/tokenizer_impl.h"
#include "coordinator/tokenizer/unicode.h"

namespace phi::tokenizer {

// ------------------------------------------------------------------------------------------------
// Pattern
// ------------------------------------------------------------------------------------------------

Pattern Pattern::literal(std::string s) {
    Pattern p;
    if (s.empty()) {
        p.regex_ = std::make_shared<Regex>(std::string());  // HF compiles the escaped literal as a regex
    } else {
        p.literal_ = std::move(s);
    }
    return p;
}

Pattern Pattern::regex(const std::string& r) {
    Pattern p;
    p.regex_ = std::make_shared<Regex>(r);
    return p;
}

void Pattern::find_matches(std::string_view text, std::vector<Span>& out) const {
    if (text.empty()) {
        out.push_back({0, 0, false});
        return;
    }
    std::size_t prev = 0;
    auto add = [&](std::size_t s, std::size_t e) {
        if (prev != s) out.push_back({prev, s, false});
        out.push_back({s, e, true});
        prev = e;
    };
    if (regex_) {
        std::vector<std::pair<std::size_t, std::size_t>> m;
        regex_->find_all(text, m);
        for (const auto& [s, e] : m) add(s, e);
    } else {
        std::size_t pos = 0;
        while ((pos = text.find(literal_, pos)) != std::string_view::npos) {
            add(pos, pos + literal_.size());
            pos += literal_.size();
        }
    }
    if (prev != text.size()) out.push_back({prev, text.size(), false});
}

namespace {

/// The regex of the ByteLevel pre-tokenizer when use_regex is true (GPT-2).
const Regex& gpt2_regex() {
    static const Regex re(
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+");
    return re;
}

/// HF NormalizedString::split: turns match spans into the kept sub-ranges for a behaviour.
void apply_behavior(std::vector<Span>& spans, SplitBehavior behavior, bool invert, std::vector<Span>& out) {
    out.clear();
    if (invert)
        for (Span& s : spans) s.is_match = !s.is_match;
    switch (behavior) {
        case SplitBehavior::Isolated:
            for (const Span& s : spans) out.push_back({s.begin, s.end, false});
            break;
        case SplitBehavior::Removed:
            for (const Span& s : spans)
                if (!s.is_match) out.push_back({s.begin, s.end, false});
            break;
        case SplitBehavior::Contiguous: {
            bool previous = false;
            for (const Span& s : spans) {
                if (s.is_match == previous && !out.empty()) {
                    out.back().end = s.end;
                } else {
                    out.push_back({s.begin, s.end, false});
                }
                previous = s.is_match;
            }
            break;
        }
        case SplitBehavior::MergedWithPrevious: {
            bool previous = false;
            for (const Span& s : spans) {
                if (s.is_match && !previous && !out.empty()) {
                    out.back().end = s.end;
                } else {
                    out.push_back({s.begin, s.end, false});
                }
                previous = s.is_match;
            }
            break;
        }
        case SplitBehavior::MergedWithNext: {
            bool previous = false;
            for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
                if (it->is_match && !previous && !out.empty()) {
                    out.back().begin = it->begin;
                } else {
                    out.push_back({it->begin, it->end, false});
                }
                previous = it->is_match;
            }
            std::reverse(out.begin(), out.end());
            break;
        }
    }
}

struct Piece {
    std::string_view text;
    bool at_origin;  // starts at offset 0 of the original input (Metaspace prepend_scheme "first")
};

/// Scratch for one encode call.
struct EncodeState {
    std::deque<std::string> storage;  // strings the pieces point into (stable addresses)
    std::vector<Piece> pieces, next;
    std::vector<Span> spans, kept;
    BpeScratch bpe;

    std::string_view store(std::string s) {
        storage.push_back(std::move(s));
        return storage.back();
    }
};

bool starts_with(std::string_view s, std::string_view p) {
    return s.substr(0, p.size()) == p;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(s.size() + s.size() / 4);
    std::size_t pos = 0;
    while (true) {
        const std::size_t hit = s.find(from, pos);
        if (hit == std::string_view::npos) break;
        out.append(s.substr(pos, hit - pos));
        out.append(to);
        pos = hit + from.size();
    }
    out.append(s.substr(pos));
    return out;
}

/// Leftmost-longest added-token matches with HF's single_word / lstrip / rstrip handling
/// (AddedVocabulary::find_matches). Output spans cover the text; is_match spans carry the token id in `ids`.
void find_added(const AddedVocab& av, const AddedVocab::Trie& trie, std::string_view text, bool split_special,
                std::vector<Span>& out, std::vector<int32_t>& ids) {
    out.clear();
    ids.clear();
    if (trie.empty()) {
        out.push_back({0, text.size(), false});
        ids.push_back(-1);
        return;
    }
    auto push = [&](std::size_t b, std::size_t e, int32_t id) {
        out.push_back({b, e, id >= 0});
        ids.push_back(id);
    };
    std::size_t start_offset = 0;
    std::size_t pos = 0;
    const std::size_t n = text.size();
    while (pos < n) {
        if (!trie.can_start[static_cast<uint8_t>(text[pos])]) {
            ++pos;
            continue;
        }
        std::size_t end = 0;
        int32_t id = -1;
        if (!trie.longest_at(text, pos, end, id)) {
            ++pos;
            continue;
        }
        std::size_t start = pos;
        std::size_t stop = end;
        pos = end;  // the matcher resumes after the match, whatever lstrip/rstrip/single_word do
        const AddedToken& tok = av.by_id.at(id);
        if (split_special && av.special_contents.count(tok.content))
            continue;  // skipped, not re-scanned (as HF)
        if (tok.single_word) {
            // HF: the token must not be glued to a word character (Rust regex \w$ / ^\w) on either side.
            static const Regex ends_with_word("\\w\\z");
            static const Regex starts_with_word("\\A\\w");
            std::vector<std::pair<std::size_t, std::size_t>> m;
            ends_with_word.find_all(text.substr(0, start), m);
            const bool start_space = start == 0 || m.empty();
            m.clear();
            starts_with_word.find_all(text.substr(stop), m);
            const bool stop_space = stop == n || m.empty();
            if (!start_space || !stop_space) continue;
        }
        if (tok.lstrip) {
            std::size_t b = start;
            while (b > 0) {
                std::size_t j = b - 1;
                while (j > 0 && (static_cast<uint8_t>(text[j]) & 0xC0) == 0x80) --j;
                std::size_t k = j;
                if (!unicode::is_white_space(unicode::next_code_point(text, k))) break;
                b = j;
            }
            start = std::max(b, start_offset);
        }
        if (tok.rstrip) {
            while (stop < n) {
                std::size_t k = stop;
                if (!unicode::is_white_space(unicode::next_code_point(text, k))) break;
                stop = k;
            }
        }
        if (start_offset < start) push(start_offset, start, -1);
        push(start, stop, id);
        start_offset = stop;
    }
    if (start_offset != n) push(start_offset, n, -1);
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Added-token tries
// ------------------------------------------------------------------------------------------------

void AddedVocab::Trie::insert(std::string_view s, int32_t id) {
    if (nodes.empty()) nodes.emplace_back();
    if (s.empty()) return;
    int32_t cur = 0;
    for (const char ch : s) {
        const auto c = static_cast<uint8_t>(ch);
        int32_t next = -1;
        for (const auto& [k, child] : nodes[cur].children)
            if (k == c) next = child;
        if (next < 0) {
            next = static_cast<int32_t>(nodes.size());
            nodes[cur].children.emplace_back(c, next);
            nodes.emplace_back();
        }
        cur = next;
    }
    nodes[cur].token_id = id;
    can_start[static_cast<uint8_t>(s[0])] = true;
}

bool AddedVocab::Trie::longest_at(std::string_view text, std::size_t pos, std::size_t& end,
                                  int32_t& id) const {
    int32_t cur = 0;
    bool found = false;
    for (std::size_t i = pos; i < text.size(); ++i) {
        const auto c = static_cast<uint8_t>(text[i]);
        int32_t next = -1;
        for (const auto& [k, child] : nodes[cur].children)
            if (k == c) {
                next = child;
                break;
            }
        if (next < 0) break;
        cur = next;
        if (nodes[cur].token_id >= 0) {
            found = true;
            end = i + 1;
            id = nodes[cur].token_id;
        }
    }
    return found;
}

// ------------------------------------------------------------------------------------------------
// Encode
// ------------------------------------------------------------------------------------------------

void TokenizerImpl::apply_normalizer(std::string& s) const {
    std::vector<Span> spans;
    for (const NormalizerOp& op : normalizer) {
        switch (op.kind) {
            case NormalizerOp::Kind::Prepend:
                if (!s.empty()) s.insert(0, op.text);
                break;
            case NormalizerOp::Kind::Replace: {
                spans.clear();
                op.pattern->find_matches(s, spans);
                std::string out;
                out.reserve(s.size());
                for (const Span& sp : spans) {
                    if (sp.is_match) {
                        out += op.text;
                    } else {
                        out.append(s, sp.begin, sp.end - sp.begin);
                    }
                }
                s = std::move(out);
                break;
            }
        }
    }
}

std::vector<int32_t> TokenizerImpl::encode(std::string_view input, bool add_special_tokens,
                                           bool split_special_tokens) const {
    std::string repaired;
    std::string_view text = input;
    if (!unicode::is_valid(input)) {
        repaired = unicode::repair(input);
        text = repaired;
    }
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 8);
    EncodeState st;

    // Pre-tokenize one piece of (normalized) text and run the model on the results.
    auto tokenize_piece = [&](std::string_view piece, bool at_origin) {
        st.pieces.clear();
        st.pieces.push_back({piece, at_origin});
        for (const PreTokenizerOp& op : pre_tokenizer) {
            st.next.clear();
            for (const Piece& p : st.pieces) {
                std::string_view s = p.text;
                switch (op.kind) {
                    case PreTokenizerOp::Kind::ByteLevel: {
                        if (op.add_prefix_space && !starts_with(s, " ")) s = st.store(" " + std::string(s));
                        if (!op.use_regex) {
                            st.next.push_back({s, p.at_origin});
                            break;
                        }
                        st.spans.clear();
                        std::vector<std::pair<std::size_t, std::size_t>> m;
                        gpt2_regex().find_all(s, m);
                        std::size_t prev = 0;
                        for (const auto& [b, e] : m) {
                            if (prev != b)
                                st.next.push_back({s.substr(prev, b - prev), p.at_origin && prev == 0});
                            st.next.push_back({s.substr(b, e - b), p.at_origin && b == 0});
                            prev = e;
                        }
                        if (prev != s.size()) st.next.push_back({s.substr(prev), p.at_origin && prev == 0});
                        break;
                    }
                    case PreTokenizerOp::Kind::Split: {
                        st.spans.clear();
                        op.pattern->find_matches(s, st.spans);
                        apply_behavior(st.spans, op.behavior, op.invert, st.kept);
                        for (const Span& k : st.kept)
                            if (k.end > k.begin)
                                st.next.push_back(
                                    {s.substr(k.begin, k.end - k.begin), p.at_origin && k.begin == 0});
                        break;
                    }
                    case PreTokenizerOp::Kind::Metaspace: {
                        if (s.find(' ') != std::string_view::npos)
                            s = st.store(replace_all(s, " ", op.replacement));
                        const bool prepend = !starts_with(s, op.replacement) &&
                                             (op.prepend_scheme == PrependScheme::Always ||
                                              (op.prepend_scheme == PrependScheme::First && p.at_origin));
                        if (prepend) s = st.store(op.replacement + std::string(s));
                        if (!op.split) {
                            st.next.push_back({s, p.at_origin});
                            break;
                        }
                        // split on the replacement character, MergedWithNext
                        st.spans.clear();
                        std::size_t prev = 0;
                        std::size_t pos = 0;
                        while ((pos = s.find(op.replacement, pos)) != std::string_view::npos) {
                            if (prev < pos) st.spans.push_back({prev, pos, false});
                            st.spans.push_back({pos, pos + op.replacement.size(), true});
                            pos += op.replacement.size();
                            prev = pos;
                        }
                        if (prev < s.size()) st.spans.push_back({prev, s.size(), false});
                        apply_behavior(st.spans, SplitBehavior::MergedWithNext, false, st.kept);
                        for (const Span& k : st.kept)
                            if (k.end > k.begin)
                                st.next.push_back(
                                    {s.substr(k.begin, k.end - k.begin), p.at_origin && k.begin == 0});
                        break;
                    }
                }
            }
            std::swap(st.pieces, st.next);
        }
        for (const Piece& p : st.pieces) {
            if (p.text.empty()) continue;
            if (byte_level_pre_tokenizer) {
                model->tokenize_byte_level(p.text, st.bpe, ids);
            } else {
                model->tokenize(p.text, st.bpe, ids);
            }
        }
    };

    std::vector<Span> segments, sub;
    std::vector<int32_t> seg_ids, sub_ids;
    find_added(added, added.raw_trie, text, split_special_tokens, segments, seg_ids);
    for (std::size_t si = 0; si < segments.size(); ++si) {
        const Span& seg = segments[si];
        if (seg_ids[si] >= 0) {
            ids.push_back(seg_ids[si]);
            continue;
        }
        if (seg.end == seg.begin) continue;
        std::string_view s = text.substr(seg.begin, seg.end - seg.begin);
        const bool at_origin = seg.begin == 0;
        if (!normalizer.empty()) {
            std::string norm(s);
            apply_normalizer(norm);
            s = st.store(std::move(norm));
        }
        if (added.normalized_trie.empty()) {
            tokenize_piece(s, at_origin);
            continue;
        }
        find_added(added, added.normalized_trie, s, split_special_tokens, sub, sub_ids);
        for (std::size_t k = 0; k < sub.size(); ++k) {
            if (sub_ids[k] >= 0) {
                ids.push_back(sub_ids[k]);
            } else if (sub[k].end > sub[k].begin) {
                tokenize_piece(s.substr(sub[k].begin, sub[k].end - sub[k].begin),
                               at_origin && sub[k].begin == 0);
            }
        }
    }

    if (add_special_tokens && !post_processor.empty()) {
        std::vector<int32_t> cur = std::move(ids);
        for (const PostProcessorOp& op : post_processor) {
            switch (op.kind) {
                case PostProcessorOp::Kind::ByteLevel:
                    break;
                case PostProcessorOp::Kind::Template: {
                    std::vector<int32_t> out;
                    out.reserve(cur.size() + 4);
                    for (std::size_t i = 0; i < op.single.size(); ++i) {
                        if (op.single_is_sequence[i]) {
                            out.insert(out.end(), cur.begin(), cur.end());
                        } else {
                            out.insert(out.end(), op.single[i].begin(), op.single[i].end());
                        }
                    }
                    cur = std::move(out);
                    break;
                }
                case PostProcessorOp::Kind::Wrap: {
                    std::vector<int32_t> out(op.prefix);
                    out.insert(out.end(), cur.begin(), cur.end());
                    out.insert(out.end(), op.suffix.begin(), op.suffix.end());
                    cur = std::move(out);
                    break;
                }
            }
        }
        ids = std::move(cur);
    }
    return ids;
}

// ------------------------------------------------------------------------------------------------
// Decode
// ------------------------------------------------------------------------------------------------

std::optional<std::string_view> TokenizerImpl::decode_token(int32_t id, bool skip_special_tokens) const {
    std::string_view tok;
    if (auto it = added.by_id.find(id); it != added.by_id.end()) {
        auto nf = added.normalized_form.find(id);
        tok = nf != added.normalized_form.end() ? std::string_view(nf->second)
                                                : std::string_view(it->second.content);
    } else if (const std::string* t = model->token(id)) {
        tok = *t;
    } else {
        return std::nullopt;
    }
    if (skip_special_tokens && !added.special_contents.empty() &&
        added.special_contents.count(std::string(tok)) != 0)
        return std::nullopt;
    return tok;
}

namespace {

bool is_byte_token(std::string_view t, uint8_t& value) {
    if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    const int hi = hex(t[3]);
    const int lo = hex(t[4]);
    if (hi < 0 || lo < 0) return false;
    value = static_cast<uint8_t>(hi * 16 + lo);
    return true;
}

void append_byte_level_bytes(std::string_view token, std::string& out) {
    if (!ByteLevelTable::get().to_bytes(token, out)) out.append(token);
}

}  // namespace

std::string TokenizerImpl::decode_tokens(std::span<const std::string> tokens_in) const {
    if (!has_decoder) {
        std::string out;
        for (std::size_t i = 0; i < tokens_in.size(); ++i) {
            if (i) out += ' ';
            out += tokens_in[i];
        }
        return out;
    }
    std::vector<std::string> tokens(tokens_in.begin(), tokens_in.end());
    std::vector<Span> spans;
    for (const DecoderOp& op : decoder) {
        switch (op.kind) {
            case DecoderOp::Kind::ByteLevel: {
                std::string bytes;
                for (const std::string& t : tokens) append_byte_level_bytes(t, bytes);
                std::string s;
                unicode::append_lossy(s, bytes);
                tokens.assign(1, std::move(s));
                break;
            }
            case DecoderOp::Kind::Replace:
                for (std::string& t : tokens) {
                    spans.clear();
                    op.pattern->find_matches(t, spans);
                    std::string out;
                    for (const Span& sp : spans) {
                        if (sp.is_match) {
                            out += op.content;
                        } else {
                            out.append(t, sp.begin, sp.end - sp.begin);
                        }
                    }
                    t = std::move(out);
                }
                break;
            case DecoderOp::Kind::ByteFallback: {
                std::vector<std::string> out;
                std::string run;
                std::size_t run_tokens = 0;
                auto flush = [&]() {
                    if (run_tokens == 0) return;
                    if (unicode::is_valid(run)) {
                        out.push_back(run);
                    } else {
                        for (std::size_t i = 0; i < run_tokens; ++i)
                            out.emplace_back(unicode::k_replacement_char);
                    }
                    run.clear();
                    run_tokens = 0;
                };
                for (std::string& t : tokens) {
                    uint8_t b = 0;
                    if (is_byte_token(t, b)) {
                        run.push_back(static_cast<char>(b));
                        ++run_tokens;
                    } else {
                        flush();
                        out.push_back(std::move(t));
                    }
                }
                flush();
                tokens = std::move(out);
                break;
            }
            case DecoderOp::Kind::Fuse: {
                std::string s;
                for (const std::string& t : tokens) s += t;
                tokens.assign(1, std::move(s));
                break;
            }
            case DecoderOp::Kind::Strip:
                for (std::string& t : tokens) {
                    const std::string& c = op.content;
                    std::size_t b = 0;
                    for (std::size_t k = 0; k < op.start && b < t.size() && t.compare(b, c.size(), c) == 0;
                         ++k)
                        b += c.size();
                    std::size_t e = t.size();
                    for (std::size_t k = 0;
                         k < op.stop && e >= b + c.size() && t.compare(e - c.size(), c.size(), c) == 0; ++k)
                        e -= c.size();
                    t = t.substr(b, e - b);
                }
                break;
            case DecoderOp::Kind::Metaspace:
                for (std::size_t i = 0; i < tokens.size(); ++i) {
                    const bool drop = i == 0 && op.prepend_scheme != PrependScheme::Never;
                    tokens[i] = replace_all(tokens[i], op.content, drop ? "" : " ");
                }
                break;
        }
    }
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
}

std::string TokenizerImpl::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const int32_t id : ids)
        if (auto t = decode_token(id, skip_special_tokens)) tokens.emplace_back(*t);
    return decode_tokens(tokens);
}

std::size_t TokenizerImpl::unstable_tail(std::span<const std::string> window) const {
    if (!has_decoder) return 0;
    if (decoder_strips_end) return window.size();
    std::size_t hold = 0;
    if (decoder_has_byte_fallback) {
        std::size_t k = 0;
        uint8_t b = 0;
        while (k < window.size() && is_byte_token(window[window.size() - 1 - k], b)) ++k;
        hold = std::max(hold, k);
    }
    if (decoder_has_byte_level) {
        // Hold back tokens until what precedes them ends on a character boundary: an incomplete UTF-8
        // sequence at the end may still become a character when more bytes come. Each round looks at the
        // bytes of the last few tokens before the held ones (at least 4 bytes, or all of them).
        std::size_t k = 0;
        while (k < window.size()) {
            std::vector<std::string> tail_bytes;  // [0] = the token just before the held ones
            std::size_t total = 0;
            while (k + tail_bytes.size() < window.size() && total < 4) {
                std::string t;
                append_byte_level_bytes(window[window.size() - 1 - k - tail_bytes.size()], t);
                total += t.size();
                tail_bytes.push_back(std::move(t));
            }
            std::string joined;
            for (auto it = tail_bytes.rbegin(); it != tail_bytes.rend(); ++it) joined += *it;
            const std::size_t tail = unicode::incomplete_tail_length(joined);
            if (tail == 0) break;
            std::size_t covered = 0;
            for (std::size_t j = 0; j < tail_bytes.size() && covered < tail; ++j) {
                ++k;
                covered += tail_bytes[j].size();
            }
        }
        hold = std::max(hold, k);
    }
    return hold;
}

std::optional<int32_t> TokenizerImpl::token_to_id(std::string_view token) const {
    if (auto it = added.content_to_id.find(std::string(token)); it != added.content_to_id.end())
        return it->second;
    const int32_t id = model->find(token);
    if (id >= 0) return id;
    return std::nullopt;
}

// ------------------------------------------------------------------------------------------------
// Public API
// ------------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens,
                                       bool split_special_tokens) const {
    return impl_->encode(text, add_special_tokens, split_special_tokens);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    return impl_->decode(ids, skip_special_tokens);
}

int32_t Tokenizer::vocab_size() const {
    return impl_->vocab_size;
}
int32_t Tokenizer::id_bound() const {
    return impl_->id_bound;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
    return impl_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
    if (auto it = impl_->added.by_id.find(id); it != impl_->added.by_id.end()) return it->second.content;
    if (const std::string* t = impl_->model->token(id)) return *t;
    return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
    auto t = impl_->decode_token(id, false);
    return t && impl_->added.special_contents.count(std::string(*t)) != 0;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const {
    return impl_->added_list;
}
const std::optional<std::string>& Tokenizer::bos_token() const {
    return impl_->bos_token;
}
const std::optional<std::string>& Tokenizer::eos_token() const {
    return impl_->eos_token;
}
const std::optional<std::string>& Tokenizer::pad_token() const {
    return impl_->pad_token;
}
const std::optional<std::string>& Tokenizer::unk_token() const {
    return impl_->unk_token;
}

namespace {
std::optional<int32_t> id_of(const TokenizerImpl& t, const std::optional<std::string>& s) {
    return s ? t.token_to_id(*s) : std::nullopt;
}
}  // namespace

std::optional<int32_t> Tokenizer::bos_token_id() const {
    return id_of(*impl_, impl_->bos_token);
}
std::optional<int32_t> Tokenizer::eos_token_id() const {
    return id_of(*impl_, impl_->eos_token);
}
std::optional<int32_t> Tokenizer::pad_token_id() const {
    return id_of(*impl_, impl_->pad_token);
}
std::optional<int32_t> Tokenizer::unk_token_id() const {
    return id_of(*impl_, impl_->unk_token);
}
const std::string& Tokenizer::chat_template() const {
    return impl_->chat_template;
}
const std::string& Tokenizer::tokenizer_class() const {
    return impl_->tokenizer_class;
}

IncrementalDecoder Tokenizer::incremental_decoder(bool skip_special_tokens) const {
    return IncrementalDecoder(*this, skip_special_tokens);
}

// ------------------------------------------------------------------------------------------------
// Incremental decoding
// ------------------------------------------------------------------------------------------------

namespace {
// Re-anchor the window once this many stable tokens accumulate after the context; keep this many as context.
constexpr std::size_t k_window_tokens = 16;
constexpr std::size_t k_context_tokens = 4;
}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tok_(tokenizer.impl_.get()), skip_special_(skip_special_tokens) {}

void IncrementalDecoder::reset() {
    window_.clear();
    context_ = 0;
    emitted_ = 0;
}

std::string IncrementalDecoder::step(int32_t id) {
    const auto t = tok_->decode_token(id, skip_special_);
    if (!t) return {};
    window_.emplace_back(*t);
    const std::size_t hold = tok_->unstable_tail(window_);
    const std::size_t stable = window_.size() - hold;
    if (stable <= context_) return {};
    const std::string text = tok_->decode_tokens(std::span<const std::string>(window_.data(), stable));
    PHI_CHECK(text.size() >= emitted_,
              "incremental decoder: the decoded text shrank ({} < {} bytes); this decoder "
              "chain is not supported for streaming",
              text.size(), emitted_);
    std::string out = text.substr(emitted_);
    emitted_ = text.size();
    if (stable >= context_ + k_window_tokens) {
        // Keep a few stable tokens as context so that start-of-text rules (Strip, Metaspace) apply to them
        // and not to the new tokens; their decoded text must be non-empty for that.
        std::size_t c = std::min(k_context_tokens, stable);
        std::string ctx;
        while (true) {
            ctx = tok_->decode_tokens(std::span<const std::string>(window_.data() + (stable - c), c));
            if (!ctx.empty() || c == stable) break;
            ++c;
        }
        if (!ctx.empty()) {
            window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(stable - c));
            context_ = c;
            emitted_ = ctx.size();
        }
    }
    return out;
}

std::string IncrementalDecoder::flush() {
    std::string out;
    if (window_.size() > context_) {
        const std::string text = tok_->decode_tokens(window_);
        if (text.size() > emitted_) out = text.substr(emitted_);
    }
    reset();
    return out;
}

}  // namespace phi::tokenizer
