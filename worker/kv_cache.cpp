#include "worker/kv_cache.h"

#include "common/error.h"

namespace phi {

KvCache::KvCache(int64_t n_layers, const kernels::cpu::KvLayout& layout) : layout_(layout) {
    PHI_CHECK(layout.num_blocks > 0 && layout.block_size > 0, "KV cache needs at least one block of one slot");
    const size_t bytes =
        size_t(layout.num_blocks) * size_t(layout.block_size) * size_t(layout.n_kv_heads * layout.head_dim) * 4;
    for (int64_t l = 0; l < n_layers; ++l) {
        k_.emplace_back(bytes);
        v_.emplace_back(bytes);
    }
}

int64_t KvCache::bytes_per_token() const {
    return int64_t(k_.size()) * 2 * layout_.n_kv_heads * layout_.head_dim * 4;
}

int64_t KvCache::total_bytes() const { return bytes_per_token() * layout_.num_blocks * layout_.block_size; }

}  // namespace phi
