// NcclCommunicator: non-blocking NCCL with deadlines. Host-buffer collectives copy through a
// device scratch buffer on the communicator's stream; device collectives enqueue on the caller's.
#include "cluster/nccl_communicator.h"

#include <cstring>
#include <thread>
#include <vector>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/nccl_check.h"

namespace phi {
namespace {

using clock = std::chrono::steady_clock;

/// Spin briefly, then yield, then sleep up to 1 ms (as MpiCommunicator::wait).
void back_off(int spins) {
    if (spins > 200) {
        std::this_thread::sleep_for(std::chrono::microseconds(std::min(1000, 10 * (spins - 200))));
    } else if (spins > 50) {
        std::this_thread::yield();
    }
}

}  // namespace

ncclUniqueId NcclCommunicator::make_unique_id() {
    ncclUniqueId id;
    NCCL_CHECK(ncclGetUniqueId(&id));
    return id;
}

NcclCommunicator::NcclCommunicator(const ncclUniqueId& id, int rank, int size, int device,
                                   std::chrono::milliseconds init_timeout)
    : rank_(rank), size_(size), device_(device) {
    PHI_CHECK(size >= 1 && rank >= 0 && rank < size, "NCCL rank {} of {} is invalid", rank, size);
    const int gpus = kernels::cuda::cuda_device_count();
    PHI_CHECK(device >= 0 && device < gpus, "rank {} wants GPU {} but {} GPU(s) are visible ({})", rank,
              device, gpus,
              gpus == 0 ? kernels::cuda::cuda_unavailable_reason() : "one GPU per rank on each node");
    CUDA_CHECK(cudaSetDevice(device));
    stream_ = std::make_unique<kernels::cuda::Stream>();
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t rc = ncclCommInitRankConfig(&comm_, size, id, rank, &config);
    if (rc != ncclSuccess && rc != ncclInProgress) {
        PHI_FAIL("ncclCommInitRankConfig (rank {} of {}, GPU {}) failed: {}", rank, size, device,
                 ncclGetErrorString(rc));
    }
    const auto deadline = clock::now() + init_timeout;
    for (int spins = 0;; ++spins) {
        ncclResult_t state = ncclSuccess;
        NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
        if (state == ncclSuccess) break;
        if (state != ncclInProgress) {
            abort_and_throw(fmt::format("rank {}: NCCL init failed: {}", rank, ncclGetErrorString(state)));
        }
        if (clock::now() > deadline) {
            abort_and_throw(
                fmt::format("rank {}: NCCL init of {} ranks did not complete within {} ms: a rank did not "
                            "join (lost, stalled, or given another id)",
                            rank, size, init_timeout.count()));
        }
        back_off(spins);
    }
}

NcclCommunicator::~NcclCommunicator() {
    if (comm_ != nullptr) {
        // Destroy waits for outstanding work; abort does not. After a failure comm_ is already null.
        ncclCommFinalize(comm_);
        ncclResult_t state = ncclInProgress;
        const auto deadline = clock::now() + std::chrono::seconds(10);
        for (int spins = 0; state == ncclInProgress && clock::now() < deadline; ++spins) {
            if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
            back_off(spins);
        }
        if (state == ncclSuccess) {
            ncclCommDestroy(comm_);
        } else {
            ncclCommAbort(comm_);
        }
    }
}

void NcclCommunicator::abort_and_throw(const std::string& msg) {
    if (comm_ != nullptr) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
    }
    throw Error(msg);
}

void NcclCommunicator::settle(ncclResult_t rc, const char* what) {
    // A non-blocking communicator may answer ncclInProgress: the call completes in the background.
    if (rc != ncclSuccess && rc != ncclInProgress)
        abort_and_throw(fmt::format("rank {}: {} failed: {}", rank_, what, ncclGetErrorString(rc)));
    const auto deadline = clock::now() + timeout_;
    for (int spins = 0;; ++spins) {
        ncclResult_t state = ncclSuccess;
        NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
        if (state == ncclSuccess) return;
        if (state != ncclInProgress)
            abort_and_throw(fmt::format("rank {}: {} failed: {}", rank_, what, ncclGetErrorString(state)));
        if (clock::now() > deadline)
            abort_and_throw(
                fmt::format("rank {}: {} was not enqueued within {} ms", rank_, what, timeout_.count()));
        back_off(spins);
    }
}

void NcclCommunicator::wait(cudaStream_t stream, const char* what) {
    const auto deadline = clock::now() + timeout_;
    for (int spins = 0;; ++spins) {
        const cudaError_t q = cudaStreamQuery(stream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) CUDA_CHECK(q);
        ncclResult_t state = ncclSuccess;
        if (comm_ != nullptr && ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state != ncclSuccess &&
            state != ncclInProgress) {
            abort_and_throw(fmt::format("rank {}: {} failed: {}", rank_, what, ncclGetErrorString(state)));
        }
        if (clock::now() > deadline) {
            abort_and_throw(
                fmt::format("rank {}: {} did not complete within {} ms: a peer rank was lost or is stalled; "
                            "stopping the cluster",
                            rank_, what, timeout_.count()));
        }
        back_off(spins);
    }
}

