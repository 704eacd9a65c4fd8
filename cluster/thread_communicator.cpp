// ThreadCommunicator: each collective is post -> barrier -> copy/sum straight out of the other
// ranks' buffers -> barrier (so no rank reuses a buffer another still reads). The all-reduce is a
// reduce-scatter in place: rank j sums chunk j of every rank's buffer in rank order 0..N-1 and
// writes the sum into every rank's chunk j; chunks are disjoint, so no element is touched by two
// ranks. Each element is summed by one rank in one order: bit-identical on every rank, and equal
// to MpiCommunicator's result.
#include "cluster/thread_communicator.h"

#include <fmt/format.h>

#include <cstring>

#include "common/error.h"

namespace phi {
namespace {

enum Op : int { k_op_all_reduce = 1, k_op_broadcast, k_op_gather, k_op_all_gather, k_op_barrier };

}  // namespace

ThreadGroup::ThreadGroup(int size)
    : size_(size), arrivals_(size_t(size > 0 ? size : 0)), slots_(size_t(size > 0 ? size : 0)) {
    PHI_CHECK(size >= 1, "a thread group needs at least one rank, got {}", size);
}

void ThreadGroup::abort(const std::string& why) {
    std::lock_guard lk(mu_);
    if (!aborted_) {
        aborted_ = true;
        abort_reason_ = why;
    }
    cv_.notify_all();
}

bool ThreadGroup::aborted() const {
    std::lock_guard lk(mu_);
    return aborted_;
}

void ThreadGroup::arrive_and_wait(int rank, const char* what, std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    if (aborted_)
        throw Error(fmt::format("rank {}: {} refused: the group has failed: {}", rank, what, abort_reason_));
    const uint64_t gen = generation_;
    ++arrivals_[size_t(rank)];
    if (++arrived_ == size_) {
        arrived_ = 0;
        ++generation_;
        cv_.notify_all();
        return;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (generation_ == gen && !aborted_) {
        if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && generation_ == gen && !aborted_) {
            // Ranks that have entered fewer barriers than this one are the stalled ones.
            std::string missing;
            for (int r = 0; r < size_; ++r) {
                if (arrivals_[size_t(r)] < arrivals_[size_t(rank)])
                    missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            }
            aborted_ = true;
            abort_reason_ = fmt::format(
                "rank {}: {} did not complete within {} ms: rank(s) {} stalled or were lost; "
                "stopping the group",
                rank, what, timeout.count(), missing);
            cv_.notify_all();
            throw Error(abort_reason_);
        }
    }
    if (generation_ == gen) throw Error(fmt::format("rank {}: {} abandoned: {}", rank, what, abort_reason_));
}

ThreadCommunicator::ThreadCommunicator(std::shared_ptr<ThreadGroup> group, int rank)
    : group_(std::move(group)), rank_(rank) {
    PHI_CHECK(group_ != nullptr, "ThreadCommunicator needs a group");
    PHI_CHECK(rank >= 0 && rank < group_->size(), "rank {} is outside a group of {}", rank, group_->size());
}

void ThreadCommunicator::post(int op, const void* send, void* recv, int64_t count, const char* what) {
    ThreadGroup& g = *group_;
    g.slots_[size_t(rank_)] = ThreadGroup::Slot{send, recv, count, op};
    g.arrive_and_wait(rank_, what, timeout_);
    const ThreadGroup::Slot& first = g.slots_[0];
    for (int r = 1; r < g.size(); ++r) {
        const ThreadGroup::Slot& s = g.slots_[size_t(r)];
        if (s.op != first.op || s.count != first.count) {
            const std::string why = fmt::format(
                "rank {}: collective mismatch in {}: rank 0 posted op {} count {}, "
                "rank {} op {} count {}",
                rank_, what, first.op, first.count, r, s.op, s.count);
            g.abort(why);
            throw Error(why);
        }
    }
}

void ThreadCommunicator::all_reduce_sum(float* data, int64_t count) {
    ++stats_.all_reduces;
    stats_.all_reduce_bytes += count * 4;
    const int n = size();
    if (n == 1 || count == 0) return;
    const auto t0 = std::chrono::steady_clock::now();
    post(k_op_all_reduce, data, data, count, "all-reduce");
    ThreadGroup& g = *group_;
    const int64_t b = rank_ * count / n, e = (rank_ + 1) * count / n;
    std::vector<float*> bufs(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) bufs[size_t(r)] = static_cast<float*>(g.slots_[size_t(r)].recv);
    for (int64_t i = b; i < e; ++i) {
        float acc = bufs[0][i];
        for (int r = 1; r < n; ++r) acc += bufs[size_t(r)][i];
        for (int r = 0; r < n; ++r) bufs[size_t(r)][i] = acc;
    }
    g.arrive_and_wait(rank_, "all-reduce (done)", timeout_);
    stats_.all_reduce_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void ThreadCommunicator::broadcast(void* data, size_t bytes, int root) {
    ++stats_.broadcasts;
    if (size() == 1) return;
    PHI_CHECK(root >= 0 && root < size(), "broadcast root {} is outside a group of {}", root, size());
    post(k_op_broadcast, data, data, int64_t(bytes), "broadcast");
    if (rank_ != root && bytes > 0) std::memcpy(data, group_->slots_[size_t(root)].send, bytes);
    group_->arrive_and_wait(rank_, "broadcast (done)", timeout_);
}

void ThreadCommunicator::gather(const float* send, int64_t count, float* recv, int root) {
    ++stats_.gathers;
    if (size() == 1) {
        if (recv != send) std::memcpy(recv, send, size_t(count) * 4);
        return;
    }
    PHI_CHECK(root >= 0 && root < size(), "gather root {} is outside a group of {}", root, size());
    post(k_op_gather, send, recv, count, "gather");
    if (rank_ == root) {
        for (int r = 0; r < size(); ++r) {
            float* dst = recv + int64_t(r) * count;
            const void* src = group_->slots_[size_t(r)].send;
            if (count > 0 && dst != src) std::memcpy(dst, src, size_t(count) * 4);
        }
    }
    group_->arrive_and_wait(rank_, "gather (done)", timeout_);
}

void ThreadCommunicator::all_gather_bytes(const void* send, size_t bytes, void* recv, const char* what) {
    post(k_op_all_gather, send, recv, int64_t(bytes), what);
    for (int r = 0; r < size(); ++r) {
        char* dst = static_cast<char*>(recv) + size_t(r) * bytes;
        const void* src = group_->slots_[size_t(r)].send;
        if (bytes > 0 && dst != src) std::memcpy(dst, src, bytes);
    }
    group_->arrive_and_wait(rank_, what, timeout_);
}

void ThreadCommunicator::all_gather(const float* send, int64_t count, float* recv) {
    ++stats_.gathers;
    if (size() == 1) {
        if (recv != send) std::memcpy(recv, send, size_t(count) * 4);
        return;
    }
    all_gather_bytes(send, size_t(count) * 4, recv, "all-gather");
}

void ThreadCommunicator::all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) {
    if (size() == 1) {
        if (recv != send) std::memcpy(recv, send, size_t(count) * 8);
        return;
    }
    all_gather_bytes(send, size_t(count) * 8, recv, "all-gather");
}

void ThreadCommunicator::barrier() {
    if (size() == 1) return;
    post(k_op_barrier, nullptr, nullptr, 0, "barrier");
}

}  // namespace phi
