// The native TCP streaming server on rank 0 (protocol v1, docs/PROTOCOL.md): newline-delimited
// JSON frames, many requests multiplexed on one connection by client-chosen id, one frame per
// token as soon as it is sampled, a final frame per request, cancel frames, bounded buffers.
//
// Threads: every connection lives on its own strand of the io_context (which may be run by one
// or several threads). The Service calls a request's sink on the engine thread; the sink only
// posts the event to the connection's strand, so the engine never waits on a socket. A slow
// reader whose queued output passes max_pending_bytes has its requests cancelled and its
// connection closed; other connections are not affected.
//
// Lifetime: the Service must outlive the io_context's run (connections call it from handlers).
// Sinks hold only a weak reference to their connection, so the engine may outlive the io_context.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace phi::serving {
class Service;
}

namespace phi::native {

inline constexpr int k_protocol_version = 1;

struct NativeOptions {
    std::string host = "127.0.0.1";
    uint16_t port = 0;                           // 0: an ephemeral port (see NativeServer::port)
    size_t max_line_bytes = size_t(1) << 20;     // longest client frame, newline excluded
    size_t max_pending_bytes = size_t(4) << 20;  // queued output per connection before it is dropped
    int max_connections = 256;                   // beyond: an error frame, then close
    int max_requests_per_connection = 64;        // live requests per connection; beyond: error frame
};

struct ServerState;

class NativeServer {
  public:
    NativeServer(boost::asio::io_context& ioc, serving::Service& service, const NativeOptions& opts);
    ~NativeServer();
    NativeServer(const NativeServer&) = delete;
    NativeServer& operator=(const NativeServer&) = delete;

    /// Binds and listens (throws phi::Error naming the address when it cannot), then accepts on
    /// the io_context. Call once, before or while the io_context runs.
    void start();
    /// The bound port (the ephemeral one when NativeOptions::port was 0). Valid after start().
    uint16_t port() const;
    /// Closes the listening socket; open connections stay (new requests on them get "draining"
    /// errors once the Service drains). Thread-safe.
    void stop_accepting();
    /// Ends every in-flight request of every connection with a final done frame (finish_reason
    /// "error", error.message = `message`) and cancels it in the Service; later engine events for
    /// those requests are dropped. For a lost rank or the drain deadline. Thread-safe.
    void fail_all(const std::string& message);
    /// Closes every connection once its queued frames are written (at most ~2 s for a peer that
    /// does not read); their live requests are cancelled. Thread-safe.
    void close_all();
    /// Open connections. Thread-safe.
    size_t connections() const;

  private:
    std::shared_ptr<ServerState> state_;
};

}  // namespace phi::native
