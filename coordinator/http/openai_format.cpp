// Shapes follow OpenAI's API reference and vLLM's protocol.py: completions logprobs are
// {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}; chat logprobs are
// {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
#include "coordinator/http/openai_format.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "coordinator/tokenizer/tokenizer.h"

namespace phi::http {
namespace {

// vLLM clamps -inf to -9999 so the JSON stays numeric.
double finite_logprob(float lp) {
    if (!std::isfinite(lp)) return -9999.0;
    return double(lp);
}

ojson bytes_of(const std::string& s) {
    ojson b = ojson::array();
    for (unsigned char c : s) b.push_back(int(c));
    return b;
}

}  // namespace

std::string dump(const ojson& j) {
    return j.dump(-1, ' ', false, ojson::error_handler_t::replace);
}
std::string dump(const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int64_t utf8_chars(const std::string& s) {
    int64_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++n;
    return n;
}

OpenAiResponse::OpenAiResponse(const FormatOptions& opts, const tokenizer::Tokenizer* tok)
    : opts_(opts), tok_(tok), choices_(size_t(std::max(opts.n, 1))) {
    if (opts_.logprobs >= 0) {
        for (Choice& c : choices_) {
            if (opts_.chat) {
                c.logprobs = ojson{{"content", ojson::array()}};
            } else {
                c.logprobs = ojson{{"tokens", ojson::array()},
                                   {"token_logprobs", ojson::array()},
                                   {"top_logprobs", ojson::array()},
                                   {"text_offset", ojson::array()}};
            }
        }
    }
}

std::string OpenAiResponse::token_string(int32_t id) const {
    if (!tok_) return serving::token_id_text(id);
    if (!tok_->id_to_token(id).has_value()) return "";
    return tok_->decode(std::span<const int32_t>(&id, 1), false);
}

ojson OpenAiResponse::chunk_base() const {
    ojson j;
    j["id"] = opts_.id;
    j["object"] = opts_.chat ? "chat.completion.chunk" : "text_completion";
    j["created"] = opts_.created;
    j["model"] = opts_.model;
    return j;
}

ojson OpenAiResponse::token_logprobs(const serving::OutputEvent& ev, int64_t text_offset) const {
    ojson lp = opts_.chat ? ojson{{"content", ojson::array()}}
                          : ojson{{"tokens", ojson::array()},
                                  {"token_logprobs", ojson::array()},
                                  {"top_logprobs", ojson::array()},
                                  {"text_offset", ojson::array()}};
    append_logprobs(lp, ev, text_offset);
    return lp;
}

void OpenAiResponse::append_logprobs(ojson& into, const serving::OutputEvent& ev, int64_t text_offset) const {
    const std::string token = token_string(ev.token_id);
    if (opts_.chat) {
        ojson top = ojson::array();
        for (const auto& t : ev.top_logprobs) {
            if (int(top.size()) >= opts_.logprobs) break;
            top.push_back(ojson{
                {"token", t.token}, {"logprob", finite_logprob(t.logprob)}, {"bytes", bytes_of(t.token)}});
        }
        into["content"].push_back(ojson{{"token", token},
                                        {"logprob", finite_logprob(ev.logprob)},
                                        {"bytes", bytes_of(token)},
                                        {"top_logprobs", std::move(top)}});
        return;
    }
    // Completions: the top-n dict also holds the sampled token (vLLM does the same).
    ojson top = ojson::object();
    for (const auto& t : ev.top_logprobs) {
        if (int(top.size()) >= opts_.logprobs) break;
        top[t.token] = finite_logprob(t.logprob);
    }
    if (!top.contains(token)) top[token] = finite_logprob(ev.logprob);
    into["tokens"].push_back(token);
    into["token_logprobs"].push_back(finite_logprob(ev.logprob));
    into["top_logprobs"].push_back(std::move(top));
    into["text_offset"].push_back(text_offset);
}

std::string OpenAiResponse::role_chunk(int c) const {
    ojson j = chunk_base();
    j["choices"] = ojson::array({ojson{{"index", c},
                                       {"delta", ojson{{"role", "assistant"}, {"content", ""}}},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}});
    if (opts_.include_usage) j["usage"] = nullptr;
    return dump(j);
}

std::string OpenAiResponse::token_chunk(const serving::OutputEvent& ev) {
    Choice& ch = choices_.at(size_t(ev.choice));
    const bool with_logprobs = opts_.logprobs >= 0;
    if (ev.text.empty() && !with_logprobs && !opts_.token_ids) return "";
    ojson c;
    c["index"] = ev.choice;
    if (opts_.chat) {
        c["delta"] = ojson{{"content", ev.text}};
    } else {
        c["text"] = ev.text;
    }
    if (opts_.token_ids) c["token_ids"] = ojson::array({ev.token_id});
    c["logprobs"] = with_logprobs ? token_logprobs(ev, ch.text_chars) : ojson(nullptr);
    c["finish_reason"] = nullptr;
    ch.text += ev.text;
    ch.text_chars += utf8_chars(ev.text);
    ojson j = chunk_base();
    j["choices"] = ojson::array({std::move(c)});
    if (opts_.include_usage) j["usage"] = nullptr;
    return dump(j);
}

std::string OpenAiResponse::finish_chunk(const serving::OutputEvent& ev) {
    Choice& ch = choices_.at(size_t(ev.choice));
    ch.text += ev.text;
    ch.finish_reason = ev.finish_reason;
    ojson c;
    c["index"] = ev.choice;
    if (opts_.chat) {
        c["delta"] = ev.text.empty() ? ojson::object() : ojson{{"content", ev.text}};
    } else {
        c["text"] = ev.text;
    }
    c["logprobs"] = nullptr;
    c["finish_reason"] = ev.finish_reason;
    c["stop_reason"] = nullptr;
    ojson j = chunk_base();
    j["choices"] = ojson::array({std::move(c)});
    if (opts_.include_usage) j["usage"] = nullptr;
    return dump(j);
}

std::string OpenAiResponse::usage_chunk(const serving::Usage& u) const {
    ojson j = chunk_base();
    j["choices"] = ojson::array();
    j["usage"] = usage_json(u);
    return dump(j);
}

void OpenAiResponse::add_token(const serving::OutputEvent& ev) {
    Choice& ch = choices_.at(size_t(ev.choice));
    if (opts_.logprobs >= 0) append_logprobs(ch.logprobs, ev, ch.text_chars);
    if (opts_.token_ids) ch.token_ids.push_back(ev.token_id);
    ch.text += ev.text;
    ch.text_chars += utf8_chars(ev.text);
}

void OpenAiResponse::add_finish(const serving::OutputEvent& ev) {
    Choice& ch = choices_.at(size_t(ev.choice));
    ch.text += ev.text;
    ch.text_chars += utf8_chars(ev.text);
    ch.finish_reason = ev.finish_reason;
}

ojson OpenAiResponse::usage_json(const serving::Usage& u) {
    return ojson{{"prompt_tokens", u.prompt_tokens},
                 {"total_tokens", u.prompt_tokens + u.completion_tokens},
                 {"completion_tokens", u.completion_tokens},
                 {"prompt_tokens_details", ojson{{"cached_tokens", u.cached_prompt_tokens}}}};
}

ojson OpenAiResponse::response(const serving::Usage& u) const {
    ojson j;
    j["id"] = opts_.id;
    j["object"] = opts_.chat ? "chat.completion" : "text_completion";
    j["created"] = opts_.created;
    j["model"] = opts_.model;
    ojson choices = ojson::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
        const Choice& ch = choices_[i];
        ojson c;
        c["index"] = int(i);
        if (opts_.chat) {
            c["message"] = ojson{{"role", "assistant"}, {"content", ch.text}};
        } else {
            c["text"] = ch.text;
        }
        if (opts_.token_ids) c["token_ids"] = ch.token_ids;
        c["logprobs"] = opts_.logprobs >= 0 ? ch.logprobs : ojson(nullptr);
        c["finish_reason"] = ch.finish_reason;
        c["stop_reason"] = nullptr;
        choices.push_back(std::move(c));
    }
    j["choices"] = std::move(choices);
    j["usage"] = usage_json(u);
    return j;
}

}  // namespace phi::http
