// Service: rank 0's transport-independent front over the engine. It validates and tokenizes a
// request (text, chat messages through the model's chat template, or token ids), submits its n
// choices, turns each choice's tokens into UTF-8-safe text pieces with stop strings applied, and
// reports usage and metrics. The HTTP (OpenAI) and native TCP servers both sit on it.
//
// Threads: submit/cancel/health/metrics are thread-safe. Output sinks are called on the engine
// thread and must not block (post the event to the connection's executor). Tokenization and chat
// templating (prepare) are CPU work proportional to the prompt: the servers run them on the
// Service's small bounded pool (prepare_async), never on their network threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/engine/engine.h"
#include "coordinator/sampling/sampling_params.h"
#include "coordinator/serving/metrics.h"
#include "coordinator/serving/work_pool.h"

namespace phi::tokenizer {
class Tokenizer;
}
namespace phi::chat {
class ChatTemplate;
}

namespace phi::serving {

/// An error answered to one request; the transports map it to an HTTP status or an error frame.
class ApiError : public Error {
public:
    ApiError(int status, std::string type, const std::string& message, std::string param = "",
             std::optional<int> retry_after_s = std::nullopt)
        : Error(message), status(status), type(std::move(type)), param(std::move(param)), retry_after_s(retry_after_s) {}
    int status;             // 400, 404, 413, 429, 503, 500
    std::string type;       // "invalid_request_error", "rate_limit_error", "server_error", "not_found_error"
    std::string param;      // the offending field, when one
    std::optional<int> retry_after_s;

    /// OpenAI's error body: {"error": {"message", "type", "param", "code"}}.
    nlohmann::json to_json() const;
};

/// 400 naming `param`.
[[noreturn]] void bad_request(const std::string& param, const std::string& message);

/// How a token is spelled where text would go in token-ids-only mode: "token_id:N" (vLLM's
/// return_tokens_as_token_ids spelling).
std::string token_id_text(int32_t id);

enum class PromptKind { Text, Chat, TokenIds };

struct GenerationRequest {
    PromptKind kind = PromptKind::Text;
    std::string text;                       // Text
    nlohmann::ordered_json messages;        // Chat: [{"role": ..., "content": ...}, ...]
    nlohmann::ordered_json tools;           // Chat: optional tool list (null when absent)
    bool add_generation_prompt = true;      // Chat
    std::vector<int32_t> token_ids;         // TokenIds
    sampling::SamplingParams params;
    int n = 1;                              // choices
    bool skip_special_tokens = true;        // in the returned text
    int logprobs = -1;                      // -1: none; 0: the chosen token's; k: also the top k
    std::string model;                      // as the client named it (checked against ours when non-empty)
    std::string cache_salt;                 // prefix-cache salt (engine::PrefixCacheScope); empty: shared
    std::string max_tokens_param = "max_tokens";  // the field the client set it with (for errors)
    bool speculative = true;                // false: no speculative decoding for this request
    std::string adapter;                    // native protocol: a LoRA adapter by name (or `model`)
};

/// Reads the OpenAI request fields shared by /v1/completions, /v1/chat/completions and the native
/// protocol: prompt or messages (per `chat`), model, max_tokens (max_completion_tokens), n,
/// temperature, top_p, top_k, min_p, repetition_penalty, presence_penalty, frequency_penalty, seed,
/// stop, stop_token_ids, ignore_eos, logprobs/top_logprobs, skip_special_tokens, cache_salt, speculative. Unknown fields are
/// ignored as OpenAI-compatible servers do; wrong types and ranges throw ApiError naming the field.
GenerationRequest parse_generation_request(const nlohmann::json& body, bool chat);

struct TopLogprob {
    int32_t id = -1;
    std::string token;  // the token's own text (may be a partial UTF-8 sequence; transports escape it)
    float logprob = 0.0f;
};

struct Usage {
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    int64_t cached_prompt_tokens = 0;
};

struct OutputEvent {
    enum class Kind { Token, ChoiceDone, Done };
    Kind kind = Kind::Token;
    int choice = 0;
    // Token: the sampled id and the text that became final with it (may be empty).
    int64_t index = 0;
    int32_t token_id = -1;
    std::string text;
    float logprob = 0.0f;
    std::vector<TopLogprob> top_logprobs;
    // ChoiceDone: `text` holds any text held back until the end (an incomplete UTF-8 tail, a
    // partial stop-string match that did not complete); usually empty.
    std::string finish_reason;  // "stop", "length", "cancelled", "error"
    std::string error;          // when finish_reason is "error"
    // Done (after every choice is done)
    Usage usage;
};
using OutputSink = std::function<void(const OutputEvent&)>;

struct ServiceLimits {
    int64_t max_prompt_tokens = 0;  // 0: the context minus one
    std::chrono::milliseconds request_deadline{0};  // 0: none
    int max_n = 8;
    int retry_after_s = 1;          // hint on 429
    int prepare_threads = 2;        // the pool that tokenizes and templates requests
    size_t max_preparing = 64;      // requests waiting for that pool; beyond: 429
};

/// A request tokenized and checked (Service::prepare), ready for the engine.
struct PreparedRequest {
    GenerationRequest req;
    std::vector<int32_t> ids;
    int32_t adapter = 0;        // resolved from model / adapter (0: the base model)
    std::string served_model;   // the served model or adapter name (responses, metrics)
};

/// prepare_async's outcome: the prepared request, or the error to answer.
struct PrepareResult {
    std::optional<PreparedRequest> prepared;
    std::optional<ApiError> error;
};

class Request;

class Service {
public:
    /// `tok` null: token-ids-only mode (vLLM's skip_tokenizer_init): prompts must be token ids;
    /// text prompts, chat messages and stop strings are refused (400 naming the field); outputs
    /// carry ids and empty text, and logprob tokens are spelled "token_id:N".
    Service(engine::Engine& engine, const tokenizer::Tokenizer* tok, std::string model_name,
            const ServiceLimits& limits, Metrics& metrics);
    ~Service();

