// The native protocol server over real sockets against an in-process serving stack (the tiny
// phi3_mini_4k_swa fixture with the 269-token serving tokenizer, engine on its own thread): hello,
// prompt kinds, streamed tokens equal to solo runs with 16 requests multiplexed on one connection,
// cancel and disconnect freeing KV blocks, malformed frames answered with an error naming the field
// while the connection keeps working, admission limits with retry hints, a slow reader that does
// not stall others, fail_all, and phi-client end to end.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "coordinator/native/native_server.h"
#include "coordinator/native/protocol.h"
#include "sharding/model_config.h"
#include "tests/support/serving_harness.h"

namespace phi::native {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// A blocking newline-delimited JSON client over a plain socket.
class TestClient {
  public:
    explicit TestClient(uint16_t port, int rcvbuf = 0, bool read_hello = true) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
            ADD_FAILURE() << "connect failed: " << std::strerror(errno);
            return;
        }
        if (read_hello) {
            auto h = next();
            if (!h) {
                ADD_FAILURE() << "no hello";
                return;
            }
            hello = *h;
        }
    }
    ~TestClient() { close(); }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    bool send_raw(const std::string& s) {
        size_t off = 0;
        while (off < s.size()) {
            ssize_t w = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            if (w <= 0) return false;
            off += size_t(w);
        }
        return true;
    }
    bool send(const json& j) { return send_raw(j.dump() + "\n"); }

    /// The next frame; nullopt on timeout or when the server closed the connection (see eof()).
    std::optional<json> next(std::chrono::milliseconds timeout = 30s) {
        const auto deadline = Clock::now() + timeout;
        while (true) {
            if (auto nl = buf_.find('\n'); nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                try {
                    return json::parse(line);
                } catch (const std::exception& e) {
                    ADD_FAILURE() << "server sent a non-JSON line: " << line;
                    return std::nullopt;
                }
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
            if (left <= 0) return std::nullopt;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, int(left)) <= 0) return std::nullopt;
            char tmp[65536];
            ssize_t r = ::recv(fd_, tmp, sizeof(tmp), 0);
            if (r <= 0) {
                eof_ = true;
                return std::nullopt;
            }
            buf_.append(tmp, size_t(r));
        }
    }
    /// Reads (and drops) until the server closes the connection; false on timeout.
    bool wait_closed(std::chrono::milliseconds timeout) {
        const auto deadline = Clock::now() + timeout;
        while (Clock::now() < deadline) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            char tmp[65536];
            if (::recv(fd_, tmp, sizeof(tmp), 0) <= 0) return true;
        }
        return false;
    }
    bool eof() const { return eof_; }
    json hello;

  private:
    int fd_ = -1;
    std::string buf_;
    bool eof_ = false;
};

struct Result {
    std::vector<int32_t> tokens;
    std::string text;
    std::string finish;  // done's finish_reason, or "rejected" after an error frame
    json done;
    json error;
    int choice_done = 0;
    std::vector<json> token_frames;
    bool operator==(const Result& o) const {
        return tokens == o.tokens && text == o.text && finish == o.finish;
    }
};

/// Reads frames until every id in `ids` has its final frame (done, or an error frame naming it).
std::map<std::string, Result> collect(TestClient& c, std::set<std::string> ids,
                                      std::chrono::milliseconds timeout = 30s) {
    std::map<std::string, Result> out;
    const auto deadline = Clock::now() + timeout;
    while (!ids.empty()) {
        auto f = c.next(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
        if (!f) {
            ADD_FAILURE() << "timed out or closed waiting for " << ids.size() << " request(s), e.g. "
                          << *ids.begin();
            break;
        }
        const std::string type = (*f)["type"];
        if (!(*f).contains("id") || !(*f)["id"].is_string()) continue;
        const std::string id = (*f)["id"];
        if (!ids.count(id)) continue;
        Result& r = out[id];
        if (type == "token") {
            r.tokens.push_back((*f)["token_id"].get<int32_t>());
            r.text += (*f)["text"].get<std::string>();
            r.token_frames.push_back(*f);
        } else if (type == "choice_done") {
            ++r.choice_done;
        } else if (type == "done") {
            r.text += f->value("text", "");
            r.finish = (*f)["finish_reason"];
            r.done = *f;
            ids.erase(id);
        } else if (type == "error") {
            r.finish = "rejected";
            r.error = *f;
            ids.erase(id);
        }
    }
    return out;
}

Result run_one(TestClient& c, json frame) {
    const std::string id = frame["id"];
    frame["type"] = "generate";
    EXPECT_TRUE(c.send(frame));
    return collect(c, {id})[id];
}

/// Polls until the engine has no running sequence and no referenced KV block.
bool wait_engine_idle(engine::Engine& e, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        const auto s = e.stats();
        if (s.running == 0 && s.queued == 0 && s.kv_blocks_used == 0) return true;
        std::this_thread::sleep_for(10ms);
    }
    const auto s = e.stats();
    ADD_FAILURE() << "engine not idle: running " << s.running << ", queued " << s.queued
                  << ", kv_blocks_used " << s.kv_blocks_used;
    return false;
}

