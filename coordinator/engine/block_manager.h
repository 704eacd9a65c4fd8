// KV block accounting on rank 0 (only rank 0 allocates; the other ranks follow the block tables in
// each StepPlan). Blocks are reference counted; with prefix caching a full block is published
// under the hash of its token prefix and kept after its last user leaves, evicted least recently
// used first when a fresh block is needed.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

namespace phi::engine {

class BlockManager {
public:
    BlockManager(int64_t num_blocks, int64_t block_size);

    int64_t num_blocks() const { return int64_t(ref_.size()); }
    int64_t block_size() const { return block_size_; }
    /// Blocks a new allocation could get (never used, or cached and unreferenced).
    int64_t num_available() const { return int64_t(free_.size() + lru_.size()); }
    /// Blocks referenced by some sequence.
    int64_t num_used() const { return num_blocks() - num_available(); }
    /// Unreferenced blocks kept for prefix reuse.
    int64_t num_cached_idle() const { return int64_t(lru_.size()); }

    /// A block with reference count 1, or nullopt when none is available.
    std::optional<int32_t> allocate();
    void release(int32_t block);
    /// The cached block holding `hash`, with its reference count raised; nullopt on a miss.
    std::optional<int32_t> match(uint64_t hash);
    /// Marks a full block as holding the prefix with `hash` (first publisher wins).
    void publish(int32_t block, uint64_t hash);

    int64_t hits() const { return hits_; }
    int64_t evictions() const { return evictions_; }

private:
    int64_t block_size_;
    std::vector<int32_t> ref_;
    std::vector<std::optional<uint64_t>> hash_;
    std::vector<std::list<int32_t>::iterator> lru_pos_;
    std::vector<int32_t> free_;  // unhashed, unreferenced
    std::list<int32_t> lru_;     // hashed, unreferenced; front = least recently used
    std::unordered_map<uint64_t, int32_t> by_hash_;
    int64_t hits_ = 0;
    int64_t evictions_ = 0;
};

/// Hash of a full block given the previous block's hash (chained, so equal hashes mean equal
/// prefixes) and the RoPE mode its keys were computed with.
uint64_t block_hash(uint64_t previous, const int32_t* tokens, int64_t n, bool long_rope);

}  // namespace phi::engine
