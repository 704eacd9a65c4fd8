#include "coordinator/serving/work_pool.h"

#include "common/error.h"
#include "common/log.h"

namespace phi::serving {

WorkPool::WorkPool(int threads, size_t max_queued) : max_queued_(max_queued) {
    PHI_CHECK(threads >= 1, "the request preparation pool needs at least 1 thread, got {}", threads);
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
}

WorkPool::~WorkPool() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        queue_.clear();
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
}

bool WorkPool::try_post(std::function<void()> job) {
    {
        std::lock_guard lock(mu_);
        if (stopping_ || queue_.size() >= max_queued_) return false;
        queue_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
}

void WorkPool::work() {
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        try {
            job();
        } catch (const std::exception& e) {  // a job reports its own errors; this is a bug's last stop
            log().error("request preparation failed: {}", e.what());
        }
    }
}

}  // namespace phi::serving
