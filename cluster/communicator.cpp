// The single-rank communicator.
#include "cluster/communicator.h"

#include <cstring>

namespace phi {

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
