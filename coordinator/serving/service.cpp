// Per request: n engine sequences (one per choice), each with an incremental detokenizer and a
// stop-string matcher. A stop string ends its choice at once (the engine is told to drop the
// sequence; tokens it produced meanwhile are ignored).
#include "coordinator/serving/service.h"

#include <fmt/format.h>

#include "common/log.h"
#include "common/user_message.h"
#include "coordinator/chat/chat_template.h"
#include "coordinator/sampling/stop_matcher.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace phi::serving {

using clock_type = std::chrono::steady_clock;

std::string token_id_text(int32_t id) {
    return fmt::format("token_id:{}", id);
}

class Request {
public:
    struct Choice {
        // Written by the submitting thread after engine.submit returns, read by cancel (any
        // thread); the engine thread uses its events' request_id instead, which it may see first.
        std::atomic<uint64_t> engine_id{0};
        std::unique_ptr<tokenizer::IncrementalDecoder> decoder;
        std::unique_ptr<sampling::StopMatcher> stop;
        bool done = false;
        int64_t tokens = 0;
        clock_type::time_point last_token{};
        std::string outcome;
    };

    Service* svc = nullptr;
    OutputSink sink;
    std::vector<Choice> choices;
    int remaining = 0;
    bool skip_special = true;
    int logprobs = -1;
    std::string served_model;  // the served model or LoRA adapter (metrics)
    clock_type::time_point start = clock_type::now();
    Usage usage;
    std::atomic<bool> muted{false};
    std::atomic<bool> counted_out{false};  // in_flight_ decremented (exactly once)

    /// From the engine thread. An exception in the detokenizer, the stop matcher or the transport's
    /// sink ends this request's choice with an error; it never reaches the engine.
    void on_event(int c, const engine::Event& e);
    /// Ends choice `c` with finish_reason "error" and `error` (a request that never reached the engine).
    void end_choice_with_error(int c, const std::string& error) { choice_done(c, "error", error, ""); }

private:
    void handle_event(int c, const engine::Event& e);
    void fail_choice(int c, const std::string& what);
    void deliver(const OutputEvent& ev);
    bool failing_ = false;  // deliver's error path is running
    void choice_done(int c, const std::string& reason, const std::string& error, std::string tail);
    std::string token_text(int32_t id) const {
        if (!svc->tok_) return token_id_text(id);
        return svc->tok_->id_to_token(id).has_value() ? svc->tok_->decode(std::span<const int32_t>(&id, 1), false) : "";
    }
};

void Request::choice_done(int c, const std::string& reason, const std::string& error, std::string tail) {
    Choice& ch = choices[size_t(c)];
    if (ch.done) return;
    ch.done = true;
    ch.outcome = reason;
    usage.completion_tokens += ch.tokens;
    OutputEvent ev;
    ev.kind = OutputEvent::Kind::ChoiceDone;
    ev.choice = c;
    ev.text = std::move(tail);
    ev.finish_reason = reason;
    ev.error = error;
    deliver(ev);
    if (--remaining > 0) return;
    // Every choice is done: the request's outcome is its worst choice's.
    std::string outcome = choices[0].outcome;
    for (const Choice& x : choices)
        if (x.outcome == "error" || (x.outcome == "cancelled" && outcome != "error")) outcome = x.outcome;
    svc->metrics_.count_request(outcome);
    svc->metrics_.e2e.observe(std::chrono::duration<double>(clock_type::now() - start).count());
    if (!counted_out.exchange(true)) svc->in_flight_.fetch_sub(1);
    OutputEvent done;
    done.kind = OutputEvent::Kind::Done;
    done.usage = usage;
    deliver(done);
}

// The transport's sink failing (formatting, queueing) ends the request with an error, told through
// the same sink; when that fails too the request is muted. Either way its choices leave the engine
// and the request leaves the in-flight count.
void Request::deliver(const OutputEvent& ev) {
    if (muted) return;
    std::string what;
    try {
        sink(ev);
        return;
    } catch (const std::exception& ex) {
        what = ex.what();
    }
    log().error("a request's transport failed to take its output: {}; ending the request with an error", what);
    if (failing_) {
        muted = true;  // the error path failed as well: nothing more can be said
        return;
    }
    failing_ = true;
    for (int c = 0; c < int(choices.size()); ++c) {
        if (choices[size_t(c)].done) continue;
        svc->engine_.cancel(choices[size_t(c)].engine_id, engine::FinishReason::Error);
        choice_done(c, "error", fmt::format("the server failed while sending this request's output: {}", what), "");
    }
}

