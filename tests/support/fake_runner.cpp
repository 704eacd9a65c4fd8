#include "tests/support/fake_runner.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "common/error.h"
#include "common/hash.h"

namespace phi::test {

FakeRunner::FakeRunner(int64_t vocab, int64_t max_context, int64_t kv_blocks, int64_t block_size)
    : vocab_padded_((vocab + 7) / 8 * 8), kv_blocks_(kv_blocks), block_size_(block_size),
      slots_(size_t(kv_blocks * block_size), -1), slot_adapters_(size_t(kv_blocks * block_size), 0) {
    cfg_ = parse_model_config(
        fmt::format(R"({{"architectures": ["PhiForCausalLM"], "model_type": "phi", "hidden_size": 16,
            "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": {},
            "max_position_embeddings": {}, "partial_rotary_factor": 0.5, "layer_norm_eps": 1e-5,
            "rope_theta": 10000.0, "hidden_act": "gelu_new", "tie_word_embeddings": false}})",
                    vocab, max_context),
        "fake model");
}

std::vector<float> FakeRunner::logits_after(std::span<const int32_t> history, int32_t adapter) const {
    // A peaked pseudo-random distribution that depends on the whole history (so a wrong cached
    // token anywhere changes it), with a clear greedy winner.
    uint64_t h = salt_ == 0 ? fnv1a(history.data(), history.size() * 4)
                            : fnv1a(history.data(), history.size() * 4, fnv1a(&salt_, sizeof(salt_)));
    if (adapter != 0) h = fnv1a(&adapter, sizeof(adapter), h);
    std::vector<float> row(size_t(vocab_padded_), -std::numeric_limits<float>::infinity());
    for (int64_t j = 0; j < cfg_.vocab_size; ++j) {
        const uint64_t x = fnv1a(&j, 8, h);
        row[size_t(j)] = float(x % 1000) / 250.0f;  // [0, 4)
    }
    const int64_t n = int64_t(history.size());
    if (copy_period_ > 0 && n >= copy_period_ && h % 4 != 0) row[size_t(history[size_t(n - copy_period_)])] = 9.0f;
    return row;
}

std::vector<int32_t> FakeRunner::greedy(std::vector<int32_t> seq, int64_t n, int64_t limit, int32_t adapter) const {
    std::vector<int32_t> out;
    for (int64_t i = 0; i < n; ++i) {
        const std::vector<float> row = logits_after(seq, adapter);
        int64_t best = 0;
        for (int64_t j = 1; j < limit; ++j)
            if (row[size_t(j)] > row[size_t(best)]) best = j;
        out.push_back(int32_t(best));
        seq.push_back(int32_t(best));
    }
    return out;
}

int64_t FakeRunner::forward(std::span<const SeqStep> seqs, std::vector<float>* logits) {
    int64_t T = 0, R = 0;
    for (const SeqStep& s : seqs) {
        const int64_t n = int64_t(s.tokens.size());
        PHI_CHECK(n > 0, "a sequence in the step has no new tokens");
        const int64_t need = (s.start_pos + n + block_size_ - 1) / block_size_;
        PHI_CHECK(int64_t(s.block_table.size()) >= need, "block table of {} blocks for {} tokens",
                  s.block_table.size(), s.start_pos + n);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t p = s.start_pos + i;
            const int32_t b = s.block_table[size_t(p / block_size_)];
            PHI_CHECK(b >= 0 && b < kv_blocks_, "block {} outside the cache", b);
            slots_[size_t(b * block_size_ + p % block_size_)] = s.tokens[size_t(i)];
            slot_adapters_[size_t(b * block_size_ + p % block_size_)] = s.adapter;
        }
        T += n;
        R += s.all_logits ? n : 1;
    }
    ++steps_;
    tokens_computed_ += T;
    max_step_tokens_ = std::max(max_step_tokens_, T);
    max_step_seqs_ = std::max(max_step_seqs_, int64_t(seqs.size()));
    std::vector<int32_t> adapters;
    for (const SeqStep& s : seqs)
        if (s.adapter != 0 && std::find(adapters.begin(), adapters.end(), s.adapter) == adapters.end())
            adapters.push_back(s.adapter);
    max_step_adapters_ = std::max(max_step_adapters_, int64_t(adapters.size()));
    if (logits) logits->clear();
    uint64_t hash = 0;
    for (const SeqStep& s : seqs) {
        const int64_t n = int64_t(s.tokens.size());
        // The history as the cache holds it: every position read back through the block table.
        std::vector<int32_t> history;
        for (int64_t p = 0; p < s.start_pos + n; ++p) {
            const int32_t b = s.block_table[size_t(p / block_size_)];
            const int32_t id = slots_[size_t(b * block_size_ + p % block_size_)];
            PHI_CHECK(id >= 0, "position {} reads a cache slot nothing was written to", p);
            PHI_CHECK(slot_adapters_[size_t(b * block_size_ + p % block_size_)] == s.adapter,
                      "position {} of a sequence with adapter {} reads K/V written with adapter {}", p, s.adapter,
                      slot_adapters_[size_t(b * block_size_ + p % block_size_)]);
            history.push_back(id);
        }
        hash = fnv1a(history.data(), history.size() * 4, hash);
        const int64_t first = s.all_logits ? 0 : n - 1;
        for (int64_t i = first; i < n; ++i) {
            const std::vector<float> row =
                logits_after(std::span<const int32_t>(history.data(), size_t(s.start_pos + i + 1)), s.adapter);
            if (logits) logits->insert(logits->end(), row.begin(), row.end());
        }
    }
    last_hash_ = hash;
    return R;
}

}  // namespace phi::test
