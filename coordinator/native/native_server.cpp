// Native protocol v1 server: one Connection per socket, all of its state on its strand. Client
// frames are split at '\n' with a bounded line buffer, parsed with a nesting limit and turned into
// Service calls; engine events come back through the request's sink, which posts them to the
// strand, and leave as frames through a bounded write queue. See docs/PROTOCOL.md.
#include "coordinator/native/native_server.h"

#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/user_message.h"
#include "common/log.h"
#include "coordinator/native/protocol.h"
#include "coordinator/serving/post_gate.h"
#include "coordinator/serving/service.h"

namespace phi::native {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;
using Strand = asio::strand<asio::io_context::executor_type>;
using Socket = tcp::socket::rebind_executor<Strand>::other;

namespace {

constexpr size_t k_max_id_bytes = 256;
constexpr int k_max_json_depth = 64;
constexpr size_t k_write_batch = 64;                      // frames per gathered write
constexpr std::chrono::milliseconds k_close_grace{2000};  // close_all: wait for the peer to read
constexpr int k_connection_retry_after_ms = 1000;         // hint when a per-connection limit is hit

struct TooDeep {};

/// Frame text: invalid UTF-8 (a top-logprob token may be part of a character) becomes U+FFFD.
std::string dump(const ojson& j) {
    std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
    s += '\n';
    return s;
}

/// "[json.exception.parse_error.101] parse error at ..." -> "parse error at ...".
std::string strip_json_prefix(const std::string& what) {
    if (!what.empty() && what[0] == '[') {
        auto p = what.find("] ");
        if (p != std::string::npos) return what.substr(p + 2);
    }
    return what;
}

const char* code_for(const serving::ApiError& e, bool draining) {
    switch (e.status) {
        case 400:
            return "invalid_request";
        case 404:
            return "model_not_found";
        case 413:
            return "too_large";
        case 429:
            return "overloaded";
        case 503:
            return draining ? "draining" : "unavailable";
        default:
            return "internal_error";
    }
}

}  // namespace

class Connection;

struct ServerState : std::enable_shared_from_this<ServerState> {
    ServerState(asio::io_context& ioc, serving::Service& service, const NativeOptions& opts)
        : ioc(ioc),
          service(service),
          opts(opts),
          accept_strand(asio::make_strand(ioc)),
          acceptor(accept_strand),
          retry_timer(accept_strand) {}

    void accept_next();
    std::vector<std::shared_ptr<Connection>> live() const {
        std::lock_guard lk(mu);
        std::vector<std::shared_ptr<Connection>> out;
        for (const auto& w : conns)
            if (auto c = w.lock()) out.push_back(std::move(c));
        return out;
    }
    size_t count() const {
        std::lock_guard lk(mu);
        return conns.size();
    }
    void add(const std::shared_ptr<Connection>& c) {
        std::lock_guard lk(mu);
        conns.push_back(c);
    }
    void remove(const Connection* c) {
        std::lock_guard lk(mu);
        std::erase_if(conns, [c](const std::weak_ptr<Connection>& w) {
            auto p = w.lock();
            return !p || p.get() == c;
        });
    }

    asio::io_context& ioc;
    serving::Service& service;
    const NativeOptions opts;
    Strand accept_strand;
    tcp::acceptor acceptor;  // accept strand only (after start)
    asio::steady_timer retry_timer;
    std::atomic<uint16_t> port{0};
    uint64_t next_conn_id = 1;  // accept strand only

    mutable std::mutex mu;  // guards conns
    std::vector<std::weak_ptr<Connection>> conns;
    // Sinks run on the engine thread; they post to connections only while the server exists.
    std::shared_ptr<serving::PostGate> gate = std::make_shared<serving::PostGate>();
};

class Connection : public std::enable_shared_from_this<Connection> {
  public:
    Connection(std::shared_ptr<ServerState> st, Socket sock, uint64_t id)
        : st_(std::move(st)),
          socket_(std::move(sock)),
          strand_(socket_.get_executor()),
          mailbox_(st_->gate->open(strand_)),
          timer_(strand_),
          id_(id) {}
    ~Connection() { st_->gate->close(*mailbox_); }

