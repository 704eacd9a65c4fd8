// One Connection per socket, all of its handlers on its own strand. A connection serves one request
// at a time (keep-alive, pipelined requests wait in the read buffer):
//   wait (idle timeout) -> read header (+ 100 Continue) and body (read timeout) -> route ->
//   either a whole response, or a submitted request whose events arrive from the engine thread as
//   posts to the strand -> writes (one in flight; the rest coalesce in out_) -> next request.
// While a request is in the engine, a read on the socket watches for the client leaving (EOF or an
// error cancels the request, so its KV blocks are freed at the next engine step).
#include "coordinator/http/http_server.h"

#include <fmt/format.h>

#include <array>
// clang-format off
// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility> (GCC 12).
#include <utility>
// clang-format on
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>
#include <unordered_map>
#include <mutex>
#include <optional>
#include <random>

#include "common/error.h"
#include "common/user_message.h"
#include "common/log.h"
#include "coordinator/http/openai_format.h"
#include "coordinator/serving/post_gate.h"
#include "coordinator/serving/service.h"

namespace phi::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

namespace {

constexpr int k_max_json_depth = 64;
constexpr size_t k_watch_read_bytes = 4096;
constexpr std::chrono::milliseconds k_linger_time{2000};
constexpr size_t k_linger_bytes = size_t(16) << 20;

struct TooDeep {};

// Parses a request body; nesting is bounded so a hostile body cannot exhaust the stack later.
json parse_body(const std::string& body) {
    json::parser_callback_t cb = [](int depth, json::parse_event_t, json&) {
        if (depth > k_max_json_depth) throw TooDeep{};
        return true;
    };
    return json::parse(body, cb, /*allow_exceptions=*/true);
}

json error_body(unsigned status, const std::string& type, const std::string& message,
                const std::string& param = "") {
    return json{{"error",
                 {{"message", message},
                  {"type", type},
                  {"param", param.empty() ? json(nullptr) : json(param)},
                  {"code", status}}}};
}

// The start line and fields (and for a string body, the body) as bytes.
template <class Body>
std::string serialize(bhttp::response<Body>& res, bool header_only) {
    std::string out;
    bhttp::response_serializer<Body> sr{res};
    if (header_only) sr.split(true);
    beast::error_code ec;
    do {
        sr.next(ec, [&](beast::error_code&, const auto& buffers) {
            for (const auto b : beast::buffers_range_ref(buffers))
                out.append(static_cast<const char*>(b.data()), b.size());
            sr.consume(net::buffer_size(buffers));
        });
    } while (!ec && !(header_only ? sr.is_header_done() : sr.is_done()));
    PHI_CHECK(!ec, "cannot serialize an HTTP response: {}", ec.message());
    return out;
}

int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class Connection;

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
    Impl(net::io_context& io, serving::Service& svc, const HttpOptions& opts)
        : io(io), svc(svc), opts(opts), acceptor(io), retry_timer(io), created(unix_now()) {
        std::random_device rd;
        id_salt = (uint64_t(rd()) << 32) ^ rd();
    }

    void do_accept();
    void on_accept(beast::error_code ec, tcp::socket socket);
    std::string next_id(const char* prefix) {
        const uint64_t k = id_counter.fetch_add(1);
        return fmt::format("{}{:016x}{:016x}", prefix, id_salt, k * 0x9E3779B97F4A7C15ull);
    }
    void count_response(unsigned status) { ++by_class[std::min<size_t>(status / 100, by_class.size() - 1)]; }

    net::io_context& io;
    serving::Service& svc;
    HttpOptions opts;
    // Sinks run on the engine thread; they post to connections only while the server exists.
    std::shared_ptr<serving::PostGate> gate = std::make_shared<serving::PostGate>();

    std::mutex acceptor_mu;  // the acceptor is used from io threads and from stop_accepting()
    tcp::acceptor acceptor;
    net::steady_timer retry_timer;  // accept errors such as EMFILE retry after a pause
    bool accepting = false;
    std::atomic<uint16_t> port{0};
    int64_t created;

    std::atomic<size_t> open{0};
    std::atomic<int64_t> unflushed_failures{0};  // see HttpServer::fail_all
    std::mutex conns_mu;
    std::list<std::weak_ptr<Connection>> conns;
    // Connections with a request in the engine, kept alive until it is done or they close. Held
    // here rather than by the connection itself, so the server's destructor can let go of them
    // (a self-reference would keep one alive after its io_context is gone).
    std::unordered_map<const Connection*, std::shared_ptr<Connection>> held;