void Request::fail_choice(int c, const std::string& what) {
    log().error("handling a request's output failed: {}; ending it with an error", what);
    Choice& ch = choices[size_t(c)];
    if (ch.done) return;
    svc->engine_.cancel(ch.engine_id, engine::FinishReason::Error);  // ignored when already finished
    choice_done(c, "error", fmt::format("the server failed while producing this request's output: {}", what), "");
}

void Request::on_event(int c, const engine::Event& e) {
    try {
        handle_event(c, e);
    } catch (const std::exception& ex) {
        fail_choice(c, ex.what());
    }
}

void Request::handle_event(int c, const engine::Event& e) {
    Choice& ch = choices[size_t(c)];
    if (ch.done) return;  // stopped by a stop string; the engine's own finish follows
    if (e.kind == engine::Event::Kind::Finished) {
        usage.cached_prompt_tokens = std::max(usage.cached_prompt_tokens, e.cached_prompt_tokens);
        svc->metrics().count_adapter_tokens(served_model, e.completion_tokens);
        std::string tail = ch.decoder ? ch.decoder->flush() : std::string();
        auto st = ch.stop->feed(tail);
        tail = st.text + (st.stopped ? "" : ch.stop->flush());
        choice_done(c, st.stopped ? "stop" : engine::finish_reason_name(e.reason), e.error, std::move(tail));
        return;
    }
    const auto now = clock_type::now();
    if (ch.tokens == 0) {
        svc->metrics_.ttft.observe(std::chrono::duration<double>(now - start).count());
    } else {
        svc->metrics_.inter_token.observe(std::chrono::duration<double>(now - ch.last_token).count());
    }
    ch.last_token = now;
    ++ch.tokens;
    const std::string piece = ch.decoder ? ch.decoder->step(e.token) : std::string();
    auto st = ch.stop->feed(piece);
    OutputEvent ev;
    ev.kind = OutputEvent::Kind::Token;
    ev.choice = c;
    ev.index = e.index;
    ev.token_id = e.token;
    ev.text = std::move(st.text);
    ev.logprob = e.logprob;
    if (logprobs > 0)
        for (const auto& t : e.top_logprobs) ev.top_logprobs.push_back({t.id, token_text(t.id), t.logprob});
    deliver(ev);
    if (ch.done) return;  // the transport failed and the choice ended with an error
    if (st.stopped) {
        svc->engine_.cancel(e.request_id, engine::FinishReason::Stop);
        choice_done(c, "stop", "", "");
    }
}

Service::Service(engine::Engine& engine, const tokenizer::Tokenizer* tok, std::string model_name,
                 const ServiceLimits& limits, Metrics& metrics)
    : engine_(engine),
      tok_(tok),
      model_name_(std::move(model_name)),
      limits_(limits),
      metrics_(metrics),
      pool_(limits.prepare_threads, limits.max_preparing) {
    if (tok && !tok->chat_template().empty())
        chat_ = std::make_unique<chat::ChatTemplate>(chat::ChatTemplate::compile(tok->chat_template()));
}

namespace {
[[noreturn]] void ids_only(const std::string& param, const std::string& what) {
    bad_request(param, fmt::format("this server runs in token-ids-only mode (skip_tokenizer_init: true, no "
                                   "tokenizer loaded), so {} cannot be used; send the prompt as token ids ('prompt' as a list "
                                   "of ids over HTTP, 'prompt_ids' in the native protocol)",
                                   what));
}
}  // namespace

Service::~Service() = default;

