// The engine on rank 0: continuous batching over the paged KV cache. Requests join and leave the
// running batch between steps; each step mixes decode tokens and prefill chunks within a token
// budget; KV blocks come from the BlockManager (with prefix caching), and when they run out the most
// recently admitted sequence is preempted and later recomputed. Every step is one StepPlan through
// the StepExecutor, so ranks > 0 compute exactly what rank 0 decides.
//
// Threads: submit/cancel/stats are thread-safe (servers call them); step/run belong to the one
// thread that drives MPI (the process's main thread). Event sinks run on that thread and must not
// block.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "coordinator/engine/block_manager.h"
#include "coordinator/engine/speculative.h"
#include "coordinator/sampling/sampler.h"
#include "coordinator/sampling/sampling_params.h"
#include "worker/step_executor.h"

namespace phi::engine {

enum class FinishReason { Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);

struct Event {
    enum class Kind { Token, Finished };
    Kind kind = Kind::Token;
    uint64_t request_id = 0;
    // Token
    int32_t token = -1;
    int64_t index = 0;  // 0-based position among generated tokens
    float logprob = 0.0f;
    std::vector<sampling::TokenLogprob> top_logprobs;
    // Finished
    FinishReason reason = FinishReason::Stop;
    std::string error;
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    int64_t cached_prompt_tokens = 0;
};
using EventSink = std::function<void(const Event&)>;

struct EngineRequest {
    std::vector<int32_t> prompt;
    sampling::SamplingParams params;
    uint64_t stream = 0;  // choice index (RNG stream) for requests with n > 1
    /// Event logprobs are wanted. When false, a greedy request without penalties lets the ranks
    /// send only their (max, id) pairs instead of whole vocabulary shards (Event::logprob is then 0).
    bool want_logprobs = false;
    std::optional<std::chrono::steady_clock::time_point> deadline;
    /// Prefix-cache salt: cached blocks are shared only among requests with the same salt (see
    /// PrefixCacheScope). Empty: the shared cache.
    std::string cache_salt;
    /// Speculative decoding for this request when the engine has it configured (the per-request
    /// off switch; the output is the same either way, only the speed differs).
    bool speculative = true;
    /// LoRA adapter id on every rank's model (0: the base model). Cached blocks are shared only
    /// among requests with the same adapter.
    int32_t adapter = 0;
};

struct EngineConfig {
    int64_t max_num_seqs = 32;         // sequences in the running batch
    int64_t max_batched_tokens = 512;  // tokens per step (decode + prefill chunks)
    int64_t max_queued = 256;          // waiting requests before submit refuses
    int64_t max_context = 0;           // tokens per sequence; 0 = model's max_position_embeddings
    bool prefix_caching = true;
    int64_t vocab_limit = 0;           // tokenizer size; 0 = model vocab
    std::vector<int32_t> eos_ids;      // generation_config + family end tokens
    std::chrono::milliseconds heartbeat{1000};  // idle rank 0 pings the followers this often
    SpeculativeConfig speculative;              // off by default
    /// At most this many distinct LoRA adapters in the running batch (0: no limit). A waiting
    /// request whose adapter would pass it waits at the head of the line (admission is in order,
    /// so it is never overtaken and never starved).
    int64_t max_loras = 0;
    /// Adapter ids every rank holds at start (more come and go with adapter_loaded/unloaded). A
    /// request naming another id ends with an error before any step names it.
    std::vector<int32_t> adapters;
};

/// Counters for /metrics and tests (a snapshot).
struct EngineStats {
    int64_t queued = 0, running = 0;
    int64_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_free = 0, kv_blocks_cached_idle = 0;
    int64_t prefix_cache_hits = 0;  // blocks reused
    int64_t prefix_cache_hit_tokens = 0;
    int64_t preemptions = 0;
    int64_t prompt_tokens = 0, generated_tokens = 0;
    int64_t steps = 0;
    int64_t finished_stop = 0, finished_length = 0, finished_cancelled = 0, finished_error = 0;
    int64_t rejected = 0;
    // Speculative decoding: proposals sent for verification, and those accepted; decode steps of
    // sequences (one per sequence per step that sampled) and the tokens they produced.
    int64_t spec_proposed = 0, spec_accepted = 0;
    int64_t decode_seq_steps = 0, decode_tokens = 0;
    // The draft model's KV cache (speculative method draft; 0 otherwise) and its steps.
    int64_t draft_kv_blocks_total = 0, draft_kv_blocks_used = 0;
    int64_t draft_steps = 0;
    double step_seconds = 0, sample_seconds = 0, forward_seconds = 0;
    double last_step_seconds = 0;
    double comm_all_reduce_seconds = 0;
    std::vector<StepExecutor::RankTimes> rank_times;  // per rank: forward and all-reduce seconds
    std::chrono::steady_clock::time_point last_step_end{};
    /// Watchdog deadline of each collective of the step (or heartbeat) in progress, else the last.
    std::chrono::milliseconds step_allowance{0};
};

/// Thrown by submit when the request can never run or the queue is full.
class SubmitError : public Error {
public:
    enum class Kind { Invalid, Overloaded };
    SubmitError(Kind k, const std::string& msg, std::string param = "") : Error(msg), kind(k), param(std::move(param)) {}
    Kind kind;
    std::string param;  // the request field to change ("max_tokens"), when one
};

class Engine {
public:
    Engine(StepExecutor& exec, const EngineConfig& cfg);
    ~Engine();