    const Strand& strand() const { return strand_; }

    /// On the strand: hello (or, over max_connections, an error and close) and the read loop.
    void start(bool reject) {
        if (reject) {
            ojson e =
                error_frame(nullptr, "rate_limit_error", "too_many_connections",
                            fmt::format("the server has reached its limit of {} connections; retry later",
                                        st_->opts.max_connections),
                            "");
            e["retry_after_ms"] = k_connection_retry_after_ms;
            send(e);
            close_after_flush();
            return;
        }
        ojson hello = {{"type", "hello"},
                       {"protocol", k_protocol_version},
                       {"server", "phi-cluster"},
                       {"model", st_->service.model_name()},
                       {"max_line_bytes", st_->opts.max_line_bytes},
                       {"max_requests", st_->opts.max_requests_per_connection}};
        send(hello);
        read();
    }

    /// On the strand: a final error done frame for every live request, which is cancelled.
    void fail_all(const std::string& message) {
        if (closed_) return;
        auto items = std::move(live_);
        live_.clear();
        ids_.clear();
        for (auto& [serial, l] : items) {
            st_->service.cancel(l.req);
            ojson done = {{"type", "done"},
                          {"id", l.id},
                          {"finish_reason", "error"},
                          {"error", {{"message", message}, {"type", "server_error"}, {"code", "aborted"}}}};
            send(done);
        }
    }

