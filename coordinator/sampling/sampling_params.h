// A request's sampling parameters as the OpenAI API and vLLM name them, validated once when the request
// is admitted. The sampler (sampler.h) assumes validated parameters.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"

namespace phi::sampling {

/// A parameter out of range: `param` is its API name, the message says the allowed range.
class InvalidParam : public Error {
public:
    InvalidParam(std::string param, const std::string& message) : Error(message), param(std::move(param)) {}
    std::string param;
};

/// Most top-n logprobs a request may ask for (OpenAI's top_logprobs limit, vLLM's default max_logprobs).
inline constexpr int k_max_logprobs = 20;
/// Limits on stop strings, so a request cannot make stop matching expensive.
inline constexpr size_t k_max_stop_strings = 16;
inline constexpr size_t k_max_stop_string_bytes = 256;
/// Temperatures below this are greedy (vLLM's _SAMPLING_EPS): dividing by them would overflow the logits.
inline constexpr float k_greedy_temperature = 1e-5f;

/// Ranges follow vLLM's SamplingParams._verify_args (OpenAI's where vLLM has none).
struct SamplingParams {
    /// Softmax temperature, >= 0. 0 (anything below k_greedy_temperature) is greedy decoding.
    float temperature = 1.0f;
    /// Keep the k highest logits (and every logit equal to the k-th, as HF). 0 or -1: off.
    int32_t top_k = 0;
    /// Nucleus sampling: keep the smallest set of highest-probability tokens whose mass reaches top_p,
    /// in (0, 1]. 1: off.
    float top_p = 1.0f;
    /// Drop tokens whose probability is below min_p times the top token's, in [0, 1]. 0: off.
    float min_p = 0.0f;
    /// HF's multiplicative penalty on every id seen in the prompt or generated so far, > 0. 1: off.
    float repetition_penalty = 1.0f;
    /// OpenAI's additive penalties over generated tokens, in [-2, 2]. 0: off.
    float presence_penalty = 0.0f;
    float frequency_penalty = 0.0f;
    /// Seeds the request's random stream (sampler.h). Unset: the request draws a random seed once.
    std::optional<uint64_t> seed;
    /// Top-n logprobs returned with every token, in [0, k_max_logprobs]; the chosen token's logprob is
    /// always returned.
    int32_t logprobs = 0;
    /// Most tokens to generate, >= 1. Unset: up to the context limit.
    std::optional<int32_t> max_tokens;
    /// Text that ends generation; neither it nor anything after it is returned (stop_matcher.h).
    std::vector<std::string> stop;
    /// Token ids that end generation (in addition to the model's EOS ids unless ignore_eos).
    std::vector<int32_t> stop_token_ids;
    /// Keep generating past the model's EOS ids (vLLM's ignore_eos); stop_token_ids still apply.
    bool ignore_eos = false;

    bool greedy() const { return temperature < k_greedy_temperature; }

    /// Throws InvalidParam naming the first parameter out of range ("top_p must be in (0, 1], got 1.5").
    /// With token_limit > 0 (the tokenizer's size) stop_token_ids must also be below it.
    void validate(int64_t token_limit = 0) const;
};

/// True when `id` ends a sequence: one of params.stop_token_ids, or one of eos_ids unless ignore_eos.
bool is_stop_token(const SamplingParams& params, std::span<const int32_t> eos_ids, int32_t id);

}  // namespace phi::sampling