/// Room for a few requests running to the context's end (16k tokens of KV).
test::ServingHarnessOptions harness_options() {
    test::ServingHarnessOptions ho;
    ho.kv_blocks = 2048;
    return ho;
}

/// Polls until some KV block is in use (the stats snapshot is taken at the end of a step, after the
/// step's tokens went out).
bool wait_blocks_in_use(engine::Engine& e) {
    const auto deadline = Clock::now() + 5s;
    while (e.stats().kv_blocks_used == 0 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
    return e.stats().kv_blocks_used > 0;
}

/// The serving harness plus a NativeServer on an ephemeral port, driven by one io thread.
class Stack {
  public:
    explicit Stack(NativeOptions no = {}, test::ServingHarnessOptions ho = harness_options())
        : work_(boost::asio::make_work_guard(ioc_)), h_(ho), server_(ioc_, h_.service(), no) {
        server_.start();
        io_ = std::thread([this] { ioc_.run(); });
    }
    ~Stack() {
        server_.stop_accepting();
        server_.close_all();
        work_.reset();
        ioc_.stop();
        io_.join();
    }
    uint16_t port() const { return server_.port(); }
    NativeServer& server() { return server_; }
    serving::Service& service() { return h_.service(); }
    engine::Engine& engine() { return h_.engine(); }
    const tokenizer::Tokenizer& tok() const { return h_.tokenizer(); }

  private:
    boost::asio::io_context ioc_;  // first: outlives the engine's sinks
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    test::ServingHarness h_;
    NativeServer server_;
    std::thread io_;
};

json greedy(const std::string& id, const std::string& prompt, int max_tokens = 12) {
    return {{"id", id}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
}

// Token-ids-only mode (skip_tokenizer_init): a bare fixture checkpoint (no tokenizer) serves
// token-id prompts with HF's greedy ids; text prompts and stop strings are refused naming the
// field. phi3_rope_params is the fixture whose full-vocabulary argmax is HF's (tokenizer-limited)
// greedy choice at every step, so the bare server's ids must equal golden.json's.
TEST(Native, TokenIdsOnlyServesABareCheckpointWithHfGreedyIds) {
    test::ServingHarnessOptions ho;
    ho.fixture = "phi3_rope_params";
    ho.token_ids_only = true;
    Stack s({}, ho);
    const test::Golden g = test::load_golden("phi3_rope_params");
    TestClient c(s.port());
    const Result r = run_one(c, {{"id", "ids"},
                                 {"prompt_ids", g.prompt},
                                 {"max_tokens", int(g.greedy.size())},
                                 {"temperature", 0},
                                 {"ignore_eos", true}});
    EXPECT_EQ(r.tokens, g.greedy) << r.error.dump();
    EXPECT_EQ(r.text, "");
    EXPECT_EQ(r.finish, "length");

    const Result text = run_one(c, {{"id", "text"}, {"prompt", "hello"}, {"max_tokens", 4}});
    EXPECT_EQ(text.finish, "rejected");
    EXPECT_NE(text.error.dump().find("token-ids-only"), std::string::npos) << text.error.dump();
    EXPECT_NE(text.error.dump().find("prompt"), std::string::npos) << text.error.dump();
    const Result stop = run_one(c, {{"id", "stop"}, {"prompt_ids", g.prompt}, {"max_tokens", 4}, {"stop", {"x"}}});
    EXPECT_EQ(stop.finish, "rejected");
    EXPECT_NE(stop.error.dump().find("stop"), std::string::npos) << stop.error.dump();
    // The connection still works after the refusals.
    const Result again = run_one(c, {{"id", "again"}, {"prompt_ids", g.prompt}, {"max_tokens", 3}, {"temperature", 0}});
    EXPECT_EQ(again.tokens, std::vector<int32_t>(g.greedy.begin(), g.greedy.begin() + 3));
}

// PHI_DEBUG_DUMP writes every forward's final-norm and logits rows under the step number; the
// log-softmax of a dumped logits row is what the server sent as top logprobs, in ids and values.
TEST(Native, DebugDumpLogitsRowsAreTheServedLogprobs) {
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("phi_dump_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    test::ServingHarnessOptions ho;
    ho.fixture = "phi3_rope_params";
    ho.token_ids_only = true;
    ho.debug_dump_dir = dir;
    Stack s({}, ho);
    const test::Golden g = test::load_golden("phi3_rope_params");
    TestClient c(s.port());
    constexpr int k_steps = 3, k_top = 5;
    const Result r = run_one(c, {{"id", "dump"},
                                 {"prompt_ids", g.prompt},
                                 {"max_tokens", k_steps},
                                 {"temperature", 0},
                                 {"ignore_eos", true},
                                 {"logprobs", k_top}});
    ASSERT_EQ(r.finish, "length") << r.error.dump();
    ASSERT_EQ(int(r.token_frames.size()), k_steps);
    const int64_t vocab = load_model_config(test::fixture_dir("phi3_rope_params") / "config.json").vocab_size;
    // One request alone: forward s computes token s (the prompt in one step, then one decode each).
    for (int step = 0; step < k_steps; ++step) {
        const auto read = [&](const std::string& name) {
            const auto path = dir / fmt::format("{}.s{}.r0.f32", name, step);
            std::ifstream f(path, std::ios::binary);
            EXPECT_TRUE(f.good()) << path;
            std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
            std::vector<float> v(bytes.size() / 4);
            std::memcpy(v.data(), bytes.data(), v.size() * 4);
            return v;
        };
        const std::vector<float> logits = read("logits");
        ASSERT_GE(int64_t(logits.size()), vocab) << "step " << step;  // one row: the last prompt token's
        EXPECT_FALSE(read("final_norm").empty()) << "step " << step;
        double m = -INFINITY;
        for (int64_t i = 0; i < vocab; ++i) m = std::max(m, double(logits[size_t(i)]));
        double sum = 0;
        for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[size_t(i)]) - m);
        const double lse = m + std::log(sum);
        std::vector<int32_t> order(static_cast<size_t>(vocab));
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
        const json& top = r.token_frames[size_t(step)]["top_logprobs"];
        ASSERT_EQ(int(top.size()), k_top) << r.token_frames[size_t(step)].dump();
        for (int j = 0; j < k_top; ++j) {
            const int32_t id = order[size_t(j)];
            EXPECT_EQ(top[size_t(j)]["token_id"].get<int32_t>(), id) << "step " << step << " rank " << j;
            EXPECT_NEAR(top[size_t(j)]["logprob"].get<double>(), double(logits[size_t(id)]) - lse, 1e-5)
                << "step " << step << " rank " << j;
        }
        EXPECT_EQ(r.tokens[size_t(step)], order[0]) << "step " << step;
    }
    std::filesystem::remove_all(dir);
}

TEST(Native, HelloAndPing) {
    Stack s;
    TestClient c(s.port());
    EXPECT_EQ(c.hello["type"], "hello");
    EXPECT_EQ(c.hello["protocol"], k_protocol_version);
    EXPECT_EQ(c.hello["server"], "phi-cluster");
    EXPECT_EQ(c.hello["model"], "phi-test");
    EXPECT_EQ(c.hello["max_line_bytes"], NativeOptions{}.max_line_bytes);
    c.send({{"type", "ping"}, {"data", 7}});
    auto p = c.next();
    ASSERT_TRUE(p);
    EXPECT_EQ((*p)["type"], "pong");
    EXPECT_EQ((*p)["data"], 7);
}

TEST(Native, TextChatAndIdPromptsAgree) {
    Stack s;
    TestClient c(s.port());
    const std::string prompt = "The quick brown fox";
    const Result text = run_one(c, greedy("t", prompt));
    ASSERT_FALSE(text.tokens.empty());
    EXPECT_TRUE(text.finish == "length" || text.finish == "stop") << text.finish;
    // Streamed pieces plus the final text are the detokenized ids.
    EXPECT_EQ(text.text, s.tok().decode(text.tokens, true));
    for (size_t i = 0; i < text.token_frames.size(); ++i) {
        EXPECT_EQ(text.token_frames[i]["index"], i);
        EXPECT_EQ(text.token_frames[i]["choice"], 0);
        EXPECT_FALSE(text.token_frames[i].contains("logprob"));
    }
    const json& usage = text.done["usage"];
    EXPECT_EQ(usage["completion_tokens"], text.tokens.size());
    EXPECT_EQ(usage["prompt_tokens"], s.tok().encode(prompt).size());
    EXPECT_EQ(usage["total_tokens"],
              usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());

    json ids = greedy("i", "");
    ids.erase("prompt");
    ids["prompt_ids"] = s.tok().encode(prompt);
    EXPECT_EQ(run_one(c, ids), text);

    const json messages = json::array(
        {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi there"}}});
    json chat = greedy("c", "");
    chat.erase("prompt");
    chat["messages"] = messages;
    const Result via_chat = run_one(c, chat);
    serving::GenerationRequest req = serving::parse_generation_request(json{{"messages", messages}}, true);
    json chat_ids = greedy("ci", "");
    chat_ids.erase("prompt");
    chat_ids["prompt_ids"] = s.service().prompt_ids(req);
    EXPECT_EQ(run_one(c, chat_ids), via_chat);
    EXPECT_EQ(via_chat.done["usage"]["prompt_tokens"], chat_ids["prompt_ids"].size());
}

TEST(Native, SixteenMultiplexedEqualSolo) {
    Stack s;
    TestClient c(s.port());
    std::vector<json> frames;
    for (int i = 0; i < 16; ++i) {
        json f = greedy("req-" + std::to_string(i),
                        "prompt number " + std::to_string(i) + std::string(size_t(i), '!'), 6 + i % 7);
        if (i % 3 == 1) {  // seeded sampling is batch-invariant too
            f["temperature"] = 0.9;
            f["seed"] = 100 + i;
        }
        f["ignore_eos"] = true;
        frames.push_back(f);
    }
    std::vector<Result> solo;
    for (const json& f : frames) solo.push_back(run_one(c, f));
    std::string burst;  // every request in one write: they multiplex on the connection
    std::set<std::string> ids;
    for (json f : frames) {
        f["type"] = "generate";
        burst += f.dump() + "\n";
        ids.insert(f["id"]);
    }
    ASSERT_TRUE(c.send_raw(burst));
    auto together = collect(c, ids);
    for (size_t i = 0; i < frames.size(); ++i) {
        const Result& t = together[frames[i]["id"]];
        EXPECT_EQ(t, solo[i]) << "request " << i;
        EXPECT_EQ(t.finish, "length");
        EXPECT_EQ(int(t.tokens.size()), frames[i]["max_tokens"].get<int>());
    }
    wait_engine_idle(s.engine());
}

TEST(Native, ChoicesAndLogprobs) {
    Stack s;
    TestClient c(s.port());
    json f = greedy("n2", "abc", 5);
    f["n"] = 2;
    f["temperature"] = 1.0;
    f["seed"] = 7;
    f["logprobs"] = 3;
    const Result r = run_one(c, f);
    EXPECT_EQ(r.choice_done, 2);
    EXPECT_EQ(r.tokens.size(), 10u);
    EXPECT_EQ(r.done["usage"]["completion_tokens"], 10);
    std::set<int> choices;
    for (const json& t : r.token_frames) {
        choices.insert(t["choice"].get<int>());
        ASSERT_TRUE(t.contains("logprob"));
        EXPECT_LE(t["logprob"].get<double>(), 0.0);
        ASSERT_EQ(t["top_logprobs"].size(), 3u);
        EXPECT_TRUE(t["top_logprobs"][0].contains("token_id"));
        EXPECT_TRUE(t["top_logprobs"][0].contains("text"));
    }
    EXPECT_EQ(choices, (std::set<int>{0, 1}));
    json one = greedy("lp0", "abc", 3);
    one["logprobs"] = 0;
    const Result r0 = run_one(c, one);
    ASSERT_FALSE(r0.token_frames.empty());
    EXPECT_TRUE(r0.token_frames[0].contains("logprob"));
    EXPECT_FALSE(r0.token_frames[0].contains("top_logprobs"));
}

/// Runs until cancelled in practice: thousands of steps, while a test reacts within milliseconds.
json long_request(const std::string& id, int max_tokens = 4000) {
    return {{"type", "generate"},       {"id", id},         {"prompt", "count forever"},
            {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
}

TEST(Native, CancelFrameFreesBlocks) {
    Stack s;
    TestClient c(s.port());
    c.send(long_request("long"));
    auto first = c.next();
    ASSERT_TRUE(first);
    ASSERT_EQ((*first)["type"], "token");
    EXPECT_TRUE(wait_blocks_in_use(s.engine()));
    c.send({{"type", "cancel"}, {"id", "long"}});
    const Result r = collect(c, {"long"})["long"];
    EXPECT_EQ(r.finish, "cancelled");
    EXPECT_LT(r.tokens.size(), 3999u);
    wait_engine_idle(s.engine());
    c.send({{"type", "cancel"}, {"id", "long"}});  // no longer live: ignored
    EXPECT_EQ(run_one(c, greedy("after", "x", 3)).finish, "length");
}

TEST(Native, ClosedConnectionFreesBlocks) {
    Stack s;
    {
        TestClient c(s.port());
        c.send(long_request("a"));
        c.send(long_request("b"));
        auto first = c.next();
        ASSERT_TRUE(first);
        EXPECT_TRUE(wait_blocks_in_use(s.engine()));
    }  // closed mid-stream
    wait_engine_idle(s.engine());
    const auto deadline = Clock::now() + 5s;
    while (s.server().connections() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    EXPECT_EQ(s.server().connections(), 0u);
}

struct Bad {
    std::string line;
    std::string code;
    json param;  // null: no field
    json id = nullptr;
};

TEST(Native, MalformedFramesNameTheFieldAndKeepTheConnection) {
    NativeOptions no;
    no.max_line_bytes = 16384;
    Stack s(no);
    TestClient c(s.port());
    // A live request, so that a duplicate id has something to collide with.
    c.send(long_request("live"));
    auto first = c.next();
    ASSERT_TRUE(first);
    const std::string ctx_ids = [] {
        json ids = json::array();
        for (int i = 0; i < 4096; ++i) ids.push_back(65);
        return json{{"type", "generate"}, {"id", "ctx"}, {"prompt_ids", ids}}.dump();
    }();
    std::string deep = std::string(100, '[') + std::string(100, ']');
    const std::vector<Bad> cases = {
        {"this is not json", "invalid_json", nullptr},
        {"{\"type\":\"generate\",\"prompt\":\"hi\"", "invalid_json", nullptr},  // truncated
        {"[1,2,3]", "invalid_frame", nullptr},
        {deep, "invalid_json", nullptr},
        {R"({"id":"x","prompt":"hi"})", "invalid_frame", "type", "x"},
        {R"({"type":7,"id":"x"})", "invalid_frame", "type", "x"},
        {R"({"type":"frobnicate","id":"x"})", "unknown_type", "type", "x"},
        {R"({"type":"generate","prompt":"hi"})", "invalid_request", "id"},
        {R"({"type":"generate","id":5,"prompt":"hi"})", "invalid_request", "id"},
        {R"({"type":"generate","id":"","prompt":"hi"})", "invalid_request", "id", ""},
        {R"({"type":"cancel"})", "invalid_request", "id"},
        {R"({"type":"generate","id":"live","prompt":"hi"})", "duplicate_id", "id", "live"},
        {R"({"type":"generate","id":"x"})", "invalid_request", "prompt", "x"},
        {R"({"type":"generate","id":"x","prompt":42})", "invalid_request", "prompt", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","messages":[{"role":"user","content":"a"}]})",
         "invalid_request", "messages", "x"},
        {R"({"type":"generate","id":"x","messages":[]})", "invalid_request", "messages", "x"},
        {R"({"type":"generate","id":"x","messages":[{"content":"a"}]})", "invalid_request",
         "messages[0].role", "x"},
        {R"({"type":"generate","id":"x","prompt_ids":[1,-2]})", "invalid_request", "prompt_ids", "x"},
        {R"({"type":"generate","id":"x","prompt_ids":[]})", "invalid_request", "prompt_ids", "x"},
        {R"({"type":"generate","id":"x","prompt_ids":[300]})", "invalid_request", "prompt_ids",
         "x"},  // >= vocab
        {R"({"type":"generate","id":"x","prompt":"hi","temperature":"hot"})", "invalid_request",
         "temperature", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","temperature":-1})", "invalid_request", "temperature",
         "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","top_p":1.5})", "invalid_request", "top_p", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","max_tokens":0})", "invalid_request", "max_tokens",
         "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","max_tokens":"many"})", "invalid_request", "max_tokens",
         "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","n":0})", "invalid_request", "n", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","seed":"s"})", "invalid_request", "seed", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","logprobs":50})", "invalid_request", "logprobs", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","stop":[1]})", "invalid_request", "stop", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","model":"gpt-4"})", "model_not_found", "model", "x"},
        {R"({"type":"generate","id":"x","prompt":"hi","max_tokens":100000})", "invalid_request", "max_tokens",
         "x"},
        {ctx_ids, "invalid_request", "prompt_ids", "ctx"},  // context overflow
        {std::string(20000, 'x'), "line_too_long", nullptr},
        {std::string("{\"type\":\"generate\",\"id\":\"x\",\"prompt\":\"\xff\xfe\"}"), "invalid_utf8",
         nullptr},
        {std::string("{\"type\":\"generate\",\"id\":\"x\",\"prompt\":\"\xed\xa0\x80\"}"), "invalid_utf8",
         nullptr},
    };
    // Every case is answered by exactly one error frame (in order), on the same connection.
    std::vector<json> errors;
    for (const Bad& b : cases) {
        ASSERT_TRUE(c.send_raw(b.line + "\n"));
        std::optional<json> f;
        do {
            f = c.next(10s);
        } while (f && (*f)["type"] == "token");  // the live request's stream interleaves
        ASSERT_TRUE(f) << "no answer to: " << b.line.substr(0, 80);
        EXPECT_EQ((*f)["type"], "error") << b.line.substr(0, 80);
        const json& e = (*f)["error"];
        EXPECT_EQ(e["code"], b.code) << b.line.substr(0, 80) << " -> " << f->dump();
        EXPECT_EQ(e["param"], b.param) << b.line.substr(0, 80) << " -> " << f->dump();
        EXPECT_EQ((*f)["id"], b.id) << b.line.substr(0, 80);
        EXPECT_FALSE(e["message"].get<std::string>().empty());
        EXPECT_TRUE(e.contains("type"));
    }
    // An over-long line arriving in pieces, then a valid frame in the same write as its end.
    c.send_raw(std::string(10000, 'y'));
    std::this_thread::sleep_for(20ms);
    c.send_raw(std::string(10000, 'y'));
    std::this_thread::sleep_for(20ms);
    c.send_raw("yyy\n{\"type\":\"ping\"}\n");
    std::optional<json> f;
    do {
        f = c.next(10s);
    } while (f && (*f)["type"] == "token");
    ASSERT_TRUE(f);
    EXPECT_EQ((*f)["error"]["code"], "line_too_long");
    do {
        f = c.next(10s);
    } while (f && (*f)["type"] == "token");
    ASSERT_TRUE(f);
    EXPECT_EQ((*f)["type"], "pong");
    // The live request was not disturbed, and the connection still serves requests.
    c.send({{"type", "cancel"}, {"id", "live"}});
    EXPECT_EQ(collect(c, {"live"})["live"].finish, "cancelled");
    const Result ok = run_one(c, greedy("ok", "still fine", 4));
    EXPECT_EQ(ok.finish, "length");
    EXPECT_EQ(ok.tokens.size(), 4u);
    wait_engine_idle(s.engine());
}

