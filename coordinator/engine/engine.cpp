// Scheduling policy (one step):
//  1. apply cancels and new requests;
//  2. running sequences first, in admission order: decodes (one token) and unfinished prefill
//     chunks, each taking blocks as it needs them; when none are left the most recently admitted
//     running sequence is preempted (its blocks freed, itself queued first for recomputation);
//  3. then waiting sequences, oldest first (preempted ones first of all), while the batch and the
//     token budget allow: prefix-cache hits are taken, the rest is prefilled in chunks;
//  4. one StepPlan through the executor; sequences whose tokens are now all computed sample.
// Speculative decoding (speculative.h): a decoding sequence may carry proposals after its last
// token; after the step the accepted ones stay, and the rejected ones' KV is rolled back (length,
// block table, blocks back to the pool; only blocks of accepted tokens are ever published).
// LongRoPE: a sequence whose length passes original_max_position_embeddings while its cache was
// computed with short factors is recomputed from scratch with long factors (HF's rule).
#include "coordinator/engine/engine.h"

#include <omp.h>

#include <algorithm>

#include "common/error.h"
#include "common/user_message.h"
#include "common/log.h"
#include "worker/generate.h"

namespace phi::engine {

const char* finish_reason_name(FinishReason r) {
    switch (r) {
        case FinishReason::Stop: return "stop";
        case FinishReason::Length: return "length";
        case FinishReason::Cancelled: return "cancelled";
        case FinishReason::Error: return "error";
    }
    return "error";
}

struct Engine::Sequence {
    uint64_t id = 0;
    EngineRequest req;
    EventSink sink;
    std::vector<int32_t> tokens;  // prompt + generated
    int64_t prompt_len = 0;
    int64_t computed = 0;         // tokens whose K/V are in this sequence's blocks
    std::vector<int32_t> blocks;
    int64_t published = 0;        // leading blocks already published to the prefix cache
    BlockKey last_key{};          // key chain up to `published` (valid when published > 0)
    bool long_rope = false;
    bool finished = false;
    std::string sink_error;  // what the sink threw, when it did
    int64_t cached_prompt_tokens = 0;
    uint64_t rng_seed = 0;
    // The draft model's cache of this sequence (speculative method draft): its own blocks, valid
    // for tokens [0, draft_computed), computed with long RoPE factors when draft_long_rope.
    std::vector<int32_t> draft_blocks;
    int64_t draft_computed = 0;
    bool draft_long_rope = false;

