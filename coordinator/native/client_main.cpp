// phi-client: command-line client of the native protocol (docs/PROTOCOL.md). Sends a prompt (or
// chat messages), streams the text to stdout as token frames arrive, and with --stats prints time
// to first token and tokens/s to stderr. -n K fires K concurrent requests multiplexed on the
// connection(s) for quick load checks; --wait-ready waits for a server to say hello (scripts).
// Ctrl-C cancels the live requests (cancel frames) and waits for their final frames.
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/native/native_server.h"
#include "coordinator/native/protocol.h"

namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) {
    g_interrupted = 1;
}

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

/// One TCP connection speaking newline-delimited JSON (blocking, with poll() timeouts).
class LineConn {
  public:
    LineConn() = default;
    LineConn(const LineConn&) = delete;
    LineConn& operator=(const LineConn&) = delete;
    ~LineConn() { reset(); }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        buf_.clear();
        scanned_ = 0;
    }
    /// Connects and reads the hello frame; false (with `err`) on failure.
    bool open(const std::string& host, int port, int timeout_ms, json* hello, std::string* err) {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        const std::string service = std::to_string(port);
        if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
            *err = std::string("cannot resolve ") + host + ": " + ::gai_strerror(rc);
            return false;
        }
        *err = "no address";
        for (addrinfo* a = res; a; a = a->ai_next) {
            int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
            if (fd < 0) continue;
            if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
                fd_ = fd;
                break;
            }
            *err = std::strerror(errno);
            ::close(fd);
        }
        ::freeaddrinfo(res);
        if (fd_ < 0) {
            *err = "cannot connect to " + host + ":" + service + ": " + *err;
            return false;
        }
        std::string line;
        const int rc = read_line(&line, timeout_ms);
        if (rc <= 0) {
            *err = rc == 0 ? "the server sent no hello frame"
                           : "the server closed the connection before its hello";
            return false;
        }
        try {
            *hello = json::parse(line);
        } catch (const std::exception& e) {
            *err = std::string("the server's first frame is not JSON: ") + e.what();
            return false;
        }
        if (hello->value("type", "") == "error") {
            *err = "the server refused the connection: " + (*hello)["error"].value("message", "");
            return false;
        }
        if (hello->value("type", "") != "hello" ||
            hello->value("protocol", 0) != phi::native::k_protocol_version) {
            *err = "the server does not speak native protocol v" +
                   std::to_string(phi::native::k_protocol_version) + ": " + line;
            return false;
        }
        return true;
    }

    bool send(const json& frame) {
        std::string s = frame.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        size_t off = 0;
        while (off < s.size()) {
            ssize_t w = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return false;
            off += size_t(w);
        }
        return true;
    }

    /// 1: a line; 0: timeout; -1: closed or failed.
    int read_line(std::string* line, int timeout_ms) {
        const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
        while (true) {
            if (auto nl = buf_.find('\n', scanned_); nl != std::string::npos) {
                line->assign(buf_, 0, nl);
                buf_.erase(0, nl + 1);
                scanned_ = 0;
                return 1;
            }
            scanned_ = buf_.size();
            const int left = int(std::max<int64_t>(
                0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
            pollfd p{fd_, POLLIN, 0};
            const int rc = ::poll(&p, 1, left);
            if (rc < 0 && errno == EINTR) return 0;  // a signal: let the caller look
            if (rc == 0) return 0;
            char tmp[65536];
            ssize_t r = ::recv(fd_, tmp, sizeof(tmp), 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return -1;
            buf_.append(tmp, size_t(r));
        }
    }

  private:
    int fd_ = -1;
    std::string buf_;
    size_t scanned_ = 0;
};

struct Options {
    std::string host = "127.0.0.1";
    int port = phi::native::k_default_port;
    bool chat = false;
    std::string system;
    int max_tokens = 256;
    std::optional<double> temperature, top_p;
    std::optional<int> top_k, logprobs;
    std::optional<int64_t> seed;
    std::vector<std::string> stop;
    bool ids = false;
    bool stats = false;
    int n = 1;
    int connections = 1;
    double wait_ready = 0;
    bool raw = false;
    bool quiet = false;
    std::string prompt;
    bool have_prompt = false;
};

struct Job {
    std::string id;
    json frame;
    Clock::time_point sent{}, first{}, done{};
    bool got_first = false, finished = false;
    int64_t tokens = 0;
    std::string text;
    std::string finish_reason;
    std::string error;
};

std::vector<int64_t> parse_ids(const std::string& s) {
    std::vector<int64_t> ids;
    std::string cur;
    for (char c : s + ",") {
        if (c == ',' || c == ' ' || c == '\n' || c == '\t') {
            if (!cur.empty()) ids.push_back(std::stoll(cur));
            cur.clear();
        } else {
            cur += c;
        }
    }
    return ids;
}

json make_frame(const Options& o, const std::string& id, const json& messages, const std::string& prompt) {
    json f = {{"type", "generate"}, {"id", id}};
    if (o.chat) {
        f["messages"] = messages;
    } else if (o.ids) {
        f["prompt_ids"] = parse_ids(prompt);
    } else {
        f["prompt"] = prompt;
    }
    f["max_tokens"] = o.max_tokens;
    if (o.temperature) f["temperature"] = *o.temperature;
    if (o.top_p) f["top_p"] = *o.top_p;
    if (o.top_k) f["top_k"] = *o.top_k;
    if (o.seed) f["seed"] = *o.seed;
    if (o.logprobs) f["logprobs"] = *o.logprobs;
    if (!o.stop.empty()) f["stop"] = o.stop;
    return f;
}

json chat_messages(const Options& o, const std::string& user) {
    json m = json::array();
    if (!o.system.empty()) m.push_back({{"role", "system"}, {"content", o.system}});
    m.push_back({{"role", "user"}, {"content", user}});
    return m;
}

/// Sends every job on `conn` at once and reads frames until each has a final frame. With `stream`
/// the text goes to stdout as it arrives. False when the connection failed.
bool run_jobs(LineConn& conn, std::vector<Job*> jobs, const Options& o, bool stream, std::string* err) {
    std::map<std::string, Job*> live;
    for (Job* j : jobs) {
        j->sent = Clock::now();
        if (!conn.send(j->frame)) {
            *err = "the connection closed while sending";
            return false;
        }
        live[j->id] = j;
    }
    bool cancel_sent = false;
    std::string line;
    while (!live.empty()) {
        if (g_interrupted && !cancel_sent) {
            for (auto& [id, j] : live) conn.send({{"type", "cancel"}, {"id", id}});
            cancel_sent = true;
        }
        const int rc = conn.read_line(&line, 200);
        if (rc == 0) continue;
        if (rc < 0) {
            *err = "the server closed the connection";
            return false;
        }
        if (o.raw) std::cout << line << "\n" << std::flush;
        json f;
        try {
            f = json::parse(line);
        } catch (const std::exception& e) {
            *err = std::string("the server sent a frame that is not JSON: ") + e.what();
            return false;
        }
        const std::string type = f.value("type", "");
        const std::string id = f.contains("id") && f["id"].is_string() ? f["id"].get<std::string>() : "";
        auto it = live.find(id);
        if (type == "error") {
            const std::string msg = f["error"].value("message", "error");
            if (it == live.end()) {
                std::cerr << "phi-client: server error: " << msg << "\n";
                continue;
            }
            it->second->error = msg;
            if (f.contains("retry_after_ms"))
                it->second->error += " (retry after " + f["retry_after_ms"].dump() + " ms)";
            it->second->finish_reason = "error";
            it->second->finished = true;
            it->second->done = Clock::now();
            live.erase(it);
            continue;
        }
        if (it == live.end()) continue;  // pong, or a frame of a request we do not follow
        Job& j = *it->second;
        if (type == "token") {
            if (!j.got_first) {
                j.first = Clock::now();
                j.got_first = true;
            }
            ++j.tokens;
            const std::string piece = f.value("text", "");
            j.text += piece;
            if (stream && !o.raw) std::cout << piece << std::flush;
        } else if (type == "choice_done") {
            j.text += f.value("text", "");
        } else if (type == "done") {
            const std::string tail = f.value("text", "");
            j.text += tail;
            if (stream && !o.raw) std::cout << tail << std::flush;
            j.finish_reason = f.value("finish_reason", "");
            if (f.contains("error") && f["error"].is_object()) j.error = f["error"].value("message", "");
            j.finished = true;
            j.done = Clock::now();
            live.erase(it);
        }
    }
    return true;
}

double percentile(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t k = size_t(std::ceil(q * double(v.size())));
    return v[std::min(v.size() - 1, k == 0 ? 0 : k - 1)];
}

void print_job_stats(const Job& j, bool with_id) {
    const double ttft = j.got_first ? ms_between(j.sent, j.first) : 0;
    const double e2e = ms_between(j.sent, j.done);
    const double decode_s = j.got_first && j.tokens > 1 ? ms_between(j.first, j.done) / 1000.0 : 0;
    std::fprintf(stderr,
                 "%s%sttft %.1f ms, %lld tokens, %.1f tok/s (decode %.1f tok/s), e2e %.1f ms, finish %s\n",
                 with_id ? j.id.c_str() : "", with_id ? ": " : "", ttft, (long long)j.tokens,
                 e2e > 0 ? double(j.tokens) / (e2e / 1000.0) : 0.0,
                 decode_s > 0 ? double(j.tokens - 1) / decode_s : 0.0, e2e, j.finish_reason.c_str());
}

int exit_code(const std::vector<Job>& jobs) {
    int rc = 0;
    for (const Job& j : jobs) {
        if (j.finish_reason == "error" || !j.finished)
            rc = 1;
        else if (j.finish_reason == "cancelled" && rc == 0)
            rc = 130;
    }
    return rc;
}

/// Connects, retrying until `wait_s` has passed (0: one try).
bool connect_ready(LineConn& conn, const Options& o, json* hello) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(o.wait_ready);
    std::string err;
    while (true) {
        if (conn.open(o.host, o.port, 10000, hello, &err)) return true;
        if (Clock::now() >= deadline || g_interrupted) break;
        conn.reset();
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::cerr << "phi-client: " << err << "\n";
    return false;
}

int interactive(const Options& o) {
    LineConn conn;
    json hello;
    if (!connect_ready(conn, o, &hello)) return 2;
    std::cerr << "connected to " << hello.value("model", "?") << " (" << (o.chat ? "chat" : "completion")
              << " mode; Ctrl-D quits)\n";
    json history = json::array();
    if (!o.system.empty()) history.push_back({{"role", "system"}, {"content", o.system}});
    int turn = 0;
    std::string line;
    while (true) {
        std::cerr << "> " << std::flush;
        if (!std::getline(std::cin, line)) break;
        if (line.empty()) continue;
        g_interrupted = 0;
        Job j;
        j.id = "turn-" + std::to_string(turn++);
        if (o.chat) history.push_back({{"role", "user"}, {"content", line}});
        j.frame = make_frame(o, j.id, history, line);
        std::string err;
        if (!run_jobs(conn, {&j}, o, true, &err)) {
            std::cerr << "\nphi-client: " << err << "\n";
            return 2;
        }
        std::cout << "\n";
        if (!j.error.empty()) std::cerr << "phi-client: " << j.error << "\n";
        if (o.stats) print_job_stats(j, false);
        if (o.chat) history.push_back({{"role", "assistant"}, {"content", j.text}});
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"phi-client: a command-line client of phi-cluster's native protocol"};
    app.add_option("--host", o.host, "server address")->capture_default_str();
    app.add_option("--port", o.port, "native protocol port")->capture_default_str();
    app.add_flag("--chat", o.chat,
                 "send the prompt as a user chat message (the model's chat template applies)");
    app.add_option("--system", o.system, "system message (implies --chat)");
    app.add_option("--max-tokens", o.max_tokens, "most tokens to generate")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--temperature", o.temperature, "sampling temperature (0: greedy)");
    app.add_option("--top-p", o.top_p, "nucleus sampling mass");
    app.add_option("--top-k", o.top_k, "keep the k most likely tokens");
    app.add_option("--seed", o.seed, "sampling seed (reproducible output)");
    app.add_option("--stop", o.stop, "stop string (repeatable)");
    app.add_option("--logprobs", o.logprobs, "request logprobs with k alternatives (visible with --raw)");
    app.add_flag("--ids", o.ids, "the prompt is comma-separated token ids");
    app.add_flag("--stats", o.stats, "print time to first token and tokens/s to stderr");
    app.add_option("-n", o.n, "fire K concurrent requests with the same prompt")
        ->check(CLI::Range(1, 100000));
    app.add_option("--connections", o.connections, "spread the -n requests over C connections")
        ->check(CLI::Range(1, 1024))
        ->capture_default_str();
    app.add_option("--wait-ready", o.wait_ready,
                   "retry connecting for up to SECONDS until the server says hello; "
                   "without a prompt, exit 0 once it does");
    app.add_flag("--raw", o.raw, "print every server frame (JSON lines) instead of the text");
    app.add_flag("-q,--quiet", o.quiet, "with -n: print only statistics, not the texts");
    app.add_option("prompt", o.prompt, "prompt text, or - to read it from stdin");
    CLI11_PARSE(app, argc, argv);
    if (!o.system.empty()) o.chat = true;
    if (o.chat && o.ids) {
        std::cerr << "phi-client: --ids and --chat exclude each other\n";
        return 2;
    }
    std::signal(SIGINT, on_sigint);
    std::signal(SIGPIPE, SIG_IGN);

    o.have_prompt = app.count("prompt") > 0;
    if (o.have_prompt && o.prompt == "-") {
        o.prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else if (!o.have_prompt) {
        if (app.count("--wait-ready")) {
            LineConn conn;
            json hello;
            if (!connect_ready(conn, o, &hello)) return 2;
            std::cerr << "ready: " << hello.value("server", "") << " serving " << hello.value("model", "")
                      << "\n";
            return 0;
        }
        if (::isatty(STDIN_FILENO)) return interactive(o);
        o.prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    }

    std::vector<Job> jobs(static_cast<size_t>(o.n));
    const json messages = chat_messages(o, o.prompt);
    for (int i = 0; i < o.n; ++i) {
        jobs[size_t(i)].id = "r" + std::to_string(i);
        jobs[size_t(i)].frame = make_frame(o, jobs[size_t(i)].id, messages, o.prompt);
    }
    const int nconn = std::min(o.connections, o.n);
    std::vector<LineConn> conns(static_cast<size_t>(nconn));
    for (int c = 0; c < nconn; ++c) {
        json hello;
        if (!connect_ready(conns[size_t(c)], o, &hello)) return 2;
    }
    const bool stream = o.n == 1;
    const auto t0 = Clock::now();
    std::vector<std::string> errs(static_cast<size_t>(nconn));
    std::vector<std::thread> threads;
    for (int c = 0; c < nconn; ++c) {
        std::vector<Job*> mine;
        for (int i = c; i < o.n; i += nconn) mine.push_back(&jobs[size_t(i)]);
        threads.emplace_back([&, c, mine] {
            if (!run_jobs(conns[size_t(c)], mine, o, stream, &errs[size_t(c)])) {
                std::cerr << "phi-client: " << errs[size_t(c)] << "\n";
            }
        });
    }
    for (auto& t : threads) t.join();
    const double wall_ms = ms_between(t0, Clock::now());

    if (stream) {
        if (!o.raw) std::cout << "\n" << std::flush;
    } else if (!o.quiet && !o.raw) {
        for (const Job& j : jobs) std::cout << "[" << j.id << "] " << j.text << "\n";
    }
    for (const Job& j : jobs)
        if (!j.error.empty()) std::cerr << "phi-client: " << j.id << ": " << j.error << "\n";
    for (const auto& e : errs)
        if (!e.empty()) return 2;
    if (o.stats) {
        if (o.n == 1) {
            print_job_stats(jobs[0], false);
        } else {
            std::vector<double> ttfts;
            int64_t tokens = 0;
            for (const Job& j : jobs) {
                print_job_stats(j, true);
                if (j.got_first) ttfts.push_back(ms_between(j.sent, j.first));
                tokens += j.tokens;
            }
            std::fprintf(stderr,
                         "aggregate: %d requests on %d connection(s), %lld tokens in %.1f ms: %.1f tok/s; "
                         "ttft p50 %.1f ms, p99 %.1f ms\n",
                         o.n, nconn, (long long)tokens, wall_ms,
                         wall_ms > 0 ? double(tokens) / (wall_ms / 1000.0) : 0.0, percentile(ttfts, 0.50),
                         percentile(ttfts, 0.99));
        }
    }
    return exit_code(jobs);
}
