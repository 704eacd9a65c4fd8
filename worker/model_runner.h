// ModelRunner: what StepExecutor and the engine see of a model (vLLM's worker/model-runner split).
// A runner forwards a batch of sequences on this rank's shard and returns logits rows (or, for
// greedy rows, the argmax); it reports its KV capacity. Neither the executor nor the engine names a
// model class or a backend, so the engine runs against a fake runner in unit tests.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/dtype.h"
#include "sharding/model_config.h"

namespace phi {

/// One sequence's part of a step.
struct SeqStep {
    std::span<const int32_t> tokens;       // new tokens, at positions start_pos ..
    int64_t start_pos = 0;                 // tokens already in the cache
    std::span<const int32_t> block_table;  // blocks covering positions [0, start_pos + tokens.size())
    bool long_rope = false;                // LongRoPE: long factors (and long mscale) for this sequence
    bool all_logits = false;               // logits for every new token, else for the last one only
    /// > 0: only the argmax over ids below this is needed, for every row of the sequence (all of
    /// them with all_logits: a greedy speculative verification step). With more than one rank the
    /// rows are then not gathered: each rank sends its shard's (max, id) per row and rank 0's row
    /// holds 0 at the winning id and -inf elsewhere.
    int32_t argmax_limit = 0;
    /// LoRA adapter of this sequence (0 = the base model); a runner without adapters refuses others.
    int32_t adapter = 0;
};

struct KvCacheConfig {
    int64_t num_blocks = 256;
    int64_t block_size = 16;
    DType dtype = DType::F32;  // F32 or BF16 (kv_cache.dtype)
};

class ModelRunner {
public:
    virtual ~ModelRunner() = default;

    /// Runs one step. On rank 0, `logits` (if not null) receives [rows, vocab_padded] fp32 logits,
    /// rows in sequence order (all new tokens or the last one per sequence); ids >= vocab_size are
    /// -inf. Other ranks pass null. Returns the number of logit rows.
    virtual int64_t forward(std::span<const SeqStep> seqs, std::vector<float>* logits) = 0;
    /// Hash of the residual stream after the last forward (identical on every rank).
    virtual uint64_t activation_hash() = 0;

    virtual const ModelConfig& config() const = 0;
    /// Ranks the model is split over and the padded vocabulary (the logits row width).
    virtual int world() const = 0;
    virtual int64_t vocab_padded() const = 0;
    /// KV capacity: blocks of block_size token slots.
    virtual int64_t kv_blocks() const = 0;
    virtual int64_t block_size() const = 0;
};

}  // namespace phi
