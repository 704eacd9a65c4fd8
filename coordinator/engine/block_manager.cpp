#include "coordinator/engine/block_manager.h"

#include <openssl/sha.h>

#include "common/error.h"

namespace phi::engine {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : block_size_(block_size),
      ref_(size_t(num_blocks), 0),
      key_(size_t(num_blocks)),
      lru_pos_(size_t(num_blocks)) {
    PHI_CHECK(num_blocks > 0 && block_size > 0, "KV cache needs blocks (got {} blocks of {} tokens)", num_blocks,
              block_size);
    free_.reserve(size_t(num_blocks));
    for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));
}

std::optional<int32_t> BlockManager::allocate() {
    int32_t b;
    if (!free_.empty()) {
        b = free_.back();
        free_.pop_back();
    } else if (!lru_.empty()) {
        b = lru_.front();
        lru_.pop_front();
        by_key_.erase(*key_[size_t(b)]);
        key_[size_t(b)].reset();
        ++evictions_;
    } else {
        return std::nullopt;
    }
    ref_[size_t(b)] = 1;
    return b;
}

void BlockManager::release(int32_t b) {
    PHI_CHECK(b >= 0 && b < num_blocks() && ref_[size_t(b)] > 0, "release of block {} that is not in use", b);
    if (--ref_[size_t(b)] > 0) return;
    if (key_[size_t(b)]) {
        lru_.push_back(b);
        lru_pos_[size_t(b)] = std::prev(lru_.end());
    } else {
        free_.push_back(b);
    }
}

std::optional<int32_t> BlockManager::match(const BlockKey& key) {
    auto it = by_key_.find(key);
    if (it == by_key_.end()) return std::nullopt;
    const int32_t b = it->second;
    if (ref_[size_t(b)] == 0) lru_.erase(lru_pos_[size_t(b)]);
    ++ref_[size_t(b)];
    ++hits_;
    return b;
}

void BlockManager::publish(int32_t b, const BlockKey& key) {
    if (key_[size_t(b)] || by_key_.count(key)) return;
    key_[size_t(b)] = key;
    by_key_[key] = b;
}

namespace {

BlockKey sha256(const std::vector<uint8_t>& bytes) {
    BlockKey out;
    SHA256(bytes.data(), bytes.size(), out.data());
    return out;
}

void append(std::vector<uint8_t>& out, const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
}

}  // namespace

BlockKey prefix_root(const PrefixCacheScope& scope) {
    // A version tag, then each field with its length, so no two scopes serialize alike.
    static constexpr char k_tag[] = "phi-cluster prefix cache v2";
    std::vector<uint8_t> bytes;
    append(bytes, k_tag, sizeof(k_tag));
    const uint8_t rope = scope.long_rope ? 1 : 0;
    append(bytes, &rope, 1);
    const uint64_t salt_len = scope.cache_salt.size();
    append(bytes, &salt_len, sizeof(salt_len));
    append(bytes, scope.cache_salt.data(), scope.cache_salt.size());
    append(bytes, &scope.adapter, sizeof(scope.adapter));
    return sha256(bytes);
}

BlockKey block_key(const BlockKey& previous, const int32_t* tokens, int64_t n) {
    std::vector<uint8_t> bytes;
    bytes.reserve(previous.size() + size_t(n) * sizeof(int32_t));
    append(bytes, previous.data(), previous.size());
    append(bytes, tokens, size_t(n) * sizeof(int32_t));
    return sha256(bytes);
}

}  // namespace phi::engine