    int64_t generated() const { return int64_t(tokens.size()) - prompt_len; }
};

Engine::Engine(StepExecutor& exec, const EngineConfig& cfg)
    : exec_(exec),
      model_cfg_(exec.model().config()),
      cfg_(cfg),
      max_context_(cfg.max_context > 0 ? cfg.max_context : exec.model().config().max_position_embeddings),
      vocab_limit_(cfg.vocab_limit > 0 ? std::min(cfg.vocab_limit, model_cfg_.vocab_size) : model_cfg_.vocab_size),
      blocks_(exec.model().kv_blocks(), exec.model().block_size()),
      max_seq_tokens_(std::min(max_context_, blocks_.num_blocks() * blocks_.block_size() + 1)) {
    PHI_CHECK(cfg_.max_num_seqs > 0 && cfg_.max_batched_tokens > 0, "max_num_seqs and max_batched_tokens must be > 0");
    PHI_CHECK(max_context_ > 0, "max context must be > 0");
    if (cfg_.speculative.method != SpeculativeConfig::Method::Off) cfg_.speculative.validate();
    PHI_CHECK(!cfg_.speculative.rejection_sampling || cfg_.speculative.method == SpeculativeConfig::Method::Draft,
              "speculative rejection sampling needs the draft method (it compares the draft's distribution with "
              "the target's)");
    if (cfg_.speculative.method == SpeculativeConfig::Method::Draft) {
        draft_ = exec.draft();
        PHI_CHECK(draft_, "speculative method draft needs a draft model (speculative.draft_model), and none was loaded");
        PHI_CHECK(draft_->config().vocab_size >= vocab_limit_,
                  "the draft model's vocabulary has {} entries but the served tokenizer has {}: a draft model must "
                  "share the served model's tokenizer",
                  draft_->config().vocab_size, vocab_limit_);
        draft_blocks_.emplace(draft_->kv_blocks(), draft_->block_size());
        // Rejection sampling never cuts a step's proposals for the budget (the tokens would then
        // depend on the load), so the budget must hold every sequence's whole verification.
        PHI_CHECK(!cfg_.speculative.rejection_sampling ||
                      cfg_.max_batched_tokens >= cfg_.max_num_seqs * (1 + int64_t(cfg_.speculative.k)),
                  "speculative rejection sampling with k {} needs max_batched_tokens >= max_num_seqs x (1 + k) = {} "
                  "(it is {}): raise it, lower max_num_seqs or k",
                  cfg_.speculative.k, cfg_.max_num_seqs * (1 + int64_t(cfg_.speculative.k)), cfg_.max_batched_tokens);
        stats_.draft_kv_blocks_total = draft_blocks_->num_blocks();
    }
    stats_.kv_blocks_total = blocks_.num_blocks();
    live_adapters_ = cfg_.adapters;
    update_stats_locked();
}

Engine::~Engine() = default;

uint64_t Engine::submit(EngineRequest req, EventSink sink) {
    if (req.prompt.empty()) throw SubmitError(SubmitError::Kind::Invalid, "the prompt is empty");
    if (req.adapter < 0) throw SubmitError(SubmitError::Kind::Invalid, "the adapter id is negative");
    for (int32_t t : req.prompt)
        if (t < 0 || t >= vocab_limit_)
            throw SubmitError(SubmitError::Kind::Invalid,
                              fmt::format("prompt token id {} is outside the vocabulary [0, {})", t, vocab_limit_));
    try {
        req.params.validate(vocab_limit_);
    } catch (const Error& e) {
        throw SubmitError(SubmitError::Kind::Invalid, user_message(e));
    }
    const int64_t P = int64_t(req.prompt.size());
    if (P >= max_context_)
        throw SubmitError(SubmitError::Kind::Invalid,
                          fmt::format("the prompt has {} tokens; this server's context is {} tokens, which leaves no "
                                      "room to generate",
                                      P, max_context_));
    // A sequence never needs more KV slots than the whole cache (see max_sequence_tokens): what
    // could only run by outgrowing it is refused here rather than stalling the queue later.
    const int64_t cache_tokens = blocks_.num_blocks() * blocks_.block_size();
    if (P >= max_seq_tokens_)
        throw SubmitError(SubmitError::Kind::Invalid,
                          fmt::format("the prompt has {} tokens but this server's whole KV cache holds {} tokens, "
                                      "which leaves no room to generate",
                                      P, cache_tokens));
    if (req.params.max_tokens && P + *req.params.max_tokens > max_seq_tokens_)
        throw SubmitError(
            SubmitError::Kind::Invalid,
            fmt::format("the prompt's {} tokens plus max_tokens {} exceed the {} tokens one sequence can reach on "
                        "this server (its whole KV cache holds {} tokens); lower max_tokens to at most {}",
                        P, *req.params.max_tokens, max_seq_tokens_, cache_tokens, max_seq_tokens_ - P),
            "max_tokens");
    auto s = std::make_unique<Sequence>();
    s->prompt_len = P;
    s->tokens = req.prompt;
    s->rng_seed = req.params.seed.value_or(sampling::random_seed());
    s->req = std::move(req);
    s->sink = std::move(sink);
    uint64_t id;
    {
        std::lock_guard lock(mu_);
        if (queued_count_ >= cfg_.max_queued) {
            ++stats_.rejected;
            throw SubmitError(SubmitError::Kind::Overloaded,
                              fmt::format("the server is at capacity ({} requests queued); retry later", queued_count_));
        }
        id = next_id_++;
        s->id = id;
        inbox_.push_back(std::move(s));
        ++queued_count_;
    }
    cv_.notify_all();
    return id;
}

void Engine::cancel(uint64_t id, FinishReason reason) {
    {
        std::lock_guard lock(mu_);
        cancels_.emplace_back(id, reason);
    }
    cv_.notify_all();
}

void Engine::notify() { cv_.notify_all(); }

void Engine::post_control(std::function<void()> task) {
    {
        std::lock_guard lock(mu_);
        controls_.push_back(std::move(task));
    }
    cv_.notify_all();
}

int64_t Engine::requests_with_adapter(int32_t id) const {
    int64_t n = 0;
    for (const auto& [sid, s] : seqs_)
        if (!s->finished && s->req.adapter == id) ++n;
    std::lock_guard lock(mu_);  // submitted since the step began: not taken in yet
    for (const auto& s : inbox_)
        if (s->req.adapter == id) ++n;
    return n;
}

void Engine::adapter_loaded(int32_t id) {
    if (std::find(live_adapters_.begin(), live_adapters_.end(), id) == live_adapters_.end()) live_adapters_.push_back(id);
}

void Engine::adapter_unloaded(int32_t id) {
    live_adapters_.erase(std::remove(live_adapters_.begin(), live_adapters_.end(), id), live_adapters_.end());
}

EngineStats Engine::stats() const {
    std::lock_guard lock(mu_);
    return stats_;
}

bool Engine::idle() const { return running_.empty() && waiting_.empty(); }

void Engine::update_stats_locked() {
    stats_.queued = queued_count_;
    stats_.running = int64_t(running_.size());
    stats_.kv_blocks_used = blocks_.num_used();
    stats_.kv_blocks_free = blocks_.num_available();
    stats_.kv_blocks_cached_idle = blocks_.num_cached_idle();
    stats_.prefix_cache_hits = blocks_.hits();
    if (draft_blocks_) stats_.draft_kv_blocks_used = draft_blocks_->num_used();
}

void Engine::take_inbox() {
    std::vector<std::unique_ptr<Sequence>> inbox;
    std::vector<std::pair<uint64_t, FinishReason>> cancels;
    {
        std::lock_guard lock(mu_);
        inbox.swap(inbox_);
        cancels.swap(cancels_);
    }
    for (auto& s : inbox) {
        waiting_.push_back(s.get());
        Sequence& seq = *s;
        seqs_[s->id] = std::move(s);
        // Checked here, on the thread that issues every step: an adapter unloaded after the request
        // was accepted never reaches a rank.
        if (seq.req.adapter != 0 &&
            std::find(live_adapters_.begin(), live_adapters_.end(), seq.req.adapter) == live_adapters_.end())
            finish(seq, FinishReason::Error, "the request's LoRA adapter is not loaded (it was unloaded)");
    }
    for (auto [id, reason] : cancels) {
        auto it = seqs_.find(id);
        if (it != seqs_.end() && !it->second->finished) finish(*it->second, reason);
    }
    const auto now = std::chrono::steady_clock::now();
    for (auto& [id, s] : seqs_)
        if (!s->finished && s->req.deadline && now > *s->req.deadline)
            finish(*s, FinishReason::Error, "the request did not finish before its deadline");
}

void Engine::release_blocks(Sequence& s) {
    for (int32_t b : s.blocks) blocks_.release(b);
    s.blocks.clear();
    s.computed = 0;
    s.published = 0;
    release_draft(s);
}

void Engine::release_draft(Sequence& s) {
    for (int32_t b : s.draft_blocks) draft_blocks_->release(b);
    s.draft_blocks.clear();
    s.draft_computed = 0;
}

namespace {
// Grows `blocks` from `pool` to cover `tokens` slots; false (with what it got kept) when it ran out.
bool grow_blocks(BlockManager& pool, std::vector<int32_t>& blocks, int64_t tokens) {
    const int64_t need = (tokens + pool.block_size() - 1) / pool.block_size();
    while (int64_t(blocks.size()) < need) {
        auto b = pool.allocate();
        if (!b) return false;
        blocks.push_back(*b);
    }
    return true;
}

// Gives back the blocks of `blocks` past the ones covering `tokens` slots.
void shrink_blocks(BlockManager& pool, std::vector<int32_t>& blocks, int64_t tokens) {
    const int64_t need = (tokens + pool.block_size() - 1) / pool.block_size();
    while (int64_t(blocks.size()) > need) {
        pool.release(blocks.back());
        blocks.pop_back();
    }
}

// The id of a row's largest value below `limit` (the lowest such id on ties). With argmax_limit
// over several ranks the row is 0 at the winner and -inf elsewhere, which this reads the same way.
int32_t row_argmax(const float* row, int64_t limit) {
    int64_t best = 0;
    for (int64_t i = 1; i < limit; ++i)
        if (row[i] > row[best]) best = i;
    return int32_t(best);
}
}  // namespace

void Engine::prepare_draft(Sequence& s) {
    const bool long_now = uses_long_rope(draft_->config(), int64_t(s.tokens.size()));
    if (long_now == s.draft_long_rope) return;
    release_draft(s);  // keys computed with the other factors cannot be reused
    s.draft_long_rope = long_now;
}

void Engine::trim_draft(Sequence& s) { shrink_blocks(*draft_blocks_, s.draft_blocks, s.draft_computed); }

BlockKey Engine::chain_root(const Sequence& s) const {
    return prefix_root(PrefixCacheScope{s.long_rope, s.req.cache_salt, s.req.adapter});
}

void Engine::finish(Sequence& s, FinishReason reason, const std::string& error) {
    if (s.finished) return;
    s.finished = true;
    const bool was_waiting = std::find(waiting_.begin(), waiting_.end(), &s) != waiting_.end();
    release_blocks(s);
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &s), waiting_.end());
    running_.erase(std::remove(running_.begin(), running_.end(), &s), running_.end());
    Event e;
    e.kind = Event::Kind::Finished;
    e.request_id = s.id;
    e.reason = reason;
    e.error = error;
    e.prompt_tokens = s.prompt_len;
    e.completion_tokens = s.generated();
    e.cached_prompt_tokens = s.cached_prompt_tokens;
    {
        std::lock_guard lock(mu_);
        if (was_waiting) --queued_count_;
        switch (reason) {
            case FinishReason::Stop: ++stats_.finished_stop; break;
            case FinishReason::Length: ++stats_.finished_length; break;
            case FinishReason::Cancelled: ++stats_.finished_cancelled; break;
            case FinishReason::Error: ++stats_.finished_error; break;
        }
    }
    if (!deliver(s, e)) s.sink = nullptr;  // its last event failed too: nothing more can be said
}

