// NCCL communicator for multi-GPU tensor parallelism: one GPU per rank (rank r of a node uses
// local GPU r). Ranks join through an ncclUniqueId: from MPI (make_nccl_communicator_mpi, in
// phi_cluster_nccl_mpi) or handed over directly (threads of one process, as the GPU machine's
// tests do: it has no MPI).
//
// Numerics: NCCL's fp32 sum is deterministic for a fixed topology, rank count and algorithm, and
// every rank receives the same bits (ring and tree both end by broadcasting each reduced chunk),
// but the order is NCCL's, not rank 0..N-1: GPU TP results equal each other on every rank, and
// differ from the CPU/MPI fixed-order sum in rounding. Pin NCCL_ALGO / NCCL_PROTO for
// reproducibility across machines.
//
// Failure handling: the communicator is non-blocking (ncclConfig_t::blocking = 0); every wait
// (init, stream completion) polls with a deadline, and past it aborts the communicator
// (ncclCommAbort) and throws, so a lost rank never hangs the others.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <memory>

#include "cluster/communicator.h"
#include "kernels/cuda/device.h"

namespace phi {

class MpiCommunicator;

/// Collectives on device buffers, enqueued on a stream (what a GPU forward calls).
class DeviceCommunicator {
  public:
    virtual ~DeviceCommunicator() = default;
    /// In place on the device: data[i] = sum over ranks (identical bits on every rank).
    virtual void all_reduce_sum_device(float* data, int64_t count, cudaStream_t stream) = 0;
};

class NcclCommunicator final : public Communicator, public DeviceCommunicator {
  public:
    /// A fresh clique id (rank 0 makes it; the others must receive the same bytes).
    static ncclUniqueId make_unique_id();

    /// Joins clique `id` as `rank` of `size` on GPU `device` (made current on this thread). Waits at
    /// most `init_timeout` for the other ranks.
    NcclCommunicator(const ncclUniqueId& id, int rank, int size, int device,
                     std::chrono::milliseconds init_timeout = std::chrono::milliseconds(60000));
    ~NcclCommunicator() override;
    NcclCommunicator(const NcclCommunicator&) = delete;
    NcclCommunicator& operator=(const NcclCommunicator&) = delete;

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    int device() const { return device_; }
    ncclComm_t raw() const { return comm_; }

    // Host buffers (the step protocol, hashes, logits gather): staged through device scratch on
    // the communicator's own stream, and waited for with the deadline.
    void all_reduce_sum(float* data, int64_t count) override;
    void broadcast(void* data, size_t bytes, int root) override;
    void gather(const float* send, int64_t count, float* recv, int root) override;
    void all_gather(const float* send, int64_t count, float* recv) override;
    void all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) override;
    void barrier() override;
    void set_timeout(std::chrono::milliseconds t) override { timeout_ = t; }

    // Device buffers, enqueued on `stream` (no host synchronisation).
    void all_reduce_sum_device(float* data, int64_t count, cudaStream_t stream) override;
    void all_gather_device(const float* send, int64_t count, float* recv, cudaStream_t stream);
    void broadcast_device(void* data, size_t bytes, int root, cudaStream_t stream);

    /// Waits for `stream` (polling, with the deadline); on timeout or an NCCL error aborts the
    /// communicator and throws naming `what`.
    void wait(cudaStream_t stream, const char* what);

  private:
    /// After an enqueue returning `rc` on the non-blocking communicator: fails on an error, waits
    /// out ncclInProgress (with the deadline).
    void settle(ncclResult_t rc, const char* what);
    [[noreturn]] void abort_and_throw(const std::string& msg);

    ncclComm_t comm_ = nullptr;
    int rank_ = 0;
    int size_ = 1;
    int device_ = 0;
    std::chrono::milliseconds timeout_{60000};
    std::unique_ptr<kernels::cuda::Stream> stream_;
    kernels::cuda::DeviceBuffer scratch_;
};

/// MPI bootstrap (library phi_cluster_nccl_mpi): rank 0 makes the id, MPI broadcasts it, each rank
/// takes the GPU of its node-local rank.
std::unique_ptr<NcclCommunicator> make_nccl_communicator_mpi(MpiCommunicator& mpi);

}  // namespace phi
