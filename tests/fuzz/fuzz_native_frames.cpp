// Native protocol frames, through the real server: each input is sent as one connection's bytes
// to a NativeServer (on the in-process serving stack of tests/support), followed by a ping; the
// server must answer that ping (every frame before it handled, none crashing it or closing the
// connection unannounced) within a time limit. Requests the input started are cancelled when the
// connection closes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

// clang-format off
#include <utility>
// clang-format on
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "coordinator/native/native_server.h"
#include "tests/fuzz/fuzz_input.h"
#include "tests/support/serving_harness.h"

namespace {

constexpr const char* k_sentinel = "\n{\"type\":\"ping\",\"data\":\"fuzz-end-7f3a\"}\n";

struct Stack {
    Stack() {
        server.start();
        thread = std::thread([this] { io.run(); });
    }
    ~Stack() {  // at exit: the server goes before its io_context, the engine last
        io.stop();
        thread.join();
    }
    phi::native::NativeOptions options() {
        phi::native::NativeOptions o;
        o.host = "127.0.0.1";
        o.port = 0;
        o.max_line_bytes = 64 << 10;  // lines past it are refused: reachable by short inputs
        return o;
    }
    phi::test::ServingHarness harness;
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard = boost::asio::make_work_guard(io);
    phi::native::NativeServer server{io, harness.service(), options()};
    std::thread thread;
};

[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "fuzz_native_frames: %s\n", what);
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Stack stack_at_exit;  // one per process, torn down in order at exit
    Stack* stack = &stack_at_exit;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail("socket");
    timeval tv{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(stack->server.port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) fail("connect");
    std::string out(phi::fuzz::text(data, size));
    out += k_sentinel;
    for (size_t sent = 0; sent < out.size();) {
        const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;  // the server may close after a frame it refuses for good
        sent += size_t(n);
    }
    // Read until the sentinel's pong (or the server closed the connection after an error frame).
    std::string in;
    char buf[65536];
    while (in.find("fuzz-end-7f3a") == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n == 0) break;
        if (n < 0) fail("no answer to the ping within 30 s");
        in.append(buf, size_t(n));
    }
    ::close(fd);
    return 0;
}