// A sink is rank 0's own code (detokenizer, stop matcher, transports), outside the step's
// collectives: an exception there concerns one request, never the cluster. The caller ends the
// sequence when this returns false; the error path calls the sink once more (for the Finished
// event), itself contained.
bool Engine::deliver(Sequence& s, const Event& e) {
    if (!s.sink) return true;
    try {
        s.sink(e);
        return true;
    } catch (const std::exception& ex) {
        log().error("request {}: handling its output failed: {}; ending it with an error", s.id, ex.what());
        s.sink_error = ex.what();
    } catch (...) {
        log().error("request {}: handling its output failed (unknown exception); ending it with an error", s.id);
        s.sink_error = "unknown exception";
    }
    return false;
}

bool Engine::ensure_blocks(Sequence& s, int64_t tokens) { return grow_blocks(blocks_, s.blocks, tokens); }

void Engine::preempt(Sequence& s) {
    release_blocks(s);
    running_.erase(std::remove(running_.begin(), running_.end(), &s), running_.end());
    waiting_.push_front(&s);
    std::lock_guard lock(mu_);
    ++stats_.preemptions;
    ++queued_count_;
}

void Engine::trim_blocks(Sequence& s) { shrink_blocks(blocks_, s.blocks, s.computed); }

int64_t Engine::proposal_limit(const Sequence& s, int64_t k) const {
    const int64_t L = int64_t(s.tokens.size());
    // At most 1 + k tokens come out: stay within max_tokens and what one sequence can reach.
    if (s.req.params.max_tokens) k = std::min<int64_t>(k, *s.req.params.max_tokens - s.generated() - 1);
    k = std::min<int64_t>(k, max_seq_tokens_ - L - 1);
    // LongRoPE: every position of the step must use the factors chosen for its length now, so a
    // verification step never crosses original_max_position_embeddings.
    const bool long_now = uses_long_rope(model_cfg_, L);
    while (k > 0 && uses_long_rope(model_cfg_, L + k) != long_now) --k;
    if (draft_) {
        // The draft's cache reaches L + k - 1 tokens (proposal k - 1 is never fed): within its
        // context and its current LongRoPE factors.
        const ModelConfig& dc = draft_->config();
        k = std::min<int64_t>(k, dc.max_position_embeddings - L + 1);
        const bool draft_long = uses_long_rope(dc, L);
        while (k > 0 && uses_long_rope(dc, L + k - 1) != draft_long) --k;
    }
    return std::max<int64_t>(k, 0);
}

