// OpenAI response bodies built from the Service's output events: one object per request that keeps
// each choice's text, finish reason and logprobs, and renders either the whole response
// (text_completion / chat.completion) or stream chunks (text_completion / chat.completion.chunk).
// No I/O here, so the shapes are testable without a socket.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/serving/service.h"

namespace phi::tokenizer {
class Tokenizer;
}

namespace phi::http {

using ojson = nlohmann::ordered_json;

/// JSON text for the wire: invalid UTF-8 (a token's partial character) becomes U+FFFD.
std::string dump(const ojson& j);
std::string dump(const nlohmann::json& j);

struct FormatOptions {
    bool chat = false;
    std::string id;       // "cmpl-..." / "chatcmpl-..."
    int64_t created = 0;  // unix seconds
    std::string model;
    int n = 1;
    int logprobs = -1;           // GenerationRequest::logprobs: -1 none, else top-k count
    bool include_usage = false;  // stream_options.include_usage
    /// Token-ids-only mode: every choice (and stream chunk) carries "token_ids"; the text is empty.
    bool token_ids = false;
};

class OpenAiResponse {
  public:
    /// `tok` null: token-ids-only mode (token strings are "token_id:N").
    OpenAiResponse(const FormatOptions& opts, const tokenizer::Tokenizer* tok);

    // Streaming: each returns the JSON of one SSE event, or "" when there is nothing to send.
    /// Chat only: the first chunk of choice `c`, delta {role: "assistant", content: ""}.
    std::string role_chunk(int c) const;
    /// A Token event: its text (and logprobs when asked). Empty text without logprobs sends nothing.
    std::string token_chunk(const serving::OutputEvent& ev);
    /// A ChoiceDone event that is not an error: its tail text and finish_reason.
    std::string finish_chunk(const serving::OutputEvent& ev);
    /// include_usage: the last chunk, with empty choices and usage.
    std::string usage_chunk(const serving::Usage& u) const;

    // Non-streaming: accumulate, then render.
    void add_token(const serving::OutputEvent& ev);
    void add_finish(const serving::OutputEvent& ev);
    ojson response(const serving::Usage& u) const;

    static ojson usage_json(const serving::Usage& u);

  private:
    struct Choice {
        std::string text;
        int64_t text_chars = 0;  // code points of text, for text_offset
        std::string finish_reason;
        ojson logprobs;  // non-streaming: the growing logprobs object
        std::vector<int32_t> token_ids;  // FormatOptions::token_ids
    };
    ojson chunk_base() const;
    /// The logprobs of one token, in the endpoint's shape; appends to `into` when it is an object.
    ojson token_logprobs(const serving::OutputEvent& ev, int64_t text_offset) const;
    void append_logprobs(ojson& into, const serving::OutputEvent& ev, int64_t text_offset) const;
    std::string token_string(int32_t id) const;

    FormatOptions opts_;
    const tokenizer::Tokenizer* tok_;
    std::vector<Choice> choices_;
};

/// Code points in UTF-8 text (bytes that start no character are not counted).
int64_t utf8_chars(const std::string& s);

}  // namespace phi::http