std::vector<int32_t> Service::prompt_ids(const GenerationRequest& req) const {
    if (!tok_ && req.kind == PromptKind::Text) ids_only("prompt", "a text prompt");
    if (!tok_ && req.kind == PromptKind::Chat) ids_only("messages", "chat messages (they need the chat template and tokenizer)");
    switch (req.kind) {
        case PromptKind::Text: return tok_->encode(req.text, true);
        case PromptKind::Chat: {
            if (!chat_) bad_request("messages", fmt::format("model '{}' has no chat template; use /v1/completions", model_name_));
            nlohmann::ordered_json specials = nlohmann::ordered_json::object();
            if (tok_->bos_token()) specials["bos_token"] = *tok_->bos_token();
            if (tok_->eos_token()) specials["eos_token"] = *tok_->eos_token();
            if (tok_->unk_token()) specials["unk_token"] = *tok_->unk_token();
            if (tok_->pad_token()) specials["pad_token"] = *tok_->pad_token();
            std::string text;
            try {
                text = chat_->render(chat::ChatTemplate::hf_context(req.messages, req.add_generation_prompt, req.tools, specials));
            } catch (const Error& e) {
                bad_request("messages", fmt::format("the chat template rejected these messages: {}", user_message(e)));
            }
            return tok_->encode_chat(text);
        }
        case PromptKind::TokenIds: {
            for (int32_t id : req.token_ids)
                if (id >= engine_.vocab_limit())
                    bad_request("prompt", fmt::format("token id {} is outside the vocabulary [0, {})", id, engine_.vocab_limit()));
            return req.token_ids;
        }
    }
    return {};
}

void Service::fail(const std::string& why) {
    std::lock_guard lock(failed_mu_);
    if (failed_) return;
    failed_why_ = why;
    failed_ = true;
}

PreparedRequest Service::prepare(GenerationRequest req) const {
    if (failed_) {
        std::lock_guard lock(failed_mu_);
        throw ApiError(503, "server_error", failed_why_);
    }
    if (draining_) throw ApiError(503, "server_error", "the server is shutting down; retry on another instance");
    if (!ready_) throw ApiError(503, "server_error", "the server is still loading");
    // `model` names the served model or one of its LoRA adapters (vLLM's rule); the native
    // protocol may name the adapter in `adapter` instead.
    int32_t adapter = 0;
    std::string served = model_name_;
    const std::string& wanted = req.adapter.empty() ? req.model : req.adapter;
    if (!wanted.empty() && wanted != model_name_) {
        std::lock_guard lock(adapters_mu_);
        const auto it = std::find_if(adapters_.begin(), adapters_.end(), [&](const auto& a) { return a.name == wanted; });
        if (it == adapters_.end()) {
            std::string known = "'" + model_name_ + "'";
            for (const auto& a : adapters_) known += ", '" + a.name + "'";
            throw ApiError(404, "not_found_error",
                           fmt::format("the model '{}' does not exist; this server serves {}", wanted, known),
                           req.adapter.empty() ? "model" : "adapter");
        }
        adapter = it->id;
        it->last_used = ++adapter_clock_;
        served = wanted;
    }
    if (!req.adapter.empty() && !req.model.empty() && req.model != served && req.model != model_name_)
        bad_request("model", fmt::format("'model' ({}) and 'adapter' ({}) disagree", req.model, req.adapter));
    if (req.n > limits_.max_n) bad_request("n", fmt::format("'n' must be at most {}", limits_.max_n));
    if (!tok_ && !req.params.stop.empty()) ids_only("stop", "stop strings (use stop_token_ids)");
    std::vector<int32_t> ids = prompt_ids(req);
    const char* prompt_param = req.kind == PromptKind::Chat ? "messages" : "prompt";
    if (ids.empty()) bad_request(prompt_param, "the prompt is empty after tokenization");
    const int64_t ctx = engine_.max_context();
    const int64_t max_prompt = limits_.max_prompt_tokens > 0 ? std::min(limits_.max_prompt_tokens, ctx - 1) : ctx - 1;
    if (int64_t(ids.size()) > max_prompt)
        bad_request(prompt_param, fmt::format("the prompt has {} tokens; at most {} are allowed (context {} tokens)",
                                              ids.size(), max_prompt, ctx));
    if (req.params.max_tokens && int64_t(ids.size()) + *req.params.max_tokens > ctx)
        bad_request(req.max_tokens_param,
                    fmt::format("'{}' {} plus the prompt's {} tokens exceeds the context of {} tokens",
                                req.max_tokens_param, *req.params.max_tokens, ids.size(), ctx));
    try {
        req.params.validate(engine_.vocab_limit());
    } catch (const sampling::InvalidParam& e) {
        bad_request(e.param == "max_tokens" ? req.max_tokens_param : e.param, user_message(e));
    }
    return PreparedRequest{std::move(req), std::move(ids), adapter, std::move(served)};
}

