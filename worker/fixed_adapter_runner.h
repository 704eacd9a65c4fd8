// A ModelRunner that runs every sequence with one LoRA adapter: `phi-worker --adapter DIR` offline,
// where every request uses the same adapter. Every rank wraps its model the same way, so the plan
// on the wire stays adapter-free and the engine (and its prefix cache, whose entries then all hold
// the adapter's K/V) need not know about adapters.
#pragma once

#include <vector>

#include "worker/model_runner.h"

namespace phi {

class FixedAdapterRunner final : public ModelRunner {
public:
    /// `inner` must already serve `adapter` (> 0); it outlives this runner.
    FixedAdapterRunner(ModelRunner& inner, int32_t adapter) : inner_(inner), adapter_(adapter) {}

    int64_t forward(std::span<const SeqStep> seqs, std::vector<float>* logits) override {
        steps_.assign(seqs.begin(), seqs.end());
        for (SeqStep& s : steps_) s.adapter = adapter_;
        return inner_.forward(steps_, logits);
    }
    uint64_t activation_hash() override { return inner_.activation_hash(); }
    const ModelConfig& config() const override { return inner_.config(); }
    int world() const override { return inner_.world(); }
    int64_t vocab_padded() const override { return inner_.vocab_padded(); }
    int64_t kv_blocks() const override { return inner_.kv_blocks(); }
    int64_t block_size() const override { return inner_.block_size(); }

private:
    ModelRunner& inner_;
    int32_t adapter_;
    std::vector<SeqStep> steps_;
};

}  // namespace phi