    /// Checks and tokenizes (the chat template for chat requests). Throws ApiError (400 invalid,
    /// 404 unknown model, 503 draining). Thread-safe.
    PreparedRequest prepare(GenerationRequest req) const;
    /// prepare() on the Service's pool; `done` runs there with the outcome (post it on to the
    /// caller's executor). Throws ApiError 429 when max_preparing requests already wait.
    void prepare_async(GenerationRequest req, std::function<void(PrepareResult)> done);
    /// Submits a prepared request's choices to the engine. Throws ApiError (429 overloaded,
    /// 503 draining). Events for every choice go to `sink`; the last one is Kind::Done.
    std::shared_ptr<Request> submit(PreparedRequest p, OutputSink sink);
    /// prepare() then submit(), on the caller's thread.
    std::shared_ptr<Request> submit(GenerationRequest req, OutputSink sink) {
        return submit(prepare(std::move(req)), std::move(sink));
    }
    /// Ends every unfinished choice with finish_reason "cancelled" (idempotent; the client left).
    void cancel(const std::shared_ptr<Request>& r);

    /// Prompt token ids the request would use (for tests and the native protocol's echo).
    std::vector<int32_t> prompt_ids(const GenerationRequest& req) const;

    /// Health for /health: false while loading, draining or failed, or when the engine loop has not
    /// completed a step or heartbeat within `stall_after` plus the watchdog allowance of the step in
    /// progress; `why` says which.
    bool healthy(std::string* why) const;
    void set_ready(bool ready) { ready_ = ready; }
    void begin_drain() { draining_ = true; }
    /// The cluster is going down (a lost rank, a teardown signal): /health says `why` with 503 and
    /// new requests get 503. Thread-safe; the first reason stays.
    void fail(const std::string& why);
    bool failed() const { return failed_.load(); }
    bool draining() const { return draining_; }
    int64_t in_flight() const { return in_flight_.load(); }

    /// Prometheus text exposition of the engine's and the servers' counters.
    std::string metrics_text() const;
    const std::string& model_name() const { return model_name_; }
    /// LoRA adapters of the config, (name, folder); adapter i has id i + 1 (app::load_adapters),
    /// and the first `resident` of them are loaded on every rank. Set before serving.
    void set_adapters(const std::vector<std::pair<std::string, std::string>>& adapters, size_t resident);
    /// The adapters served now (loaded or loadable on demand), in the order they were added.
    std::vector<std::string> adapters() const;
    /// Adapter loading on every rank through `exec` (rank 0's executor, driven by the engine thread):
    /// `runtime` allows /v1/load_lora_adapter and /v1/unload_lora_adapter; `max_cpu_loras` > 0 keeps
    /// at most that many adapters in memory, evicting the least recently used one no request uses
    /// and reloading an evicted one when a request names it (lora.max_cpu_loras).
    void set_adapter_loading(StepExecutor* exec, bool runtime, int64_t max_cpu_loras) {
        loader_ = exec;
        runtime_loading_ = runtime;
        max_cpu_loras_ = max_cpu_loras;
    }
    using AdapterDone = std::function<void(std::optional<ApiError>)>;
    /// Loads adapter `name` from `path` on every rank, between steps; `done` runs on the engine
    /// thread with nothing, or the error to answer (403 when runtime loading is off, 400 for a bad
    /// name or an adapter any rank could not load: the cluster keeps serving).
    void load_adapter_async(const std::string& name, const std::string& path, AdapterDone done);
    /// Drops adapter `name` on every rank. Refused (409) while requests use it: unloading never
    /// waits and never touches a running request.
    void unload_adapter_async(const std::string& name, AdapterDone done);
    /// Null in token-ids-only mode.
    const tokenizer::Tokenizer* tokenizer() const { return tok_; }
    engine::Engine& engine() { return engine_; }
    Metrics& metrics() { return metrics_; }
    std::chrono::milliseconds stall_after{30000};

private:
    friend class Request;
    engine::Engine& engine_;
    const tokenizer::Tokenizer* tok_;
    std::unique_ptr<chat::ChatTemplate> chat_;
    std::string model_name_;
    struct AdapterEntry {
        std::string name;
        int32_t id = 0;          // never reused
        std::string path;
        bool resident = false;   // loaded on every rank (engine thread changes it)
        uint64_t last_used = 0;  // for LRU eviction
    };
    /// Engine thread: loads adapter `id` on every rank if it is not, first evicting the least
    /// recently used unused adapters above max_cpu_loras. Returns why it failed, or "".
    std::string make_resident(int32_t id);
    void submit_choices(const std::shared_ptr<Request>& r, const PreparedRequest& p);
    bool adapter_named(const std::string& name) const;  // adapters_mu_ held
    static ApiError duplicate_adapter(const std::string& name);
    mutable std::mutex adapters_mu_;
    mutable std::vector<AdapterEntry> adapters_;
    int32_t next_adapter_id_ = 1;
    mutable uint64_t adapter_clock_ = 0;
    StepExecutor* loader_ = nullptr;
    bool runtime_loading_ = false;
    int64_t max_cpu_loras_ = 0;
    ServiceLimits limits_;
    Metrics& metrics_;
    std::atomic<bool> ready_{false};
    std::atomic<bool> draining_{false};
    std::atomic<bool> failed_{false};
    mutable std::mutex failed_mu_;
    std::string failed_why_;
    std::atomic<int64_t> in_flight_{0};
    WorkPool pool_;  // last: its threads stop before the members they use
};

}  // namespace phi::serving