int64_t Engine::proposal_room(const Sequence& s, int64_t budget) const {
    const SpeculativeConfig& sc = cfg_.speculative;
    if (!sc.enabled() || !s.req.speculative) return 0;
    int64_t k = proposal_limit(s, std::min<int64_t>(sc.k, budget - 1));
    // Proposals take blocks only while free ones are left: they never preempt anyone.
    const int64_t L = int64_t(s.tokens.size());
    const int64_t bs = blocks_.block_size();
    const int64_t have = int64_t(s.blocks.size());
    while (k > 0 && (L + k + bs - 1) / bs - have > blocks_.num_available()) --k;
    return k;
}

bool Engine::adapter_fits(const Sequence& s) const {
    if (cfg_.max_loras <= 0 || s.req.adapter == 0) return true;
    std::vector<int32_t> in_batch;
    for (const Sequence* r : running_)
        if (r->req.adapter != 0 && std::find(in_batch.begin(), in_batch.end(), r->req.adapter) == in_batch.end())
            in_batch.push_back(r->req.adapter);
    return std::find(in_batch.begin(), in_batch.end(), s.req.adapter) != in_batch.end() ||
           int64_t(in_batch.size()) < cfg_.max_loras;
}

int64_t Engine::prefill_left(const Sequence& s) const {
    const int64_t left = int64_t(s.tokens.size()) - s.computed;
    // With rejection sampling a generated position is always a verification step with the request's
    // k proposals, also after a preemption or a LongRoPE recompute: the recompute stops one token
    // short, so the tokens never depend on the load.
    if (left > 1 && s.generated() > 0 && rejection_applies(s)) return left - 1;
    return left;
}

bool Engine::rejection_applies(const Sequence& s) const {
    return draft_ && cfg_.speculative.rejection_sampling && s.req.speculative && !s.req.params.greedy();
}