void NcclCommunicator::all_reduce_sum_device(float* data, int64_t count, cudaStream_t stream) {
    ++stats_.all_reduces;
    stats_.all_reduce_bytes += count * 4;
    if (size_ == 1 || count == 0) return;
    PHI_CHECK(comm_ != nullptr, "rank {}: all-reduce on a failed NCCL communicator", rank_);
    settle(ncclAllReduce(data, data, size_t(count), ncclFloat32, ncclSum, comm_, stream), "all-reduce");
}

void NcclCommunicator::all_gather_device(const float* send, int64_t count, float* recv, cudaStream_t stream) {
    PHI_CHECK(comm_ != nullptr, "rank {}: all-gather on a failed NCCL communicator", rank_);
    settle(ncclAllGather(send, recv, size_t(count), ncclFloat32, comm_, stream), "all-gather");
}

void NcclCommunicator::broadcast_device(void* data, size_t bytes, int root, cudaStream_t stream) {
    PHI_CHECK(comm_ != nullptr, "rank {}: broadcast on a failed NCCL communicator", rank_);
    settle(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream), "broadcast");
}

void NcclCommunicator::all_reduce_sum(float* data, int64_t count) {
    if (size_ == 1 || count == 0) {
        ++stats_.all_reduces;
        stats_.all_reduce_bytes += count * 4;
        return;
    }
    const auto t0 = clock::now();
    const cudaStream_t s = stream_->get();
    scratch_.reserve(size_t(count) * 4);
    CUDA_CHECK(cudaMemcpyAsync(scratch_.data(), data, size_t(count) * 4, cudaMemcpyHostToDevice, s));
    all_reduce_sum_device(scratch_.as<float>(), count, s);
    CUDA_CHECK(cudaMemcpyAsync(data, scratch_.data(), size_t(count) * 4, cudaMemcpyDeviceToHost, s));
    wait(s, "all-reduce");
    stats_.all_reduce_seconds += std::chrono::duration<double>(clock::now() - t0).count();
}

void NcclCommunicator::broadcast(void* data, size_t bytes, int root) {
    ++stats_.broadcasts;
    if (size_ == 1 || bytes == 0) return;
    const cudaStream_t s = stream_->get();
    scratch_.reserve(bytes);
    CUDA_CHECK(cudaMemcpyAsync(scratch_.data(), data, bytes, cudaMemcpyHostToDevice, s));
    broadcast_device(scratch_.data(), bytes, root, s);
    CUDA_CHECK(cudaMemcpyAsync(data, scratch_.data(), bytes, cudaMemcpyDeviceToHost, s));
    wait(s, "broadcast");
}

void NcclCommunicator::all_gather(const float* send, int64_t count, float* recv) {
    ++stats_.gathers;
    if (size_ == 1) {
        if (recv != send) std::memcpy(recv, send, size_t(count) * 4);
        return;
    }
    const cudaStream_t s = stream_->get();
    const size_t bytes = size_t(count) * 4;
    scratch_.reserve(bytes * size_t(size_ + 1));
    char* base = static_cast<char*>(scratch_.data());
    CUDA_CHECK(cudaMemcpyAsync(base, send, bytes, cudaMemcpyHostToDevice, s));
    all_gather_device(reinterpret_cast<float*>(base), count, reinterpret_cast<float*>(base + bytes), s);
    CUDA_CHECK(cudaMemcpyAsync(recv, base + bytes, bytes * size_t(size_), cudaMemcpyDeviceToHost, s));
    wait(s, "all-gather");
}

// NCCL has no gather: an all-gather (the logits rows are small next to a step's all-reduces).
void NcclCommunicator::gather(const float* send, int64_t count, float* recv, int root) {
    if (size_ == 1) {
        ++stats_.gathers;
        if (recv != send) std::memcpy(recv, send, size_t(count) * 4);
        return;
    }
    std::vector<float> all(size_t(count) * size_t(size_));
    all_gather(send, count, all.data());
    if (rank_ == root) std::memcpy(recv, all.data(), all.size() * 4);
}

void NcclCommunicator::all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) {
    if (size_ == 1) {
        if (recv != send) std::memcpy(recv, send, size_t(count) * 8);
        return;
    }
    const cudaStream_t s = stream_->get();
    const size_t bytes = size_t(count) * 8;
    scratch_.reserve(bytes * size_t(size_ + 1));
    char* base = static_cast<char*>(scratch_.data());
    CUDA_CHECK(cudaMemcpyAsync(base, send, bytes, cudaMemcpyHostToDevice, s));
    PHI_CHECK(comm_ != nullptr, "rank {}: all-gather on a failed NCCL communicator", rank_);
    settle(ncclAllGather(base, base + bytes, size_t(count), ncclUint64, comm_, s), "all-gather");
    CUDA_CHECK(cudaMemcpyAsync(recv, base + bytes, bytes * size_t(size_), cudaMemcpyDeviceToHost, s));
    wait(s, "all-gather");
}

void NcclCommunicator::barrier() {
    if (size_ == 1) return;
    float one = 1.0f;
    all_reduce_sum(&one, 1);
    --stats_.all_reduces;  // not a model collective
    stats_.all_reduce_bytes -= 4;
}

}  // namespace phi