    void hold(std::shared_ptr<Connection> c) {
        std::lock_guard lock(conns_mu);
        held.emplace(c.get(), std::move(c));
    }
    /// The connection's hold, released by the caller (it may be the last reference).
    std::shared_ptr<Connection> unhold(const Connection* c) {
        std::lock_guard lock(conns_mu);
        auto it = held.find(c);
        if (it == held.end()) return nullptr;
        auto out = std::move(it->second);
        held.erase(it);
        return out;
    }

    std::atomic<uint64_t> id_counter{0};
    uint64_t id_salt = 0;
    std::atomic<uint64_t> accepted{0}, refused{0};
    std::array<std::atomic<uint64_t>, 6> by_class{};  // responses by status / 100
};

namespace {

std::string server_metrics(const HttpServer::Impl& s) {
    std::string o;
    o += fmt::format(
        "# HELP phi_http_connections Open HTTP connections.\n# TYPE phi_http_connections gauge\n"
        "phi_http_connections {}\n",
        s.open.load());
    o += fmt::format(
        "# HELP phi_http_connections_total HTTP connections by outcome.\n"
        "# TYPE phi_http_connections_total counter\n"
        "phi_http_connections_total{{outcome=\"accepted\"}} {}\n"
        "phi_http_connections_total{{outcome=\"refused\"}} {}\n",
        s.accepted.load(), s.refused.load());
    o += "# HELP phi_http_responses_total HTTP responses by status class.\n# TYPE phi_http_responses_total "
         "counter\n";
    for (size_t k = 1; k < s.by_class.size(); ++k)
        o += fmt::format("phi_http_responses_total{{code=\"{}xx\"}} {}\n", k, s.by_class[k].load());
    return o;
}

class Connection : public std::enable_shared_from_this<Connection> {
  public:
    Connection(std::shared_ptr<HttpServer::Impl> srv, tcp::socket socket)
        : srv_(std::move(srv)),
          socket_(std::move(socket)),
          exec_(socket_.get_executor()),
          mailbox_(srv_->gate->open(exec_)),
          read_timer_(exec_),
          write_timer_(exec_) {
        srv_->open.fetch_add(1);
    }

    ~Connection() {
        srv_->gate->close(*mailbox_);
        cancel_request();
        srv_->open.fetch_sub(1);
        std::lock_guard lock(srv_->conns_mu);
        if (registered_) srv_->conns.erase(reg_);
    }

    void start(bool refuse) {
        {
            std::lock_guard lock(srv_->conns_mu);
            srv_->conns.push_front(weak_from_this());
            reg_ = srv_->conns.begin();
            registered_ = true;
        }
        beast::error_code ec;
        socket_.set_option(tcp::no_delay(true), ec);  // SSE events are small; Nagle would hold them
        if (refuse) {
            keep_alive_ = false;
            respond_error(503, "server_error", "too many open connections; retry later");
            return;
        }
        wait_request();
    }

    /// From any thread: close now, cancelling an unfinished request.
    void close_from_server() {
        net::post(exec_, [self = shared_from_this()] { self->close_now("server closing connections"); });
    }

    /// From any thread (the caller counted this connection in srv_->unflushed_failures): ends an
    /// in-flight request with an error and closes once it is written.
    void fail_from_server(const std::string& message) {
        net::post(exec_, [self = shared_from_this(), message] { self->fail(message); });
    }

  private:
    struct Exchange {
        uint64_t seq = 0;
        std::shared_ptr<serving::Request> request;
        std::unique_ptr<OpenAiResponse> format;
        int n = 1;
        bool stream = false;
        bool include_usage = false;
        bool done = false;
        bool failed = false;
        std::string error;
    };

    // ---- reading a request ----

