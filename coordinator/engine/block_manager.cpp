#include "coordinator/engine/block_manager.h"

#include "cluster/step_plan.h"
#include "common/error.h"

namespace phi::engine {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : block_size_(block_size),
      ref_(size_t(num_blocks), 0),
      hash_(size_t(num_blocks)),
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
        by_hash_.erase(*hash_[size_t(b)]);
        hash_[size_t(b)].reset();
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
    if (hash_[size_t(b)]) {
        lru_.push_back(b);
        lru_pos_[size_t(b)] = std::prev(lru_.end());
    } else {
        free_.push_back(b);
    }
}

std::optional<int32_t> BlockManager::match(uint64_t hash) {
    auto it = by_hash_.find(hash);
    if (it == by_hash_.end()) return std::nullopt;
    const int32_t b = it->second;
    if (ref_[size_t(b)] == 0) lru_.erase(lru_pos_[size_t(b)]);
    ++ref_[size_t(b)];
    ++hits_;
    return b;
}

void BlockManager::publish(int32_t b, uint64_t hash) {
    if (hash_[size_t(b)] || by_hash_.count(hash)) return;
    hash_[size_t(b)] = hash;
    by_hash_[hash] = b;
}

uint64_t block_hash(uint64_t previous, const int32_t* tokens, int64_t n, bool long_rope) {
    uint64_t h = fnv1a(&previous, sizeof(previous));
    h = fnv1a(tokens, size_t(n) * sizeof(int32_t), h);
    const uint8_t mode = long_rope ? 1 : 0;
    return fnv1a(&mode, 1, h);
}

}  // namespace phi::engine
