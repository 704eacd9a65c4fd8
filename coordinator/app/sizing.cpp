// Start-up sizing: shape arithmetic (worker/shard_sizing) applied to the cluster's config.
#include "coordinator/app/sizing.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"
#include "kernels/cpu/quant.h"
#include "sharding/shard_plan.h"
#include "worker/shard_sizing.h"

namespace phi::app {

namespace {

std::string gib(int64_t bytes) { return fmt::format("{:.2f} GiB", double(bytes) / double(int64_t(1) << 30)); }

std::string kv_dtype_word(DType t) { return t == DType::BF16 ? "bf16" : "fp32"; }

}  // namespace

WeightPrecision weight_precision(const std::string& dtype) {
    if (dtype == "f32") return WeightPrecision(DType::F32);
    if (dtype == "bf16") return WeightPrecision(DType::BF16);
    if (dtype == "int8") return WeightPrecision(DType::BF16, kernels::cpu::QuantFormat::Q8);
    if (dtype == "int4") return WeightPrecision(DType::BF16, kernels::cpu::QuantFormat::Q4);
    PHI_FAIL("dtype: '{}' is not one of f32, bf16, int8, int4", dtype);
}

ClusterSizing size_cluster(const ClusterConfig& cfg, const ModelConfig& mc, int world, int rank,
                           kernels::cpu::Isa isa) {
    const ShardPlan plan = make_shard_plan(mc, world, rank);
    ClusterSizing s;
    s.world = world;
    s.rank = rank;
    s.weight = weight_precision(cfg.dtype);
    if (cfg.backend == "cpu") {
        s.weight.layout = kernels::cpu::quant_weight_layout(cfg.quant_activations == "int8"
                                                                ? kernels::cpu::QuantActivations::Int8
                                                                : kernels::cpu::QuantActivations::F32,
                                                            isa);
    }
    s.kv_dtype = cfg.kv_dtype == "bf16" ? DType::BF16 : DType::F32;
    s.weight_bytes = shard_weight_bytes(mc, plan, s.weight);
    s.kv_bytes_per_token = kv_bytes_per_token(mc, plan, s.kv_dtype);
    s.block_size = cfg.block_size;
    if (cfg.kv_blocks > 0) {
        s.kv_blocks = cfg.kv_blocks;
    } else {
        s.kv_blocks = cfg.kv_bytes / (s.kv_bytes_per_token * cfg.block_size);
        PHI_CHECK(s.kv_blocks >= 1, "kv_cache.bytes {} holds no block of {} tokens ({} bytes per token per rank)",
                  cfg.kv_bytes, cfg.block_size, s.kv_bytes_per_token);
    }
    s.kv_tokens = s.kv_blocks * s.block_size;
    s.kv_bytes = s.kv_tokens * s.kv_bytes_per_token;
    s.max_context_from_model = cfg.max_context == 0;
    s.max_context = s.max_context_from_model ? mc.max_position_embeddings : cfg.max_context;
    s.largest_request = std::min(s.max_context, s.kv_tokens);
    return s;
}

DraftSizing size_draft(const ClusterSizing& target, const ModelConfig& served, const ModelConfig& draft) {
    PHI_CHECK(draft.vocab_size == served.vocab_size,
              "speculative.draft_model has a vocabulary of {} tokens but the served model's has {}: a draft model "
              "must share the served model's tokenizer",
              draft.vocab_size, served.vocab_size);
    PHI_CHECK(draft.max_position_embeddings >= target.max_context,
              "speculative.draft_model's context ({} positions) is shorter than the served context ({} tokens): "
              "lower batching.max_context or pick a draft with a longer context",
              draft.max_position_embeddings, target.max_context);
    const ShardPlan plan = make_shard_plan(draft, target.world, target.rank);  // throws if heads do not split
    DraftSizing d;
    d.layers = draft.n_layers;
    d.weight_bytes = shard_weight_bytes(draft, plan, target.weight);
    d.kv_bytes_per_token = kv_bytes_per_token(draft, plan, target.kv_dtype);
    d.kv_blocks = target.kv_blocks;
    d.kv_bytes = target.kv_tokens * d.kv_bytes_per_token;
    return d;
}

std::string describe_draft_sizing(const DraftSizing& d) {
    return fmt::format("draft model: {} layers, weights {}, KV cache {} ({} bytes per token) in {} blocks", d.layers,
                       gib(d.weight_bytes), gib(d.kv_bytes), d.kv_bytes_per_token, d.kv_blocks);
}

void check_sizing(const ClusterSizing& s) {
    if (s.max_context <= s.kv_tokens) return;
    const int64_t blocks_needed = (s.max_context + s.block_size - 1) / s.block_size;
    PHI_FAIL("batching.max_context {}{} does not fit one sequence's KV cache: each rank's cache holds {} tokens "
             "({} blocks of {}, {} bytes per token per rank in {}). Set batching.max_context to at most {}, or give "
             "the cache at least kv_cache.blocks: {} (kv_cache.bytes: {}){}",
             s.max_context, s.max_context_from_model ? " (0 in the config: the model's max_position_embeddings)" : "",
             s.kv_tokens, s.kv_blocks, s.block_size, s.kv_bytes_per_token, kv_dtype_word(s.kv_dtype), s.kv_tokens,
             blocks_needed, blocks_needed * s.block_size * s.kv_bytes_per_token,
             s.kv_dtype == DType::F32 ? ", or halve the bytes per token with kv_cache.dtype: bf16" : "");
}

std::string describe_sizing(const ClusterSizing& s) {
    return fmt::format(
        "rank {}/{}: weights {} ({} linear weights), KV cache {} ({}, {} bytes per token) = {} tokens in {} blocks "
        "of {}; largest request that fits: {} tokens (max_context {})",
        s.rank, s.world, gib(s.weight_bytes), s.weight.name(), gib(s.kv_bytes),
        kv_dtype_word(s.kv_dtype), s.kv_bytes_per_token, s.kv_tokens, s.kv_blocks, s.block_size, s.largest_request,
        s.max_context);
}

}  // namespace phi::app