void Service::prepare_async(GenerationRequest req, std::function<void(PrepareResult)> done) {
    auto job = [this, req = std::move(req), done = std::move(done)]() mutable {
        PrepareResult r;
        try {
            r.prepared = prepare(std::move(req));
        } catch (const ApiError& e) {
            r.error = e;
        } catch (const std::exception& e) {
            log().error("preparing a request failed: {}", e.what());
            r.error = ApiError(500, "server_error", user_message(e));
        }
        done(std::move(r));
    };
    if (!pool_.try_post(std::move(job))) {
        metrics_.count_request("rejected_overloaded");
        throw ApiError(429, "rate_limit_error",
                       fmt::format("the server is at capacity ({} requests waiting to be tokenized); retry later",
                                   limits_.max_preparing),
                       "", limits_.retry_after_s);
    }
}

std::shared_ptr<Request> Service::submit(PreparedRequest p, OutputSink sink) {
    if (failed_) {
        std::lock_guard lock(failed_mu_);
        throw ApiError(503, "server_error", failed_why_);
    }
    if (draining_) throw ApiError(503, "server_error", "the server is shutting down; retry on another instance");
    GenerationRequest& req = p.req;
    const std::vector<int32_t>& ids = p.ids;
    const char* prompt_param = req.kind == PromptKind::Chat ? "messages" : "prompt";

    auto r = std::make_shared<Request>();
    r->svc = this;
    r->sink = std::move(sink);
    r->skip_special = req.skip_special_tokens;
    r->logprobs = req.logprobs;
    r->served_model = p.served_model;
    r->remaining = req.n;
    r->usage.prompt_tokens = int64_t(ids.size());
    r->choices = std::vector<Request::Choice>(size_t(req.n));  // built in place: Choice does not move
    for (Request::Choice& ch : r->choices) {
        if (tok_) ch.decoder = std::make_unique<tokenizer::IncrementalDecoder>(*tok_, req.skip_special_tokens);
        ch.stop = std::make_unique<sampling::StopMatcher>(req.params.stop);
    }
    in_flight_.fetch_add(1);
    bool deferred = false;
    // Held from the residency check until the choices are in the engine's inbox: an eviction
    // (make_resident, engine thread) then either counts them as users or finds the adapter no
    // longer resident and this request deferred, never evicts it under an accepted request.
    std::unique_lock residency(adapters_mu_, std::defer_lock);
    if (p.adapter != 0) residency.lock();
    if (p.adapter != 0 && max_cpu_loras_ > 0 && loader_) {
        const auto it = std::find_if(adapters_.begin(), adapters_.end(), [&](const auto& a) { return a.id == p.adapter; });
        deferred = it == adapters_.end() || !it->resident;
    }
    if (deferred) {
        residency.unlock();
        // Its adapter was evicted (lora.max_cpu_loras): it is loaded again on the engine thread,
        // between steps, and the request submitted there; a failure ends the request with the reason.
        engine_.post_control([this, r, p = std::move(p)] {
            std::string error = make_resident(p.adapter);
            if (error.empty()) {
                try {
                    submit_choices(r, p);
                    metrics_.count_adapter_request(p.served_model);
                    return;
                } catch (const engine::SubmitError& e) {
                    error = e.what();
                }
            }
            for (int c = 0; c < int(r->choices.size()); ++c) {
                engine_.cancel(r->choices[size_t(c)].engine_id);
                r->end_choice_with_error(c, error);
            }
        });
        return r;
    }
    try {
        submit_choices(r, p);
        if (residency.owns_lock()) residency.unlock();
    } catch (const engine::SubmitError& e) {
        // (Every path out of here throws, which releases `residency`.)
        // Choices already submitted were cancelled silently; the request no longer counts as in
        // flight (its remaining choices will never report).
        r->muted = true;
        if (!r->counted_out.exchange(true)) in_flight_.fetch_sub(1);
        if (e.kind == engine::SubmitError::Kind::Overloaded) {
            metrics_.count_request("rejected_overloaded");
            throw ApiError(429, "rate_limit_error", e.what(), "", limits_.retry_after_s);
        }
        bad_request(e.param.empty() ? prompt_param : e.param, e.what());
    }
    metrics_.count_adapter_request(p.served_model);
    return r;
}