    void wait_request() {
        if (closed_) return;
        if (buffer_.size() > 0) return read_header();
        arm(read_timer_, read_seq_, srv_->opts.idle_timeout);
        socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
            if (self->closed_) return;
            if (ec) return self->close_now("idle wait failed");
            self->read_header();
        });
    }

    void read_header() {
        parser_.emplace();
        parser_->body_limit(srv_->opts.max_body_bytes);
        parser_->header_limit(uint32_t(std::min<size_t>(srv_->opts.max_header_bytes, UINT32_MAX)));
        arm(read_timer_, read_seq_, srv_->opts.read_timeout);
        bhttp::async_read_header(
            socket_, buffer_, *parser_,
            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
    }

    void on_header(beast::error_code ec) {
        if (closed_) return;
        if (ec) return on_read_error(ec);
        const auto& req = parser_->get();
        if (req.version() >= 11 && beast::iequals(req[bhttp::field::expect], "100-continue") &&
            !parser_->is_done()) {
            static const std::string k_continue = "HTTP/1.1 100 Continue\r\n\r\n";
            net::async_write(socket_, net::buffer(k_continue),
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                                 if (self->closed_) return;
                                 if (ec) return self->close_now("cannot write 100 Continue");
                                 self->read_body();
                             });
            return;
        }
        read_body();
    }

    void read_body() {
        if (parser_->is_done()) return on_read(beast::error_code{});
        bhttp::async_read(socket_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
    }

    void on_read(beast::error_code ec) {
        if (closed_) return;
        if (ec) return on_read_error(ec);
        disarm(read_timer_, read_seq_);
        bhttp::request<bhttp::string_body> req = parser_->release();
        parser_.reset();
        // An exception must not escape into io_context::run (it would end an io thread).
        try {
            handle(req);
        } catch (const std::exception& e) {
            log().error("http: {} {} failed: {}",
                        std::string(req.method_string().data(), req.method_string().size()),
                        std::string(req.target().data(), req.target().size()), e.what());
            if (ex_ || response_queued_) return close_now("internal error");
            respond_error(500, "server_error", user_message(e));
        }
    }

    void on_read_error(beast::error_code ec) {
        disarm(read_timer_, read_seq_);
        if (ec == bhttp::error::body_limit) {
            keep_alive_ = false;
            return respond_error(
                413, "invalid_request_error",
                fmt::format("the request body exceeds the limit of {} bytes", srv_->opts.max_body_bytes));
        }
        if (ec == bhttp::error::header_limit) {
            keep_alive_ = false;
            return respond_error(
                431, "invalid_request_error",
                fmt::format("the request header exceeds the limit of {} bytes", srv_->opts.max_header_bytes));
        }
        if (ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
            ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
            keep_alive_ = false;
            return respond_error(400, "invalid_request_error",
                                 fmt::format("malformed HTTP request: {}", ec.message()));
        }
        close_now("read ended");  // EOF, reset, timeout
    }

    // ---- routing ----

    void handle(const bhttp::request<bhttp::string_body>& req) {
        version_ = req.version();
        keep_alive_ = req.keep_alive() && !srv_->svc.draining();
        const std::string_view target(req.target().data(), req.target().size());
        const std::string_view path = target.substr(0, target.find('?'));
        const bhttp::verb m = req.method();
        auto allow = [&](bhttp::verb want, const char* allowed) {
            if (m == want) return true;
            respond_error(405, "invalid_request_error",
                          fmt::format("method {} is not allowed on {}; use {}",
                                      std::string(req.method_string().data(), req.method_string().size()),
                                      path, allowed),
                          "", {{"Allow", allowed}});
            return false;
        };
        if (path == "/v1/completions") {
            if (allow(bhttp::verb::post, "POST")) handle_generate(req, false);
        } else if (path == "/v1/chat/completions") {
            if (allow(bhttp::verb::post, "POST")) handle_generate(req, true);
        } else if (path == "/v1/load_lora_adapter" || path == "/v1/unload_lora_adapter") {
            if (allow(bhttp::verb::post, "POST")) handle_adapter(req, path == "/v1/load_lora_adapter");
        } else if (path == "/v1/models") {
            if (allow(bhttp::verb::get, "GET")) handle_models();
        } else if (path == "/health") {
            if (allow(bhttp::verb::get, "GET")) handle_health();
        } else if (path == "/metrics") {
            if (allow(bhttp::verb::get, "GET")) {
                respond(200, srv_->svc.metrics_text() + server_metrics(*srv_),
                        "text/plain; version=0.0.4; charset=utf-8");
            }
        } else {
            respond_error(404, "not_found_error", fmt::format("no route for {}", path));
        }
    }

    // vLLM's runtime LoRA endpoints: {"lora_name", "lora_path"} and {"lora_name"}. The work runs on the
    // engine thread between steps; the answer comes back to this strand through the gate.
    void handle_adapter(const bhttp::request<bhttp::string_body>& req, bool load) {
        auto& svc = srv_->svc;
        std::string name, path;
        try {
            const json body = json::parse(req.body());
            if (!body.is_object()) throw serving::ApiError(400, "invalid_request_error", "the body must be a JSON object");
            const auto text = [&](const char* key) -> std::string {
                const auto it = body.find(key);
                if (it == body.end()) return {};
                if (!it->is_string())
                    throw serving::ApiError(400, "invalid_request_error", fmt::format("'{}' must be a string", key), key);
                return it->get<std::string>();
            };
            name = text("lora_name");
            if (name.empty()) throw serving::ApiError(400, "invalid_request_error", "'lora_name' is required", "lora_name");
            if (load) path = text("lora_path");
        } catch (const serving::ApiError& e) {
            return reject(e);
        } catch (const json::exception&) {
            return reject(serving::ApiError(400, "invalid_request_error", "the body is not valid JSON"));
        }
        srv_->hold(shared_from_this());
        auto done = [gate = srv_->gate, box = mailbox_, weak = weak_from_this(), name,
                     load](std::optional<serving::ApiError> err) {
            gate->post(*box, [weak, name, load, err = std::move(err)] {
                auto c = weak.lock();
                if (!c) return;
                auto hold = c->srv_->unhold(c.get());
                if (c->closed_) return;
                if (err) return c->reject(*err);
                c->respond(200,
                           fmt::format("Success: LoRA adapter '{}' {} successfully.", name,
                                       load ? "added" : "removed"),
                           "text/plain; charset=utf-8");
            });
        };
        if (load)
            svc.load_adapter_async(name, path, std::move(done));
        else
            svc.unload_adapter_async(name, std::move(done));
    }

    void handle_models() {
        auto& svc = srv_->svc;
        json model = {{"id", svc.model_name()},
                      {"object", "model"},
                      {"created", srv_->created},
                      {"owned_by", "phi-cluster"},
                      {"root", svc.model_name()},
                      {"parent", nullptr},
                      {"max_model_len", svc.engine().max_context()}};
        json data = json::array({model});
        // LoRA adapters, as vLLM lists them: their own id, the served model as parent.
        for (const std::string& a : svc.adapters())
            data.push_back({{"id", a},
                            {"object", "model"},
                            {"created", srv_->created},
                            {"owned_by", "phi-cluster"},
                            {"root", a},
                            {"parent", svc.model_name()},
                            {"max_model_len", svc.engine().max_context()}});
        respond(200, dump(json{{"object", "list"}, {"data", data}}), "application/json");
    }

    void handle_health() {
        std::string why;
        if (srv_->svc.healthy(&why)) return respond(200, dump(json{{"status", "ok"}}), "application/json");
        respond(503, dump(json{{"status", "unavailable"}, {"reason", why}}), "application/json");
    }

    void handle_generate(const bhttp::request<bhttp::string_body>& req, bool chat) {
        auto& svc = srv_->svc;
        json body;
        try {
            body = parse_body(req.body());
        } catch (const TooDeep&) {
            return reject(serving::ApiError(
                400, "invalid_request_error",
                fmt::format("invalid JSON: nested deeper than {} levels", k_max_json_depth)));
        } catch (const json::exception& e) {
            return reject(
                serving::ApiError(400, "invalid_request_error", fmt::format("invalid JSON: {}", e.what())));
        }
        auto ex = std::make_shared<Exchange>();
        ex->seq = ++exchange_seq_;
        try {
            if (!body.is_object()) serving::bad_request("", "the request body must be a JSON object");
            serving::GenerationRequest gr = serving::parse_generation_request(body, chat);
            ex->stream = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();
            if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
                if (!it->is_object())
                    serving::bad_request("stream_options", "'stream_options' must be an object");
                if (!ex->stream)
                    serving::bad_request("stream_options",
                                         "'stream_options' is only allowed with 'stream': true");
                if (auto u = it->find("include_usage"); u != it->end() && !u->is_null()) {
                    if (!u->is_boolean())
                        serving::bad_request("stream_options.include_usage",
                                             "'include_usage' must be a boolean");
                    ex->include_usage = u->get<bool>();
                }
            }
            FormatOptions fo;
            fo.chat = chat;
            fo.id = srv_->next_id(chat ? "chatcmpl-" : "cmpl-");
            fo.created = unix_now();
            fo.model = svc.model_name();
            for (const std::string& a : svc.adapters())
                if (gr.model == a || gr.adapter == a) fo.model = a;  // a response names the adapter that made it
            fo.n = gr.n;
            ex->n = gr.n;
            fo.logprobs = gr.logprobs;
            fo.include_usage = ex->include_usage;
            fo.token_ids = svc.tokenizer() == nullptr;
            ex->format = std::make_unique<OpenAiResponse>(fo, svc.tokenizer());
            // The sink holds neither the connection nor an executor (post_gate.h): a connection
            // or server that went away simply drops its events.
            // Tokenizing and templating run on the Service's pool, not on this network thread;
            // the outcome comes back to this strand (through the gate, like the events).
            srv_->hold(shared_from_this());  // kept until the request is done or the connection closes
            svc.prepare_async(std::move(gr), [gate = srv_->gate, box = mailbox_, weak = weak_from_this(), ex,
                                              chat](serving::PrepareResult r) {
                gate->post(*box, [weak, ex, chat, r = std::move(r)]() mutable {
                    if (auto c = weak.lock()) c->on_prepared(ex, chat, std::move(r));
                });
            });
        } catch (const serving::ApiError& e) {
            srv_->unhold(this);
            return reject(e);
        } catch (const std::exception& e) {
            srv_->unhold(this);
            log().error("http: request failed before it started: {}", e.what());
            return reject(serving::ApiError(500, "server_error", user_message(e)));
        }
    }

    // On the strand, once the pool has prepared the request: submit it, or answer its error.
    void on_prepared(const std::shared_ptr<Exchange>& ex, bool chat, serving::PrepareResult r) {
        auto hold = srv_->unhold(this);  // re-taken below while the request runs
        if (closed_) return;             // the connection closed meanwhile: nothing was submitted
        try {
            if (r.error) throw *r.error;
            // The sink holds neither the connection nor an executor (post_gate.h): a connection
            // or server that went away simply drops its events.
            serving::OutputSink sink = [gate = srv_->gate, box = mailbox_, weak = weak_from_this(),
                                        seq = ex->seq](const serving::OutputEvent& ev) {
                gate->post(*box, [weak, seq, ev] {
                    if (auto c = weak.lock()) c->on_event_safe(seq, ev);
                });
            };
            ex->request = srv_->svc.submit(std::move(*r.prepared), std::move(sink));
        } catch (const serving::ApiError& e) {
            return reject(e);
        } catch (const std::exception& e) {
            log().error("http: request failed before it started: {}", e.what());
            return reject(serving::ApiError(500, "server_error", user_message(e)));
        }
        ex_ = ex;
        srv_->hold(shared_from_this());
        if (ex->stream) start_stream(chat);
        watch();
    }

    void reject(const serving::ApiError& e) {
        if (e.status != 429)
            srv_->svc.metrics().count_request(e.status >= 500 ? "rejected_5xx" : "rejected_4xx");
        std::vector<std::pair<std::string, std::string>> extra;
        if (e.status == 429 && e.retry_after_s)
            extra.emplace_back("Retry-After", std::to_string(*e.retry_after_s));
        respond(unsigned(e.status), dump(e.to_json()), "application/json", extra);
    }

    // ---- engine events (on the strand) ----

    void on_event_safe(uint64_t seq, const serving::OutputEvent& ev) {
        try {
            on_event(seq, ev);
        } catch (const std::exception& e) {
            log().error("http: formatting a response failed: {}", e.what());
            close_now("internal error");
        }
    }

    void on_event(uint64_t seq, const serving::OutputEvent& ev) {
        if (closed_ || !ex_ || ex_->seq != seq || ex_->done) return;
        Exchange& x = *ex_;
        switch (ev.kind) {
            case serving::OutputEvent::Kind::Token:
                if (x.stream) {
                    const std::string chunk = x.format->token_chunk(ev);
                    if (!chunk.empty()) send_event(chunk);
                } else {
                    x.format->add_token(ev);
                }
                break;
            case serving::OutputEvent::Kind::ChoiceDone:
                if (ev.finish_reason == "error") {
                    x.failed = true;
                    x.error = ev.error.empty() ? "generation failed" : ev.error;
                    if (x.stream) send_event(dump(error_body(500, "server_error", x.error)));
                } else if (x.stream) {
                    send_event(x.format->finish_chunk(ev));
                } else {
                    x.format->add_finish(ev);
                }
                break;
            case serving::OutputEvent::Kind::Done: {
                x.done = true;
                x.request.reset();
                auto hold = srv_->unhold(this);  // released when this handler returns
                if (x.stream) {
                    if (x.include_usage) send_event(x.format->usage_chunk(ev.usage));
                    end_stream();
                } else if (x.failed) {
                    respond_error(500, "server_error", x.error);
                } else {
                    respond(200, dump(x.format->response(ev.usage)), "application/json");
                }
                break;
            }
        }
    }

    // ---- responses ----

    void respond(unsigned status, std::string body, const char* content_type,
                 const std::vector<std::pair<std::string, std::string>>& extra = {}) {
        if (closed_) return;
        bhttp::response<bhttp::string_body> res{bhttp::status(status), version_ ? version_ : 11};
        res.set(bhttp::field::server, "phi-cluster");
        res.set(bhttp::field::content_type, content_type);
        for (const auto& [k, v] : extra) res.set(k, v);
        res.keep_alive(keep_alive_);
        res.body() = std::move(body);
        res.prepare_payload();
        srv_->count_response(status);
        response_queued_ = true;
        queue(serialize(res, false), false);
    }

    void respond_error(unsigned status, const std::string& type, const std::string& message,
                       const std::string& param = "",
                       const std::vector<std::pair<std::string, std::string>>& extra = {}) {
        respond(status, dump(error_body(status, type, message, param)), "application/json", extra);
    }

    // SSE over chunked transfer encoding (HTTP/1.0: raw, ended by closing the connection).
    void start_stream(bool chat) {
        chunked_ = version_ >= 11;
        if (!chunked_) keep_alive_ = false;
        bhttp::response<bhttp::empty_body> res{bhttp::status::ok, version_ ? version_ : 11};
        res.set(bhttp::field::server, "phi-cluster");
        res.set(bhttp::field::content_type, "text/event-stream");
        res.set(bhttp::field::cache_control, "no-cache");
        res.set("X-Accel-Buffering", "no");
        res.keep_alive(keep_alive_);
        if (chunked_) res.chunked(true);
        srv_->count_response(200);
        std::string head = serialize(res, true);
        queue(std::move(head), false);
        if (chat)
            for (int c = 0; c < ex_->n; ++c) send_event(ex_->format->role_chunk(c));
    }

    void send_event(const std::string& data) { queue(frame("data: " + data + "\n\n"), true); }

    void end_stream() {
        response_queued_ = true;
        std::string tail = frame("data: [DONE]\n\n");
        if (chunked_) tail += "0\r\n\r\n";
        queue(std::move(tail), false);
    }

    std::string frame(const std::string& payload) const {
        if (!chunked_) return payload;
        return fmt::format("{:x}\r\n", payload.size()) + payload + "\r\n";
    }

    // ---- writing ----

    void queue(std::string bytes, bool bounded) {
        if (closed_) return;
        out_ += bytes;
        if (bounded && out_.size() + writing_.size() > srv_->opts.max_pending_bytes) {
            log().warn("http: a client is not reading its stream ({} bytes pending); cancelling its request",
                       out_.size() + writing_.size());
            return close_now("slow reader");
        }
        do_write();
    }

    void do_write() {
        if (closed_ || writing_now_ || out_.empty()) return;
        writing_.swap(out_);
        out_.clear();
        writing_now_ = true;
        arm(write_timer_, write_seq_, srv_->opts.write_timeout);
        net::async_write(socket_, net::buffer(writing_),
                         [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
    }

    void on_write(beast::error_code ec) {
        writing_now_ = false;
        writing_.clear();
        if (closed_) return;
        disarm(write_timer_, write_seq_);
        if (ec) return close_now("write failed");
        if (!out_.empty()) return do_write();
        flushed_failure();
        if (response_queued_ && (!ex_ || ex_->done)) exchange_done();
    }

    // The whole response is written.
    void exchange_done() {
        response_queued_ = false;
        ex_.reset();
        if (watching_) {  // stop the watch read first; its handler continues
            resume_after_watch_ = true;
            beast::error_code ec;
            socket_.cancel(ec);
            return;
        }
        next_exchange();
    }

    void next_exchange() {
        if (!keep_alive_) return close_gracefully();
        wait_request();
    }

    // ---- watching for the client leaving while its request runs ----

    void watch() {
        if (closed_ || watching_) return;
        if (buffer_.size() >= srv_->opts.max_header_bytes + srv_->opts.max_body_bytes) return;
        watching_ = true;
        socket_.async_read_some(
            buffer_.prepare(k_watch_read_bytes),
            [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_watch(ec, n); });
    }

    void on_watch(beast::error_code ec, size_t n) {
        watching_ = false;
        if (closed_) return;
        buffer_.commit(n);  // a pipelined request: kept for after this one
        if (resume_after_watch_) {
            resume_after_watch_ = false;
            if (ec && ec != net::error::operation_aborted) return close_now("client left");
            return next_exchange();
        }
        if (ec == net::error::operation_aborted) return;
        if (ec) return close_now("client left during its request");
        watch();
    }

    // ---- failing (teardown) ----

    void fail(const std::string& message) {
        keep_alive_ = false;
        if (closed_ || !ex_ || ex_->done) {  // nothing in flight to tell
            srv_->unflushed_failures.fetch_sub(1);
            if (!closed_ && !ex_ && !response_queued_ && !writing_now_ && out_.empty()) close_now("server failing");
            return;
        }
        failing_ = true;  // counted until the error is written or the connection closes
        Exchange& x = *ex_;
        x.done = true;
        srv_->svc.cancel(x.request);
        x.request.reset();
        auto hold = srv_->unhold(this);  // released when this handler returns
        if (x.stream) {
            send_event(dump(error_body(503, "server_error", message)));
            end_stream();
        } else {
            respond_error(503, "server_error", message);
        }
        if (!writing_now_ && out_.empty()) flushed_failure();
    }

    void flushed_failure() {
        if (!failing_) return;
        failing_ = false;
        srv_->unflushed_failures.fetch_sub(1);
    }

    // ---- closing ----

    void cancel_request() {
        if (ex_ && !ex_->done && ex_->request) {
            srv_->svc.cancel(ex_->request);
            ex_->done = true;
            ex_->request.reset();
        }
    }

    void close_now(const char* why) {
        if (closed_) return;
        closed_ = true;
        if (ex_ && !ex_->done) log().debug("http: closing a connection with a request in flight ({})", why);
        cancel_request();
        flushed_failure();
        read_timer_.cancel();
        write_timer_.cancel();
        beast::error_code ec;
        socket_.shutdown(tcp::socket::shutdown_both, ec);
        socket_.close(ec);
        srv_->unhold(this);  // last: it may be the last reference (a caller holds its own)
    }

    // After a final response with Connection: close: stop sending, then read and drop what the
    // client still sends (e.g. the rest of an oversized body) so the close does not reset the
    // connection before the client has read the response.
    void close_gracefully() {
        if (closed_) return;
        beast::error_code ec;
        socket_.shutdown(tcp::socket::shutdown_send, ec);
        arm(read_timer_, read_seq_, k_linger_time);
        linger();
    }

    void linger() {
        socket_.async_read_some(net::buffer(linger_buf_),
                                [self = shared_from_this()](beast::error_code ec, size_t n) {
                                    if (self->closed_) return;
                                    self->lingered_ += n;
                                    if (ec || self->lingered_ > k_linger_bytes)
                                        return self->close_now("closed after response");
                                    self->linger();
                                });
    }

    // ---- timers: a timer closes the connection when it fires; seq tells stale waits apart ----

    void arm(net::steady_timer& t, uint64_t& seq, std::chrono::milliseconds after) {
        const uint64_t s = ++seq;
        t.expires_after(after);
        t.async_wait([self = shared_from_this(), &seq, s](beast::error_code ec) {
            if (ec || seq != s || self->closed_) return;
            self->close_now("timed out");
        });
    }

    void disarm(net::steady_timer& t, uint64_t& seq) {
        ++seq;
        t.cancel();
    }

    std::shared_ptr<HttpServer::Impl> srv_;
    tcp::socket socket_;
    net::any_io_executor exec_;  // the connection's strand
    std::shared_ptr<serving::PostGate::Mailbox> mailbox_;  // exec_, for the sinks
    net::steady_timer read_timer_, write_timer_;
    uint64_t read_seq_ = 0, write_seq_ = 0;
    std::list<std::weak_ptr<Connection>>::iterator reg_;
    bool registered_ = false;

    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    unsigned version_ = 11;
    bool keep_alive_ = true;
    bool chunked_ = true;

    std::shared_ptr<Exchange> ex_;
    uint64_t exchange_seq_ = 0;
    bool response_queued_ = false;

    std::string out_, writing_;
    bool writing_now_ = false;
    bool watching_ = false, resume_after_watch_ = false;
    bool closed_ = false;
    bool failing_ = false;  // fail() wrote an error that is not yet all on the wire
    std::array<char, 4096> linger_buf_{};
    size_t lingered_ = 0;
};

}  // namespace

