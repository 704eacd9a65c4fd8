// How an engine-thread sink reaches a connection's executor without outliving it. A sink is owned
// by the engine's sequence, and the engine may outlive the server and its io_context (it is
// declared first so that it outlives the connections' handlers). A sink that held an executor of
// its own would then touch the dead io_context when it is called or destroyed (UBSan caught an
// HTTP sink destroying an Asio strand after its io_context). So a sink holds only a Mailbox: the
// connection's executor, which the connection clears when it dies and the server clears for every
// connection when it is destroyed, both under the gate's one lock.
#pragma once

// clang-format off
// First: Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility> (GCC 12).
#include <utility>
// clang-format on
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace phi::serving {

class PostGate {
public:
    /// One per connection; its executor is guarded by the gate's lock.
    struct Mailbox {
        std::optional<boost::asio::any_io_executor> exec;
    };

    /// A mailbox posting to `exec` (empty at once if the gate is already closed).
    std::shared_ptr<Mailbox> open(boost::asio::any_io_executor exec) {
        auto box = std::make_shared<Mailbox>();
        std::lock_guard lock(mu_);
        if (!open_) return box;
        box->exec = std::move(exec);
        std::erase_if(boxes_, [](const std::weak_ptr<Mailbox>& w) { return w.expired(); });
        boxes_.push_back(box);
        return box;
    }
    /// The connection is going away: nothing more is posted to it.
    void close(Mailbox& box) {
        std::lock_guard lock(mu_);
        box.exec.reset();
    }
    /// The server is going away: nothing more is posted to any of its connections.
    void close_all() {
        std::lock_guard lock(mu_);
        open_ = false;
        for (auto& w : boxes_)
            if (auto b = w.lock()) b->exec.reset();
        boxes_.clear();
    }
    /// Posts `f` to the mailbox's executor unless it was closed; false when it was.
    template <class F>
    bool post(Mailbox& box, F&& f) {
        std::lock_guard lock(mu_);
        if (!box.exec) return false;
        boost::asio::post(*box.exec, std::forward<F>(f));
        return true;
    }

private:
    std::mutex mu_;
    bool open_ = true;
    std::vector<std::weak_ptr<Mailbox>> boxes_;
};

}  // namespace phi::serving
