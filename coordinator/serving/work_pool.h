// A small fixed pool of threads with a bounded queue, for the CPU work a request needs before the
// engine (tokenization, chat templating), so that work never runs on the network threads: one
// 1 MiB prompt must not stall every other connection's I/O.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace phi::serving {

class WorkPool {
public:
    /// `threads` workers; at most `max_queued` jobs wait for one.
    WorkPool(int threads, size_t max_queued);
    /// Stops the workers after their current jobs; jobs still queued are dropped unrun.
    ~WorkPool();
    WorkPool(const WorkPool&) = delete;
    WorkPool& operator=(const WorkPool&) = delete;

    /// Queues `job`; false (and `job` is dropped) when the queue is full or the pool is stopping.
    bool try_post(std::function<void()> job);

private:
    void work();

    const size_t max_queued_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace phi::serving
