// SamplingParams validation: one message per parameter, saying the allowed range and the value given.
#include "coordinator/sampling/sampling_params.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "common/utf8.h"

namespace phi::sampling {

namespace {

// Like PHI_CHECK, but names the parameter and carries no source location: the message goes to a client.
template <class... Args>
void check(bool ok, const char* param, fmt::format_string<Args...> f, Args&&... args) {
    if (!ok) throw InvalidParam(param, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace

void SamplingParams::validate(int64_t token_limit) const {
    check(std::isfinite(temperature) && temperature >= 0.0f, "temperature", "temperature must be >= 0, got {}",
          temperature);
    check(top_k >= -1, "top_k", "top_k must be -1 or 0 (off) or a positive integer, got {}", top_k);
    check(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f, "top_p", "top_p must be in (0, 1], got {}", top_p);
    check(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f, "min_p", "min_p must be in [0, 1], got {}", min_p);
    check(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f, "repetition_penalty",
          "repetition_penalty must be > 0, got {}", repetition_penalty);
    check(std::isfinite(presence_penalty) && presence_penalty >= -2.0f && presence_penalty <= 2.0f,
          "presence_penalty", "presence_penalty must be in [-2, 2], got {}", presence_penalty);
    check(std::isfinite(frequency_penalty) && frequency_penalty >= -2.0f && frequency_penalty <= 2.0f,
          "frequency_penalty", "frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
    check(logprobs >= 0 && logprobs <= k_max_logprobs, "logprobs", "logprobs must be in [0, {}], got {}",
          k_max_logprobs, logprobs);
    check(!max_tokens || *max_tokens >= 1, "max_tokens", "max_tokens must be >= 1, got {}", max_tokens.value_or(0));
    check(stop.size() <= k_max_stop_strings, "stop", "stop may hold at most {} strings, got {}", k_max_stop_strings,
          stop.size());
    for (const std::string& s : stop) {
        check(!s.empty(), "stop", "stop strings must not be empty");
        check(s.size() <= k_max_stop_string_bytes, "stop", "stop strings must be at most {} bytes, got one of {}",
              k_max_stop_string_bytes, s.size());
        check(is_valid_utf8(s), "stop", "stop strings must be valid UTF-8");
    }
    for (int32_t id : stop_token_ids) {
        check(id >= 0, "stop_token_ids", "stop_token_ids must be >= 0, got {}", id);
        check(token_limit <= 0 || id < token_limit, "stop_token_ids",
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
