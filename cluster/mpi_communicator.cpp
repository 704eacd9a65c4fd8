// Fixed-order all-reduce: a reduce-scatter done with MPI_Ialltoallv (rank j receives every rank's
// j-th chunk and sums them in rank order 0..N-1), then an all-gather of the reduced chunks. Every
// element is summed by exactly one rank in one order, so all ranks end with identical bits; a
// plain MPI_Allreduce promises no such thing.
#include "cluster/mpi_communicator.h"

#include <cstring>
#include <thread>

#include "common/error.h"
#include "common/log.h"

namespace phi {
namespace {

void mpi_check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    PHI_FAIL("{} failed: {}", call, std::string(msg, size_t(len)));
}

#define MPI_CHECK(call) mpi_check((call), #call)

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
    int provided = 0;
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
}

MpiSession::~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
    MPI_CHECK(MPI_Comm_dup(comm, &comm_));
    // Errors come back as codes we turn into messages, rather than MPI aborting silently.
    MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
    MPI_Comm node = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
}

MpiCommunicator::~MpiCommunicator() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::wait(MPI_Request& req, const char* what, std::chrono::milliseconds timeout) {
    using clock = std::chrono::steady_clock;
    const auto deadline = clock::now() + timeout;
    auto nap = std::chrono::microseconds(0);
    for (int spins = 0;; ++spins) {
        int done = 0;
        MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) return;
        if (clock::now() > deadline) {
            // The request stays pending: the process is expected to end (see phi-worker's main),
            // after rank 0 has told its clients.
            throw CommTimeout(fmt::format("rank {}: {} did not complete within {} ms: a peer rank was lost or is "
                                          "stalled; stopping the cluster",
                                          rank_, what, timeout.count()));
        }
        // Spin briefly for latency, then back off to sleeping so an idle rank frees its core.
        if (spins > 200) {
            nap = std::min(std::chrono::microseconds(2000), nap + std::chrono::microseconds(20));
            std::this_thread::sleep_for(nap);
        } else if (spins > 50) {
            std::this_thread::yield();
        }
    }
}

void MpiCommunicator::all_reduce_sum(float* data, int64_t count) {
    ++stats_.all_reduces;
    stats_.all_reduce_bytes += count * 4;
    if (size_ == 1 || count == 0) return;
    const auto t0 = std::chrono::steady_clock::now();
    const int n = size_;
    std::vector<int> counts(static_cast<size_t>(n)), displs(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
        const int64_t b = r * count / n, e = (r + 1) * count / n;
        counts[size_t(r)] = int(e - b);
        displs[size_t(r)] = int(b);
    }
    const int mine = counts[size_t(rank_)];
    // recv[r * mine + i] = rank r's element displs[rank_] + i
    if (scratch_.size() < size_t(n) * size_t(mine)) scratch_.resize(size_t(n) * size_t(mine));
    std::vector<int> rcounts(static_cast<size_t>(n), mine), rdispls(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) rdispls[size_t(r)] = r * mine;
    MPI_Request req;
    MPI_CHECK(MPI_Ialltoallv(data, counts.data(), displs.data(), MPI_FLOAT, scratch_.data(), rcounts.data(),
                             rdispls.data(), MPI_FLOAT, comm_, &req));
    wait(req, "all-reduce (reduce-scatter)", timeout_);
    float* out = data + displs[size_t(rank_)];
    for (int i = 0; i < mine; ++i) {
        float acc = scratch_[size_t(i)];
        for (int r = 1; r < n; ++r) acc += scratch_[size_t(r * mine + i)];
        out[i] = acc;
    }
    MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displs.data(), MPI_FLOAT,
                              comm_, &req));
    wait(req, "all-reduce (all-gather)", timeout_);
    stats_.all_reduce_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
    ++stats_.broadcasts;
    if (size_ == 1) return;
    PHI_CHECK(bytes <= size_t(INT32_MAX), "broadcast of {} bytes is too large", bytes);
    MPI_Request req;
    MPI_CHECK(MPI_Ibcast(data, int(bytes), MPI_BYTE, root, comm_, &req));
    wait(req, "broadcast", timeout_);
}

void MpiCommunicator::gather(const float* send, int64_t count, float* recv, int root) {
    ++stats_.gathers;
    stats_.gather_bytes += count * 4;
    if (size_ == 1) {
        std::memcpy(recv, send, size_t(count) * 4);
        return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    MPI_Request req;
    MPI_CHECK(MPI_Igather(send, int(count), MPI_FLOAT, recv, int(count), MPI_FLOAT, root, comm_, &req));
    wait(req, "gather", timeout_);
    stats_.gather_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void MpiCommunicator::all_gather(const float* send, int64_t count, float* recv) {
    ++stats_.gathers;
    if (size_ == 1) {
        std::memcpy(recv, send, size_t(count) * 4);
        return;
    }
    MPI_Request req;
    MPI_CHECK(MPI_Iallgather(send, int(count), MPI_FLOAT, recv, int(count), MPI_FLOAT, comm_, &req));
    wait(req, "all-gather", timeout_);
}

void MpiCommunicator::all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) {
    if (size_ == 1) {
        std::memcpy(recv, send, size_t(count) * 8);
        return;
    }
    MPI_Request req;
    MPI_CHECK(MPI_Iallgather(send, int(count), MPI_UINT64_T, recv, int(count), MPI_UINT64_T, comm_, &req));
    wait(req, "all-gather", timeout_);
}

void MpiCommunicator::barrier() {
    if (size_ == 1) return;
    MPI_Request req;
    MPI_CHECK(MPI_Ibarrier(comm_, &req));
    wait(req, "barrier", timeout_);
}

}  // namespace phi
