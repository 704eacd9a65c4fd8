// A ModelRunner with no model: a deterministic "language model" over a simulated paged KV cache,
// for testing the engine, the executor and the block manager without weights or MPI.
//
// Each forward writes every new token id into its KV slot (block_table[p / block_size], slot
// p % block_size) and computes a sequence's logits from the token history it READS BACK through
// its block table. So a request's output equals next_token(prompt ...) iterated, exactly when the
// engine's block tables, prefix-cache reuse, preemption and chunking are right; any mix-up of
// blocks shows up as a wrong token.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "worker/model_runner.h"

namespace phi::test {

class FakeRunner final : public ModelRunner {
public:
    /// A model with `vocab` ids (padded to a multiple of 8), context `max_context`.
    FakeRunner(int64_t vocab, int64_t max_context, int64_t kv_blocks, int64_t block_size);

    int64_t forward(std::span<const SeqStep> seqs, std::vector<float>* logits) override;
    uint64_t activation_hash() override { return last_hash_; }
    const ModelConfig& config() const override { return cfg_; }
    int world() const override { return 1; }
    int64_t vocab_padded() const override { return vocab_padded_; }
    int64_t kv_blocks() const override { return kv_blocks_; }
    int64_t block_size() const override { return block_size_; }

    /// Makes the fake model repetitive, as code is: after a history of at least `period` tokens,
    /// three histories in four (by a hash of the whole history) put a clear winner on the token
    /// `period` positions back. Prompt lookup then guesses right often, but not always.
    void set_copy_period(int64_t period) { copy_period_ = period; }
    /// A different model over the same vocabulary (a draft for speculative decoding): the salt
    /// changes every history's hash, so it copies at other positions and ranks other ids first.
    /// Salt 0 is the default model.
    void set_salt(uint64_t salt) { salt_ = salt; }

    /// The logits row the fake model gives after `history` (what the engine must reproduce).
    std::vector<float> logits_after(std::span<const int32_t> history, int32_t adapter = 0) const;
    /// The greedy continuation of `prompt`: n tokens, ids below `limit`.
    std::vector<int32_t> greedy(std::vector<int32_t> prompt, int64_t n, int64_t limit, int32_t adapter = 0) const;

    // What the engine asked for.
    int64_t steps() const { return steps_; }
    int64_t max_step_tokens() const { return max_step_tokens_; }
    int64_t max_step_seqs() const { return max_step_seqs_; }
    int64_t tokens_computed() const { return tokens_computed_; }
    /// Most distinct LoRA adapters (ids > 0) in one step. Adapters change the fake model's logits,
    /// and every KV slot remembers the adapter that wrote it: reading a slot written under another
    /// adapter (a prefix-cache mix-up) throws.
    int64_t max_step_adapters() const { return max_step_adapters_; }

private:
    ModelConfig cfg_;
    int64_t vocab_padded_, kv_blocks_, block_size_;
    std::vector<int32_t> slots_;  // [kv_blocks * block_size] token id written there, -1 never
    std::vector<int32_t> slot_adapters_;  // the adapter of the step that wrote each slot
    int64_t max_step_adapters_ = 0;
    int64_t steps_ = 0, max_step_tokens_ = 0, max_step_seqs_ = 0, tokens_computed_ = 0;
    uint64_t last_hash_ = 0;
    int64_t copy_period_ = 0;
    uint64_t salt_ = 0;
};

}  // namespace phi::test
