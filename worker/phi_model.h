// PhiModel: ONE forward for every Phi variant, driven by ModelConfig (parallel or sequential block,
// LayerNorm or RMSNorm, GeLU or SwiGLU, dense or MoE MLP), running this rank's shard with the
// collectives as visible lines. A step takes a batch of sequences, each with new tokens (a prompt
// chunk or one decode token) and its block table into the paged KV cache.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cluster/communicator.h"
#include "kernels/cpu/kernels.h"
#include "sharding/model_config.h"
#include "sharding/shard_plan.h"
#include "worker/kv_cache.h"
#include "worker/model_weights.h"

namespace phi {

/// One sequence's part of a step.
struct SeqStep {
    std::span<const int32_t> tokens;       // new tokens, at positions start_pos ..
    int64_t start_pos = 0;                 // tokens already in the cache
    std::span<const int32_t> block_table;  // blocks covering positions [0, start_pos + tokens.size())
    bool long_rope = false;                // LongRoPE: long factors (and long mscale) for this sequence
    bool all_logits = false;               // logits for every new token, else for the last one only
    /// > 0 (with all_logits false): only the argmax over ids below this is needed. With more than
    /// one rank the logits row is then not gathered: each rank sends its shard's (max, id) and
    /// rank 0's row holds 0 at the winning id and -inf elsewhere.
    int32_t argmax_limit = 0;
};

struct ModelOptions {
    kernels::cpu::Isa isa = kernels::cpu::Isa::Scalar;
    DType weight_dtype = DType::F32;
    KvCacheConfig kv;
};

class PhiModel {
public:
    PhiModel(const ModelConfig& cfg, const ShardPlan& plan, ModelWeights weights, Communicator& comm,
             const ModelOptions& opts);

    /// Runs one step. On rank 0, `logits` (if not null) receives [rows, vocab_padded] fp32 logits,
    /// rows in sequence order (all new tokens or the last one per sequence); ids >= vocab_size
    /// are -inf. Other ranks pass null. Returns the number of logit rows.
    int64_t forward(std::span<const SeqStep> seqs, std::vector<float>* logits);

    const ModelConfig& config() const { return cfg_; }
    const ShardPlan& plan() const { return plan_; }
    const ModelWeights& weights() const { return w_; }
    KvCache& kv_cache() { return kv_; }
    int64_t block_size() const { return kv_.layout().block_size; }
    /// FNV-1a of the residual stream after the last forward ([tokens, d_model]); identical on
    /// every rank because every all-reduce result is.
    uint64_t activation_hash() const { return activation_hash_; }
    /// Tokens whose K/V were computed since construction (decode must add exactly one per step).
    int64_t tokens_computed() const { return tokens_computed_; }

private:
    void attention(int64_t layer, std::span<const SeqStep> seqs, float* h, float* out);
    void dense_mlp(const LayerWeights& lw, const float* h, float* out, int64_t T);
    void moe_mlp(const LayerWeights& lw, const float* h, float* out, int64_t T);
    void debug_dump(const float* x, int64_t count, const char* name, int64_t layer) const;
    void gather_logits(std::span<const SeqStep> seqs, const std::vector<float>& local, int64_t rows,
                       std::vector<float>* logits);

    ModelConfig cfg_;
    ShardPlan plan_;
    ModelWeights w_;
    Communicator& comm_;
    ModelOptions opts_;
    KvCache kv_;
    std::vector<float> inv_freq_short_, inv_freq_long_;  // [rotary_dim / 2]
    float rope_scale_short_ = 1.0f, rope_scale_long_ = 1.0f;
    std::optional<std::filesystem::path> dump_dir_;
    int64_t tokens_computed_ = 0;
    uint64_t activation_hash_ = 0;

    // Scratch, grown on demand and reused across steps.
    std::vector<float> x_, h_, qkv_, attn_, t1_, t2_, t3_;
    std::vector<int32_t> pos_;
};

}  // namespace phi
