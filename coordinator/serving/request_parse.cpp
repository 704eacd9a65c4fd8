// OpenAI request fields -> GenerationRequest. Each check names the field the client must fix.
#include <fmt/format.h>

#include "coordinator/serving/service.h"

namespace phi::serving {
namespace {

using json = nlohmann::json;

// A salt only needs to be unguessable; longer ones would just cost hashing.
constexpr size_t k_max_cache_salt_bytes = 1024;

const json* field(const json& body, const char* key) {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return nullptr;
    return &*it;
}

double number(const json& body, const char* key, double fallback) {
    const json* v = field(body, key);
    if (!v) return fallback;
    if (!v->is_number()) bad_request(key, fmt::format("'{}' must be a number", key));
    return v->get<double>();
}

int64_t integer(const json& body, const char* key, int64_t fallback) {
    const json* v = field(body, key);
    if (!v) return fallback;
    if (!v->is_number_integer()) bad_request(key, fmt::format("'{}' must be an integer", key));
    return v->get<int64_t>();
}

bool boolean(const json& body, const char* key, bool fallback) {
    const json* v = field(body, key);
    if (!v) return fallback;
    if (!v->is_boolean()) bad_request(key, fmt::format("'{}' must be a boolean", key));
    return v->get<bool>();
}

std::vector<int32_t> token_ids(const json& arr, const char* param) {
    std::vector<int32_t> ids;
    for (const json& t : arr) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
            bad_request(param, fmt::format("'{}' token ids must be non-negative integers", param));
        ids.push_back(int32_t(t.get<int64_t>()));
    }
    return ids;
}

std::string message_content(const json& m, size_t i) {
    const std::string param = fmt::format("messages[{}].content", i);
    auto it = m.find("content");
    if (it == m.end() || it->is_null()) return "";
    if (it->is_string()) return it->get<std::string>();
    if (it->is_array()) {  // [{"type": "text", "text": ...}, ...]
        std::string text;
        for (const json& part : *it) {
            if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
                !part["text"].is_string())
                bad_request(param, fmt::format("'{}' parts must be {{\"type\": \"text\", \"text\": string}}; "
                                               "only text is supported",
                                               param));
            text += part["text"].get<std::string>();
        }
        return text;
    }
    bad_request(param, fmt::format("'{}' must be a string or an array of text parts", param));
}

}  // namespace

void bad_request(const std::string& param, const std::string& message) {
    throw ApiError(400, "invalid_request_error", message, param);
}

nlohmann::json ApiError::to_json() const {
    json err = {{"message", what()}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)},
                {"code", status}};
    return json{{"error", err}};
}

