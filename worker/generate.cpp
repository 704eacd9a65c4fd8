#include "worker/generate.h"

#include <numeric>

#include "common/error.h"

namespace phi {

bool uses_long_rope(const ModelConfig& cfg, int64_t total_len) {
    return cfg.rope_scaling == RopeScaling::LongRope && total_len > cfg.original_max_position_embeddings;
}

int64_t argmax(std::span<const float> logits, int64_t limit) {
    int64_t best = 0;
    for (int64_t i = 1; i < limit; ++i)
        if (logits[size_t(i)] > logits[size_t(best)]) best = i;
    return best;
}

GreedyResult generate_greedy(ModelRunner& model, std::span<const int32_t> prompt, int64_t max_new,
                             int64_t sample_limit, int32_t first_block, int32_t adapter) {
    PHI_CHECK(model.world() == 1, "generate_greedy(ModelRunner&) is for single-rank models");
    LocalCommunicator comm;
    StepExecutor exec(model, comm, WatchdogOptions{});
    return generate_greedy(exec, prompt, max_new, sample_limit, first_block, adapter);
}

GreedyResult generate_greedy(StepExecutor& exec, std::span<const int32_t> prompt, int64_t max_new,
                             int64_t sample_limit, int32_t first_block, int32_t adapter) {
    ModelRunner& model = exec.model();
    PHI_CHECK(!prompt.empty(), "empty prompt");
    const ModelConfig& cfg = model.config();
    const int64_t bs = model.block_size();
    const int64_t max_len = int64_t(prompt.size()) + max_new;
    const int64_t n_blocks = (max_len + bs - 1) / bs;
    PHI_CHECK(first_block + n_blocks <= model.kv_blocks(), "KV cache of {} blocks cannot hold {} tokens",
              model.kv_blocks(), max_len);
    std::vector<int32_t> table(static_cast<size_t>(n_blocks));
    std::iota(table.begin(), table.end(), first_block);

    GreedyResult res;
    std::vector<int32_t> seq(prompt.begin(), prompt.end());
    int64_t cached = 0;  // tokens whose K/V are in the cache
    bool cache_long = false;
    std::vector<float> logits;
    const int64_t vp = model.vocab_padded();
    while (int64_t(res.tokens.size()) < max_new) {
        const int64_t total = int64_t(seq.size());
        const bool long_rope = uses_long_rope(cfg, total);
        if (long_rope && !cache_long && cached > 0) {
            cached = 0;  // short-factor keys cannot be reused: recompute everything with long factors
            ++res.reprefills;
        }
        StepPlan plan;
        SeqPlan sp;
        sp.tokens.assign(seq.begin() + cached, seq.end());
        sp.start_pos = cached;
        sp.block_table = table;
        sp.long_rope = long_rope;
        sp.adapter = adapter;
        plan.seqs.push_back(std::move(sp));
        exec.run(plan, &logits);
        cached = total;
        cache_long = long_rope;
        const int64_t next = argmax(std::span<const float>(logits.data(), size_t(vp)), sample_limit);
        res.step_logits.emplace_back(logits.begin(), logits.begin() + vp);
        res.tokens.push_back(int32_t(next));
        seq.push_back(int32_t(next));
    }
    return res;
}

}  // namespace phi