// The draft model proposes for every scheduled sequence that reserved room: round 0 feeds what its
// draft cache lacks (the new tokens since the last step; a whole prompt the first time, within the
// step's token budget) and reads proposal 0 from its last row; round r feeds proposal r - 1 and
// reads proposal r. Each round is one draft step on every rank. Proposals are the draft's greedy
// tokens: verification accepts only what the target's own sampler draws, so they only set the speed.
void Engine::run_draft(std::vector<Scheduled>& sched) {
    struct Job {
        size_t index;  // into sched
        int64_t k;     // proposals wanted (0: only catching up)
        int64_t feed;  // round 0's tokens
    };
    std::vector<Job> jobs;
    int64_t budget = cfg_.max_batched_tokens;
    for (size_t i = 0; i < sched.size(); ++i) {
        Scheduled& x = sched[i];
        if (x.draft_k <= 0) continue;
        Sequence& s = *x.seq;
        const int64_t L = int64_t(s.tokens.size());
        prepare_draft(s);
        if (x.exact_k) {  // its k and its draft blocks were settled at scheduling
            jobs.push_back({i, x.draft_k, L - s.draft_computed});
            continue;
        }
        int64_t k = x.draft_k;  // within the draft's context and factors already (proposal_limit)
        int64_t feed = L - s.draft_computed;
        if (feed > budget) {
            feed = budget;  // catch up over several steps; no proposals until then
            k = 0;
        }
        if (feed <= 0) continue;
        const int64_t fed = s.draft_computed + feed;
        if (!grow_blocks(*draft_blocks_, s.draft_blocks, fed)) {
            release_draft(s);  // its draft cache is full: this sequence decodes plainly
            continue;
        }
        while (k > 1 && !grow_blocks(*draft_blocks_, s.draft_blocks, L + k - 1)) --k;
        budget -= feed;
        jobs.push_back({i, std::max<int64_t>(k, 0), feed});
    }
    int64_t rounds = jobs.empty() ? 0 : 1;
    for (const Job& j : jobs) rounds = std::max(rounds, j.k);
    const int64_t vp = draft_->vocab_padded();
    for (int64_t r = 0; r < rounds; ++r) {
        StepPlan plan;
        plan.model = StepModel::Draft;
        std::vector<const Job*> members;
        for (const Job& j : jobs) {
            if (r > 0 && r >= j.k) continue;
            Sequence& s = *sched[j.index].seq;
            SeqPlan p;
            p.seq_id = int64_t(s.id);
            p.long_rope = s.draft_long_rope;
            // Greedy proposals need only the argmax; rejection sampling, the draft's distribution.
            p.argmax_limit = sched[j.index].exact_k ? 0 : int32_t(vocab_limit_);
            if (r == 0) {
                p.start_pos = s.draft_computed;
                p.tokens.assign(s.tokens.begin() + s.draft_computed, s.tokens.begin() + s.draft_computed + j.feed);
            } else {
                p.start_pos = int64_t(s.tokens.size()) + r - 1;
                p.tokens = {sched[j.index].proposals.back()};
            }
            p.block_table = s.draft_blocks;
            s.draft_computed = p.start_pos + int64_t(p.tokens.size());
            plan.seqs.push_back(std::move(p));
            members.push_back(&j);
        }
        exec_.run(plan, &draft_logits_);
        for (size_t m = 0; m < members.size(); ++m) {
            const Job& j = *members[m];
            if (j.k <= r) continue;
            Scheduled& x = sched[j.index];
            const float* row = draft_logits_.data() + m * size_t(vp);
            if (!x.exact_k) {
                x.proposals.push_back(row_argmax(row, vocab_limit_));
                continue;
            }
            // Drawn from the draft's distribution under the request's own processors, with the
            // earlier proposals in its history, as the target's row will be processed.
            const Sequence& s = *x.seq;
            draft_history_.assign(s.tokens.begin() + s.prompt_len, s.tokens.end());
            draft_history_.insert(draft_history_.end(), x.proposals.begin(), x.proposals.end());
            sampler_.distribution(std::span<const float>(row, size_t(vp)), vocab_limit_,
                                  sampling::TokenHistory{std::span<const int32_t>(s.tokens.data(), size_t(s.prompt_len)),
                                                         draft_history_},
                                  s.req.params, draft_q_);
            x.proposals.push_back(draw_inverse_cdf(
                draft_q_, spec_uniform({s.rng_seed, s.req.stream}, SpecDraw::Draft, uint64_t(draft_history_.size()))));
            x.draft_probs.insert(x.draft_probs.end(), draft_q_.begin(), draft_q_.end());
        }
    }
    {
        std::lock_guard lock(mu_);
        stats_.draft_steps += rounds;
    }
    // What was reserved for proposals and not proposed goes back.
    for (Scheduled& x : sched) {
        if (x.draft_k <= 0) continue;
        x.chunk = 1 + int64_t(x.proposals.size());
        x.draft_k = 0;
        shrink_blocks(blocks_, x.seq->blocks, x.seq->computed + x.chunk);
    }
}

void Engine::publish_full_blocks(Sequence& s) {
    if (!cfg_.prefix_caching) return;
    const int64_t bs = blocks_.block_size();
    while ((s.published + 1) * bs <= s.computed) {
        s.last_key = block_key(s.published == 0 ? chain_root(s) : s.last_key, s.tokens.data() + s.published * bs, bs);
        blocks_.publish(s.blocks[size_t(s.published)], s.last_key);
        ++s.published;
    }
}