    /// On the strand: stop taking frames, cancel live requests, close once the queue is written.
    void close_after_flush() {
        if (closed_ || closing_) return;
        closing_ = true;
        cancel_all();
        if (!writing_ && out_.empty()) return close("closed by the server");
        timer_.expires_after(k_close_grace);
        timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
            if (!ec) self->close("close grace expired");
        });
    }

  private:
    struct Live {
        std::string id;
        std::shared_ptr<serving::Request> req;  // null while the request is being prepared
        bool cancel_when_submitted = false;     // a cancel frame came while it was being prepared
        int n = 1;
        int logprobs = -1;
        int64_t completion_tokens = 0;
        std::vector<std::string> reasons;  // per choice
        std::string error;                 // the first choice error
        std::string tail;                  // n == 1: text that became final at the end
    };

    // ---- reading ----

    void read() {
        socket_.async_read_some(asio::buffer(rbuf_),
                                [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                                    self->on_read(ec, n);
                                });
    }

    void on_read(const boost::system::error_code& ec, size_t n) {
        if (closed_) return;
        if (ec) return close(ec == asio::error::eof ? "peer closed" : ec.message().c_str());
        const char* data = rbuf_.data();
        size_t pos = 0;
        while (pos < n && !closed_) {
            const void* nl = std::memchr(data + pos, '\n', n - pos);
            const size_t end = nl ? size_t(static_cast<const char*>(nl) - data) : n;
            if (!discarding_) {
                if (line_.size() + (end - pos) > st_->opts.max_line_bytes) {
                    line_.clear();
                    line_.shrink_to_fit();
                    discarding_ = true;
                    send(error_frame(
                        nullptr, "invalid_request_error", "line_too_long",
                        fmt::format("the frame is longer than {} bytes; it was discarded up to the next "
                                    "newline",
                                    st_->opts.max_line_bytes),
                        ""));
                } else {
                    line_.append(data + pos, end - pos);
                }
            }
            if (!nl) break;
            if (!discarding_ && !closing_) {
                try {
                    handle_line(line_);
                } catch (const std::exception& e) {  // a bug must not take the io thread down
                    log().error("native: connection {}: frame failed: {}", id_, e.what());
                    send(error_frame(nullptr, "server_error", "internal_error", user_message(e), ""));
                }
            }
            line_.clear();
            discarding_ = false;
            pos = end + 1;
        }
        if (!closed_) read();
    }

    // ---- client frames ----

    void handle_line(std::string& line) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t\r") == std::string::npos) return;  // blank lines are ignored
        if (size_t bad = invalid_utf8_offset(line); bad != std::string::npos)
            return send(error_frame(nullptr, "invalid_request_error", "invalid_utf8",
                                    fmt::format("the frame is not valid UTF-8 (byte {})", bad), ""));
        json f;
        try {
            f = json::parse(line, [](int depth, json::parse_event_t, json&) {
                if (depth > k_max_json_depth) throw TooDeep{};
                return true;
            });
        } catch (const TooDeep&) {
            return send(error_frame(nullptr, "invalid_request_error", "invalid_json",
                                    fmt::format("the frame nests deeper than {} levels", k_max_json_depth),
                                    ""));
        } catch (const json::exception& e) {
            return send(error_frame(nullptr, "invalid_request_error", "invalid_json",
                                    "the frame is not valid JSON: " + strip_json_prefix(e.what()), ""));
        }
        if (!f.is_object())
            return send(error_frame(nullptr, "invalid_request_error", "invalid_frame",
                                    "a frame must be a JSON object", ""));
        json id = nullptr;
        if (auto it = f.find("id"); it != f.end() && it->is_string()) id = *it;
        auto t = f.find("type");
        if (t == f.end() || t->is_null())
            return send(error_frame(id, "invalid_request_error", "invalid_frame",
                                    "'type' is required: \"generate\", \"cancel\" or \"ping\"", "type"));
        if (!t->is_string())
            return send(
                error_frame(id, "invalid_request_error", "invalid_frame", "'type' must be a string", "type"));
        const std::string& type = t->get_ref<const std::string&>();
        if (type == "generate") return on_generate(f);
        if (type == "cancel") return on_cancel(f);
        if (type == "ping") {
            ojson pong = {{"type", "pong"}};
            if (auto d = f.find("data"); d != f.end()) pong["data"] = *d;
            return send(pong);
        }
        send(error_frame(
            id, "invalid_request_error", "unknown_type",
            fmt::format("unknown frame type '{}'; expected \"generate\", \"cancel\" or \"ping\"", type),
            "type"));
    }

    /// The frame's request id, or an error frame (and nullopt) when it is missing or malformed.
    std::optional<std::string> request_id(const json& f) {
        auto it = f.find("id");
        if (it == f.end() || it->is_null()) {
            send(error_frame(nullptr, "invalid_request_error", "invalid_request",
                             "'id' is required: a string naming the request on this connection", "id"));
            return std::nullopt;
        }
        if (!it->is_string()) {
            send(error_frame(nullptr, "invalid_request_error", "invalid_request", "'id' must be a string",
                             "id"));
            return std::nullopt;
        }
        const std::string& id = it->get_ref<const std::string&>();
        if (id.empty() || id.size() > k_max_id_bytes) {
            send(error_frame(id, "invalid_request_error", "invalid_request",
                             fmt::format("'id' must be 1 to {} bytes long", k_max_id_bytes), "id"));
            return std::nullopt;
        }
        return id;
    }

    void on_generate(const json& f) {
        auto rid = request_id(f);
        if (!rid) return;
        const std::string& id = *rid;
        auto bad = [&](const std::string& param, const std::string& message) {
            send(error_frame(id, "invalid_request_error", "invalid_request", message, param));
        };
        if (ids_.count(id))
            return send(error_frame(
                id, "invalid_request_error", "duplicate_id",
                fmt::format("'id' \"{}\" is already used by a live request on this connection", id), "id"));
        if (int(live_.size()) >= st_->opts.max_requests_per_connection) {
            ojson e = error_frame(
                id, "rate_limit_error", "too_many_requests",
                fmt::format("this connection already has {} live requests (the limit); wait for one "
                            "to finish",
                            live_.size()),
                "");
            e["retry_after_ms"] = k_connection_retry_after_ms;
            return send(e);
        }
        auto present = [&](const char* k) {
            auto it = f.find(k);
            return it != f.end() && !it->is_null();
        };
        const bool has_prompt = present("prompt"), has_messages = present("messages"),
                   has_ids = present("prompt_ids");
        const int kinds = int(has_prompt) + int(has_messages) + int(has_ids);
        if (kinds == 0) return bad("prompt", "one of 'prompt', 'messages' or 'prompt_ids' is required");
        if (kinds > 1)
            return bad(has_ids ? "prompt_ids" : "messages",
                       "give only one of 'prompt', 'messages' and 'prompt_ids'");
        json body = f;
        body.erase("type");
        body.erase("id");
        if (has_prompt && !f["prompt"].is_string())
            return bad("prompt", "'prompt' must be a string (send token ids as 'prompt_ids')");
        if (has_ids) {
            const json& ids = f["prompt_ids"];
            if (!ids.is_array()) return bad("prompt_ids", "'prompt_ids' must be an array of token ids");
            if (ids.empty()) return bad("prompt_ids", "'prompt_ids' must not be empty");
            for (size_t i = 0; i < ids.size(); ++i)
                if (!ids[i].is_number_integer() || ids[i].get<int64_t>() < 0 ||
                    ids[i].get<int64_t>() > INT32_MAX)
                    return bad("prompt_ids",
                               fmt::format("'prompt_ids[{}]' must be a non-negative integer token id", i));
            body["prompt"] = ids;
            body.erase("prompt_ids");
        }
        // The native protocol asks for logprobs the same way for every prompt kind: "logprobs": k.
        if (auto lp = f.find("logprobs"); lp != f.end() && !lp->is_null()) {
            if (!lp->is_number_integer() || lp->get<int64_t>() < 0 ||
                lp->get<int64_t>() > sampling::k_max_logprobs)
                return bad("logprobs",
                           fmt::format("'logprobs' must be an integer between 0 and {} (alternatives per "
                                       "token)",
                                       sampling::k_max_logprobs));
            if (has_messages) {
                body["top_logprobs"] = *lp;
                body["logprobs"] = true;
            }
        } else if (has_messages) {
            body.erase("top_logprobs");
            body.erase("logprobs");
        }
        serving::GenerationRequest req;
        try {
            req = serving::parse_generation_request(body, has_messages);
        } catch (const serving::ApiError& e) {
            return send(api_error_frame(id, e, has_ids));
        }
        const uint64_t serial = next_serial_++;
        Live l;
        l.id = id;
        l.n = req.n;
        l.logprobs = req.logprobs;
        l.reasons.resize(size_t(req.n));
        // Tokenizing and templating run on the Service's pool, not on this network thread; the
        // outcome comes back to this strand (through the gate, like the events). Meanwhile the
        // request is live (its id taken, a cancel remembered).
        try {
            st_->service.prepare_async(std::move(req), [gate = st_->gate, box = mailbox_, weak = weak_from_this(),
                                                        serial](serving::PrepareResult r) {
                gate->post(*box, [weak, serial, r = std::move(r)]() mutable {
                    if (auto c = weak.lock(); c && !c->closed_) c->on_prepared(serial, std::move(r));
                });
            });
        } catch (const serving::ApiError& e) {
            return send(api_error_frame(id, e, has_ids));
        }
        ids_[id] = serial;
        live_.emplace(serial, std::move(l));
        prompt_ids_kind_[serial] = has_ids;  // for the error frame, should preparing fail
    }

    // On the strand, once the pool has prepared request `serial`: submit it, or answer its error.
    void on_prepared(uint64_t serial, serving::PrepareResult r) {
        const bool has_ids = prompt_ids_kind_[serial];
        prompt_ids_kind_.erase(serial);
        auto it = live_.find(serial);
        if (it == live_.end()) return;  // failed or closed meanwhile: nothing was submitted
        Live& l = it->second;
        auto drop = [&] {
            ids_.erase(l.id);
            live_.erase(it);
        };
        const std::string id = l.id;
        if (r.error) {
            drop();
            return send(api_error_frame(id, *r.error, has_ids));
        }
        // The sink holds neither the connection nor an executor (post_gate.h), so a sink that
        // outlives the connection or the io_context (an engine destroyed after it) touches neither.
        serving::OutputSink sink = [gate = st_->gate, box = mailbox_, weak = weak_from_this(),
                                    serial](const serving::OutputEvent& ev) {
            gate->post(*box, [weak, serial, ev] {
                if (auto c = weak.lock(); c && !c->closed_) c->on_event_safe(serial, ev);
            });
        };
        try {
            l.req = st_->service.submit(std::move(*r.prepared), std::move(sink));
        } catch (const serving::ApiError& e) {
            drop();
            return send(api_error_frame(id, e, has_ids));
        } catch (const std::exception& e) {
            drop();
            log().error("native: submit failed: {}", e.what());
            return send(error_frame(id, "server_error", "internal_error", user_message(e), ""));
        }
        if (l.cancel_when_submitted) st_->service.cancel(l.req);
    }

    void on_cancel(const json& f) {
        auto rid = request_id(f);
        if (!rid) return;
        auto it = ids_.find(*rid);
        if (it == ids_.end()) return;  // finished already (its done frame is on the way) or never existed
        Live& l = live_.at(it->second);
        if (!l.req) {
            l.cancel_when_submitted = true;  // still being prepared
            return;
        }
        st_->service.cancel(l.req);
    }

    // ---- engine events (posted by the sink) ----

    // A failure while framing one request's output (a bug, a value JSON cannot carry) ends that
    // request with an error done frame; the connection, its other requests and the io thread go on.
    void on_event_safe(uint64_t serial, const serving::OutputEvent& ev) {
        try {
            on_event(serial, ev);
        } catch (const std::exception& e) {
            log().error("native: connection {}: sending a request's output failed: {}", id_, e.what());
            auto it = live_.find(serial);
            if (it == live_.end() || closed_) return;
            Live l = std::move(it->second);
            ids_.erase(l.id);
            live_.erase(it);
            st_->service.cancel(l.req);
            send(ojson{{"type", "done"},
                       {"id", l.id},
                       {"finish_reason", "error"},
                       {"error",
                        {{"message", fmt::format("the server failed while sending this request's output: {}", e.what())},
                         {"type", "server_error"},
                         {"code", "internal_error"}}}});
        }
    }

    void on_event(uint64_t serial, const serving::OutputEvent& ev) {
        auto it = live_.find(serial);
        if (it == live_.end() || closed_) return;  // failed, cancelled with the connection, or closed
        Live& l = it->second;
        switch (ev.kind) {
            case serving::OutputEvent::Kind::Token: {
                ++l.completion_tokens;
                ojson tok = {{"type", "token"},         {"id", l.id},
                             {"choice", ev.choice},     {"index", ev.index},
                             {"token_id", ev.token_id}, {"text", ev.text}};
                if (l.logprobs >= 0) tok["logprob"] = ev.logprob;
                if (l.logprobs > 0) {
                    ojson top = ojson::array();
                    for (const auto& t : ev.top_logprobs)
                        top.push_back({{"token_id", t.id}, {"text", t.token}, {"logprob", t.logprob}});
                    tok["top_logprobs"] = std::move(top);
                }
                send(tok);
                return;
            }
            case serving::OutputEvent::Kind::ChoiceDone: {
                if (ev.choice >= 0 && size_t(ev.choice) < l.reasons.size())
                    l.reasons[size_t(ev.choice)] = ev.finish_reason;
                if (!ev.error.empty() && l.error.empty()) l.error = ev.error;
                if (l.n == 1) {
                    l.tail = ev.text;
                    return;
                }
                ojson cd = {{"type", "choice_done"},
                            {"id", l.id},
                            {"choice", ev.choice},
                            {"finish_reason", ev.finish_reason},
                            {"text", ev.text}};
                if (!ev.error.empty())
                    cd["error"] = {
                        {"message", ev.error}, {"type", "server_error"}, {"code", "generation_failed"}};
                send(cd);
                return;
            }
            case serving::OutputEvent::Kind::Done: {
                // The request's outcome is its worst choice's: error > cancelled > length > stop.
                auto rank = [](const std::string& r) {
                    return r == "error" ? 3 : r == "cancelled" ? 2 : r == "length" ? 1 : 0;
                };
                std::string reason = l.reasons.empty() ? "stop" : l.reasons[0];
                for (const auto& r : l.reasons)
                    if (rank(r) > rank(reason)) reason = r;
                ojson done = {{"type", "done"}, {"id", l.id}, {"finish_reason", reason}};
                if (l.n == 1) done["text"] = l.tail;
                if (!l.error.empty())
                    done["error"] = {
                        {"message", l.error}, {"type", "server_error"}, {"code", "generation_failed"}};
                done["usage"] = {{"prompt_tokens", ev.usage.prompt_tokens},
                                 {"completion_tokens", ev.usage.completion_tokens},
                                 {"total_tokens", ev.usage.prompt_tokens + ev.usage.completion_tokens},
                                 {"cached_prompt_tokens", ev.usage.cached_prompt_tokens}};
                ids_.erase(l.id);
                live_.erase(it);
                send(done);
                return;
            }
        }
    }

    // ---- server frames ----

    ojson error_frame(const json& id, const std::string& type, const std::string& code,
                      const std::string& message, const std::string& param) const {
        return ojson{{"type", "error"},
                     {"id", id},
                     {"error",
                      {{"message", message},
                       {"type", type},
                       {"param", param.empty() ? ojson(nullptr) : ojson(param)},
                       {"code", code}}}};
    }

    ojson api_error_frame(const std::string& id, const serving::ApiError& e, bool ids_prompt) const {
        std::string param = e.param;
        if (ids_prompt && param == "prompt") param = "prompt_ids";
        ojson out = error_frame(id, e.type, code_for(e, st_->service.draining()), e.what(), param);
        if (e.retry_after_s)
            out["retry_after_ms"] = int64_t(*e.retry_after_s) * 1000;
        else if (e.status == 503 && !st_->service.draining())
            out["retry_after_ms"] = k_connection_retry_after_ms;
        return out;
    }

    void send(const ojson& frame) { send_raw(dump(frame)); }

    void send_raw(std::string s) {
        if (closed_) return;
        pending_ += s.size();
        out_.push_back(std::move(s));
        if (pending_ > st_->opts.max_pending_bytes) {
            log().warn("native: connection {} has {} bytes of unread output (limit {}); closing it", id_,
                       pending_, st_->opts.max_pending_bytes);
            return close("slow reader");
        }
        if (!writing_) write_next();
    }

    void write_next() {
        wbufs_.clear();
        for (const auto& s : out_) {
            wbufs_.push_back(asio::buffer(s));
            if (wbufs_.size() == k_write_batch) break;
        }
        writing_ = true;
        asio::async_write(socket_, wbufs_,
                          [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                              self->on_written(ec);
                          });
    }

    void on_written(const boost::system::error_code& ec) {
        writing_ = false;
        if (closed_) return;
        if (ec) return close(ec.message().c_str());
        for (size_t i = 0; i < wbufs_.size(); ++i) {
            pending_ -= out_.front().size();
            out_.pop_front();
        }
        if (!out_.empty()) return write_next();
        if (closing_) close("closed by the server");
    }

    // ---- teardown ----

    void cancel_all() {
        for (auto& [serial, l] : live_) st_->service.cancel(l.req);
        live_.clear();
        ids_.clear();
    }

    void close(const char* why) {
        if (closed_) return;
        closed_ = true;
        st_->gate->close(*mailbox_);
        if (!live_.empty())
            log().debug("native: connection {} closed ({}); cancelling {} request(s)", id_, why,
                        live_.size());
        else
            log().debug("native: connection {} closed ({})", id_, why);
        cancel_all();
        boost::system::error_code ec;
        socket_.shutdown(tcp::socket::shutdown_both, ec);
        socket_.close(ec);
        timer_.cancel();
        out_.clear();
        pending_ = 0;
        st_->remove(this);
    }

    std::shared_ptr<ServerState> st_;
    Socket socket_;
    Strand strand_;
    std::shared_ptr<serving::PostGate::Mailbox> mailbox_;  // strand_, for the sinks
    asio::steady_timer timer_;
    const uint64_t id_;

    std::array<char, 65536> rbuf_;
    std::string line_;
    bool discarding_ = false;  // skipping the rest of an over-long line

    std::deque<std::string> out_;  // frames not yet written (the front ones may be in flight)
    std::vector<asio::const_buffer> wbufs_;
    size_t pending_ = 0;  // bytes in out_
    bool writing_ = false;
    bool closing_ = false;  // close_after_flush: no new frames are read
    bool closed_ = false;

    std::map<uint64_t, Live> live_;                  // by serial, i.e. in submission order
    std::map<uint64_t, bool> prompt_ids_kind_;       // requests being prepared: sent prompt_ids?
    std::unordered_map<std::string, uint64_t> ids_;  // client id -> serial
    uint64_t next_serial_ = 1;
};

