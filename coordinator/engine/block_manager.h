// KV block accounting on rank 0 (only rank 0 allocates; the other ranks follow the block tables in
// each StepPlan). Blocks are reference counted; with prefix caching a full block is published
// under the key of its token prefix and kept after its last user leaves, evicted least recently
// used first when a fresh block is needed.
//
// Keys are SHA-256 digests chained block by block, so two prefixes share a block only if their
// whole token history (and everything else that shapes K/V, PrefixCacheScope) is the same. A
// 64-bit hash is not enough here: clients send raw token ids, so a crafted collision would hand
// one client the K/V another computed (vLLM moved to SHA-256 for the same reason).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <list>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace phi::engine {

/// SHA-256 of a block's whole prefix (see block_key).
using BlockKey = std::array<uint8_t, 32>;

struct BlockKeyHash {
    size_t operator()(const BlockKey& k) const {
        size_t h;
        std::memcpy(&h, k.data(), sizeof(h));  // the digest is uniform: any 8 bytes of it will do
        return h;
    }
};

/// Everything besides the tokens that decides the K/V of a sequence's blocks. It is hashed into
/// the root of every chain (prefix_root), so sequences that differ here never share a block.
struct PrefixCacheScope {
    /// LongRoPE: keys computed with the long factors differ from those with the short ones.
    bool long_rope = false;
    /// The request's cache_salt (vLLM's name): requests share cached blocks only with requests
    /// that carry the same salt. Empty: the shared, unsalted cache.
    std::string cache_salt;
    /// The LoRA adapter (0: the base model): an adapter on q/k/v changes K and V. Ids are never
    /// reused for other weights while the process lives, so the id names the weights.
    int32_t adapter = 0;
};

/// The key a sequence's chain starts from.
BlockKey prefix_root(const PrefixCacheScope& scope);
/// Key of a full block given the key of everything before it (the root for the first block).
BlockKey block_key(const BlockKey& previous, const int32_t* tokens, int64_t n);

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
    /// The cached block published under `key`, with its reference count raised; nullopt on a miss.
    std::optional<int32_t> match(const BlockKey& key);
    /// Marks a full block as holding the prefix with `key` (first publisher wins).
    void publish(int32_t block, const BlockKey& key);

    int64_t hits() const { return hits_; }
    int64_t evictions() const { return evictions_; }

private:
    int64_t block_size_;
    std::vector<int32_t> ref_;
    std::vector<std::optional<BlockKey>> key_;
    std::vector<std::list<int32_t>::iterator> lru_pos_;
    std::vector<int32_t> free_;  // unpublished, unreferenced
    std::list<int32_t> lru_;     // published, unreferenced; front = least recently used
    std::unordered_map<BlockKey, int32_t, BlockKeyHash> by_key_;
    int64_t hits_ = 0;
    int64_t evictions_ = 0;
};

}  // namespace phi::engine
