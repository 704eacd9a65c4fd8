// The OpenAI HTTP server end to end, in-process: the serving harness (random-weight Phi-3 fixture,
// byte-level tokenizer, engine thread, Service) behind an HttpServer on an ephemeral port, and a
// Beast client. Streaming equals non-streaming, usage and finish reasons, n > 1, logprobs,
// include_usage, the plain endpoints, malformed requests (each an OpenAI error, none disturbing
// the server), 32 concurrent streams equal to their solo runs with early first tokens, client
// disconnects freeing KV blocks, 429 with Retry-After, and 503 while draining.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <regex>
#include <thread>

#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include "coordinator/http/http_server.h"
#include "tests/coordinator/http/http_client.h"
#include "tests/support/serving_harness.h"

namespace phi::http::test {
namespace {

// A serving stack plus the HTTP server, run on two io threads.
class Env {
  public:
    explicit Env(phi::test::ServingHarnessOptions ho = {}, HttpOptions opts = {})
        : harness_(std::move(ho)), server_(io_, harness_.service(), with_local(opts)) {
        server_.start();
        for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    }
    ~Env() {
        server_.stop_accepting();
        server_.close_connections();
        guard_.reset();
        io_.stop();
        for (auto& t : threads_) t.join();
    }
    uint16_t port() const { return server_.port(); }
    serving::Service& svc() { return harness_.service(); }
    engine::Engine& engine() { return harness_.engine(); }
    const tokenizer::Tokenizer& tok() const { return harness_.tokenizer(); }
    HttpServer& server() { return server_; }

  private:
    static HttpOptions with_local(HttpOptions o) {
        o.host = "127.0.0.1";
        o.port = 0;
        return o;
    }
    phi::test::ServingHarness harness_;
    net::io_context io_;
    net::executor_work_guard<net::io_context::executor_type> guard_ = net::make_work_guard(io_);
    HttpServer server_;
    std::vector<std::thread> threads_;
};

class Http : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        phi::test::ServingHarnessOptions ho;
        ho.kv_blocks = 2560;  // 20480 tokens: 32 concurrent streams and 4 x 4000-token choices fit
        env_ = new Env(ho);
    }
    static void TearDownTestSuite() {
        delete env_;
        env_ = nullptr;
    }
    static Env& env() { return *env_; }
    static Env* env_;
};
Env* Http::env_ = nullptr;

// Waits until `pred` holds (polling), at most `limit`.
template <class F>
bool eventually(F pred, std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    const auto end = steady::now() + limit;
    while (steady::now() < end) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return pred();
}

struct Collected {
    std::map<int, std::string> text;           // by choice
    std::map<int, std::string> finish_reason;  // by choice
    std::map<int, int> token_chunks;           // chunks carrying logprobs, by choice
    json usage;                                // from the include_usage chunk
    bool done = false;                         // saw [DONE]
    bool error = false;                        // saw an error event
    int role_chunks = 0;
};

// Folds a stream's events into per-choice text and checks each chunk's shape.
Collected collect(const Stream& s, bool chat) {
    Collected c;
    for (size_t i = 0; i < s.events.size(); ++i) {
        const std::string& d = s.events[i].data;
        if (d == "[DONE]") {
            EXPECT_EQ(i + 1, s.events.size()) << "[DONE] must be last";
            c.done = true;
            continue;
        }
        const json j = json::parse(d);
        if (j.contains("error")) {
            c.error = true;
            continue;
        }
        EXPECT_EQ(j["object"], chat ? "chat.completion.chunk" : "text_completion");
        EXPECT_TRUE(j["id"].get<std::string>().rfind(chat ? "chatcmpl-" : "cmpl-", 0) == 0);
        EXPECT_EQ(j["model"], "phi-test");
        if (j["choices"].empty()) {
            c.usage = j["usage"];
            continue;
        }
        for (const json& ch : j["choices"]) {
            const int idx = ch["index"];
            if (chat) {
                const json& delta = ch["delta"];
                if (delta.contains("role")) {
                    EXPECT_EQ(delta["role"], "assistant");
                    ++c.role_chunks;
                }
                if (delta.contains("content")) c.text[idx] += delta["content"].get<std::string>();
            } else {
                c.text[idx] += ch["text"].get<std::string>();
            }
            if (!ch["logprobs"].is_null()) ++c.token_chunks[idx];
            if (!ch["finish_reason"].is_null()) c.finish_reason[idx] = ch["finish_reason"];
        }
    }
    return c;
}

