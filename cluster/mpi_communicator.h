// Communicator over MPI. Collectives are non-blocking MPI calls completed by a polling loop with
// backoff and a deadline: a waiting rank sleeps instead of spinning (oversubscribed ranks on a
// small machine would otherwise starve each other), and a collective that does not complete
// within the deadline (a peer died or stalled) ends the job with a clear error instead of hanging.
#pragma once

#include <mpi.h>

#include <chrono>
#include <string>
#include <vector>

#include "cluster/communicator.h"
#include "common/error.h"

namespace phi {

/// A collective that did not complete within its deadline: a rank died or hangs. The cluster
/// cannot continue; the caller reports it and exits.
class CommTimeout : public Error {
public:
    using Error::Error;
};

/// RAII for MPI_Init_thread / MPI_Finalize; one per process, created first in main.
class MpiSession {
public:
    MpiSession(int* argc, char*** argv);
    ~MpiSession();
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;
};

class MpiCommunicator final : public Communicator {
public:
    /// Duplicates `comm` (so our traffic never mixes with anyone else's).
    explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
    ~MpiCommunicator() override;
    MpiCommunicator(const MpiCommunicator&) = delete;
    MpiCommunicator& operator=(const MpiCommunicator&) = delete;

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    void all_reduce_sum(float* data, int64_t count) override;
    void broadcast(void* data, size_t bytes, int root) override;
    void gather(const float* send, int64_t count, float* recv, int root) override;
    void all_gather(const float* send, int64_t count, float* recv) override;
    void all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) override;
    void barrier() override;

    /// Deadline for one collective (the watchdog). Waiting for the next step plan uses its own,
    /// longer deadline: set_wait_timeout.
    void set_timeout(std::chrono::milliseconds t) override { timeout_ = t; }
    std::chrono::milliseconds timeout() const { return timeout_; }

    /// Blocks until `req` completes or the deadline passes; on timeout throws CommTimeout naming
    /// `what`. Public so the step protocol can wait on its own requests the same way.
    void wait(MPI_Request& req, const char* what, std::chrono::milliseconds timeout);

    MPI_Comm raw() const { return comm_; }
    /// This rank's index among the ranks on its node, and how many share the node
    /// (MPI_Comm_split_type shared-memory split): thread counts and GPU choice come from these.
    int local_rank() const { return local_rank_; }
    int local_size() const { return local_size_; }

private:
    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
    int local_rank_ = 0;
    int local_size_ = 1;
    std::chrono::milliseconds timeout_{60000};
    std::vector<float> scratch_;
};

}  // namespace phi
