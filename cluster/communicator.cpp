// The single-rank communicator, and agreement over any communicator.
#include "cluster/communicator.h"

#include <cstring>
#include <vector>

namespace phi {

std::string ranks_that_failed(Communicator& comm, bool succeeded_here) {
    const uint64_t ok = succeeded_here ? 1 : 0;
    std::vector<uint64_t> all(size_t(comm.size()));
    comm.all_gather_u64(&ok, 1, all.data());
    std::string failed;
    for (int r = 0; r < comm.size(); ++r)
        if (all[size_t(r)] != 1) failed += (failed.empty() ? "" : ", ") + std::to_string(r);
    return failed;
}

void LocalCommunicator::gather(const float* send, int64_t count, float* recv, int) {
    ++stats_.gathers;
    if (recv != send) std::memcpy(recv, send, size_t(count) * sizeof(float));
}

void LocalCommunicator::all_gather(const float* send, int64_t count, float* recv) {
    ++stats_.gathers;
    if (recv != send) std::memcpy(recv, send, size_t(count) * sizeof(float));
}

void LocalCommunicator::all_gather_u64(const uint64_t* send, int64_t count, uint64_t* recv) {
    if (recv != send) std::memcpy(recv, send, size_t(count) * sizeof(uint64_t));
}

}  // namespace phi