TEST(Native, OverAdmissionGetsRetryHint) {
    test::ServingHarnessOptions ho = harness_options();
    ho.engine.max_num_seqs = 1;
    ho.engine.max_queued = 1;
    Stack s({}, ho);
    TestClient c(s.port());
    std::string burst;
    std::set<std::string> ids;
    for (int i = 0; i < 12; ++i) {
        json f = long_request("q" + std::to_string(i), 20);
        burst += f.dump() + "\n";
        ids.insert(f["id"]);
    }
    c.send_raw(burst);
    auto out = collect(c, ids);
    int rejected = 0, finished = 0;
    for (auto& [id, r] : out) {
        if (r.finish == "rejected") {
            ++rejected;
            EXPECT_EQ(r.error["error"]["code"], "overloaded") << r.error.dump();
            EXPECT_EQ(r.error["error"]["type"], "rate_limit_error");
            ASSERT_TRUE(r.error.contains("retry_after_ms"));
            EXPECT_GT(r.error["retry_after_ms"].get<int>(), 0);
        } else {
            ++finished;
            EXPECT_EQ(r.finish, "length");
        }
    }
    EXPECT_GE(finished, 1);
    EXPECT_GE(rejected, 1);
    wait_engine_idle(s.engine());
}

TEST(Native, PerConnectionAndConnectionLimits) {
    NativeOptions no;
    no.max_requests_per_connection = 2;
    no.max_connections = 1;
    Stack s(no);
    TestClient c(s.port());
    c.send(long_request("a"));
    c.send(long_request("b"));
    c.send(long_request("c"));
    std::optional<json> f;
    do {
        f = c.next(10s);
    } while (f && (*f)["type"] == "token");
    ASSERT_TRUE(f);
    EXPECT_EQ((*f)["id"], "c");
    EXPECT_EQ((*f)["error"]["code"], "too_many_requests");
    EXPECT_GT((*f)["retry_after_ms"].get<int>(), 0);

    TestClient second(s.port(), 0, false);
    auto refused = second.next(10s);
    ASSERT_TRUE(refused);
    EXPECT_EQ((*refused)["type"], "error");
    EXPECT_EQ((*refused)["error"]["code"], "too_many_connections");
    EXPECT_TRUE(refused->contains("retry_after_ms"));
    EXPECT_TRUE(second.wait_closed(5s));

    c.send({{"type", "cancel"}, {"id", "a"}});
    c.send({{"type", "cancel"}, {"id", "b"}});
    auto done = collect(c, {"a", "b"});
    EXPECT_EQ(done["a"].finish, "cancelled");
    EXPECT_EQ(done["b"].finish, "cancelled");
    wait_engine_idle(s.engine());
}

