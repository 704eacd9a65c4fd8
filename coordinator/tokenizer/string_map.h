// Flat open-addressing hash maps for the tokenizer hot path: token string -> id (keys in one arena, looked up
// by string_view without allocating) and merge pair (id, id) -> (rank, new id).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace phi::tokenizer {

inline uint64_t hash_bytes(std::string_view s) {
    // 64-bit multiply-mix over 8-byte words; the keys are short token strings.
    constexpr uint64_t k_mul = 0x9E3779B97F4A7C15ULL;
    uint64_t h = 0x243F6A8885A308D3ULL ^ (s.size() * k_mul);
    const char* p = s.data();
    std::size_t n = s.size();
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        h = (h ^ w) * k_mul;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        std::memcpy(&w, p, n);
        h = (h ^ w) * k_mul;
        h ^= h >> 29;
    }
    h *= k_mul;
    return h ^ (h >> 32);
}

/// String -> int32 map. Insert overwrites; find returns -1 when absent.
class StringIdMap {
  public:
    StringIdMap() { rehash(16); }

    void reserve(std::size_t n) {
        std::size_t cap = 16;
        while (cap < n * 2) cap <<= 1;
        if (cap > slots_.size()) rehash(cap);
    }

    void insert(std::string_view key, int32_t id) {
        if ((size_ + 1) * 2 > slots_.size()) rehash(slots_.size() * 2);
        const uint64_t h = hash_bytes(key);
        std::size_t i = h & mask_;
        while (true) {
            Slot& s = slots_[i];
            if (s.len == k_empty) {
                s.off = static_cast<uint32_t>(arena_.size());
                s.len = static_cast<uint32_t>(key.size());
                s.hash = static_cast<uint32_t>(h);
                s.id = id;
                arena_.append(key);
                ++size_;
                return;
            }
            if (s.hash == static_cast<uint32_t>(h) && key_of(s) == key) {
                s.id = id;
                return;
            }
            i = (i + 1) & mask_;
        }
    }

    int32_t find(std::string_view key) const {
        const uint64_t h = hash_bytes(key);
        std::size_t i = h & mask_;
        while (true) {
            const Slot& s = slots_[i];
            if (s.len == k_empty) return -1;
            if (s.hash == static_cast<uint32_t>(h) && s.len == key.size() &&
                std::memcmp(arena_.data() + s.off, key.data(), key.size()) == 0)
                return s.id;
            i = (i + 1) & mask_;
        }
    }

    std::size_t size() const { return size_; }

    template <class F>
    void for_each(F&& f) const {
        for (const Slot& s : slots_)
            if (s.len != k_empty) f(key_of(s), s.id);
    }

  private:
    static constexpr uint32_t k_empty = 0xFFFFFFFFu;
    struct Slot {
        uint32_t off = 0;
        uint32_t len = k_empty;
        uint32_t hash = 0;
        int32_t id = -1;
    };

    std::string_view key_of(const Slot& s) const { return {arena_.data() + s.off, s.len}; }

    void rehash(std::size_t cap) {
        std::vector<Slot> old = std::move(slots_);
        slots_.assign(cap, Slot{});
        mask_ = cap - 1;
        for (const Slot& s : old) {
            if (s.len == k_empty) continue;
            std::size_t i = (hash_bytes(key_of(s))) & mask_;
            while (slots_[i].len != k_empty) i = (i + 1) & mask_;
            slots_[i] = s;
        }
    }

    std::string arena_;
    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

/// (left id, right id) -> (rank, merged id). Key and value share a 16-byte slot: one cache line per probe.
class PairMap {
  public:
    struct Value {
        uint32_t rank;
        int32_t new_id;
    };

    void reserve(std::size_t n) {
        std::size_t cap = 16;
        while (cap < n * 2) cap <<= 1;
        slots_.assign(cap, Slot{});
        mask_ = cap - 1;
        size_ = 0;
    }

    /// Later inserts of the same pair overwrite (HF builds its merge map the same way).
    void insert(int32_t a, int32_t b, Value v) {
        if (slots_.empty() || (size_ + 1) * 2 > slots_.size()) grow();
        const uint64_t key = pack(a, b);
        std::size_t i = slot(key);
        while (slots_[i].key != k_empty && slots_[i].key != key) i = (i + 1) & mask_;
        if (slots_[i].key == k_empty) ++size_;
        slots_[i].key = key;
        slots_[i].value = v;
    }