void Engine::admit_prefix(Sequence& s) {
    if (!cfg_.prefix_caching || s.computed != 0) return;
    const int64_t bs = blocks_.block_size();
    // Leave at least one token to compute: its logits start generation.
    const int64_t max_blocks = (int64_t(s.tokens.size()) - 1) / bs;
    BlockKey key = chain_root(s);
    for (int64_t i = 0; i < max_blocks; ++i) {
        key = block_key(key, s.tokens.data() + i * bs, bs);
        auto b = blocks_.match(key);
        if (!b) break;
        s.blocks.push_back(*b);
        s.computed += bs;
        s.published = i + 1;
        s.last_key = key;
    }
    if (s.computed > 0) {
        s.cached_prompt_tokens = std::max(s.cached_prompt_tokens, std::min(s.computed, s.prompt_len));
        std::lock_guard lock(mu_);
        stats_.prefix_cache_hit_tokens += s.computed;
    }
}

bool Engine::emit_token(Sequence& s, sampling::SampleResult& r) {
    s.tokens.push_back(r.id);
    Event e;
    e.kind = Event::Kind::Token;
    e.request_id = s.id;
    e.token = r.id;
    e.index = s.generated() - 1;
    e.logprob = r.logprob;
    e.top_logprobs = std::move(r.top_logprobs);
    if (!deliver(s, e)) {
        finish(s, FinishReason::Error,
               fmt::format("the server failed while producing this request's output: {}", s.sink_error));
        return false;
    }
    if (s.finished) return false;  // the sink may not cancel synchronously, but be safe
    if (sampling::is_stop_token(s.req.params, cfg_.eos_ids, r.id)) {
        finish(s, FinishReason::Stop);
    } else if ((s.req.params.max_tokens && s.generated() >= *s.req.params.max_tokens) ||
               int64_t(s.tokens.size()) >= max_seq_tokens_) {
        // At max_seq_tokens_ the next step would need more blocks than the whole cache (or pass
        // the context): only then does the sequence end here; short of it, a lack of free blocks
        // preempts it instead, so its output never depends on other traffic.
        finish(s, FinishReason::Length);
    }
    return !s.finished;
}

// Every plain sample of the step, in parallel over sequences: a draw depends only on the
// sequence's logits row, history, parameters and Philox stream, never on the thread or the other
// sequences, so the tokens are those of one thread. Events still go out in schedule order.
void Engine::sample_plain(const std::vector<Scheduled>& sched) {
    const int64_t vp = exec_.model().vocab_padded();
    jobs_.resize(sched.size());  // keeps each result's storage from step to step
    size_t n = 0, row = 0;
    for (size_t i = 0; i < sched.size(); ++i) {
        const Sequence& s = *sched[i].seq;
        const std::vector<int32_t>& proposals = sched[i].proposals;
        if (proposals.empty() && s.computed + sched[i].chunk >= int64_t(s.tokens.size())) {
            jobs_[n].index = i;
            jobs_[n].row = row;
            ++n;
        }
        row += proposals.empty() ? 1 : 1 + proposals.size();
    }
    jobs_.resize(n);
    const size_t threads = size_t(std::max(1, omp_get_max_threads()));
    if (samplers_.size() < threads) samplers_.resize(threads);
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (size_t j = 0; j < n; ++j) {
        SampleJob& job = jobs_[j];
        const Sequence& s = *sched[job.index].seq;
        job.error.clear();
        const std::span<const float> row_logits(logits_.data() + job.row * size_t(vp), size_t(vp));
        const sampling::TokenHistory hist{
            std::span<const int32_t>(s.tokens.data(), size_t(s.prompt_len)),
            std::span<const int32_t>(s.tokens.data() + s.prompt_len, size_t(s.generated()))};
        try {  // nothing may leave an OpenMP region
            samplers_[size_t(omp_get_thread_num())].sample(row_logits, vocab_limit_, hist, s.req.params,
                                                           {s.rng_seed, s.req.stream}, job.result);
        } catch (const Error& e) {
            job.error = user_message(e);
        } catch (const std::exception& e) {
            job.error = fmt::format("sampling failed: {}", e.what());
        }
    }
}