TEST(Native, SlowReaderDoesNotStallOthers) {
    NativeOptions no;
    no.max_pending_bytes = 256 << 10;
    Stack s(no);
    TestClient fast(s.port());
    const Result alone = run_one(fast, greedy("f0", "hello", 40));
    // The slow client asks for lots of output (20 alternatives per token, ~1.2 KB a frame) and never
    // reads; its tiny receive buffer fills at once and the server queues the rest.
    TestClient slow(s.port(), 4096);
    for (int i = 0; i < 4; ++i) {
        json f = long_request("s" + std::to_string(i), 2000);
        f["logprobs"] = 20;
        slow.send(f);
    }
    const auto before = s.engine().stats().generated_tokens;
    const auto deadline = Clock::now() + 10s;
    while (s.engine().stats().generated_tokens - before < 200 && Clock::now() < deadline)
        std::this_thread::sleep_for(1ms);
    // Another connection streams meanwhile, with the same tokens as alone.
    const Result r = run_one(fast, greedy("f1", "hello", 40));
    EXPECT_EQ(r, alone);
    // The slow connection passes its bound: it is closed and its requests cancelled, without it
    // reading a byte.
    wait_engine_idle(s.engine(), 20s);
    EXPECT_GE(s.engine().stats().finished_cancelled, 4);
    EXPECT_TRUE(slow.wait_closed(10s));
    EXPECT_EQ(run_one(fast, greedy("g", "again", 3)).finish, "length");
}