    /// Queues a request; events go to `sink`. Throws SubmitError (Invalid: names what is wrong;
    /// Overloaded: queue full, retry later).
    uint64_t submit(EngineRequest req, EventSink sink);
    /// Ends a request at the next step with `reason` (Cancelled by default); unknown ids are ignored.
    void cancel(uint64_t id, FinishReason reason = FinishReason::Cancelled);
    EngineStats stats() const;

    /// Runs one scheduling step; false when there was nothing to run.
    bool step();
    /// Steps until `should_stop()` returns true (checked between steps and while idle); sends
    /// heartbeats to the followers while idle.
    void run(const std::function<bool()>& should_stop);
    void run(const std::atomic<bool>& stop) {
        run([&stop] { return stop.load(); });
    }
    /// Ends every request with `reason`/`message` (shutdown, lost rank).
    void abort_all(FinishReason reason, const std::string& message);
    /// Wakes run() (new work or stop).
    void notify();
    /// Runs `task` on the engine thread between steps (before the next step's scheduling), where it
    /// may use the executor (adapter loading) and the calls below. Thread-safe.
    void post_control(std::function<void()> task);
    /// Engine thread (control tasks): requests submitted, queued or running with adapter `id`.
    int64_t requests_with_adapter(int32_t id) const;
    /// Engine thread (control tasks): adapter `id` may now be named by requests, or no longer.
    void adapter_loaded(int32_t id);
    void adapter_unloaded(int32_t id);
    bool idle() const;

    const ModelConfig& model_config() const { return model_cfg_; }
    int64_t max_context() const { return max_context_; }
    /// Most tokens (prompt + generated) one sequence can reach: the context, or the whole KV cache's
    /// token slots plus the last sampled token (which needs no slot), whichever is smaller. A
    /// sequence reaching it ends with finish reason `length`.
    int64_t max_sequence_tokens() const { return max_seq_tokens_; }
    int64_t vocab_limit() const { return vocab_limit_; }
    const SpeculativeConfig& speculative() const { return cfg_.speculative; }

private:
    struct Sequence;
    struct Scheduled {
        Sequence* seq = nullptr;
        int64_t chunk = 0;  // tokens computed this step, proposals included
        std::vector<int32_t> proposals;
        int64_t draft_k = 0;  // draft method: proposals room reserved in `chunk` before drafting
        bool exact_k = false;  // rejection sampling: exactly draft_k proposals, blocks already taken
        std::vector<double> draft_probs;  // rejection sampling: [proposals][vocab_limit] q rows
    };
    /// One plain (non-speculative) sample of a step, drawn before the events go out.
    struct SampleJob {
        size_t index;  // into the step's schedule
        size_t row;    // logits row
        sampling::SampleResult result;
        std::string error;  // non-empty: the sampler refused this sequence's logits
    };
    void sample_plain(const std::vector<Scheduled>& sched);

