// NCCL_CHECK: wraps every NCCL call, throwing phi::Error with the call and ncclGetErrorString.
#pragma once

#include <nccl.h>

#include "kernels/cuda/cuda_check.h"

namespace phi::kernels::cuda {

inline void check(ncclResult_t rc, const char* call, const char* file, int line) {
    if (rc == ncclSuccess) return;
    fail(file, line,
         std::string(call) + " failed: " + ncclGetErrorString(rc) + " (" + std::to_string(int(rc)) + ")");
}

}  // namespace phi::kernels::cuda

#define NCCL_CHECK(call) ::phi::kernels::cuda::check((call), #call, __FILE__, __LINE__)
