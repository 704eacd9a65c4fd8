// Head, MLP and vocabulary partitioning. KV heads are split when N divides them and replicated
// otherwise: each rank keeps exactly the KV heads its own query heads read (vLLM would refuse 10 KV
// heads at N = 4 or 8; phi-4 and Phi-3-medium need it).
#include "sharding/shard_plan.h"

#include <fmt/format.h>

#include "common/error.h"

namespace phi {

Range split_range(int64_t total, int64_t parts, int64_t i) {
    return Range{i * total / parts, (i + 1) * total / parts};
}

ShardPlan make_shard_plan(const ModelConfig& cfg, int world, int rank) {
    PHI_CHECK(world >= 1, "tp size must be at least 1, got {}", world);
    PHI_CHECK(rank >= 0 && rank < world, "rank {} is outside tp size {}", rank, world);
    PHI_CHECK(cfg.n_heads % world == 0,
              "tp size {} does not divide num_attention_heads {}: choose a tp size that divides it", world,
              cfg.n_heads);
    PHI_CHECK(cfg.n_kv_heads > 0 && cfg.n_heads % cfg.n_kv_heads == 0,
              "num_key_value_heads {} does not divide num_attention_heads {}", cfg.n_kv_heads, cfg.n_heads);
    PHI_CHECK(cfg.d_ff >= world, "tp size {} exceeds intermediate_size {}", world, cfg.d_ff);

    ShardPlan p;
    p.world = world;
    p.rank = rank;
    p.q_heads = split_range(cfg.n_heads, world, rank);
    p.n_heads_local = p.q_heads.size();
    const int64_t group = cfg.n_heads / cfg.n_kv_heads;  // query heads per KV head
    // The KV heads the local query heads read form a contiguous range; when N divides the KV
    // heads it is exactly this rank's even share.
    p.kv_heads = Range{p.q_heads.begin / group, (p.q_heads.end - 1) / group + 1};
    p.n_kv_heads_local = p.kv_heads.size();
    p.kv_replicated = cfg.n_kv_heads % world != 0;
    p.q_to_kv.resize(p.n_heads_local);
    for (int64_t h = 0; h < p.n_heads_local; ++h) {
        p.q_to_kv[h] = int32_t((p.q_heads.begin + h) / group - p.kv_heads.begin);
    }

    p.ff = split_range(cfg.d_ff, world, rank);
    p.d_ff_local = p.ff.size();

    p.vocab_padded = (cfg.vocab_size + world - 1) / world * world;
    p.vocab_local = p.vocab_padded / world;
    p.vocab = Range{rank * p.vocab_local, (rank + 1) * p.vocab_local};

    // One per layer for the parallel block, two otherwise, plus the vocab-parallel embedding's
    // (skipped with one rank, where the layer ones are no-ops).
    p.all_reduces_per_step = (cfg.parallel_residual ? 1 : 2) * cfg.n_layers + (world > 1 ? 1 : 0);
    return p;
}

LinearShards linear_shards(const ModelConfig& cfg, const ShardPlan& plan) {
    const int64_t hd = cfg.head_dim, nh = cfg.n_heads, nkv = cfg.n_kv_heads, dff = cfg.d_ff;
    LinearShards s;
    s.q_rows = Range{plan.q_heads.begin * hd, plan.q_heads.end * hd};
    s.kv_rows = Range{plan.kv_heads.begin * hd, plan.kv_heads.end * hd};
    s.qkv_rows = {s.q_rows, Range{nh * hd + s.kv_rows.begin, nh * hd + s.kv_rows.end},
                  Range{(nh + nkv) * hd + s.kv_rows.begin, (nh + nkv) * hd + s.kv_rows.end}};
    s.o_cols = s.q_rows;
    if (cfg.act == Activation::Silu) {
        s.up_rows = {plan.ff, Range{dff + plan.ff.begin, dff + plan.ff.end}};
    } else {
        s.up_rows = {plan.ff};
    }
    s.down_cols = plan.ff;
    return s;
}

std::string describe_shard_plan(const ModelConfig& cfg, const ShardPlan& p) {
    return fmt::format(
        "rank {}/{}: query heads [{}, {}) of {}, kv heads [{}, {}) of {}{}, mlp columns [{}, {}) of {}, "
        "vocab rows [{}, {}) of {} (padded from {}), {} all-reduces per step",
        p.rank, p.world, p.q_heads.begin, p.q_heads.end, cfg.n_heads, p.kv_heads.begin, p.kv_heads.end,
        cfg.n_kv_heads, p.kv_replicated ? " (replicated across ranks)" : "", p.ff.begin, p.ff.end, cfg.d_ff,
        p.vocab.begin, p.vocab.end, p.vocab_padded, cfg.vocab_size, p.all_reduces_per_step);
}

}  // namespace phi
