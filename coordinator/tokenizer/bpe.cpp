// BPE model, see bpe.h. Mirrors tokenizers/src/models/bpe/{model,word}.rs (merge_word, merge_all).
#include "coordinator/tokenizer/bpe.h"

#include <algorithm>
#include <limits>

#include "common/error.h"
#include "coordinator/tokenizer/unicode.h"

namespace phi::tokenizer {

namespace {

constexpr uint32_t k_no_rank = std::numeric_limits<uint32_t>::max();
// Words up to this many symbols use a linear scan for the next merge; longer ones a heap. Both pick the
// lowest rank, leftmost on ties, exactly like HF's heap.
constexpr std::size_t k_scan_limit = 16;
// Words shorter than this are merged whole even when they could be split at "▁".
constexpr std::size_t k_split_min_bytes = 64;

ByteLevelTable make_byte_level_table() {
    ByteLevelTable t{};
    std::fill(std::begin(t.char_to_byte), std::end(t.char_to_byte), int16_t{-1});
    bool direct[256] = {};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
        const char32_t c = direct[b] ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
        t.byte_to_char[b] = c;
        t.char_to_byte[c] = static_cast<int16_t>(b);
        unicode::append_utf8(t.byte_to_utf8[b], c);
    }
    return t;
}

}  // namespace

const ByteLevelTable& ByteLevelTable::get() {
    static const ByteLevelTable table = make_byte_level_table();
    return table;
}

bool ByteLevelTable::to_bytes(std::string_view token, std::string& out) const {
    const std::size_t start = out.size();
    std::size_t i = 0;
    while (i < token.size()) {
        const auto b0 = static_cast<uint8_t>(token[i]);
        char32_t cp;
        if (b0 < 0x80) {
            cp = b0;
            ++i;
        } else if ((b0 & 0xE0) == 0xC0 && i + 1 < token.size()) {
            cp = ((b0 & 0x1F) << 6) | (static_cast<uint8_t>(token[i + 1]) & 0x3F);
            i += 2;
        } else {
            out.resize(start);
            return false;
        }
        if (cp >= 0x144 || char_to_byte[cp] < 0) {
            out.resize(start);
            return false;
        }
        out.push_back(static_cast<char>(char_to_byte[cp]));
    }
    return true;
}

Bpe::Bpe(std::vector<std::pair<std::string, int32_t>> vocab,
         const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options)
    : options_(std::move(options)) {
    int32_t max_id = -1;
    vocab_.reserve(vocab.size());
    for (const auto& [tok, id] : vocab) {
        PHI_CHECK(id >= 0, "tokenizer.json: vocabulary token '{}' has negative id {}", tok, id);
        max_id = std::max(max_id, id);
    }
    PHI_CHECK(max_id < (1 << 30), "tokenizer.json: vocabulary id {} is implausibly large", max_id);
    id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
    has_id_.assign(id_to_token_.size(), 0);
    for (auto& [tok, id] : vocab) {
        vocab_.insert(tok, id);
        id_to_token_[id] = std::move(tok);
        has_id_[id] = 1;
    }

    // Merges: the merged token is left + right without the continuing-subword prefix of the right part.
    const std::size_t prefix_len =
        options_.continuing_subword_prefix ? options_.continuing_subword_prefix->size() : 0;
    merges_.reserve(merges.size());
    std::string merged;
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
        const auto& [a, b] = merges[rank];
        const int32_t a_id = vocab_.find(a);
        const int32_t b_id = vocab_.find(b);
        PHI_CHECK(a_id >= 0,
                  "tokenizer.json: merge #{} ('{} {}') refers to '{}', which is not in the vocabulary", rank,
                  a, b, a);
        PHI_CHECK(b_id >= 0,
                  "tokenizer.json: merge #{} ('{} {}') refers to '{}', which is not in the vocabulary", rank,
                  a, b, b);
        PHI_CHECK(b.size() >= prefix_len,
                  "tokenizer.json: merge #{} right part '{}' is shorter than the "
                  "continuing_subword_prefix",
                  rank, b);
        merged.assign(a);
        merged.append(b, prefix_len, std::string::npos);
        const int32_t new_id = vocab_.find(merged);
        PHI_CHECK(new_id >= 0,
                  "tokenizer.json: merge #{} ('{} {}') produces '{}', which is not in the vocabulary", rank,
                  a, b, merged);
        merges_.insert(a_id, b_id, PairMap::Value{static_cast<uint32_t>(rank), new_id});
    }

    if (options_.unk_token) {
        unk_id_ = vocab_.find(*options_.unk_token);
        PHI_CHECK(unk_id_ >= 0, "tokenizer.json: model.unk_token '{}' is not in the vocabulary",
                  *options_.unk_token);
    }

    for (int b = 0; b < 256; ++b) byte_fallback_id_[b] = vocab_.find(fmt::format("<0x{:02X}>", b));

    // Long-word split (see tokenize): valid when "▁" is a token, no token has "▁" after another character,
    // and characters carry no prefix/suffix decoration.
    {
        constexpr std::string_view k_meta = "\xE2\x96\x81";
        bool safe = vocab_.find(k_meta) >= 0 &&
                    (!options_.continuing_subword_prefix || options_.continuing_subword_prefix->empty()) &&
                    (!options_.end_of_word_suffix || options_.end_of_word_suffix->empty());
        vocab_.for_each([&](std::string_view tok, int32_t) {
            for (std::size_t pos = tok.find(k_meta, 1); safe && pos != std::string_view::npos;
                 pos = tok.find(k_meta, pos + 1)) {
                if (pos < 3 || tok.substr(pos - 3, 3) != k_meta) safe = false;
            }
        });
        metaspace_split_safe_ = safe;
    }

    // Byte-level fast path: usable when every byte's character is a token and no prefix/suffix decorates
    // the characters.
    const ByteLevelTable& bl = ByteLevelTable::get();
    const bool plain = (!options_.continuing_subword_prefix || options_.continuing_subword_prefix->empty()) &&
                       (!options_.end_of_word_suffix || options_.end_of_word_suffix->empty());
    byte_level_ok_ = plain;
    for (int b = 0; b < 256; ++b) {
        byte_id_[b] = vocab_.find(bl.byte_to_utf8[b]);
        if (byte_id_[b] < 0) byte_level_ok_ = false;
    }
    if (byte_level_ok_ && options_.ignore_merges) {
        byte_vocab_.reserve(vocab_.size());
        std::string raw;
        vocab_.for_each([&](std::string_view tok, int32_t id) {
            raw.clear();
            if (bl.to_bytes(tok, raw)) byte_vocab_.insert(raw, id);
        });
    }
}

