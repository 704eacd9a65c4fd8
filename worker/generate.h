// A minimal single-sequence driver over a ModelRunner: greedy decoding with a private block range and
// HF's LongRoPE rule (when a sequence first grows past original_max_position_embeddings, its whole
// cache is recomputed with long factors). Used by tests and by `phi-worker --prompt` until the
// engine's scheduler drives the model.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "worker/step_executor.h"

namespace phi {

/// Whether a sequence of `total_len` tokens uses LongRoPE's long factors (HF: max position + 1 >
/// original_max_position_embeddings).
bool uses_long_rope(const ModelConfig& cfg, int64_t total_len);

struct GreedyResult {
    std::vector<int32_t> tokens;                   // generated ids
    std::vector<std::vector<float>> step_logits;   // [steps][vocab_padded] logits each id was chosen from
    int64_t reprefills = 0;                        // LongRoPE cache rebuilds
};

/// Greedy generation of `max_new` tokens after `prompt`, choosing only ids < `sample_limit`
/// (the tokenizer's size), with LoRA adapter `adapter` (0: the base model). Uses blocks
/// [first_block, ...) of the model's cache.
GreedyResult generate_greedy(StepExecutor& exec, std::span<const int32_t> prompt, int64_t max_new,
                             int64_t sample_limit, int32_t first_block = 0, int32_t adapter = 0);

/// Same on a single-rank model (builds a local executor).
GreedyResult generate_greedy(ModelRunner& model, std::span<const int32_t> prompt, int64_t max_new,
                             int64_t sample_limit, int32_t first_block = 0, int32_t adapter = 0);

/// Index of the largest of the first `limit` values (first one on ties).
int64_t argmax(std::span<const float> logits, int64_t limit);

}  // namespace phi