    void take_inbox();
    void finish(Sequence& s, FinishReason reason, const std::string& error = "");
    bool deliver(Sequence& s, const Event& e);
    void release_blocks(Sequence& s);
    bool ensure_blocks(Sequence& s, int64_t tokens);
    void preempt(Sequence& s);
    void publish_full_blocks(Sequence& s);
    void admit_prefix(Sequence& s);
    BlockKey chain_root(const Sequence& s) const;
    void update_stats_locked();
    /// At most k proposals, cut by what the request and the models allow a step of `s` (max_tokens,
    /// max_sequence_tokens, LongRoPE, the draft's context); no budget or block cuts.
    int64_t proposal_limit(const Sequence& s, int64_t k) const;
    /// proposal_limit within the step's token budget and the free blocks (never preempting).
    int64_t proposal_room(const Sequence& s, int64_t budget) const;
    bool rejection_applies(const Sequence& s) const;
    /// max_loras: `s` may join the running batch with its adapter.
    bool adapter_fits(const Sequence& s) const;
    /// Tokens of `s` a prefill chunk may still take (see prefill_left in engine.cpp).
    int64_t prefill_left(const Sequence& s) const;
    void trim_blocks(Sequence& s);
    /// Ends a step's token for `s`: appends it, sends its event, and finishes the sequence on a
    /// failing sink, a stop token, max_tokens or max_sequence_tokens. False when `s` has finished.
    bool emit_token(Sequence& s, sampling::SampleResult& r);
    // The draft model (speculative method draft).
    void run_draft(std::vector<Scheduled>& sched);
    /// Drops the draft's cache of `s` when its LongRoPE factors change with the sequence's length.
    void prepare_draft(Sequence& s);
    void release_draft(Sequence& s);
    void trim_draft(Sequence& s);

    StepExecutor& exec_;
    ModelConfig model_cfg_;
    EngineConfig cfg_;
    int64_t max_context_;
    int64_t vocab_limit_;
    BlockManager blocks_;
    int64_t max_seq_tokens_;  // after blocks_: initialized from it
    ModelRunner* draft_ = nullptr;           // set with the draft method
    std::optional<BlockManager> draft_blocks_;  // the draft model's cache (no prefix sharing)
    sampling::Sampler sampler_;
    std::vector<sampling::Sampler> samplers_;  // one per OpenMP thread (sample_plain)
    std::vector<SampleJob> jobs_;

    std::map<uint64_t, std::unique_ptr<Sequence>> seqs_;  // engine thread only
    std::deque<Sequence*> waiting_;
    std::vector<Sequence*> running_;
    std::vector<float> logits_;
    std::vector<float> draft_logits_;
    std::vector<int32_t> draft_history_;  // rejection sampling: generated + proposals so far
    std::vector<double> draft_q_;         // rejection sampling: the draft's distribution
    std::vector<sampling::SampleResult> accepted_;

    mutable std::mutex mu_;  // guards the inbox, cancels, stats_ and next_id_
    std::condition_variable cv_;
    std::vector<std::unique_ptr<Sequence>> inbox_;
    std::vector<std::pair<uint64_t, FinishReason>> cancels_;
    std::vector<std::function<void()>> controls_;
    std::vector<int32_t> live_adapters_;  // engine thread
    uint64_t next_id_ = 1;
    EngineStats stats_;
    int64_t queued_count_ = 0;  // inbox + waiting, for admission
};

}  // namespace phi::engine