bool Engine::step() {
    const auto t_start = std::chrono::steady_clock::now();
    take_inbox();
    std::vector<std::function<void()>> controls;
    {
        std::lock_guard lock(mu_);
        controls.swap(controls_);
    }
    for (auto& task : controls) task();

    std::vector<Scheduled> sched;
    int64_t budget = cfg_.max_batched_tokens;

    // Running sequences, decodes before unfinished prefills (both in admission order).
    std::vector<Sequence*> order;
    for (Sequence* s : running_)
        if (int64_t(s->tokens.size()) - s->computed == 1) order.push_back(s);
    for (Sequence* s : running_)
        if (int64_t(s->tokens.size()) - s->computed > 1) order.push_back(s);
    for (Sequence* s : order) {
        if (s->finished || std::find(running_.begin(), running_.end(), s) == running_.end()) continue;
        if (budget <= 0) break;
        const bool need_long = uses_long_rope(model_cfg_, int64_t(s->tokens.size()));
        if (need_long && !s->long_rope) {
            release_blocks(*s);  // keys computed with short factors cannot be reused
            s->long_rope = true;
        }
        std::vector<int32_t> proposals;
        int64_t draft_k = 0;  // the draft model proposes after scheduling (run_draft)
        const bool exact_k = int64_t(s->tokens.size()) - s->computed == 1 && rejection_applies(*s);
        if (exact_k) {
            // From the request and its length alone, never the load: the tokens must not depend on it.
            draft_k = proposal_limit(*s, cfg_.speculative.k);
        } else if (int64_t(s->tokens.size()) - s->computed == 1) {
            const int64_t room = proposal_room(*s, budget);
            if (draft_)
                draft_k = room;
            else if (room > 0)
                proposals = ngram_propose(s->tokens, cfg_.speculative.ngram_min, cfg_.speculative.ngram_max, room);
        }
        const int64_t chunk = std::min<int64_t>(prefill_left(*s), budget) + int64_t(proposals.size()) + draft_k;
        // Blocks for the step (and, with exact proposals, the draft's): preempt the most recently
        // admitted sequence until they fit.
        auto fits = [&] {
            if (!ensure_blocks(*s, s->computed + chunk)) return false;
            if (!exact_k || draft_k == 0) return true;
            prepare_draft(*s);
            return grow_blocks(*draft_blocks_, s->draft_blocks, int64_t(s->tokens.size()) + draft_k - 1);
        };
        while (!fits()) {
            Sequence* victim = running_.back();
            preempt(*victim);
            for (auto it = sched.begin(); it != sched.end(); ++it)
                if (it->seq == victim) {
                    budget += it->chunk;
                    sched.erase(it);
                    break;
                }
            if (victim == s) break;
        }
        if (std::find(running_.begin(), running_.end(), s) == running_.end()) continue;  // preempted itself
        Scheduled x;
        x.seq = s;
        x.chunk = chunk;
        x.proposals = std::move(proposals);
        x.draft_k = draft_k;
        x.exact_k = exact_k;
        sched.push_back(std::move(x));
        budget -= chunk;
    }

    // Waiting sequences, oldest (or preempted) first.
    while (!waiting_.empty() && budget > 0 && int64_t(running_.size()) < cfg_.max_num_seqs) {
        Sequence* s = waiting_.front();
        if (!adapter_fits(*s)) break;  // waits first in line until an adapter leaves the batch
        s->long_rope = uses_long_rope(model_cfg_, int64_t(s->tokens.size()));
        admit_prefix(*s);
        const int64_t chunk = std::min<int64_t>(prefill_left(*s), budget);
        if (!ensure_blocks(*s, s->computed + chunk)) {
            release_blocks(*s);
            break;
        }
        waiting_.pop_front();
        running_.push_back(s);
        {
            std::lock_guard lock(mu_);
            --queued_count_;
        }
        if (chunk == 0) continue;  // only its last token is left: a verification step next time
        Scheduled x;
        x.seq = s;
        x.chunk = chunk;
        sched.push_back(std::move(x));
        budget -= chunk;
    }

    if (sched.empty()) {
        std::lock_guard lock(mu_);
        update_stats_locked();
        return false;
    }
    if (draft_) run_draft(sched);

    StepPlan plan;
    plan.seqs.reserve(sched.size());
    for (const Scheduled& x : sched) {
        SeqPlan p;
        p.seq_id = int64_t(x.seq->id);
        p.start_pos = x.seq->computed;
        const int64_t own = x.chunk - int64_t(x.proposals.size());
        p.tokens.assign(x.seq->tokens.begin() + x.seq->computed, x.seq->tokens.begin() + x.seq->computed + own);
        p.tokens.insert(p.tokens.end(), x.proposals.begin(), x.proposals.end());
        p.block_table = x.seq->blocks;
        p.long_rope = x.seq->long_rope;
        p.adapter = x.seq->req.adapter;
        p.all_logits = !x.proposals.empty();  // a verification step: one row per token
        const sampling::SamplingParams& sp = x.seq->req.params;
        if (sp.greedy() && !x.seq->req.want_logprobs && sp.repetition_penalty == 1.0f && sp.presence_penalty == 0.0f &&
            sp.frequency_penalty == 0.0f)
            p.argmax_limit = int32_t(vocab_limit_);
        plan.seqs.push_back(std::move(p));
    }
    {
        std::lock_guard lock(mu_);
        stats_.step_allowance = exec_.allowance(plan);
    }
    const auto t_fwd = std::chrono::steady_clock::now();
    exec_.run(plan, &logits_);
    const auto t_sample = std::chrono::steady_clock::now();

    const int64_t vp = exec_.model().vocab_padded();
    sample_plain(sched);
    size_t next_job = 0;
    int64_t new_prompt = 0, new_gen = 0, proposed = 0, accepted = 0, seq_samples = 0, sampled_tokens = 0;
    size_t row0 = 0;  // first logits row of sched[i]
    for (size_t i = 0; i < sched.size(); ++i) {
        Sequence& s = *sched[i].seq;
        const std::vector<int32_t>& proposals = sched[i].proposals;
        const size_t rows = proposals.empty() ? 1 : 1 + proposals.size();
        const size_t row = row0;
        row0 += rows;
        s.computed += sched[i].chunk;
        new_prompt += std::max<int64_t>(0, std::min(s.computed, s.prompt_len) - (s.computed - sched[i].chunk));
        if (!proposals.empty()) {
            accepted_.clear();
            try {
                const std::span<const float> vrows(logits_.data() + row * size_t(vp), rows * size_t(vp));
                const std::span<const int32_t> prompt(s.tokens.data(), size_t(s.prompt_len));
                const std::span<const int32_t> generated(s.tokens.data() + s.prompt_len, size_t(s.generated()));
                if (sched[i].draft_probs.empty())
                    verify_proposals(sampler_, vrows, vp, vocab_limit_, prompt, generated, proposals, s.req.params,
                                     {s.rng_seed, s.req.stream}, accepted_);
                else
                    verify_rejection(sampler_, vrows, vp, vocab_limit_, prompt, generated, proposals,
                                     sched[i].draft_probs, s.req.params, {s.rng_seed, s.req.stream}, accepted_);
            } catch (const Error& e) {
                finish(s, FinishReason::Error, user_message(e));
                continue;
            }
            const int64_t taken = int64_t(accepted_.size()) - 1;  // proposals accepted
            proposed += int64_t(proposals.size());
            accepted += taken;
            ++seq_samples;
            if (draft_) {
                // The draft's cache holds the history and its proposals; those past the accepted
                // ones are rolled back like the target's.
                s.draft_computed = std::min(s.draft_computed, int64_t(s.tokens.size()) + taken);
                trim_draft(s);
            }
            for (sampling::SampleResult& r : accepted_) {
                ++new_gen;
                ++sampled_tokens;
                if (!emit_token(s, r)) break;
            }
            if (s.finished) continue;
            // Roll back the rejected proposals: the cache is valid up to the last accepted
            // proposal; the target's own token is computed next step.
            s.computed = std::min(s.computed, int64_t(s.tokens.size()) - 1);
            trim_blocks(s);
            publish_full_blocks(s);
            continue;
        }
        publish_full_blocks(s);
        if (s.computed < int64_t(s.tokens.size())) continue;  // prefill continues next step
        PHI_CHECK(next_job < jobs_.size() && jobs_[next_job].index == i && jobs_[next_job].row == row,
                  "engine: the step's samples do not follow its schedule (entry {})", i);
        SampleJob& job = jobs_[next_job++];
        if (!job.error.empty()) {
            finish(s, FinishReason::Error, job.error);
            continue;
        }
        ++new_gen;
        ++seq_samples;
        ++sampled_tokens;
        emit_token(s, job.result);
    }
    // Finished sequences are dropped here, after their events went out.
    for (auto it = seqs_.begin(); it != seqs_.end();) it = it->second->finished ? seqs_.erase(it) : std::next(it);

    const auto t_end = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    ++stats_.steps;
    stats_.prompt_tokens += new_prompt;
    stats_.generated_tokens += new_gen;
    stats_.spec_proposed += proposed;
    stats_.spec_accepted += accepted;
    stats_.decode_seq_steps += seq_samples;
    stats_.decode_tokens += sampled_tokens;
    stats_.forward_seconds += std::chrono::duration<double>(t_sample - t_fwd).count();
    stats_.sample_seconds += std::chrono::duration<double>(t_end - t_sample).count();
    stats_.last_step_seconds = std::chrono::duration<double>(t_end - t_start).count();
    stats_.step_seconds += stats_.last_step_seconds;
    stats_.last_step_end = t_end;
    stats_.comm_all_reduce_seconds = exec_.comm().stats().all_reduce_seconds;
    stats_.rank_times = exec_.rank_times();
    update_stats_locked();
    return true;
}

void Engine::abort_all(FinishReason reason, const std::string& message) {
    take_inbox();
    for (auto& [id, s] : seqs_) finish(*s, reason, message);
    seqs_.clear();
    std::lock_guard lock(mu_);
    update_stats_locked();
}

void Engine::run(const std::function<bool()>& should_stop) {
    auto last_beat = std::chrono::steady_clock::now();
    while (!should_stop()) {
        if (step()) {
            last_beat = std::chrono::steady_clock::now();
            continue;
        }
        {
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, std::min<std::chrono::milliseconds>(cfg_.heartbeat / 2, std::chrono::milliseconds(100)),
                         [&] { return !inbox_.empty() || !cancels_.empty() || !controls_.empty(); });
        }
        const auto now = std::chrono::steady_clock::now();
        if (now - last_beat >= cfg_.heartbeat) {
            {
                StepPlan beat;
                beat.kind = StepKind::Heartbeat;
                std::lock_guard lock(mu_);
                stats_.step_allowance = exec_.allowance(beat);
            }
            exec_.heartbeat();
            last_beat = now;
            std::lock_guard lock(mu_);
            stats_.last_step_end = now;
        }
    }
}

}  // namespace phi::engine
