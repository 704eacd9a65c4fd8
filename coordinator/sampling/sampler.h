// Rank 0's sampler: turns one sequence's last-position logits into the next token id, with HF's logit
// processors for the HF-named knobs, OpenAI's penalties as vLLM applies them, a counter-based random draw
// and top-n logprobs.
//
// Order of operations on the logits of one sequence (vocab_padded fp32 values; `limit` = tokenizer size):
//   0. ids >= limit are set to -inf: padded LM-head rows are never sampled (nor penalised, nor in logprobs).
//   1. repetition_penalty (HF RepetitionPenaltyLogitsProcessor): for every distinct id in prompt +
//      generated, x = x < 0 ? x * penalty : x / penalty.
//   2. frequency_penalty then presence_penalty (OpenAI's formula, vLLM's apply_penalties), over generated
//      ids only: x -= frequency * count; x -= presence * (count > 0). Steps 1-2 are vLLM's order too.
//   greedy (temperature < k_greedy_temperature): the token is the argmax of these logits, lowest id on
//      ties (torch.argmax); HF applies no warpers when do_sample=False and none would change the argmax.
//   3. temperature (HF TemperatureLogitsWarper): x /= temperature, when temperature != 1.
//   4. top_k (HF TopKLogitsWarper): x < (k-th largest x) -> -inf; every logit equal to the k-th is kept.
//   5. top_p (HF TopPLogitsWarper): sort ascending, drop tokens whose ascending cumulative probability is
//      <= 1 - top_p; i.e. keep, from the top, each token whose predecessors' mass is still < top_p (the
//      top token always). Among equal logits at the cut, lower ids are kept first (HF's unstable
//      torch.sort leaves that order unspecified).
//   6. min_p (HF MinPLogitsWarper): drop tokens whose probability is below min_p * the top probability,
//      computed on the logits after steps 3-5 (so relative to the temperature-scaled distribution).
//   7. draw u in [0, 1) from Philox4x32-10 keyed on the seed, with counter (token index, stream), and take
//      the first id, in ascending id order, whose cumulative probability exceeds u (inverse CDF). The token
//      index is generated.size(), so the draw is a pure function of (seed, stream, position).
// Steps 3-6 are HF GenerationMixin._get_logits_processor's warper order (transformers 5.24), checked by
// test_sampling against the pinned transformers on tests/fixtures/sampling/hf_processors.json. vLLM
// applies min_p before top-k/top-p; we follow HF.
//
// Logprobs are vLLM's default ("raw_logprobs"): log-softmax of the model's logits over ids < limit, before
// penalties, temperature and filtering, so they describe the model, not the sampling settings.
//
// Every step is a pure function of (logits, history, params, seed, stream) on one thread, with reductions
// in a fixed order (double accumulators), so the result does not depend on batch size, batch makeup or
// thread count. Cost is O(vocab) per token: top-k keeps a heap of k, top-p bins the logits by distance
// below the max and sorts only the bin where the cut falls; nothing sorts the whole vocabulary.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "coordinator/sampling/sampling_params.h"

namespace phi::sampling {

/// The ids a sequence has seen: its prompt, and what it generated so far (the next token's index is
/// generated.size()).
struct TokenHistory {
    std::span<const int32_t> prompt;
    std::span<const int32_t> generated;
};

/// Which random stream a sequence draws from. seed: params.seed when given, else a seed drawn once per
/// request (random_seed()). stream: distinguishes sequences that share a seed, e.g. the n choices of one
/// request (choice index); 0 for a single sequence.
struct RngStream {
    uint64_t seed = 0;
    uint64_t stream = 0;
};

struct TokenLogprob {
    int32_t id = -1;
    float logprob = 0.0f;
};

struct SampleResult {
    int32_t id = -1;
    /// Raw logprob of `id` (see the header comment).
    float logprob = 0.0f;
    /// The params.logprobs most likely ids under the raw distribution, best first, lower id first on ties;
    /// fewer when fewer ids have finite logits.
    std::vector<TokenLogprob> top_logprobs;
};

/// A fresh seed for a request without one (std::random_device).
uint64_t random_seed();

/// Samples sequences one at a time; owns scratch buffers sized to the largest vocabulary seen, so steady
/// state allocates nothing. Not thread-safe: one Sampler per thread.
class Sampler {
public:
    /// Steps 0-6 in place (0-2 only when params.greedy()): filtered ids become -inf. `logits` holds
    /// vocab_padded values; 1 <= limit <= logits.size(). History ids must be in [0, logits.size()).
    /// Throws phi::Error when the logits below limit hold NaN or +inf, or are all -inf.
    void process(std::span<float> logits, int64_t limit, TokenHistory history, const SamplingParams& params);

    /// The next token of one sequence (params validated): processes a copy of `logits`, then takes the
    /// argmax (greedy) or draws (step 7), and fills the raw logprobs. Reuses out's storage.
    void sample(std::span<const float> logits, int64_t limit, TokenHistory history,
                const SamplingParams& params, RngStream rng, SampleResult& out);

    SampleResult sample(std::span<const float> logits, int64_t limit, TokenHistory history,
                        const SamplingParams& params, RngStream rng) {
        SampleResult out;
        sample(logits, limit, history, params, rng, out);
        return out;
    }

    /// The distribution a non-greedy `sample` draws from (steps 0-6, then softmax): probs[i] for ids
    /// below `limit`, summing to 1 (in double). For speculative rejection sampling.
    void distribution(std::span<const float> logits, int64_t limit, TokenHistory history,
                      const SamplingParams& params, std::vector<double>& probs);
    /// out.logprob and out.top_logprobs (params.logprobs of them) of out.id under the raw
    /// distribution of `logits` (see the header comment), as `sample` fills them.
    void raw_logprobs(std::span<const float> logits, int64_t limit, int32_t n_top, SampleResult& out) const;

private:
    void apply_penalties(std::span<float> x, int64_t limit, TokenHistory history,
                         const SamplingParams& params);
    void apply_top_k(std::span<float> x, int32_t top_k);
    void apply_top_p(std::span<float> x, float top_p);

    struct Candidate {
        float logit;
        int32_t id;
        float weight;  // exp(logit - max logit)
    };

    std::vector<float> processed_;       // [vocab_padded] the logits being processed
    std::vector<float> weights_;         // [limit] exp(processed - max), 0 where filtered
    std::vector<uint16_t> bins_;         // [limit] top-p bin of each finite logit
    std::vector<double> bin_mass_;       // [top-p bins] mass of each bin
    std::vector<uint8_t> seen_;          // [vocab_padded] repetition-penalty marks, all 0 between calls
    std::vector<int32_t> counts_;        // [vocab_padded] generated counts, all 0 between calls
    std::vector<int32_t> touched_;       // ids whose seen_/counts_ entry is set
    std::vector<float> values_;          // finite logits, for the top-k threshold
    std::vector<Candidate> candidates_;  // the finite logits of the top-p bin where the cut falls
};

}  // namespace phi::sampling
