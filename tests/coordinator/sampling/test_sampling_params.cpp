// SamplingParams::validate: the ranges of vLLM/OpenAI, and messages that name the parameter and value.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "common/error.h"
#include "coordinator/sampling/sampling_params.h"

namespace {

using phi::sampling::SamplingParams;

std::string error_of(const SamplingParams& p, int64_t limit = 0) {
    try {
        p.validate(limit);
    } catch (const phi::Error& e) {
        return e.what();
    }
    return "";
}

void expect_error(const std::function<void(SamplingParams&)>& set, const std::string& needle) {
    SamplingParams p;
    set(p);
    const std::string msg = error_of(p);
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: '" << msg << "', expected '" << needle << "'";
}

TEST(SamplingParams, DefaultsAndBoundsAreValid) {
    EXPECT_EQ(error_of(SamplingParams{}), "");
    SamplingParams p;
    p.temperature = 0.0f;
    p.top_k = -1;
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    p.repetition_penalty = 0.01f;
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 2.0f;
    p.logprobs = 20;
    p.max_tokens = 1;
    p.seed = ~uint64_t{0};
    p.stop = {"\n", "é"};
    p.stop_token_ids = {0, 31999};
    EXPECT_EQ(error_of(p, 32000), "");
    EXPECT_TRUE(p.greedy());
    p.temperature = 5.0f;  // vLLM sets no upper bound
    p.top_k = 50;
    EXPECT_EQ(error_of(p), "");
    EXPECT_FALSE(p.greedy());
}

TEST(SamplingParams, ErrorsNameTheParameter) {
    expect_error([](SamplingParams& p) { p.temperature = -0.1f; }, "temperature must be >= 0, got -0.1");
    expect_error([](SamplingParams& p) { p.temperature = NAN; }, "temperature");
    expect_error([](SamplingParams& p) { p.top_k = -2; }, "top_k");
    expect_error([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p must be in (0, 1], got 1.5");
    expect_error([](SamplingParams& p) { p.top_p = 0.0f; }, "top_p must be in (0, 1], got 0");
    expect_error([](SamplingParams& p) { p.min_p = -0.5f; }, "min_p must be in [0, 1], got -0.5");
    expect_error([](SamplingParams& p) { p.min_p = 1.01f; }, "min_p");
    expect_error([](SamplingParams& p) { p.repetition_penalty = 0.0f; },
                 "repetition_penalty must be > 0, got 0");
    expect_error([](SamplingParams& p) { p.repetition_penalty = INFINITY; }, "repetition_penalty");
    expect_error([](SamplingParams& p) { p.presence_penalty = 2.5f; },
                 "presence_penalty must be in [-2, 2], got 2.5");
    expect_error([](SamplingParams& p) { p.frequency_penalty = -3.0f; },
                 "frequency_penalty must be in [-2, 2]");
    expect_error([](SamplingParams& p) { p.logprobs = 21; }, "logprobs must be in [0, 20], got 21");
    expect_error([](SamplingParams& p) { p.logprobs = -1; }, "logprobs");
    expect_error([](SamplingParams& p) { p.max_tokens = 0; }, "max_tokens must be >= 1, got 0");
    expect_error([](SamplingParams& p) { p.stop = {"ok", ""}; }, "stop strings must not be empty");
    expect_error([](SamplingParams& p) { p.stop = {std::string(300, 'x')}; },
                 "stop strings must be at most 256");
    expect_error([](SamplingParams& p) { p.stop = {"\xC3"}; }, "stop strings must be valid UTF-8");
    expect_error([](SamplingParams& p) { p.stop = std::vector<std::string>(17, "x"); },
                 "stop may hold at most 16");
    expect_error([](SamplingParams& p) { p.stop_token_ids = {-1}; }, "stop_token_ids must be >= 0, got -1");
    SamplingParams p;
    p.stop_token_ids = {32000};
    EXPECT_NE(error_of(p, 32000).find("stop_token_ids must be below the tokenizer's size 32000, got 32000"),
              std::string::npos);
}

}  // namespace
