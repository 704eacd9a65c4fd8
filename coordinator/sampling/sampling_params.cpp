// SamplingParams validation: one message per parameter, saying the allowed range and the value given.
#include "coordinator/sampling/sampling_params.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/utf8.h"

namespace phi::sampling {

void SamplingParams::validate(int64_t token_limit) const {
    PHI_CHECK(std::isfinite(temperature) && temperature >= 0.0f, "temperature must be >= 0, got {}",
              temperature);
    PHI_CHECK(top_k >= -1, "top_k must be -1 or 0 (off) or a positive integer, got {}", top_k);
    PHI_CHECK(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got {}",
              top_p);
    PHI_CHECK(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got {}",
              min_p);
    PHI_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f,
              "repetition_penalty must be > 0, got {}", repetition_penalty);
    PHI_CHECK(std::isfinite(presence_penalty) && presence_penalty >= -2.0f && presence_penalty <= 2.0f,
              "presence_penalty must be in [-2, 2], got {}", presence_penalty);
    PHI_CHECK(std::isfinite(frequency_penalty) && frequency_penalty >= -2.0f && frequency_penalty <= 2.0f,
              "frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
    PHI_CHECK(logprobs >= 0 && logprobs <= k_max_logprobs, "logprobs must be in [0, {}], got {}",
              k_max_logprobs, logprobs);
    PHI_CHECK(!max_tokens || *max_tokens >= 1, "max_tokens must be >= 1, got {}", max_tokens.value_or(0));
    PHI_CHECK(stop.size() <= k_max_stop_strings, "stop may hold at most {} strings, got {}",
              k_max_stop_strings, stop.size());
    for (const std::string& s : stop) {
        PHI_CHECK(!s.empty(), "stop strings must not be empty");
        PHI_CHECK(s.size() <= k_max_stop_string_bytes, "stop strings must be at most {} bytes, got one of {}",
                  k_max_stop_string_bytes, s.size());
        PHI_CHECK(is_valid_utf8(s), "stop strings must be valid UTF-8");
    }
    for (int32_t id : stop_token_ids) {
        PHI_CHECK(id >= 0, "stop_token_ids must be >= 0, got {}", id);
        PHI_CHECK(token_limit <= 0 || id < token_limit,
                  "stop_token_ids must be below the tokenizer's size {}, got {}", token_limit, id);
    }
}

bool is_stop_token(const SamplingParams& params, std::span<const int32_t> eos_ids, int32_t id) {
    if (std::find(params.stop_token_ids.begin(), params.stop_token_ids.end(), id) !=
        params.stop_token_ids.end())
        return true;
    return !params.ignore_eos && std::find(eos_ids.begin(), eos_ids.end(), id) != eos_ids.end();
}

}  // namespace phi::sampling
