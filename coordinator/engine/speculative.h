// Speculative decoding on rank 0 (issue 20): a proposer guesses the next k tokens of a decoding
// sequence; the step computes the sequence's last token plus the k guesses with logits for all
// 1 + k rows; verification keeps the longest prefix of guesses that equal what the ordinary sampler
// draws at each position, plus the sampler's own token after it.
//
// Exactness: the sampler is a pure function of (logits row, history, params, seed, stream, token
// index) (sampler.h). Row j is sampled with the history extended by guesses 0..j-1 and token index
// generated + j, which is exactly what a non-speculative step at that position would see once
// guesses 0..j-1 were accepted; so the accepted tokens are token for token the non-speculative
// output whenever the runner's rows equal its one-token rows (true of the fake runner bitwise; the
// real forward computes a (1+k)-row step with the same kernels, see docs/ARCHITECTURE.md).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "coordinator/sampling/sampler.h"

namespace phi::engine {

struct SpeculativeConfig {
    /// Ngram: prompt lookup. Draft: the executor's draft model (StepExecutor::draft()) runs k
    /// greedy steps ahead on the same ranks, with its own KV cache.
    enum class Method { Off, Ngram, Draft };
    Method method = Method::Off;
    int32_t k = 3;          // proposals per step (at most)
    int32_t ngram_min = 1;  // shortest suffix matched
    int32_t ngram_max = 3;  // longest suffix matched (tried first)

    bool enabled() const { return method != Method::Off && k > 0; }
    /// Throws phi::Error naming the bad field.
    void validate() const;
};

const char* speculative_method_name(SpeculativeConfig::Method m);

/// Prompt lookup (vLLM's "ngram", llama.cpp's lookup decoding): for n from ngram_max down to
/// ngram_min, find the most recent earlier occurrence of the last n tokens of `history` (prompt +
/// output) and propose the up-to-`max_k` tokens that followed it. Empty when nothing matches.
std::vector<int32_t> ngram_propose(std::span<const int32_t> history, int32_t ngram_min, int32_t ngram_max,
                                   int64_t max_k);

/// Verifies one sequence's proposals. `rows` holds 1 + proposals.size() logits rows of `row_width`
/// values (row j: the logits after history + proposals[0..j)). `history` is prompt + generated.
/// Appends to `out` the accepted tokens: proposals[0..m) then the sampler's token at row m (m =
/// the first row whose sampled token differs from its proposal, or proposals.size()); each with the
/// SampleResult the non-speculative sampler gives at that position. Throws what the sampler throws.
void verify_proposals(sampling::Sampler& sampler, std::span<const float> rows, int64_t row_width, int64_t limit,
                      std::span<const int32_t> prompt, std::span<const int32_t> generated,
                      std::span<const int32_t> proposals, const sampling::SamplingParams& params,
                      sampling::RngStream rng, std::vector<sampling::SampleResult>& out);

}  // namespace phi::engine