void HttpServer::Impl::do_accept() {
    std::lock_guard lock(acceptor_mu);
    if (!accepting) return;
    acceptor.async_accept(net::make_strand(io),
                          [self = shared_from_this()](beast::error_code ec, tcp::socket s) {
                              self->on_accept(ec, std::move(s));
                          });
}

void HttpServer::Impl::on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;
    if (ec) {
        // The timer is shared with stop_accepting() (any thread): both touch it under the lock.
        std::lock_guard lock(acceptor_mu);
        if (!accepting) return;
        log().warn("http: accept failed: {}; retrying", ec.message());
        retry_timer.expires_after(std::chrono::milliseconds(100));
        retry_timer.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (!ec) self->do_accept();
        });
        return;
    }
    const bool refuse = open.load() >= opts.max_connections;
    (refuse ? refused : accepted).fetch_add(1);
    std::make_shared<Connection>(shared_from_this(), std::move(socket))->start(refuse);
    do_accept();
}

HttpServer::HttpServer(net::io_context& io, serving::Service& svc, const HttpOptions& opts)
    : impl_(std::make_shared<Impl>(io, svc, opts)) {}

HttpServer::~HttpServer() {
    stop_accepting();
    impl_->gate->close_all();
    close_connections();
    std::unordered_map<const Connection*, std::shared_ptr<Connection>> held;
    {
        std::lock_guard lock(impl_->conns_mu);
        held.swap(impl_->held);
    }
    // Dropped outside the lock: a connection's destructor takes it.
}

