// The CUDA backend's error paths: messages built once here, thrown as phi::Error.
#include "kernels/cuda/cuda_check.h"

#include <cstdarg>
#include <cstdio>

#include "common/error.h"

namespace phi::kernels::cuda {

void fail(const char* file, int line, const std::string& msg) {
    ::phi::throw_error(file, line, msg);
}

void check(cudaError_t rc, const char* call, const char* file, int line) {
    if (rc == cudaSuccess) return;
    fail(file, line, fmt::format("{} failed: {} ({})", call, cudaGetErrorString(rc), int(rc)));
}

void check(cublasStatus_t rc, const char* call, const char* file, int line) {
    if (rc == CUBLAS_STATUS_SUCCESS) return;
    fail(file, line, fmt::format("{} failed: {} ({})", call, cublasGetStatusString(rc), int(rc)));
}

std::string printf_string(const char* format, ...) {
    char buf[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(buf, sizeof(buf), format, args);
    va_end(args);
    return buf;
}

}  // namespace phi::kernels::cuda
