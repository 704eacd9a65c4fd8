// In-process communicator: N ranks as N threads of one process sharing a ThreadGroup. Tensor
// parallelism without MPI (CPU tests, and the GPU machine, which has no MPI): each thread owns its
// PhiModel and its ThreadCommunicator, exactly as an MPI rank would. The all-reduce sums in the
// same fixed order as MpiCommunicator (rank 0..N-1, one rank per chunk), so every rank holds
// bit-identical results. Every wait has a deadline: a rank that stalls or throws ends the group's
// collectives with an error on every rank instead of a hang.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/communicator.h"

namespace phi {

/// State shared by the N ranks of one in-process group: a generation-counting barrier and, per
/// rank, the buffers it posted for the collective in progress. Create once, hand one shared_ptr
/// to each rank's ThreadCommunicator.
class ThreadGroup {
  public:
    explicit ThreadGroup(int size);
    ThreadGroup(const ThreadGroup&) = delete;
    ThreadGroup& operator=(const ThreadGroup&) = delete;

    int size() const { return size_; }
    /// Marks the group failed (a rank threw or stalled): every rank's current and later collective
    /// throws with `why` instead of waiting. Idempotent; the first reason is kept.
    void abort(const std::string& why);
    bool aborted() const;

  private:
    friend class ThreadCommunicator;

    /// What one rank posts for the collective in progress.
    struct Slot {
        const void* send = nullptr;
        void* recv = nullptr;
        int64_t count = 0;  // elements (or bytes for broadcast)
        int op = 0;         // collective kind, checked for agreement
    };

    /// Waits until every rank has arrived (or the deadline passes: throws naming the missing
    /// ranks, after aborting the group so the others stop too).
    void arrive_and_wait(int rank, const char* what, std::chrono::milliseconds timeout);

    const int size_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    int arrived_ = 0;
    uint64_t generation_ = 0;
    std::vector<uint64_t> arrivals_;  // [size] barriers each rank has entered (names a staller)
    bool aborted_ = false;
    std::string abort_reason_;
    std::vector<Slot> slots_;  // [size]
};

class ThreadCommunicator final : public Communicator {
  public:
    ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int rank);

    int rank() const override { return rank_; }
    int size() const override { return group_->size(); }
    void all_reduce_sum(float* data, int64_t count) override;
    void broadcast(void* data, size_t bytes, int root) override;
    void gather(const float* send, int64_t count, float* recv, int root) override;
    void all_gather(const float* send, int64_t count, float* recv) override;
    void all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) override;
    void barrier() override;
    void set_timeout(std::chrono::milliseconds t) override { timeout_ = t; }
    std::chrono::milliseconds timeout() const { return timeout_; }

    ThreadGroup& group() { return *group_; }

  private:
    /// Posts this rank's buffers, waits for every rank's, checks they agree on op and count.
    void post(int op, const void* send, void* recv, int64_t count, const char* what);
    void all_gather_bytes(const void* send, size_t bytes, void* recv, const char* what);

    std::shared_ptr<ThreadGroup> group_;
    int rank_;
    std::chrono::milliseconds timeout_{60000};
};

}  // namespace phi