void HttpServer::start() {
    Impl& s = *impl_;
    beast::error_code ec;
    net::ip::address addr = net::ip::make_address(s.opts.host, ec);
    if (ec) {
        tcp::resolver resolver(s.io);
        auto results = resolver.resolve(s.opts.host, std::to_string(s.opts.port), ec);
        PHI_CHECK(!ec && !results.empty(), "cannot resolve the HTTP listen host '{}': {}", s.opts.host,
                  ec.message());
        addr = results.begin()->endpoint().address();
    }
    const tcp::endpoint ep(addr, s.opts.port);
    std::lock_guard lock(s.acceptor_mu);
    PHI_CHECK(!s.accepting, "the HTTP server is already started");
    auto fail = [&](const char* what) {
        PHI_FAIL("cannot {} the HTTP server on {}:{}: {} (pick another host/port)", what, s.opts.host,
                 s.opts.port, ec.message());
    };
    s.acceptor.open(ep.protocol(), ec);
    if (ec) fail("open");
    s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
    s.acceptor.bind(ep, ec);
    if (ec) fail("bind");
    s.acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) fail("listen");
    s.port = s.acceptor.local_endpoint().port();
    s.accepting = true;
    log().debug("HTTP server listening on http://{}:{} (model '{}')", s.opts.host, s.port.load(),
                s.svc.model_name());
    net::post(s.io, [self = impl_] { self->do_accept(); });
}