void Bpe::merge_all(BpeScratch& scratch) const {
    auto& sym = scratch.symbols;
    const std::size_t n = sym.size();
    if (n < 2) return;
    auto update_rank = [&](int32_t i) {
        const int32_t j = sym[i].next;
        if (j < 0) {
            sym[i].rank = k_no_rank;
            return;
        }
        const PairMap::Value* v = merges_.find(sym[i].id, sym[j].id);
        sym[i].rank = v ? v->rank : k_no_rank;
        sym[i].merged = v ? v->new_id : -1;
    };
    auto merge_at = [&](int32_t i) {
        const int32_t j = sym[i].next;
        sym[i].id = sym[i].merged;
        sym[i].len += sym[j].len;
        sym[i].next = sym[j].next;
        sym[j].len = 0;
        if (sym[j].next >= 0) sym[sym[j].next].prev = i;
        update_rank(i);
        if (sym[i].prev >= 0) update_rank(sym[i].prev);
    };
    for (std::size_t i = 0; i < n; ++i) update_rank(static_cast<int32_t>(i));

    if (n <= k_scan_limit) {
        while (true) {
            int32_t best = -1;
            uint32_t best_rank = k_no_rank;
            for (int32_t i = 0; i >= 0; i = sym[i].next) {
                if (sym[i].rank < best_rank) {
                    best_rank = sym[i].rank;
                    best = i;
                }
            }
            if (best < 0) return;
            merge_at(best);
        }
    }

    // Min-heap on (rank, position): entries go stale when a neighbour changes; a popped entry is valid when
    // the symbol is alive and its current pair still has that rank.
    auto& heap = scratch.heap;
    heap.clear();
    auto key = [](uint32_t rank, int32_t pos) {
        return (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(pos);
    };
    auto cmp = [](uint64_t a, uint64_t b) { return a > b; };
    for (std::size_t i = 0; i < n; ++i)
        if (sym[i].rank != k_no_rank) heap.push_back(key(sym[i].rank, static_cast<int32_t>(i)));
    std::make_heap(heap.begin(), heap.end(), cmp);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), cmp);
        const uint64_t top = heap.back();
        heap.pop_back();
        const auto rank = static_cast<uint32_t>(top >> 32);
        const auto pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
        if (sym[pos].len == 0 || sym[pos].rank != rank) continue;
        merge_at(pos);
        if (sym[pos].rank != k_no_rank) {
            heap.push_back(key(sym[pos].rank, pos));
            std::push_heap(heap.begin(), heap.end(), cmp);
        }
        const int32_t prev = sym[pos].prev;
        if (prev >= 0 && sym[prev].rank != k_no_rank) {
            heap.push_back(key(sym[prev].rank, prev));
            std::push_heap(heap.begin(), heap.end(), cmp);
        }
    }
}