void ServerState::accept_next() {
    Strand s = asio::make_strand(ioc);
    acceptor.async_accept(s, [self = shared_from_this()](const boost::system::error_code& ec, Socket sock) {
        if (!self->acceptor.is_open() || ec == asio::error::operation_aborted) return;
        if (ec) {
            log().warn("native: accept failed: {}", ec.message());
            self->retry_timer.expires_after(std::chrono::milliseconds(100));  // e.g. out of descriptors
            self->retry_timer.async_wait([self](const boost::system::error_code& e) {
                if (!e && self->acceptor.is_open()) self->accept_next();
            });
            return;
        }
        boost::system::error_code opt_ec;
        sock.set_option(tcp::no_delay(true), opt_ec);  // one small frame per token: do not wait for more
        const bool reject = int(self->count()) >= self->opts.max_connections;
        auto c = std::make_shared<Connection>(self, std::move(sock), self->next_conn_id++);
        if (!reject) self->add(c);
        asio::post(c->strand(), [c, reject] { c->start(reject); });
        self->accept_next();
    });
}

NativeServer::NativeServer(asio::io_context& ioc, serving::Service& service, const NativeOptions& opts)
    : state_(std::make_shared<ServerState>(ioc, service, opts)) {
    PHI_CHECK(opts.max_line_bytes >= 1024, "native max_line_bytes must be at least 1024, got {}",
              opts.max_line_bytes);
    PHI_CHECK(opts.max_pending_bytes >= 4096, "native max_pending_bytes must be at least 4096, got {}",
              opts.max_pending_bytes);
    PHI_CHECK(opts.max_connections >= 1, "native max_connections must be at least 1, got {}",
              opts.max_connections);
    PHI_CHECK(opts.max_requests_per_connection >= 1,
              "native max_requests_per_connection must be at least 1, got {}",
              opts.max_requests_per_connection);
}