void Service::submit_choices(const std::shared_ptr<Request>& r, const PreparedRequest& p) {
    const GenerationRequest& req = p.req;
    std::optional<clock_type::time_point> deadline;
    if (limits_.request_deadline.count() > 0) deadline = clock_type::now() + limits_.request_deadline;
    for (int c = 0; c < req.n; ++c) {
        engine::EngineRequest er;
        er.prompt = p.ids;
        er.params = req.params;
        er.stream = uint64_t(c);
        er.want_logprobs = req.logprobs >= 0;
        er.deadline = deadline;
        er.cache_salt = req.cache_salt;
        er.speculative = req.speculative;
        er.adapter = p.adapter;
        try {
            r->choices[size_t(c)].engine_id = engine_.submit(std::move(er), [r, c](const engine::Event& e) { r->on_event(c, e); });
        } catch (const engine::SubmitError&) {
            for (int k = 0; k < c; ++k) engine_.cancel(r->choices[size_t(k)].engine_id);
            throw;
        }
    }
}

std::string Service::make_resident(int32_t id) {
    std::string path;
    std::vector<AdapterEntry> resident;
    {
        std::lock_guard lock(adapters_mu_);
        const auto it = std::find_if(adapters_.begin(), adapters_.end(), [&](const auto& a) { return a.id == id; });
        if (it == adapters_.end()) return "the adapter was unloaded";
        if (it->resident) return "";
        path = it->path;
        for (const auto& a : adapters_)
            if (a.resident) resident.push_back(a);
    }
    // Least recently used first; only adapters no request uses (queued, running or just submitted).
    std::sort(resident.begin(), resident.end(), [](const auto& a, const auto& b) { return a.last_used < b.last_used; });
    int64_t count = int64_t(resident.size());
    for (const AdapterEntry& a : resident) {
        if (max_cpu_loras_ <= 0 || count < max_cpu_loras_) break;
        {
            // One step with submit()'s residency check (see there).
            std::lock_guard lock(adapters_mu_);
            if (engine_.requests_with_adapter(a.id) > 0) continue;
            for (auto& e : adapters_)
                if (e.id == a.id) e.resident = false;
        }
        engine_.adapter_unloaded(a.id);
        loader_->unload_adapter(a.id);
        metrics_.count_lora_event("evicted");
        log().info("LoRA adapter '{}' evicted from memory (max_cpu_loras {})", a.name, max_cpu_loras_);
        --count;
    }
    if (max_cpu_loras_ > 0 && count >= max_cpu_loras_)
        log().warn("loading a LoRA adapter beyond max_cpu_loras {}: every adapter in memory is in use", max_cpu_loras_);
    const std::string error = loader_->load_adapter(id, path);
    if (!error.empty()) return error;
    {
        std::lock_guard lock(adapters_mu_);
        for (auto& e : adapters_)
            if (e.id == id) e.resident = true;
    }
    engine_.adapter_loaded(id);
    metrics_.count_lora_event("loaded");
    return "";
}

void Service::set_adapters(const std::vector<std::pair<std::string, std::string>>& adapters, size_t resident) {
    std::lock_guard lock(adapters_mu_);
    adapters_.clear();
    for (const auto& [name, path] : adapters) {
        AdapterEntry e;
        e.name = name;
        e.id = next_adapter_id_++;
        e.path = path;
        e.resident = adapters_.size() < resident;
        adapters_.push_back(std::move(e));
    }
}

std::vector<std::string> Service::adapters() const {
    std::lock_guard lock(adapters_mu_);
    std::vector<std::string> names;
    for (const auto& a : adapters_) names.push_back(a.name);
    return names;
}

bool Service::adapter_named(const std::string& name) const {
    for (const auto& a : adapters_)
        if (a.name == name) return true;
    return false;
}

ApiError Service::duplicate_adapter(const std::string& name) {
    return ApiError(400, "invalid_request_error", fmt::format("a LoRA adapter named '{}' is already loaded", name),
                    "lora_name");
}