json completion(const std::string& prompt, int max_tokens, json extra = json::object()) {
    json b = {{"model", "phi-test"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
    b.update(extra);
    return b;
}

json chat(const std::string& content, int max_tokens, json extra = json::object()) {
    json b = {{"messages", json::array({{{"role", "user"}, {"content", content}}})},
              {"max_tokens", max_tokens},
              {"temperature", 0}};
    b.update(extra);
    return b;
}

void expect_error(const Response& r, unsigned status, const std::string& param = "",
                  const std::string& mentions = "") {
    EXPECT_EQ(r.status, status) << r.body;
    json j;
    ASSERT_NO_THROW(j = r.parsed()) << r.body;
    ASSERT_TRUE(j.contains("error")) << r.body;
    const json& e = j["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << r.body;
    EXPECT_TRUE(e["type"].is_string()) << r.body;
    EXPECT_TRUE(e.contains("param")) << r.body;
    EXPECT_EQ(e["code"], status) << r.body;
    if (!param.empty()) {
        EXPECT_EQ(e["param"], param) << r.body;
    }
    if (!mentions.empty()) {
        EXPECT_NE(e["message"].get<std::string>().find(mentions), std::string::npos) << r.body;
    }
    // Internal source locations ("[sampling_params.cpp:21]") are for logs, never for clients.
    static const std::regex k_location(R"(\[[A-Za-z0-9_]+\.(cpp|h|cu):[0-9]+\])");
    EXPECT_FALSE(std::regex_search(e["message"].get<std::string>(), k_location)) << r.body;
}

TEST_F(Http, CompletionNonStreamingAndStreamingAgree) {
    Client c(env().port());
    const json req = completion("The quick brown fox", 24, {{"ignore_eos", true}});
    const Response r = c.post("/v1/completions", req);
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(r.headers[bhttp::field::content_type], "application/json");
    const json j = r.parsed();
    EXPECT_TRUE(j["id"].get<std::string>().rfind("cmpl-", 0) == 0);
    EXPECT_EQ(j["object"], "text_completion");
    EXPECT_TRUE(j["created"].is_number_integer());
    EXPECT_EQ(j["model"], "phi-test");
    ASSERT_EQ(j["choices"].size(), 1u);
    EXPECT_EQ(j["choices"][0]["index"], 0);
    EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
    EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
    const int64_t prompt_tokens = int64_t(env().tok().encode("The quick brown fox", true).size());
    EXPECT_EQ(j["usage"]["prompt_tokens"], prompt_tokens);
    EXPECT_EQ(j["usage"]["completion_tokens"], 24);
    EXPECT_EQ(j["usage"]["total_tokens"], prompt_tokens + 24);
    EXPECT_TRUE(j["usage"]["prompt_tokens_details"]["cached_tokens"].is_number_integer());
    const std::string text = j["choices"][0]["text"];

    json sreq = req;
    sreq["stream"] = true;
    c.send(bhttp::verb::post, "/v1/completions", sreq.dump());
    const Stream s = c.read_stream();
    ASSERT_EQ(s.status, 200u);
    EXPECT_EQ(s.headers[bhttp::field::content_type], "text/event-stream");
    const Collected col = collect(s, false);
    EXPECT_TRUE(col.done);
    EXPECT_EQ(col.text.at(0), text);
    EXPECT_EQ(col.finish_reason.at(0), "length");
    EXPECT_TRUE(col.usage.is_null());  // no include_usage

    // The connection is still usable (keep-alive after a stream).
    EXPECT_EQ(c.get("/health").status, 200u);
}

TEST_F(Http, ChatNonStreamingAndStreamingAgree) {
    Client c(env().port());
    const json req = chat("Hello there", 20, {{"ignore_eos", true}});
    const Response r = c.post("/v1/chat/completions", req);
    ASSERT_EQ(r.status, 200u) << r.body;
    const json j = r.parsed();
    EXPECT_TRUE(j["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
    EXPECT_EQ(j["object"], "chat.completion");
    ASSERT_EQ(j["choices"].size(), 1u);
    EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
    EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(j["usage"]["completion_tokens"], 20);
    const int64_t prompt_tokens =
        int64_t(env().tok().encode_chat("<|user|>\nHello there<|end|>\n<|assistant|>\n").size());
    EXPECT_EQ(j["usage"]["prompt_tokens"], prompt_tokens);
    const std::string text = j["choices"][0]["message"]["content"];

    json sreq = req;
    sreq["stream"] = true;
    sreq["stream_options"] = {{"include_usage", true}};
    c.send(bhttp::verb::post, "/v1/chat/completions", sreq.dump());
    const Stream s = c.read_stream();
    ASSERT_EQ(s.status, 200u);
    const Collected col = collect(s, true);
    EXPECT_EQ(col.role_chunks, 1);
    ASSERT_FALSE(s.events.empty());
    EXPECT_TRUE(json::parse(s.events[0].data)["choices"][0]["delta"].contains("role")) << "role comes first";
    EXPECT_TRUE(col.done);
    EXPECT_EQ(col.text.at(0), text);
    EXPECT_EQ(col.finish_reason.at(0), "length");
    // include_usage: the chunk before [DONE] has empty choices and the usage; the others usage null.
    ASSERT_GE(s.events.size(), 3u);
    const json last = json::parse(s.events[s.events.size() - 2].data);
    EXPECT_TRUE(last["choices"].empty());
    EXPECT_EQ(last["usage"]["completion_tokens"], 20);
    EXPECT_EQ(last["usage"]["prompt_tokens"], prompt_tokens);
    EXPECT_EQ(last["usage"]["total_tokens"], prompt_tokens + 20);
    EXPECT_TRUE(json::parse(s.events[0].data)["usage"].is_null());
}

TEST_F(Http, PromptAsTokenIdsAndSingleStringArray) {
    Client c(env().port());
    const Response a = c.post("/v1/completions", completion("abc", 8));
    const std::vector<int32_t> ids = env().tok().encode("abc", true);
    json b = completion("", 8);
    b["prompt"] = ids;
    const Response r1 = c.post("/v1/completions", b);
    b["prompt"] = json::array({"abc"});
    const Response r2 = c.post("/v1/completions", b);
    ASSERT_EQ(a.status, 200u);
    ASSERT_EQ(r1.status, 200u) << r1.body;
    ASSERT_EQ(r2.status, 200u) << r2.body;
    EXPECT_EQ(r1.parsed()["choices"][0]["text"], a.parsed()["choices"][0]["text"]);
    EXPECT_EQ(r2.parsed()["choices"][0]["text"], a.parsed()["choices"][0]["text"]);
}

// Token-ids-only mode (skip_tokenizer_init) over HTTP: /v1/completions with a token-id prompt
// answers ids (choices[].token_ids, HF's greedy ids for the bare phi3_rope_params fixture), text
// prompts and /v1/chat/completions are refused naming the field, logprob tokens read "token_id:N".
TEST(HttpTokenIdsOnly, CompletionsWithTokenIdPrompts) {
    phi::test::ServingHarnessOptions ho;
    ho.fixture = "phi3_rope_params";
    ho.token_ids_only = true;
    Env env(ho);
    const phi::test::Golden g = phi::test::load_golden("phi3_rope_params");
    Client c(env.port());
    json b = completion("", int(g.greedy.size()), {{"ignore_eos", true}});
    b["prompt"] = g.prompt;
    const Response r = c.post("/v1/completions", b);
    ASSERT_EQ(r.status, 200u) << r.body;
    const json choice = r.parsed()["choices"][0];
    EXPECT_EQ(choice["token_ids"].get<std::vector<int32_t>>(), g.greedy);
    EXPECT_EQ(choice["text"], "");

    json sb = b;
    sb["stream"] = true;
    c.send(bhttp::verb::post, "/v1/completions", sb.dump());
    const Stream st = c.read_stream();
    std::vector<int32_t> streamed;
    for (const auto& e : st.events) {
        if (e.data == "[DONE]") continue;
        const json chunk = json::parse(e.data);
        for (const json& ch : chunk["choices"])
            if (ch.contains("token_ids")) for (int32_t id : ch["token_ids"]) streamed.push_back(id);
    }
    EXPECT_EQ(streamed, g.greedy) << st.events.size() << " events, first: "
                                  << (st.events.empty() ? std::string() : st.events[0].data);

    json lb = completion("", 2, {{"logprobs", 2}});
    lb["prompt"] = g.prompt;
    const Response lr = c.post("/v1/completions", lb);
    ASSERT_EQ(lr.status, 200u) << lr.body;
    EXPECT_EQ(lr.parsed()["choices"][0]["logprobs"]["tokens"][0], "token_id:" + std::to_string(g.greedy[0]));

    expect_error(c.post("/v1/completions", completion("hello", 4)), 400, "prompt", "token-ids-only");
    expect_error(c.post("/v1/chat/completions", chat("hello", 4)), 400, "messages", "token-ids-only");
    json stop = b;
    stop["stop"] = "x";
    expect_error(c.post("/v1/completions", stop), 400, "stop", "token-ids-only");
}

TEST_F(Http, NEqualsTwoStreamsInterleavedChoices) {
    Client c(env().port());
    const json req =
        completion("Seeded", 16, {{"n", 2}, {"temperature", 1.0}, {"seed", 7}, {"ignore_eos", true}});
    const Response r = c.post("/v1/completions", req);
    ASSERT_EQ(r.status, 200u) << r.body;
    const json j = r.parsed();
    ASSERT_EQ(j["choices"].size(), 2u);
    EXPECT_EQ(j["choices"][0]["index"], 0);
    EXPECT_EQ(j["choices"][1]["index"], 1);
    EXPECT_EQ(j["usage"]["completion_tokens"], 32);

    json sreq = req;
    sreq["stream"] = true;
    c.send(bhttp::verb::post, "/v1/completions", sreq.dump());
    const Collected col = collect(c.read_stream(), false);
    ASSERT_EQ(col.text.size(), 2u);
    EXPECT_EQ(col.text.at(0), j["choices"][0]["text"]);
    EXPECT_EQ(col.text.at(1), j["choices"][1]["text"]);
    EXPECT_EQ(col.finish_reason.at(0), "length");
    EXPECT_EQ(col.finish_reason.at(1), "length");

    // Chat: one role chunk per choice.
    json creq = chat("Hi", 6, {{"n", 2}, {"stream", true}, {"ignore_eos", true}});
    c.send(bhttp::verb::post, "/v1/chat/completions", creq.dump());
    const Collected cc = collect(c.read_stream(), true);
    EXPECT_EQ(cc.role_chunks, 2);
    EXPECT_EQ(cc.finish_reason.size(), 2u);
}

TEST_F(Http, CompletionLogprobs) {
    Client c(env().port());
    const json req = completion("Log", 10, {{"logprobs", 3}, {"ignore_eos", true}});
    const Response r = c.post("/v1/completions", req);
    ASSERT_EQ(r.status, 200u) << r.body;
    const json lp = r.parsed()["choices"][0]["logprobs"];
    ASSERT_TRUE(lp.is_object()) << r.body;
    ASSERT_EQ(lp["tokens"].size(), 10u);
    ASSERT_EQ(lp["token_logprobs"].size(), 10u);
    ASSERT_EQ(lp["top_logprobs"].size(), 10u);
    ASSERT_EQ(lp["text_offset"].size(), 10u);
    for (size_t i = 0; i < 10; ++i) {
        const double chosen = lp["token_logprobs"][i];
        EXPECT_LE(chosen, 0.0);
        EXPECT_GE(lp["top_logprobs"][i].size(), 1u);
        EXPECT_LE(lp["top_logprobs"][i].size(), 4u);
        for (const auto& [tok, v] : lp["top_logprobs"][i].items())
            EXPECT_LE(v.get<double>(), chosen + 1e-5) << "greedy";
        if (i > 0) {
            EXPECT_GE(lp["text_offset"][i], lp["text_offset"][i - 1]);
        }
    }
    EXPECT_EQ(lp["text_offset"][0], 0);

    json sreq = req;
    sreq["stream"] = true;
    c.send(bhttp::verb::post, "/v1/completions", sreq.dump());
    const Collected col = collect(c.read_stream(), false);
    EXPECT_EQ(col.token_chunks.at(0), 10) << "one chunk with logprobs per token";
    EXPECT_EQ(col.text.at(0), r.parsed()["choices"][0]["text"]);
}

TEST_F(Http, ChatLogprobs) {
    Client c(env().port());
    const Response r =
        c.post("/v1/chat/completions",
               chat("Log", 8, {{"logprobs", true}, {"top_logprobs", 2}, {"ignore_eos", true}}));
    ASSERT_EQ(r.status, 200u) << r.body;
    const json lp = r.parsed()["choices"][0]["logprobs"];
    ASSERT_TRUE(lp.is_object()) << r.body;
    ASSERT_EQ(lp["content"].size(), 8u);
    for (const json& e : lp["content"]) {
        EXPECT_TRUE(e["token"].is_string());
        EXPECT_LE(e["logprob"].get<double>(), 0.0);
        EXPECT_TRUE(e["bytes"].is_array());
        ASSERT_EQ(e["top_logprobs"].size(), 2u);
        EXPECT_GE(e["logprob"].get<double>() + 1e-5, e["top_logprobs"][0]["logprob"].get<double>());
        EXPECT_TRUE(e["top_logprobs"][0]["bytes"].is_array());
    }
    // logprobs: false -> null.
    const Response plain = c.post("/v1/chat/completions", chat("Log", 2));
    EXPECT_TRUE(plain.parsed()["choices"][0]["logprobs"].is_null());
}

TEST_F(Http, ModelsHealthMetrics) {
    Client c(env().port());
    const Response m = c.get("/v1/models");
    ASSERT_EQ(m.status, 200u);
    const json mj = m.parsed();
    EXPECT_EQ(mj["object"], "list");
    ASSERT_EQ(mj["data"].size(), 1u);
    EXPECT_EQ(mj["data"][0]["id"], "phi-test");
    EXPECT_EQ(mj["data"][0]["object"], "model");
    EXPECT_EQ(mj["data"][0]["owned_by"], "phi-cluster");

    const Response h = c.get("/health");
    ASSERT_EQ(h.status, 200u);
    EXPECT_EQ(h.parsed()["status"], "ok");

    ASSERT_EQ(c.post("/v1/completions", completion("metrics", 3)).status, 200u);
    const Response x = c.get("/metrics?format=text");
    ASSERT_EQ(x.status, 200u);
    EXPECT_NE(x.headers[bhttp::field::content_type].find("text/plain; version=0.0.4"), std::string::npos);
    for (const char* name :
         {"phi_requests_total", "phi_time_to_first_token_seconds_bucket", "phi_inter_token_latency_seconds",
          "phi_request_duration_seconds", "phi_kv_blocks_used", "phi_queue_depth",
          "phi_generation_tokens_total", "phi_http_connections", "phi_http_responses_total"})
        EXPECT_NE(x.body.find(name), std::string::npos) << name;
}

// Each case gets the right status and an OpenAI error body; the connection stays usable where
// HTTP allows, and a valid request succeeds afterwards.
TEST_F(Http, MalformedRequests) {
    struct Case {
        const char* name;
        const char* target;
        std::string body;
        unsigned status;
        std::string param;
        std::string mentions;
    };
    const std::string long_prompt(5000, 'x');
    const std::vector<Case> cases = {
        {"bad json", "/v1/completions", R"({"prompt": "a",)", 400, "", "invalid JSON"},
        {"empty body", "/v1/completions", "", 400, "", "invalid JSON"},
        {"json array", "/v1/completions", "[1, 2]", 400, "", "JSON object"},
        {"json string", "/v1/chat/completions", R"("hello")", 400, "", "JSON object"},
        {"max_tokens string", "/v1/completions", R"({"prompt": "a", "max_tokens": "x"})", 400, "max_tokens",
         ""},
        {"max_tokens zero", "/v1/completions", R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens", ""},
        {"max_tokens -1", "/v1/completions", R"({"prompt": "a", "max_tokens": -1})", 400, "max_tokens", ""},
        {"max_completion_tokens -1", "/v1/chat/completions",
         R"({"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": -1})", 400,
         "max_completion_tokens", ""},
        {"max_completion_tokens past context", "/v1/completions",
         R"({"prompt": "a", "max_completion_tokens": 4096})", 400, "max_completion_tokens", ""},
        {"temperature -1", "/v1/completions", R"({"prompt": "a", "temperature": -1})", 400, "temperature",
         "temperature"},
        {"top_p 2", "/v1/completions", R"({"prompt": "a", "top_p": 2})", 400, "top_p", "top_p"},
        {"repetition_penalty 0", "/v1/chat/completions",
         R"({"messages": [{"role": "user", "content": "a"}], "repetition_penalty": 0})", 400,
         "repetition_penalty", ""},
        {"stop_token_ids past the vocabulary", "/v1/completions",
         R"({"prompt": "a", "stop_token_ids": [99999]})", 400, "stop_token_ids", ""},
        {"cache_salt empty", "/v1/completions", R"({"prompt": "a", "cache_salt": ""})", 400, "cache_salt", ""},
        {"n 0", "/v1/completions", R"({"prompt": "a", "n": 0})", 400, "n", ""},
        {"n above max_n", "/v1/completions", R"({"prompt": "a", "n": 9})", 400, "n", ""},
        {"messages not array", "/v1/chat/completions", R"({"messages": "hi"})", 400, "messages", ""},
        {"messages empty", "/v1/chat/completions", R"({"messages": []})", 400, "messages", ""},
        {"message without role", "/v1/chat/completions", R"({"messages": [{"content": "hi"}]})", 400,
         "messages[0].role", ""},
        {"messages missing", "/v1/chat/completions", R"({"model": "phi-test"})", 400, "messages", ""},
        {"prompt missing", "/v1/completions", R"({"max_tokens": 3})", 400, "prompt", ""},
        {"prompt wrong type", "/v1/completions", R"({"prompt": {"a": 1}})", 400, "prompt", ""},
        {"invalid utf-8", "/v1/completions", "{\"prompt\": \"a\xff\xfe b\"}", 400, "", "invalid JSON"},
        {"lone surrogate", "/v1/completions", R"({"prompt": "\ud800"})", 400, "", "invalid JSON"},
        {"context overflow", "/v1/completions", json{{"prompt", long_prompt}}.dump(), 400, "prompt",
         "tokens"},
        {"max_tokens past context", "/v1/completions", R"({"prompt": "a", "max_tokens": 4096})", 400,
         "max_tokens", ""},
        {"token id out of vocab", "/v1/completions", R"({"prompt": [1, 99999]})", 400, "prompt", ""},
        {"unknown model", "/v1/completions", R"({"prompt": "a", "model": "gpt-9"})", 404, "model", "gpt-9"},
        {"stream not bool", "/v1/completions", R"({"prompt": "a", "stream": "yes"})", 400, "stream", ""},
        {"stream_options without stream", "/v1/completions",
         R"({"prompt": "a", "stream_options": {"include_usage": true}})", 400, "stream_options", ""},
        {"echo", "/v1/completions", R"({"prompt": "a", "echo": true})", 400, "echo", ""},
        {"logprobs too many", "/v1/completions", R"({"prompt": "a", "logprobs": 21})", 400, "logprobs", ""},
        {"top_logprobs without logprobs", "/v1/chat/completions",
         R"({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2})", 400, "top_logprobs", ""},
        {"stop wrong type", "/v1/completions", R"({"prompt": "a", "stop": 5})", 400, "stop", ""},
        {"deep nesting", "/v1/completions", std::string(200, '[') + std::string(200, ']'), 400, "", "nested"},
        {"unknown path", "/v1/engines", R"({})", 404, "", ""},
    };
    Client c(env().port());
    for (const Case& k : cases) {
        SCOPED_TRACE(k.name);
        const Response r = c.post(k.target, k.body);
        expect_error(r, k.status, k.param, k.mentions);
        EXPECT_TRUE(r.headers[bhttp::field::connection] != "close") << "a 4xx keeps the connection";
    }
    // Wrong methods: 405 with Allow.
    {
        const Response r = c.get("/v1/completions");
        expect_error(r, 405);
        EXPECT_EQ(r.headers["Allow"], "POST");
        expect_error(c.post("/v1/models", std::string("{}")), 405);
        c.send(bhttp::verb::delete_, "/health");
        expect_error(c.read_response(), 405);
    }
    // Oversized body: 413, then the server closes that connection.
    {
        Client big(env().port());
        const std::string body = json{{"prompt", std::string((size_t(1) << 20) + 1000, 'a')}}.dump();
        const Response r = big.post("/v1/completions", body);
        expect_error(r, 413);
        EXPECT_EQ(r.headers[bhttp::field::connection], "close");
    }
    // Malformed HTTP: 400 and close.
    {
        Client raw(env().port());
        raw.write_raw("NOT AN HTTP REQUEST\r\n\r\n");
        const std::string out = raw.read_all_raw();
        EXPECT_EQ(out.rfind("HTTP/1.1 400", 0), 0u) << out;
    }
    // The same connection, and the server, still serve valid requests.
    const Response ok = c.post("/v1/completions", completion("still fine", 4));
    EXPECT_EQ(ok.status, 200u) << ok.body;
    Client fresh(env().port());
    EXPECT_EQ(fresh.post("/v1/chat/completions", chat("still fine", 4)).status, 200u);
}

// Pipelined requests on one connection are answered in order.
TEST_F(Http, PipelinedRequests) {
    Client c(env().port());
    c.send(bhttp::verb::post, "/v1/completions", completion("one", 4).dump());
    c.send(bhttp::verb::get, "/v1/models");
    c.send(bhttp::verb::post, "/v1/completions", std::string("{bad"));
    EXPECT_EQ(c.read_response().status, 200u);
    EXPECT_EQ(c.read_response().status, 200u);
    EXPECT_EQ(c.read_response().status, 400u);
}

// Expect: 100-continue gets an interim 100 before the body is sent; an oversized declared body
// gets 413 without it.
TEST_F(Http, ExpectContinue) {
    const std::string body = completion("continue", 3).dump();
    {
        Client c(env().port());
        c.write_raw(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Expect: 100-continue\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n");
        char buf[64];
        const size_t n = c.socket().read_some(net::buffer(buf));
        EXPECT_EQ(std::string(buf, n), "HTTP/1.1 100 Continue\r\n\r\n");
        c.write_raw(body);
        EXPECT_EQ(c.read_response().status, 200u);
    }
    {
        Client c(env().port());
        c.write_raw(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: "
            "99999999\r\n\r\n");
        const Response r = c.read_response();
        expect_error(r, 413);
    }
}

// HTTP/1.0 has no chunked encoding: the stream is raw SSE ended by closing the connection.
TEST_F(Http, Http10Stream) {
    const std::string body = completion("old client", 5, {{"stream", true}, {"ignore_eos", true}}).dump();
    Client c(env().port());
    c.write_raw("POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body);
    const std::string out = c.read_all_raw();
    EXPECT_EQ(out.rfind("HTTP/1.0 200", 0), 0u) << out;
    EXPECT_EQ(out.find("chunked"), std::string::npos) << out;
    EXPECT_NE(out.find("\r\n\r\ndata: {"), std::string::npos) << out;
    EXPECT_EQ(out.substr(out.size() - 14), "data: [DONE]\n\n");
}

// The first token reaches the client while its request is still generating.
TEST_F(Http, TokensAreFlushedAsTheyArrive) {
    Client c(env().port());
    c.send(bhttp::verb::post, "/v1/completions",
           completion("flush", 3000, {{"stream", true}, {"ignore_eos", true}}).dump());
    int64_t in_flight_at_first = -1;
    const Stream s = c.read_stream([&](const SseEvent& e) {
        if (in_flight_at_first < 0 && e.data != "[DONE]") in_flight_at_first = env().svc().in_flight();
        return true;
    });
    EXPECT_EQ(in_flight_at_first, 1) << "the first token arrived only after the request finished";
    const Collected col = collect(s, false);
    EXPECT_TRUE(col.done);
    EXPECT_EQ(col.finish_reason.at(0), "length");
}

// 32 concurrent streams: each gets exactly its solo tokens (greedy), and its first token before
// its request completes.
TEST_F(Http, ConcurrentStreamsEqualSolo) {
    constexpr int k_clients = 32;
    constexpr int k_tokens = 256;
    auto request = [](int i) {
        return completion(fmt::format("Client {} says {}", i, std::string(size_t(i % 7), '#')), k_tokens,
                          {{"ignore_eos", true}, {"logprobs", 0}});
    };
    std::vector<std::vector<std::string>> solo(k_clients);
    {
        Client c(env().port());
        for (int i = 0; i < k_clients; ++i) {
            const Response r = c.post("/v1/completions", request(i));
            ASSERT_EQ(r.status, 200u) << r.body;
            solo[size_t(i)] = r.parsed()["choices"][0]["logprobs"]["tokens"].get<std::vector<std::string>>();
            ASSERT_EQ(solo[size_t(i)].size(), size_t(k_tokens));
        }
    }
    struct Result {
        std::vector<std::string> tokens;
        steady::time_point first{}, done{};
        int first_read = -1, done_read = -1;
        bool ok = false;
        std::string failure;
    };
    std::vector<Result> results(k_clients);
    std::atomic<int> ready{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < k_clients; ++i) {
        threads.emplace_back([&, i] {
            Result& res = results[size_t(i)];
            try {
                Client c(env().port());
                json req = request(i);
                req["stream"] = true;
                ready.fetch_add(1);
                while (ready.load() < k_clients) std::this_thread::yield();
                c.send(bhttp::verb::post, "/v1/completions", req.dump());
                const Stream s = c.read_stream();
                for (const SseEvent& e : s.events) {
                    if (e.data == "[DONE]") {
                        res.done = e.at;
                        res.done_read = e.read;
                        continue;
                    }
                    const json j = json::parse(e.data);
                    if (j["choices"].empty() || j["choices"][0]["logprobs"].is_null()) continue;
                    if (res.first_read < 0) {
                        res.first = e.at;
                        res.first_read = e.read;
                    }
                    for (const json& t : j["choices"][0]["logprobs"]["tokens"]) res.tokens.push_back(t);
                }
                res.ok = s.status == 200 && s.complete;
            } catch (const std::exception& e) {
                res.failure = e.what();
            }
        });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < k_clients; ++i) {
        const Result& r = results[size_t(i)];
        SCOPED_TRACE(fmt::format("client {}", i));
        ASSERT_TRUE(r.ok) << r.failure;
        EXPECT_EQ(r.tokens, solo[size_t(i)]);
        ASSERT_GE(r.first_read, 0);
        EXPECT_LT(r.first_read, r.done_read) << "the first token came in the same read as the end";
        EXPECT_LT(r.first, r.done);
    }
    EXPECT_TRUE(eventually([&] { return env().engine().stats().kv_blocks_used == 0; }));
}

// A client that leaves mid-stream (or while waiting for a JSON response) cancels its request.
TEST_F(Http, DisconnectCancelsRequest) {
    const int64_t cancelled0 = env().engine().stats().finished_cancelled;
    {
        Client c(env().port());
        c.send(bhttp::verb::post, "/v1/completions",
               completion("leaving", 4000, {{"stream", true}, {"ignore_eos", true}, {"n", 4}}).dump());
        int tokens = 0;
        c.read_stream([&](const SseEvent&) { return ++tokens < 3; });
        EXPECT_TRUE(eventually([&] { return env().engine().stats().kv_blocks_used > 0; }));
        c.close();
    }
    EXPECT_TRUE(eventually([&] { return env().engine().stats().kv_blocks_used == 0; }));
    EXPECT_TRUE(eventually([&] { return env().svc().in_flight() == 0; }));
    EXPECT_EQ(env().engine().stats().finished_cancelled, cancelled0 + 4);
    {
        Client c(env().port());
        c.send(bhttp::verb::post, "/v1/chat/completions",
               chat("leaving", 4000, {{"ignore_eos", true}, {"n", 4}}).dump());
        EXPECT_TRUE(eventually([&] { return env().engine().stats().kv_blocks_used > 0; }));
        c.close();
    }
    EXPECT_TRUE(eventually([&] { return env().engine().stats().kv_blocks_used == 0; }));
    EXPECT_EQ(env().engine().stats().finished_cancelled, cancelled0 + 8);
    EXPECT_TRUE(eventually([&] { return env().server().connections() == 0; }));
}

// A separate stack whose engine admits almost nothing: a flood gets 429 with Retry-After; then it
// drains: /health and new requests answer 503.
TEST(HttpOverload, TooManyRequestsThen503WhileDraining) {
    phi::test::ServingHarnessOptions ho;
    ho.engine.max_num_seqs = 1;
    ho.engine.max_queued = 1;
    ho.limits.retry_after_s = 2;
    Env env(ho);
    // n = 4 long choices cannot all queue behind one running sequence.
    {
        Client c(env.port());
        const Response r = c.post("/v1/completions", completion("many", 4000, {{"n", 4}, {"ignore_eos", true}}));
        expect_error(r, 429);
        EXPECT_EQ(r.parsed()["error"]["type"], "rate_limit_error");
        EXPECT_EQ(r.headers["Retry-After"], "2");
    }
    // The choices that did queue are cancelled at the engine's next step; then the queue is empty.
    ASSERT_TRUE(eventually([&] {
        const auto st = env.engine().stats();
        return st.finished_cancelled >= 1 && st.queued == 0;
    }));
    // A flood of concurrent clients: some are refused, each gets a complete answer.
    constexpr int k_clients = 12;
    std::vector<unsigned> status(k_clients, 0);
    std::vector<std::string> retry_after(k_clients);
    std::vector<std::thread> threads;
    for (int i = 0; i < k_clients; ++i) {
        threads.emplace_back([&, i] {
            try {
                Client c(env.port());
                const Response r = c.post("/v1/completions", completion("flood", 1000, {{"ignore_eos", true}}));
                status[size_t(i)] = r.status;
                retry_after[size_t(i)] = std::string(r.headers["Retry-After"]);
            } catch (const std::exception&) {
            }
        });
    }
    for (auto& t : threads) t.join();
    int ok = 0, refused = 0;
    for (int i = 0; i < k_clients; ++i) {
        if (status[size_t(i)] == 200) ++ok;
        if (status[size_t(i)] == 429) {
            ++refused;
            EXPECT_EQ(retry_after[size_t(i)], "2");
        }
    }
    EXPECT_EQ(ok + refused, k_clients);
    EXPECT_GE(ok, 1);
    EXPECT_GE(refused, 1);
    // After the flood a request succeeds.
    Client c(env.port());
    EXPECT_EQ(c.post("/v1/completions", completion("after", 4)).status, 200u);

    env.svc().begin_drain();
    const Response h = c.get("/health");
    EXPECT_EQ(h.status, 503u);
    EXPECT_EQ(h.parsed()["reason"], "draining");
    Client d(env.port());
    const Response r = d.post("/v1/completions", completion("late", 4));
    expect_error(r, 503);
    EXPECT_EQ(r.headers[bhttp::field::connection], "close");
    env.server().stop_accepting();
    EXPECT_THROW(Client late(env.port()), std::exception);
}

// A client that stops reading: once its pending bytes pass the bound, its request is cancelled
// and the connection closed; the engine never waits for it.
TEST(HttpLimits, SlowReaderIsCancelled) {
    HttpOptions opts;
    opts.max_pending_bytes = 64 << 10;
    phi::test::ServingHarnessOptions ho;
    ho.kv_blocks = 2560;
    Env env(ho, opts);
    Client c(env.port(), std::chrono::seconds(30), 4096);
    c.send(bhttp::verb::post, "/v1/completions",
           completion("never read", 4000, {{"stream", true}, {"ignore_eos", true}, {"n", 4}, {"logprobs", 5}})
               .dump());
    EXPECT_TRUE(
        eventually([&] { return env.engine().stats().finished_cancelled == 4; }, std::chrono::seconds(240)));
    EXPECT_TRUE(eventually([&] { return env.engine().stats().kv_blocks_used == 0; }));
    EXPECT_EQ(env.engine().stats().finished_length, 0);
    EXPECT_TRUE(eventually([&] { return env.server().connections() == 0; }));
    // Others are served meanwhile and after.
    Client d(env.port());
    EXPECT_EQ(d.post("/v1/completions", completion("fine", 4)).status, 200u);
}

// Connections past max_connections are answered 503 and closed.
TEST(HttpLimits, MaxConnections) {
    HttpOptions opts;
    opts.max_connections = 2;
    Env env({}, opts);
    Client a(env.port()), b(env.port());
    EXPECT_EQ(a.get("/health").status, 200u);
    EXPECT_EQ(b.get("/health").status, 200u);
    Client c(env.port());
    c.send(bhttp::verb::get, "/health");
    expect_error(c.read_response(), 503);
    a.close();
    c.close();
    EXPECT_TRUE(eventually([&] { return env.server().connections() <= 1; }));
    Client d(env.port());
    EXPECT_EQ(d.get("/health").status, 200u);
}

// A request's sink lives in the engine, which may outlive the server and its io_context (the
// engine is declared first). It must not keep an executor of the io_context: destroying one after
// the io_context is gone is a use-after-free (UBSan/ASan found it at this test suite's teardown).
TEST(HttpLifetimes, SinksOutliveTheServerAndItsIoContext) {
    phi::test::ServingHarnessOptions ho;
    ho.kv_blocks = 2560;
    phi::test::ServingHarness harness(ho);
    {
        net::io_context io;
        HttpOptions opts;
        opts.host = "127.0.0.1";
        opts.port = 0;
        HttpServer server(io, harness.service(), opts);
        server.start();
        std::thread t([&] { io.run(); });
        Client c(server.port());
        c.send(bhttp::verb::post, "/v1/completions",
               completion("outlive", 4000, {{"stream", true}, {"ignore_eos", true}, {"n", 2}}).dump());
        int tokens = 0;
        c.read_stream([&](const SseEvent&) { return ++tokens < 3; });
        io.stop();  // the connection is neither closed nor cancelled: its request stays in the engine
        t.join();
    }  // the server, then the io_context, are destroyed with the request running
    // The engine keeps calling the sinks, then ends the request (its connection died with the
    // io_context) and destroys them.
    EXPECT_TRUE(eventually([&] { return harness.service().in_flight() == 0; }, std::chrono::seconds(120)));
    EXPECT_TRUE(eventually([&] { return harness.engine().stats().kv_blocks_used == 0; }));
}

// Tokenizing a huge prompt happens off the network threads: with ONE io thread, a health check
// sent right after a request with several MiB of prompt is answered before that request's own
// answer (here a 400: the prompt is longer than the context, found only by tokenizing it). On the
// io thread the tokenization would have answered the big request first.
TEST(HttpIo, TokenizationDoesNotBlockTheNetworkThread) {
    phi::test::ServingHarness harness;
    net::io_context io;
    HttpOptions opts;
    opts.host = "127.0.0.1";
    opts.port = 0;
    opts.max_body_bytes = size_t(32) << 20;
    HttpServer server(io, harness.service(), opts);
    server.start();
    std::thread t([&] { io.run(); });
    std::string text;
    uint64_t x = 88172645463325252ull;
    while (text.size() < (size_t(12) << 20)) {  // no two words alike: no cache shortens it
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        for (int i = 0; i < 6; ++i) text += char('a' + (x >> (6 * i)) % 26);
        text += ' ';
    }
    Client big(server.port(), std::chrono::seconds(300));
    big.send(bhttp::verb::post, "/v1/completions", json{{"prompt", text}, {"max_tokens", 1}}.dump());
    auto rejected = [&] {
        const std::string m = harness.service().metrics_text();
        const std::string key = "phi_requests_total{outcome=\"rejected_4xx\"} ";
        const size_t at = m.find(key);
        return at == std::string::npos ? 0 : std::stoi(m.substr(at + key.size()));
    };
    // send() returns once the body is in the socket: give the server a moment to read its end (it
    // is then tokenizing, which takes far longer: about 1 s for this prompt on a fast core), then
    // ask for health. Were tokenization on the io thread, the health check would wait behind it
    // however soon it was sent.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    Client small(server.port());
    EXPECT_EQ(small.get("/health").status, 200u);
    EXPECT_EQ(rejected(), 0) << "the big request was answered first: it was tokenized on the io thread";
    const Response r = big.read_response();
    expect_error(r, 400, "prompt", "tokens");
    server.stop_accepting();
    server.close_connections();
    io.stop();
    t.join();
}

// Raw POSIX pieces for the descriptor-exhaustion test (the Beast client needs descriptors of its own).
int raw_socket() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    return fd;
}
bool raw_connect(int fd, uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0;
}
std::string raw_health(int fd) {
    const std::string req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    EXPECT_EQ(::write(fd, req.data(), req.size()), ssize_t(req.size()));
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.append(buf, size_t(n));
    return out;
}

// Holds the process's descriptors up to a lowered limit, so accept() fails with EMFILE.
class DescriptorFamine {
  public:
    DescriptorFamine() {
        ::getrlimit(RLIMIT_NOFILE, &saved_);
        int probe = ::open("/dev/null", O_RDONLY);
        rlimit low = saved_;
        low.rlim_cur = rlim_t(probe + 16);
        ::close(probe);
        ::setrlimit(RLIMIT_NOFILE, &low);
        for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) fds_.push_back(fd);
    }
    ~DescriptorFamine() { end(); }
    void end() {
        for (int fd : fds_) ::close(fd);
        fds_.clear();
        ::setrlimit(RLIMIT_NOFILE, &saved_);
    }

  private:
    rlimit saved_{};
    std::vector<int> fds_;
};

// Out of descriptors, accept fails and is retried on a timer; the server serves the waiting client
// once descriptors are free. stop_accepting() from another thread while a retry is pending must
// not race with it (the timer was touched from an io thread and the caller's thread without a
// common lock: ThreadSanitizer's report).
TEST(HttpLimits, AcceptRetriesWhenOutOfDescriptorsAndStopsCleanly) {
    Env env;
    const uint16_t port = env.port();
    {
        const int fd = raw_socket();
        DescriptorFamine famine;
        ASSERT_TRUE(raw_connect(fd, port));  // the kernel completes it; the server cannot accept it
        std::this_thread::sleep_for(std::chrono::milliseconds(350));  // a few failed accepts and retries
        famine.end();
        EXPECT_EQ(raw_health(fd).rfind("HTTP/1.1 200", 0), 0u);
        ::close(fd);
    }
    {
        const int fd = raw_socket();
        DescriptorFamine famine;
        ASSERT_TRUE(raw_connect(fd, port));
        for (int i = 0; i < 20; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(7));
        env.server().stop_accepting();  // while the retry timer runs
        famine.end();
        ::close(fd);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // a retry, had one survived the stop
    const int late = raw_socket();
    EXPECT_FALSE(raw_connect(late, port)) << "the server still accepts after stop_accepting";
    ::close(late);
}

}  // namespace
}  // namespace phi::http::test