GenerationRequest parse_generation_request(const json& body, bool chat) {
    if (!body.is_object()) bad_request("", "the request body must be a JSON object");
    GenerationRequest r;
    if (const json* m = field(body, "model")) {
        if (!m->is_string()) bad_request("model", "'model' must be a string");
        r.model = m->get<std::string>();
    }
    if (const json* a = field(body, "adapter")) {
        if (!a->is_string()) bad_request("adapter", "'adapter' must be a string (a LoRA adapter's name)");
        r.adapter = a->get<std::string>();
    }
    if (chat) {
        const json* msgs = field(body, "messages");
        if (!msgs) bad_request("messages", "'messages' is required");
        if (!msgs->is_array()) bad_request("messages", "'messages' must be an array");
        if (msgs->empty()) bad_request("messages", "'messages' must not be empty");
        r.kind = PromptKind::Chat;
        r.messages = nlohmann::ordered_json::array();
        for (size_t i = 0; i < msgs->size(); ++i) {
            const json& m = (*msgs)[i];
            if (!m.is_object()) bad_request(fmt::format("messages[{}]", i), fmt::format("'messages[{}]' must be an object", i));
            auto role = m.find("role");
            if (role == m.end() || !role->is_string() || role->get<std::string>().empty())
                bad_request(fmt::format("messages[{}].role", i),
                            fmt::format("'messages[{}].role' must be a non-empty string", i));
            nlohmann::ordered_json om;
            om["role"] = role->get<std::string>();
            om["content"] = message_content(m, i);
            r.messages.push_back(std::move(om));
        }
        if (const json* tools = field(body, "tools")) {
            if (!tools->is_array()) bad_request("tools", "'tools' must be an array");
            r.tools = nlohmann::ordered_json::parse(tools->dump());
        }
        r.add_generation_prompt = boolean(body, "add_generation_prompt", true);
    } else {
        const json* p = field(body, "prompt");
        if (!p) bad_request("prompt", "'prompt' is required");
        if (p->is_string()) {
            r.kind = PromptKind::Text;
            r.text = p->get<std::string>();
        } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
            r.kind = PromptKind::TokenIds;
            r.token_ids = token_ids(*p, "prompt");
        } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
            r.kind = PromptKind::Text;
            r.text = (*p)[0].get<std::string>();
        } else if (p->is_array() && p->size() == 1 && (*p)[0].is_array()) {
            r.kind = PromptKind::TokenIds;
            r.token_ids = token_ids((*p)[0], "prompt");
        } else if (p->is_array() && p->size() > 1) {
            bad_request("prompt", "only one prompt per request is supported; send one request per prompt");
        } else {
            bad_request("prompt", "'prompt' must be a string or an array of token ids");
        }
        if (boolean(body, "echo", false)) bad_request("echo", "'echo' is not supported");
        if (const json* s = field(body, "suffix"); s && !(s->is_string() && s->get<std::string>().empty()))
            bad_request("suffix", "'suffix' is not supported");
        if (integer(body, "best_of", 1) != 1) bad_request("best_of", "'best_of' other than 1 is not supported");
    }
    if (const json* lb = field(body, "logit_bias"); lb && !(lb->is_object() && lb->empty()))
        bad_request("logit_bias", "'logit_bias' is not supported");
    if (const json* rf = field(body, "response_format"); rf && !(rf->is_object() && rf->value("type", "") == "text"))
        bad_request("response_format", "only the 'text' response_format is supported");
    boolean(body, "stream", false);  // type check; the transport acts on it

    sampling::SamplingParams& sp = r.params;
    // Which field a client sent decides (never a sentinel value: -1 is a value, and an invalid one).
    // max_completion_tokens is OpenAI's newer name and wins when both are given.
    const bool completion_field = field(body, "max_completion_tokens") != nullptr;
    r.max_tokens_param = completion_field ? "max_completion_tokens" : "max_tokens";
    const char* max_param = r.max_tokens_param.c_str();
    integer(body, "max_tokens", 0);  // type check, even when max_completion_tokens wins
    if (field(body, max_param)) {
        const int64_t max_tokens = integer(body, max_param, 0);
        if (max_tokens < 1 || max_tokens > INT32_MAX)
            bad_request(max_param, fmt::format("'{}' must be between 1 and {}, got {}", max_param, INT32_MAX, max_tokens));
        sp.max_tokens = int32_t(max_tokens);
    } else if (!chat) {
        sp.max_tokens = 16;  // OpenAI's completions default; chat generates up to the context
    }
    const int64_t n = integer(body, "n", 1);
    if (n < 1 || n > 128) bad_request("n", fmt::format("'n' must be between 1 and 128, got {}", n));
    r.n = int(n);
    sp.temperature = float(number(body, "temperature", 1.0));
    sp.top_p = float(number(body, "top_p", 1.0));
    const int64_t top_k = integer(body, "top_k", 0);
    if (top_k < -1 || top_k > INT32_MAX) bad_request("top_k", fmt::format("'top_k' must be -1, 0 or positive, got {}", top_k));
    sp.top_k = int32_t(top_k);
    sp.min_p = float(number(body, "min_p", 0.0));
    sp.repetition_penalty = float(number(body, "repetition_penalty", 1.0));
    sp.presence_penalty = float(number(body, "presence_penalty", 0.0));
    sp.frequency_penalty = float(number(body, "frequency_penalty", 0.0));
    if (const json* seed = field(body, "seed")) {
        if (!seed->is_number_integer()) bad_request("seed", "'seed' must be an integer");
        sp.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : uint64_t(seed->get<int64_t>());
    }
    if (const json* stop = field(body, "stop")) {
        if (stop->is_string()) {
            sp.stop = {stop->get<std::string>()};
        } else if (stop->is_array()) {
            for (const json& s : *stop) {
                if (!s.is_string()) bad_request("stop", "'stop' must be a string or an array of strings");
                sp.stop.push_back(s.get<std::string>());
            }
        } else {
            bad_request("stop", "'stop' must be a string or an array of strings");
        }
    }
    if (const json* ids = field(body, "stop_token_ids")) {
        if (!ids->is_array()) bad_request("stop_token_ids", "'stop_token_ids' must be an array of token ids");
        sp.stop_token_ids = token_ids(*ids, "stop_token_ids");
    }
    sp.ignore_eos = boolean(body, "ignore_eos", false);
    if (chat) {
        const bool want = boolean(body, "logprobs", false);
        const int64_t top = integer(body, "top_logprobs", 0);
        if (top < 0 || top > sampling::k_max_logprobs)
            bad_request("top_logprobs", fmt::format("'top_logprobs' must be between 0 and {}", sampling::k_max_logprobs));
        if (top > 0 && !want) bad_request("top_logprobs", "'top_logprobs' needs 'logprobs': true");
        r.logprobs = want ? int(top) : -1;
        sp.logprobs = want ? int32_t(top) : 0;
    } else {
        const json* lp = field(body, "logprobs");
        if (lp) {
            if (!lp->is_number_integer() || lp->get<int64_t>() < 0 || lp->get<int64_t>() > sampling::k_max_logprobs)
                bad_request("logprobs", fmt::format("'logprobs' must be an integer between 0 and {}",
                                                    sampling::k_max_logprobs));
            r.logprobs = int(lp->get<int64_t>());
            sp.logprobs = int32_t(r.logprobs);
        }
    }
    r.skip_special_tokens = boolean(body, "skip_special_tokens", true);
    r.speculative = boolean(body, "speculative", true);
    if (const json* salt = field(body, "cache_salt")) {
        if (!salt->is_string() || salt->get<std::string>().empty() || salt->get<std::string>().size() > k_max_cache_salt_bytes)
            bad_request("cache_salt", fmt::format("'cache_salt' must be a non-empty string of at most {} bytes",
                                                  k_max_cache_salt_bytes));
        r.cache_salt = salt->get<std::string>();
    }
    return r;
}

}  // namespace phi::serving