void Service::load_adapter_async(const std::string& name, const std::string& path, AdapterDone done) {
    if (!runtime_loading_ || !loader_)
        return done(ApiError(403, "invalid_request_error",
                             "runtime LoRA loading is off on this server (set lora.allow_runtime_loading: true)"));
    if (name.empty() || name.find_first_of(" \t\n/") != std::string::npos || name == model_name_)
        return done(ApiError(400, "invalid_request_error",
                             "'lora_name' must be a non-empty name without spaces or '/', other than the served "
                             "model's",
                             "lora_name"));
    if (path.empty()) return done(ApiError(400, "invalid_request_error", "'lora_path' is required", "lora_path"));
    int32_t id = 0;
    {
        std::lock_guard lock(adapters_mu_);
        if (adapter_named(name)) return done(duplicate_adapter(name));
        id = next_adapter_id_++;
    }
    engine_.post_control([this, name, path, id, done = std::move(done)] {
        {
            std::lock_guard lock(adapters_mu_);
            // A concurrent load of the same name may have got there first.
            if (adapter_named(name)) return done(duplicate_adapter(name));
            AdapterEntry e;
            e.name = name;
            e.id = id;
            e.path = path;
            e.last_used = ++adapter_clock_;
            adapters_.push_back(std::move(e));
        }
        const std::string error = make_resident(id);
        if (!error.empty()) {
            std::lock_guard lock(adapters_mu_);
            adapters_.erase(std::remove_if(adapters_.begin(), adapters_.end(), [&](const auto& a) { return a.id == id; }),
                            adapters_.end());
            return done(ApiError(400, "invalid_request_error",
                                 fmt::format("LoRA adapter '{}' could not be loaded from {}: {}", name, path, error),
                                 "lora_path"));
        }
        log().info("LoRA adapter '{}' loaded from {} on every rank (id {})", name, path, id);
        done(std::nullopt);
    });
}

void Service::unload_adapter_async(const std::string& name, AdapterDone done) {
    if (!runtime_loading_ || !loader_)
        return done(ApiError(403, "invalid_request_error",
                             "runtime LoRA loading is off on this server (set lora.allow_runtime_loading: true)"));
    engine_.post_control([this, name, done = std::move(done)] {
        int32_t id = 0;
        bool resident = false;
        {
            std::lock_guard lock(adapters_mu_);
            const auto it = std::find_if(adapters_.begin(), adapters_.end(), [&](const auto& a) { return a.name == name; });
            if (it == adapters_.end())
                return done(ApiError(404, "not_found_error", fmt::format("no LoRA adapter named '{}' is loaded", name),
                                     "lora_name"));
            id = it->id;
            resident = it->resident;
            const int64_t users = engine_.requests_with_adapter(id);
            if (users > 0)
                return done(ApiError(409, "invalid_request_error",
                                     fmt::format("LoRA adapter '{}' is in use by {} request(s); unload it when they "
                                                 "have finished",
                                                 name, users),
                                     "lora_name"));
            adapters_.erase(it);  // new requests no longer find it
        }
        engine_.adapter_unloaded(id);  // requests accepted before this end with an error, never reach a rank
        if (resident) loader_->unload_adapter(id);
        log().info("LoRA adapter '{}' unloaded on every rank", name);
        done(std::nullopt);
    });
}

void Service::cancel(const std::shared_ptr<Request>& r) {
    if (!r) return;
    for (const auto& ch : r->choices) engine_.cancel(ch.engine_id);
}

bool Service::healthy(std::string* why) const {
    auto say = [&](const char* w) {
        if (why) *why = w;
        return false;
    };
    if (failed_) {
        std::lock_guard lock(failed_mu_);
        if (why) *why = failed_why_;
        return false;
    }
    if (!ready_) return say("loading");
    if (draining_) return say("draining");
    const auto st = engine_.stats();
    // A step may legitimately run as long as its watchdog allows (a long prefill): only past that.
    if (st.last_step_end.time_since_epoch().count() != 0 &&
        clock_type::now() - st.last_step_end > stall_after + st.step_allowance)
        return say("the engine has not completed a step within its deadline");
    return true;
}

