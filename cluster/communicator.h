// Communicator: the collectives tensor parallelism needs, behind one interface (MPI on CPU, NCCL on
// GPU, a single-rank one that returns at once). Every all-reduce sums in a FIXED order so that all
// ranks hold bit-identical results: replicated decisions (MoE routing, sampling) depend on it.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace phi {

/// Counters every implementation keeps (tests count collectives per step; /metrics reports time).
struct CommStats {
    int64_t all_reduces = 0;
    int64_t all_reduce_bytes = 0;
    int64_t broadcasts = 0;
    int64_t gathers = 0;
    double all_reduce_seconds = 0.0;
    double gather_seconds = 0.0;
    int64_t gather_bytes = 0;
};

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;

    /// In place: data[i] = sum over ranks r = 0..N-1 (in that order) of rank r's data[i].
    virtual void all_reduce_sum(float* data, int64_t count) = 0;
    /// root's `bytes` bytes at data are copied to every rank.
    virtual void broadcast(void* data, size_t bytes, int root) = 0;
    /// Rank r's `count` floats land at recv[r * count] on root (recv is ignored elsewhere).
    virtual void gather(const float* send, int64_t count, float* recv, int root) = 0;
    /// Every rank's `count` floats land at recv[r * count] on every rank.
    virtual void all_gather(const float* send, int64_t count, float* recv) = 0;
    /// Every rank's `count` uint64 values land at recv[r * count] on every rank.
    virtual void all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) = 0;
    virtual void barrier() = 0;
    /// Deadline for each following collective (the watchdog); implementations without one
    /// ignore it.
    virtual void set_timeout(std::chrono::milliseconds) {}

    const CommStats& stats() const { return stats_; }
    void reset_stats() { stats_ = CommStats{}; }

protected:
    CommStats stats_;
};

/// Every rank's outcome of a step all ranks took (loading a LoRA adapter) in one all_gather_u64,
/// so all agree: the ranks where it failed, as "1, 3", or empty when it succeeded everywhere. A
/// collective: every rank calls it.
std::string ranks_that_failed(Communicator& comm, bool succeeded_here);

/// One rank: every collective is a no-op (or a copy).
class LocalCommunicator final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    void all_reduce_sum(float*, int64_t count) override {
        ++stats_.all_reduces;
        stats_.all_reduce_bytes += count * 4;
    }
    void broadcast(void*, size_t, int) override { ++stats_.broadcasts; }
    void gather(const float* send, int64_t count, float* recv, int) override;
    void all_gather(const float* send, int64_t count, float* recv) override;
    void all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) override;
    void barrier() override {}
};

}  // namespace phi
