// Start-up sizing of a cluster, from the config and the model's shape alone: what each rank holds
// (weights, KV cache) and the largest request that fits. Like vLLM, phi-worker refuses to start
// when `max_context` does not fit one sequence's KV cache, instead of failing on the first long
// request; the message names the numbers and the settings that fix it. Admitting single requests
// against the free cache is the engine's job.
#pragma once

#include <cstdint>
#include <string>

#include "coordinator/app/cluster_config.h"
#include "common/dtype.h"
#include "kernels/cpu/isa.h"
#include "sharding/model_config.h"
#include "worker/model_weights.h"

namespace phi::app {

struct ClusterSizing {
    int world = 1;
    int rank = 0;
    WeightPrecision weight{DType::BF16};  // from dtype: (int8/int4: bf16 embedding, int8 untied LM head)
    DType kv_dtype = DType::F32;
    int64_t weight_bytes = 0;        // this rank's weights
    int64_t kv_bytes_per_token = 0;  // this rank's K and V for one token, all layers
    int64_t block_size = 16;
    int64_t kv_blocks = 0;           // per rank (rank 0's block manager hands out these)
    int64_t kv_tokens = 0;           // kv_blocks * block_size
    int64_t kv_bytes = 0;            // kv_tokens * kv_bytes_per_token
    int64_t max_context = 0;         // batching.max_context, or the model's max_position_embeddings when 0
    bool max_context_from_model = false;
    int64_t largest_request = 0;     // prompt + output tokens of the longest request that fits
};

/// The draft model of speculative decoding on each rank (speculative.method: draft): weights in
/// the served model's precision, and a KV cache holding as many tokens as the served model's.
struct DraftSizing {
    int64_t layers = 0;
    int64_t weight_bytes = 0;
    int64_t kv_bytes_per_token = 0;
    int64_t kv_blocks = 0;
    int64_t kv_bytes = 0;
};

/// Sizes the draft `draft` (its config with any draft_layers cut applied) beside `target`. Throws
/// when its heads do not split over the ranks, its context is shorter than the served one, or its
/// vocabulary is smaller than the served model's.
DraftSizing size_draft(const ClusterSizing& target, const ModelConfig& served, const ModelConfig& draft);

/// The weight precision of a `dtype:` word (f32, bf16, int8, int4). Quantized dtypes keep the
/// embedding (and a tied LM head) in bf16 and hold an untied LM head as int8 blocks (docs/QUANT.md).
WeightPrecision weight_precision(const std::string& dtype);

/// Sizes rank `rank` of `world` (every rank holds the same amounts: heads split evenly, the vocabulary
/// padded to a multiple of `world`); `isa` is the level the CPU ranks agreed on, which with
/// quant_activations: int8 decides how the quantized weights are laid out (and padded). Throws when
/// kv_cache.bytes holds no block.
ClusterSizing size_cluster(const ClusterConfig& cfg, const ModelConfig& mc, int world, int rank,
                           kernels::cpu::Isa isa);

/// Throws when max_context exceeds the KV cache's tokens, naming both and the settings that fix it.
void check_sizing(const ClusterSizing& s);

/// One line for the log: weights, KV capacity in tokens, the largest request.
std::string describe_sizing(const ClusterSizing& s);
std::string describe_draft_sizing(const DraftSizing& d);

}  // namespace phi::app