std::string Service::metrics_text() const {
    const auto s = engine_.stats();
    std::string o;
    auto gauge = [&](const char* name, const char* help, double v) {
        o += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, v);
    };
    auto counter = [&](const char* name, const char* help, double v) {
        o += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help, v);
    };
    o += metrics_.render_requests();
    o += metrics_.render_adapters();
    gauge("phi_queue_depth", "Requests waiting to be scheduled.", double(s.queued));
    gauge("phi_running_sequences", "Sequences in the running batch.", double(s.running));
    gauge("phi_in_flight_requests", "Requests submitted and not finished.", double(in_flight_.load()));
    gauge("phi_kv_blocks_total", "KV cache blocks.", double(s.kv_blocks_total));
    gauge("phi_kv_blocks_used", "KV cache blocks referenced by sequences.", double(s.kv_blocks_used));
    gauge("phi_kv_blocks_free", "KV cache blocks available (free or idle prefix cache).", double(s.kv_blocks_free));
    gauge("phi_kv_blocks_cached_idle", "Unreferenced blocks kept for prefix reuse.", double(s.kv_blocks_cached_idle));
    counter("phi_prefix_cache_hits_total", "KV blocks reused from the prefix cache.", double(s.prefix_cache_hits));
    counter("phi_prefix_cache_hit_tokens_total", "Prompt tokens served from the prefix cache.", double(s.prefix_cache_hit_tokens));
    counter("phi_preemptions_total", "Sequences preempted for KV space (recomputed later).", double(s.preemptions));
    counter("phi_prompt_tokens_total", "Prompt tokens computed.", double(s.prompt_tokens));
    counter("phi_generation_tokens_total", "Tokens generated.", double(s.generated_tokens));
    counter("phi_engine_steps_total", "Engine steps run.", double(s.steps));
    counter("phi_rejected_total", "Requests refused because the queue was full.", double(s.rejected));
    counter("phi_step_seconds_total", "Time in engine steps.", s.step_seconds);
    counter("phi_forward_seconds_total", "Time in the model forward (all ranks, incl. collectives).", s.forward_seconds);
    counter("phi_sample_seconds_total", "Time sampling on rank 0.", s.sample_seconds);
    o += "# HELP phi_all_reduce_seconds_total Forward time each rank spent in all-reduces.\n"
         "# TYPE phi_all_reduce_seconds_total counter\n";
    for (size_t r = 0; r < s.rank_times.size(); ++r)
        o += fmt::format("phi_all_reduce_seconds_total{{rank=\"{}\"}} {}\n", r, s.rank_times[r].all_reduce_seconds);
    o += "# HELP phi_compute_seconds_total Forward time each rank spent outside all-reduces.\n"
         "# TYPE phi_compute_seconds_total counter\n";
    for (size_t r = 0; r < s.rank_times.size(); ++r)
        o += fmt::format("phi_compute_seconds_total{{rank=\"{}\"}} {}\n", r,
                         s.rank_times[r].forward_seconds - s.rank_times[r].all_reduce_seconds);
    {
        const char* method = engine::speculative_method_name(engine_.speculative().method);
        o += fmt::format("# HELP phi_spec_proposed_tokens_total Speculative proposals verified.\n"
                         "# TYPE phi_spec_proposed_tokens_total counter\n"
                         "phi_spec_proposed_tokens_total{{method=\"{}\"}} {}\n",
                         method, s.spec_proposed);
        o += fmt::format("# HELP phi_spec_accepted_tokens_total Speculative proposals accepted.\n"
                         "# TYPE phi_spec_accepted_tokens_total counter\n"
                         "phi_spec_accepted_tokens_total{{method=\"{}\"}} {}\n",
                         method, s.spec_accepted);
        o += fmt::format("# HELP phi_spec_acceptance_rate Accepted / proposed speculative tokens since start.\n"
                         "# TYPE phi_spec_acceptance_rate gauge\n"
                         "phi_spec_acceptance_rate{{method=\"{}\"}} {}\n",
                         method, s.spec_proposed > 0 ? double(s.spec_accepted) / double(s.spec_proposed) : 0.0);
    }
    gauge("phi_last_step_seconds", "Duration of the last engine step.", s.last_step_seconds);
    o += metrics_.ttft.render("phi_time_to_first_token_seconds", "Time from submission to the first token.");
    o += metrics_.inter_token.render("phi_inter_token_latency_seconds", "Time between consecutive tokens of a choice.");
    o += metrics_.e2e.render("phi_request_duration_seconds", "Time from submission to the last token.");
    return o;
}

}  // namespace phi::serving