uint16_t HttpServer::port() const {
    return impl_->port.load();
}

void HttpServer::stop_accepting() {
    std::lock_guard lock(impl_->acceptor_mu);
    if (!impl_->accepting) return;
    impl_->accepting = false;
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->retry_timer.cancel();
    log().info("HTTP server stopped accepting connections");
}

void HttpServer::close_connections() {
    std::vector<std::shared_ptr<Connection>> live;
    {
        std::lock_guard lock(impl_->conns_mu);
        for (auto& w : impl_->conns)
            if (auto c = w.lock()) live.push_back(std::move(c));
    }
    for (auto& c : live) c->close_from_server();
}

void HttpServer::fail_all(const std::string& message) {
    std::vector<std::shared_ptr<Connection>> live;
    {
        std::lock_guard lock(impl_->conns_mu);
        for (auto& w : impl_->conns)
            if (auto c = w.lock()) live.push_back(std::move(c));
    }
    impl_->unflushed_failures.fetch_add(int64_t(live.size()));
    for (auto& c : live) c->fail_from_server(message);
}

size_t HttpServer::unflushed_failures() const {
    return size_t(std::max<int64_t>(0, impl_->unflushed_failures.load()));
}

size_t HttpServer::connections() const {
    return impl_->open.load();
}

std::string HttpServer::metrics_text() const {
    return server_metrics(*impl_);
}

}  // namespace phi::http
