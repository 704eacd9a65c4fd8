// The OpenAI-compatible HTTP/1.1 server of rank 0 (Boost.Beast): /v1/completions and
// /v1/chat/completions (JSON or SSE streaming), /v1/models, /health and /metrics, all on top of
// serving::Service. One strand per connection; keep-alive; every request gets a response.
//
// Threads: the io_context is run by the caller on one or more threads; start() and the stop calls
// may come from any thread. The Service's sinks (engine thread) only post to a connection's strand,
// so a slow client never blocks the engine: its pending bytes are bounded, and past the bound (or
// a write stalled past write_timeout) its request is cancelled and the connection closed.
//
// Lifetimes: declare the io_context before the HttpServer and the Service before both, so the
// server is destroyed first (after it, no sink posts to the io_context any more) and the Service
// outlives the connections' last handlers.
//
// Graceful shutdown: stop_accepting(); svc.begin_drain() (new requests get 503, responses say
// Connection: close); wait until svc.in_flight() == 0 or a deadline (then engine.abort_all);
// close_connections(); stop the engine loop; io.stop(); join the io threads.
#pragma once

// clang-format off
// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility> (GCC 12).
#include <utility>
// clang-format on
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace phi::serving {
class Service;
}

namespace phi::http {

struct HttpOptions {
    std::string host = "0.0.0.0";
    uint16_t port = 8000;  // 0: an ephemeral port (see HttpServer::port())
    size_t max_body_bytes = size_t(1) << 20;
    size_t max_header_bytes = size_t(16) << 10;
    /// Keep-alive: how long an open connection may wait for its next request.
    std::chrono::milliseconds idle_timeout{60000};
    /// From the first byte of a request to its last.
    std::chrono::milliseconds read_timeout{30000};
    /// One write (a response, or a batch of SSE events) making no progress for this long closes the
    /// connection and cancels its request.
    std::chrono::milliseconds write_timeout{30000};
    /// Connections beyond this are answered 503 and closed.
    size_t max_connections = 1024;
    /// Bytes a connection may have queued for a slow reader before its request is cancelled.
    size_t max_pending_bytes = size_t(4) << 20;
};

class HttpServer {
  public:
    HttpServer(boost::asio::io_context& io, serving::Service& svc, const HttpOptions& opts);
    /// Stops accepting, closes every connection and detaches the sinks from the io_context.
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    /// Binds, listens and starts accepting. Throws phi::Error naming the address when it cannot.
    void start();
    /// The bound port (the ephemeral one when opts.port was 0); valid after start().
    uint16_t port() const;
    /// Closes the listening socket: new connections are refused; open ones carry on. Synchronous.
    void stop_accepting();
    /// Closes every open connection; their unfinished requests are cancelled.
    void close_connections();
    /// Ends every in-flight request at once, from the io threads (the engine thread may be stuck in
    /// a collective): a stream gets an SSE error event and `data: [DONE]`, a plain request a 503
    /// error body; each such connection then closes. For a lost rank or a teardown signal.
    void fail_all(const std::string& message);
    /// Connections whose fail_all error is not yet fully written (0 once all are on the wire).
    size_t unflushed_failures() const;
    /// Open connections.
    size_t connections() const;
    /// The server's own Prometheus lines (connections, responses by status class); /metrics
    /// serves them after the Service's.
    std::string metrics_text() const;

    struct Impl;

  private:
    std::shared_ptr<Impl> impl_;
};

}  // namespace phi::http