void Bpe::emit(const BpeScratch& scratch, std::vector<int32_t>& out) const {
    const auto& sym = scratch.symbols;
    if (sym.empty()) return;
    for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

void Bpe::tokenize_byte_level(std::string_view raw, BpeScratch& scratch, std::vector<int32_t>& out) const {
    if (raw.empty()) return;
    if (!byte_level_ok_) {
        // Spell out the byte characters and take the generic path.
        std::string text;
        const ByteLevelTable& bl = ByteLevelTable::get();
        for (const char c : raw) text += bl.byte_to_utf8[static_cast<uint8_t>(c)];
        tokenize(text, scratch, out);
        return;
    }
    if (options_.ignore_merges) {
        const int32_t id = byte_vocab_.find(raw);
        if (id >= 0) {
            out.push_back(id);
            return;
        }
    }
    if (raw.size() == 1) {
        out.push_back(byte_id_[static_cast<uint8_t>(raw[0])]);
        return;
    }
    if (scratch.cache.lookup(raw, out)) return;
    auto& sym = scratch.symbols;
    sym.resize(raw.size());
    const auto n = static_cast<int32_t>(raw.size());
    for (int32_t i = 0; i < n; ++i)
        sym[i] = BpeScratch::Symbol{
            byte_id_[static_cast<uint8_t>(raw[i])], i - 1, i + 1 < n ? i + 1 : -1, 1, k_no_rank, -1};
    merge_all(scratch);
    const std::size_t first = out.size();
    emit(scratch, out);
    scratch.cache.insert(raw, out.data() + first, out.size() - first);
}

void Bpe::tokenize(std::string_view w, BpeScratch& scratch, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (options_.ignore_merges) {
        const int32_t id = vocab_.find(w);
        if (id >= 0) {
            out.push_back(id);
            return;
        }
    }
    if (!metaspace_split_safe_ || w.size() < k_split_min_bytes) {
        tokenize_word(w, scratch, out);
        return;
    }
    // SentencePiece-style files have no pre-tokenizer: the whole text is one word. When no token contains
    // "▁" right after another character, no merge can join the symbols on both sides of such a "▁", so
    // merging each part on its own gives exactly the ids of merging the whole word (and costs O(n) instead
    // of O(n log n) with a heap over millions of symbols).
    constexpr std::string_view k_meta = "\xE2\x96\x81";
    std::size_t part = 0;
    std::size_t pos = 1;
    while ((pos = w.find(k_meta, pos)) != std::string_view::npos) {
        if (pos < k_meta.size() || w.substr(pos - k_meta.size(), k_meta.size()) != k_meta) {
            tokenize_word(w.substr(part, pos - part), scratch, out);
            part = pos;
        }
        pos += k_meta.size();
    }
    tokenize_word(w.substr(part), scratch, out);
}

void Bpe::tokenize_word(std::string_view w, BpeScratch& scratch, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (scratch.cache.lookup(w, out)) return;
    auto& sym = scratch.symbols;
    sym.clear();
    const std::string& prefix =
        options_.continuing_subword_prefix ? *options_.continuing_subword_prefix : std::string();
    const std::string& suffix = options_.end_of_word_suffix ? *options_.end_of_word_suffix : std::string();
    const bool decorate = !prefix.empty() || !suffix.empty();
    auto push = [&](int32_t id, std::size_t len) {
        const auto idx = static_cast<int32_t>(sym.size());
        if (idx > 0) sym.back().next = idx;
        sym.push_back(BpeScratch::Symbol{id, idx - 1, -1, static_cast<uint32_t>(len), k_no_rank, -1});
    };
    int32_t unk_pending = -1;
    std::size_t unk_len = 0;
    std::size_t i = 0;
    while (i < w.size()) {
        std::size_t k = unicode::valid_sequence_length(w, i);
        if (k == 0) k = 1;  // not reached with repaired input
        const bool is_first = i == 0;
        const bool is_last = i + k >= w.size();
        std::string_view s = w.substr(i, k);
        if (decorate) {
            scratch.key.clear();
            if (!is_first) scratch.key += prefix;
            scratch.key.append(s);
            if (is_last) scratch.key += suffix;
            s = scratch.key;
        }
        const int32_t id = vocab_.find(s);
        if (id >= 0) {
            if (unk_pending >= 0) {
                push(unk_pending, unk_len);
                unk_pending = -1;
            }
            push(id, k);
        } else {
            bool done = false;
            if (options_.byte_fallback) {
                bool all = true;
                for (const char c : s) all = all && byte_fallback_id_[static_cast<uint8_t>(c)] >= 0;
                if (all) {
                    // HF does not flush a pending unk here: the byte tokens go first.
                    for (const char c : s) push(byte_fallback_id_[static_cast<uint8_t>(c)], 1);
                    done = true;
                }
            }
            if (!done && unk_id_ >= 0) {
                if (unk_pending >= 0 && options_.fuse_unk) {
                    unk_len += k;
                } else {
                    if (unk_pending >= 0) push(unk_pending, unk_len);
                    unk_pending = unk_id_;
                    unk_len = k;
                }
            }
        }
        i += k;
    }
    if (unk_pending >= 0) push(unk_pending, unk_len);
    merge_all(scratch);
    const std::size_t first = out.size();
    emit(scratch, out);
    scratch.cache.insert(w, out.data() + first, out.size() - first);
}

}  // namespace phi::tokenizer