TEST(Native, FailAllEndsInFlightRequests) {
    Stack s;
    TestClient c(s.port());
    c.send(long_request("x"));
    c.send(long_request("y"));
    auto first = c.next();
    ASSERT_TRUE(first);
    s.server().fail_all("the server shut down before this request finished");
    auto out = collect(c, {"x", "y"});
    for (const char* id : {"x", "y"}) {
        EXPECT_EQ(out[id].finish, "error");
        EXPECT_EQ(out[id].done["error"]["message"], "the server shut down before this request finished");
    }
    wait_engine_idle(s.engine());
    c.send({{"type", "ping"}});
    auto p = c.next();
    ASSERT_TRUE(p);
    EXPECT_EQ((*p)["type"], "pong");  // no late frames of x or y came before the pong
    s.service().begin_drain();
    c.send({{"type", "generate"}, {"id", "late"}, {"prompt", "hi"}});
    auto e = c.next();
    ASSERT_TRUE(e);
    EXPECT_EQ((*e)["error"]["code"], "draining");
}

TEST(Native, FrameSplitAcrossWrites) {
    Stack s;
    TestClient c(s.port());
    const std::string frame =
        json{{"type", "generate"}, {"id", "split"}, {"prompt", "abc"}, {"max_tokens", 3}}.dump() + "\r\n";
    for (char ch : frame) {
        c.send_raw(std::string(1, ch));
        if (ch == ',') std::this_thread::sleep_for(2ms);
    }
    EXPECT_EQ(collect(c, {"split"})["split"].tokens.size(), 3u);
}

