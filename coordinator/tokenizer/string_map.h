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

/// (left id, right id) -> (rank, merged id).
class PairMap {
public:
    struct Value {
        uint32_t rank;
        int32_t new_id;
    };

    void reserve(std::size_t n) {
        std::size_t cap = 16;
        while (cap < n * 2) cap <<= 1;
        keys_.assign(cap, k_empty);
        values_.assign(cap, Value{0, -1});
        mask_ = cap - 1;
        size_ = 0;
    }

    /// Later inserts of the same pair overwrite (HF builds its merge map the same way).
    void insert(int32_t a, int32_t b, Value v) {
        if (keys_.empty() || (size_ + 1) * 2 > keys_.size()) grow();
        const uint64_t key = pack(a, b);
        std::size_t i = slot(key);
        while (keys_[i] != k_empty && keys_[i] != key) i = (i + 1) & mask_;
        if (keys_[i] == k_empty) ++size_;
        keys_[i] = key;
        values_[i] = v;
    }

    const Value* find(int32_t a, int32_t b) const {
        const uint64_t key = pack(a, b);
        std::size_t i = slot(key);
        while (true) {
            const uint64_t k = keys_[i];
            if (k == key) return &values_[i];
            if (k == k_empty) return nullptr;
            i = (i + 1) & mask_;
        }
    }

    std::size_t size() const { return size_; }

private:
    static constexpr uint64_t k_empty = ~0ULL;
    static uint64_t pack(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }
    std::size_t slot(uint64_t key) const {
        uint64_t h = key * 0x9E3779B97F4A7C15ULL;
        return (h ^ (h >> 31)) & mask_;
    }
    void grow() {
        std::vector<uint64_t> old_k = std::move(keys_);
        std::vector<Value> old_v = std::move(values_);
        const std::size_t cap = old_k.empty() ? 16 : old_k.size() * 2;
        keys_.assign(cap, k_empty);
        values_.assign(cap, Value{0, -1});
        mask_ = cap - 1;
        for (std::size_t j = 0; j < old_k.size(); ++j) {
            if (old_k[j] == k_empty) continue;
            std::size_t i = slot(old_k[j]);
            while (keys_[i] != k_empty) i = (i + 1) & mask_;
            keys_[i] = old_k[j];
            values_[i] = old_v[j];
        }
    }

    std::vector<uint64_t> keys_;
    std::vector<Value> values_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
};

}  // namespace phi::tokenizer