NativeServer::~NativeServer() {
    state_->gate->close_all();
    stop_accepting();
    close_all();
}

void NativeServer::start() {
    ServerState& st = *state_;
    boost::system::error_code ec;
    tcp::resolver resolver(st.ioc);
    auto results = resolver.resolve(st.opts.host, std::to_string(st.opts.port), tcp::resolver::passive, ec);
    PHI_CHECK(!ec && !results.empty(), "native: cannot resolve listen address '{}': {}", st.opts.host,
              ec.message());
    const tcp::endpoint ep = results.begin()->endpoint();
    auto fail = [&](const char* what) {
        PHI_FAIL("native: cannot {} {}:{}: {} (is another server on that port? set a different native port)",
                 what, st.opts.host, st.opts.port, ec.message());
    };
    if (st.acceptor.open(ep.protocol(), ec)) fail("open a socket for");
    if (st.acceptor.set_option(tcp::acceptor::reuse_address(true), ec)) fail("set SO_REUSEADDR on");
    if (st.acceptor.bind(ep, ec)) fail("bind");
    if (st.acceptor.listen(asio::socket_base::max_listen_connections, ec)) fail("listen on");
    st.port = st.acceptor.local_endpoint().port();
    log().info("native protocol v{} listening on {}:{}", k_protocol_version, ep.address().to_string(),
               st.port.load());
    asio::post(st.accept_strand, [s = state_] { s->accept_next(); });
}

uint16_t NativeServer::port() const {
    return state_->port.load();
}

void NativeServer::stop_accepting() {
    asio::post(state_->accept_strand, [s = state_] {
        boost::system::error_code ec;
        s->acceptor.close(ec);
        s->retry_timer.cancel();
    });
}

void NativeServer::fail_all(const std::string& message) {
    for (auto& c : state_->live()) asio::post(c->strand(), [c, message] { c->fail_all(message); });
}

void NativeServer::close_all() {
    for (auto& c : state_->live()) asio::post(c->strand(), [c] { c->close_after_flush(); });
}

size_t NativeServer::connections() const {
    return state_->count();
}

}  // namespace phi::native