    const Value* find(int32_t a, int32_t b) const {
        const uint64_t key = pack(a, b);
        std::size_t i = slot(key);
        while (true) {
            const Slot& s = slots_[i];
            if (s.key == key) return &s.value;
            if (s.key == k_empty) return nullptr;
            i = (i + 1) & mask_;
        }
    }

    std::size_t size() const { return size_; }

  private:
    static constexpr uint64_t k_empty = ~0ULL;
    struct alignas(16) Slot {
        uint64_t key = k_empty;
        Value value{0, -1};
    };
    static uint64_t pack(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }
    std::size_t slot(uint64_t key) const {
        const uint64_t h = key * 0x9E3779B97F4A7C15ULL;
        return (h ^ (h >> 31)) & mask_;
    }
    void grow() {
        std::vector<Slot> old = std::move(slots_);
        const std::size_t cap = old.empty() ? 16 : old.size() * 2;
        slots_.assign(cap, Slot{});
        mask_ = cap - 1;
        for (const Slot& s : old) {
            if (s.key == k_empty) continue;
            std::size_t i = slot(s.key);
            while (slots_[i].key != k_empty) i = (i + 1) & mask_;
            slots_[i] = s;
        }
    }

    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

/// Per-encode-call memo of word -> ids (texts repeat words a lot). Grows on demand, bounded; owned by one
/// call, so encoding stays thread-safe without locks.
class WordCache {
  public:
    /// Appends the cached ids of `word` to `out` and returns true, or returns false.
    bool lookup(std::string_view word, std::vector<int32_t>& out) const {
        if (slots_.empty()) return false;
        const uint64_t h = hash_bytes(word);
        std::size_t i = h & mask_;
        for (std::size_t probe = 0; probe < k_max_probe; ++probe) {
            const Slot& s = slots_[i];
            if (s.key_len == k_empty) return false;
            if (s.hash == h && s.key_len == word.size() &&
                std::memcmp(keys_.data() + s.key_off, word.data(), word.size()) == 0) {
                out.insert(out.end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.ids_len);
                return true;
            }
            i = (i + 1) & mask_;
        }
        return false;
    }

    void insert(std::string_view word, const int32_t* ids, std::size_t n) {
        if (word.size() > k_max_word || used_ >= k_max_entries) return;
        if ((used_ + 1) * 2 > slots_.size()) {
            if (slots_.size() >= 2 * k_max_entries) return;
            rehash(slots_.empty() ? 1024 : slots_.size() * 2);
        }
        const uint64_t h = hash_bytes(word);
        std::size_t i = h & mask_;
        for (std::size_t probe = 0; probe < k_max_probe; ++probe) {
            Slot& s = slots_[i];
            if (s.key_len == k_empty) {
                s = Slot{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(word.size()),
                         static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n)};
                keys_.append(word);
                ids_.insert(ids_.end(), ids, ids + n);
                ++used_;
                return;
            }
            i = (i + 1) & mask_;
        }
    }

  private:
    static constexpr uint32_t k_empty = 0xFFFFFFFFu;
    static constexpr std::size_t k_max_word = 48;
    static constexpr std::size_t k_max_entries = 1 << 15;
    static constexpr std::size_t k_max_probe = 16;
    struct Slot {
        uint64_t hash = 0;
        uint32_t key_off = 0;
        uint32_t key_len = k_empty;
        uint32_t ids_off = 0;
        uint32_t ids_len = 0;
    };
    void rehash(std::size_t cap) {
        std::vector<Slot> old = std::move(slots_);
        slots_.assign(cap, Slot{});
        mask_ = cap - 1;
        for (const Slot& s : old) {
            if (s.key_len == k_empty) continue;
            std::size_t i = s.hash & mask_;
            while (slots_[i].key_len != k_empty) i = (i + 1) & mask_;
            slots_[i] = s;
        }
    }
    std::vector<Slot> slots_;
    std::size_t mask_ = 0;
    std::size_t used_ = 0;
    std::string keys_;
    std::vector<int32_t> ids_;
};

}  // namespace phi::tokenizer
