// A small synchronous HTTP/1.1 client for the server tests (Boost.Beast): whole responses, and SSE
// streams read incrementally with the arrival time and read number of every event.
#pragma once

#include <sys/socket.h>

// clang-format off
// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility> (GCC 12).
#include <utility>
// clang-format on
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace phi::http::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;

struct Response {
    unsigned status = 0;
    bhttp::fields headers;
    std::string body;
    json parsed() const { return json::parse(body); }
};

struct SseEvent {
    std::string data;  // after "data: "
    steady::time_point at;
    int read = 0;  // which socket read delivered it (0-based)
};

struct Stream {
    unsigned status = 0;
    bhttp::fields headers;
    std::vector<SseEvent> events;
    std::string body;  // when the response was not chunked SSE (an error)
    bool complete = false;
};

class Client {
  public:
    /// `rcvbuf` > 0 shrinks the receive buffer (a slow reader's window fills sooner).
    explicit Client(uint16_t port, std::chrono::seconds timeout = std::chrono::seconds(30), int rcvbuf = 0)
        : sock_(io_) {
        sock_.open(tcp::v4());
        if (rcvbuf > 0) sock_.set_option(net::socket_base::receive_buffer_size(rcvbuf));
        sock_.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
        // A server bug makes a read fail instead of hanging the suite.
        timeval tv{};
        tv.tv_sec = timeout.count();
        ::setsockopt(sock_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }

    void send(bhttp::verb method, const std::string& target, const std::string& body = "",
              const std::vector<std::pair<std::string, std::string>>& headers = {}) {
        bhttp::request<bhttp::string_body> req{method, target, 11};
        req.set(bhttp::field::host, "localhost");
        if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
        for (const auto& [k, v] : headers) req.set(k, v);
        req.body() = body;
        req.prepare_payload();
        bhttp::write(sock_, req);
    }

    Response read_response() {
        bhttp::response_parser<bhttp::string_body> p;
        p.body_limit(std::numeric_limits<std::uint64_t>::max());
        bhttp::read(sock_, buf_, p);
        Response r;
        r.status = p.get().result_int();
        r.headers = p.get().base();
        r.body = p.get().body();
        return r;
    }

    Response post(const std::string& target, const std::string& body) {
        send(bhttp::verb::post, target, body);
        return read_response();
    }
    Response post(const std::string& target, const json& body) { return post(target, body.dump()); }
    Response get(const std::string& target) {
        send(bhttp::verb::get, target);
        return read_response();
    }

    /// Reads an SSE response; `on_event` returning false stops reading (the stream is left unread).
    Stream read_stream(const std::function<bool(const SseEvent&)>& on_event = {}) {
        bhttp::response_parser<bhttp::string_body> p;
        p.body_limit(std::numeric_limits<std::uint64_t>::max());
        bhttp::read_header(sock_, buf_, p);
        Stream s;
        s.status = p.get().result_int();
        s.headers = p.get().base();
        if (!p.chunked()) {
            bhttp::read(sock_, buf_, p);
            s.body = p.get().body();
            s.complete = true;
            return s;
        }
        std::string pending;
        bool stop = false;
        int reads = 0;
        auto cb = [&](std::uint64_t, beast::string_view body, beast::error_code&) -> std::uint64_t {
            pending.append(body.data(), body.size());
            size_t pos;
            while (!stop && (pos = pending.find("\n\n")) != std::string::npos) {
                std::string ev = pending.substr(0, pos);
                pending.erase(0, pos + 2);
                if (ev.rfind("data: ", 0) != 0) continue;
                s.events.push_back({ev.substr(6), steady::now(), reads});
                if (on_event && !on_event(s.events.back())) stop = true;
            }
            return body.size();
        };
        p.on_chunk_body(cb);
        while (!p.is_done() && !stop) {
            bhttp::read_some(sock_, buf_, p);
            ++reads;
        }
        s.complete = p.is_done();
        return s;
    }

    void write_raw(const std::string& bytes) { net::write(sock_, net::buffer(bytes)); }
    /// Reads until the server closes; returns everything.
    std::string read_all_raw() {
        std::string out(static_cast<const char*>(buf_.data().data()), buf_.size());
        buf_.consume(buf_.size());
        beast::error_code ec;
        char tmp[4096];
        for (;;) {
            const size_t n = sock_.read_some(net::buffer(tmp), ec);
            if (ec) break;
            out.append(tmp, n);
        }
        return out;
    }
    void close() {
        beast::error_code ec;
        sock_.shutdown(tcp::socket::shutdown_both, ec);
        sock_.close(ec);
    }
    tcp::socket& socket() { return sock_; }

  private:
    net::io_context io_;
    tcp::socket sock_;
    beast::flat_buffer buf_;
};

}  // namespace phi::http::test
