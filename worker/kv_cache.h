// This rank's paged KV cache: per layer, K and V blocks of `block_size` token slots for the local
// KV heads. Only rank 0 decides which blocks a sequence uses; every rank follows the block tables
// it is sent.
#pragma once

#include <cstdint>
#include <vector>

#include "common/aligned_buffer.h"
#include "kernels/cpu/kernels.h"

namespace phi {

struct KvCacheConfig {
    int64_t num_blocks = 256;
    int64_t block_size = 16;
};

class KvCache {
public:
    KvCache(int64_t n_layers, const kernels::cpu::KvLayout& layout);
    float* k(int64_t layer) { return k_[layer].as<float>(); }  // [num_blocks, block_size, n_kv, head_dim]
    float* v(int64_t layer) { return v_[layer].as<float>(); }
    const kernels::cpu::KvLayout& layout() const { return layout_; }
    /// Bytes per token slot across all layers (K and V), for sizing.
    int64_t bytes_per_token() const;
    int64_t total_bytes() const;

private:
    kernels::cpu::KvLayout layout_;
    std::vector<AlignedBuffer> k_, v_;
};

}  // namespace phi