TEST(Native, Utf8Validation) {
    EXPECT_EQ(invalid_utf8_offset("plain ascii"), std::string::npos);
    EXPECT_EQ(invalid_utf8_offset("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), std::string::npos);
    EXPECT_EQ(invalid_utf8_offset("a\xc3"), 1u);              // truncated
    EXPECT_EQ(invalid_utf8_offset("ab\xc0\xaf"), 2u);         // overlong
    EXPECT_EQ(invalid_utf8_offset("\xed\xa0\x80"), 0u);       // surrogate
    EXPECT_EQ(invalid_utf8_offset("x\xf4\x90\x80\x80"), 1u);  // > U+10FFFF
    EXPECT_EQ(invalid_utf8_offset("\x80"), 0u);
}

std::pair<int, std::string> run_command(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return {-1, ""};
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    const int st = ::pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

TEST(Native, PhiClientStreamsAndReportsStats) {
    Stack s;
    const std::string client =
        std::string(PHI_CLIENT_PATH) + " --host 127.0.0.1 --port " + std::to_string(s.port());
    TestClient c(s.port());
    const Result ref = run_one(c, greedy("ref", "Once upon a time", 10));

    auto [rc, out] =
        run_command(client + " --max-tokens 10 --temperature 0 --stats 'Once upon a time' 2>/dev/null");
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(out, ref.text + "\n");

    auto [rc2, out2] =
        run_command("echo 'Once upon a time' | " + client + " --max-tokens 10 --temperature 0 - 2>&1");
    EXPECT_EQ(rc2, 0);
    EXPECT_EQ(out2, s.tok().decode(run_one(c, greedy("ref2", "Once upon a time\n", 10)).tokens, true) + "\n");

    auto [rc3, out3] = run_command(client + " -n 6 -q --stats --max-tokens 5 --temperature 0 'load' 2>&1");
    EXPECT_EQ(rc3, 0) << out3;
    EXPECT_NE(out3.find("aggregate: 6 requests"), std::string::npos) << out3;
    EXPECT_NE(out3.find("p99"), std::string::npos) << out3;

    auto [rc4, out4] = run_command(client + " --wait-ready 5 2>&1");
    EXPECT_EQ(rc4, 0) << out4;
    EXPECT_NE(out4.find("phi-test"), std::string::npos) << out4;

    auto [rc5, out5] = run_command(client + " --max-tokens 3 --top-p 7 'x' 2>&1");
    EXPECT_NE(rc5, 0);
    EXPECT_NE(out5.find("top_p"), std::string::npos) << out5;

    auto [rc6, out6] =
        run_command(client + " --chat --system 'Be brief.' --max-tokens 4 --temperature 0 'Hi there' 2>&1");
    EXPECT_EQ(rc6, 0) << out6;
}

}  // namespace
}  // namespace phi::native
