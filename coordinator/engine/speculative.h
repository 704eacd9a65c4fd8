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

#include <algorithm>
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
    /// Draft method only, opt-in: sampled requests draw proposals from the draft's distribution q
    /// and accept each with min(1, p/q), resampling a rejection from max(0, p - q) normalised
    /// (Leviathan et al.; Chen et al.): the output follows the target's distribution but is not the
    /// non-speculative output token for token. Each step then carries exactly the request's own k
    /// proposals (cut only by max_tokens, the context and the LongRoPE switch), never fewer for
    /// the load, so a seeded request gives the same tokens in any batch. Greedy requests are
    /// verified by matching, as without this.
    bool rejection_sampling = false;

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
/// Random streams of rejection sampling, apart from the sampler's own (stream 0 of a request's
/// seed and choice): the draft's draw, the acceptance test and the residual draw at each position.
enum class SpecDraw : uint64_t { Draft = 1, Accept = 2, Residual = 3 };
double spec_uniform(sampling::RngStream rng, SpecDraw what, uint64_t token_index);

/// The first id whose cumulative probability exceeds u (inverse CDF, ascending ids); the last id
/// with mass when rounding leaves the sum short.
int32_t draw_inverse_cdf(std::span<const double> probs, double u);

/// The probability of accepting a proposal given its target and draft probabilities.
using AcceptRule = double (*)(double p, double q);
inline double accept_min_ratio(double p, double q) { return q > 0 ? std::min(1.0, p / q) : 1.0; }

/// Rejection-sampling verification (SpeculativeConfig::rejection_sampling). `draft_probs` holds
/// the draft distribution each proposal was drawn from ([proposals.size()][limit]). Proposal j is
/// accepted when spec_uniform(Accept, index j) < rule(p_j(x), q_j(x)); the first rejection is
/// replaced by a draw from max(0, p_j - q_j) normalised; when all are accepted, one more token is
/// drawn from the last row by the ordinary sampler. Logprobs are the target rows' raw ones.
void verify_rejection(sampling::Sampler& sampler, std::span<const float> rows, int64_t row_width, int64_t limit,
                      std::span<const int32_t> prompt, std::span<const int32_t> generated,
                      std::span<const int32_t> proposals, std::span<const double> draft_probs,
                      const sampling::SamplingParams& params, sampling::RngStream rng,
                      std::vector<sampling::SampleResult>& out, AcceptRule rule = accept_min_ratio);

void verify_proposals(sampling::Sampler& sampler, std::span<const float> rows, int64_t row_width, int64_t limit,
                      std::span<const int32_t> prompt, std::span<const int32_t> generated,
                      std::span<const int32_t> proposals, const sampling::SamplingParams& params,
                      sampling::RngStream rng, std::vector<sampling::SampleResult>& out);

}  // namespace phi::engine
