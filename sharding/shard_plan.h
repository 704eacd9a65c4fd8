// ShardPlan: for a ModelConfig, world size N and rank r, which part of every tensor rank r holds
// (Megatron-style tensor parallelism, see docs/ARCHITECTURE.md). Global sizes stay in ModelConfig;
// every per-rank size is a `_local` field here, computed once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sharding/model_config.h"

namespace phi {

/// A half-open range [begin, end) of a global dimension.
struct Range {
    int64_t begin = 0;
    int64_t end = 0;
    int64_t size() const { return end - begin; }
};

/// Balanced split of [0, total) into `parts`; part i gets [i*total/parts, (i+1)*total/parts).
Range split_range(int64_t total, int64_t parts, int64_t i);

struct ShardPlan {
    int world = 1;
    int rank = 0;

    Range q_heads;              // global query heads held (contiguous, equal count on every rank)
    Range kv_heads;             // global KV heads held: those the local query heads use
    std::vector<int32_t> q_to_kv;  // [n_heads_local] local KV head index of each local query head
    int64_t n_heads_local = 0;
    int64_t n_kv_heads_local = 0;
    bool kv_replicated = false;  // some KV heads are held by more than one rank

    Range ff;                 // columns of the MLP (per expert for MoE) held
    int64_t d_ff_local = 0;

    int64_t vocab_padded = 0;  // vocab rounded up to a multiple of world
    Range vocab;               // rows of embedding / LM head held, in padded space
    int64_t vocab_local = 0;

    /// All-reduces per forward step (for tests and metrics): 2L+1 for sequential blocks, L+1 for
    /// Phi-1/1.5/2's parallel blocks; the +1 (vocab-parallel embedding) only when world > 1.
    int64_t all_reduces_per_step = 0;
};

/// Builds the plan or throws a phi::Error naming the numbers when N cannot work
/// (e.g. "tp size 3 does not divide num_attention_heads 32").
ShardPlan make_shard_plan(const ModelConfig& cfg, int world, int rank);

/// Which part of each layer's linear weights rank `plan.rank` holds, in the global tensor's
/// coordinates: the rows of column-parallel weights, the input columns of row-parallel ones. The base
/// weights and LoRA adapters are both cut by these, so an adapter's B rows and A columns line up with
/// the base weight's shard exactly.
struct LinearShards {
    Range q_rows;                // of q_proj ([n_heads * head_dim, d])
    Range kv_rows;               // of k_proj, v_proj ([n_kv_heads * head_dim, d])
    std::vector<Range> qkv_rows; // of a fused [Q | K | V] weight: this rank's Q, K and V sections
    Range o_cols;                // of dense / o_proj ([d, n_heads * head_dim])
    std::vector<Range> up_rows;  // of fc1 ([d_ff, d]: one range) or fused gate_up ([2 d_ff, d]: gate, up)
    Range down_cols;             // of fc2 / down_proj ([d, d_ff]); experts' w2 too
};

LinearShards linear_shards(const ModelConfig& cfg, const ShardPlan& plan);

/// One line per fact, for `phi-worker --print-plan` and logs.
std::string describe_shard_plan(const ModelConfig& cfg, const ShardPlan& plan);

}  // namespace phi
