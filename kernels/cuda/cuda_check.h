// Error checks for the CUDA backend: CUDA_CHECK / CUBLAS_CHECK wrap every runtime and cuBLAS call
// and throw phi::Error naming the call and the library's error string (NCCL_CHECK lives in
// nccl_check.h, which needs nccl.h). This header is safe for nvcc: it pulls in no fmt/spdlog.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

namespace phi::kernels::cuda {

/// Throws phi::Error with `msg` and file:line (common/error.h's format).
[[noreturn]] void fail(const char* file, int line, const std::string& msg);
void check(cudaError_t rc, const char* call, const char* file, int line);
void check(cublasStatus_t rc, const char* call, const char* file, int line);
/// printf-style message for PHI_CUDA_REQUIRE (host code compiled by nvcc cannot use fmt).
std::string printf_string(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace phi::kernels::cuda

#define CUDA_CHECK(call) ::phi::kernels::cuda::check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) ::phi::kernels::cuda::check((call), #call, __FILE__, __LINE__)
/// Argument check in launchers: PHI_CUDA_REQUIRE(n > 0, "bad n %lld", (long long)n).
#define PHI_CUDA_REQUIRE(cond, ...)                                                       \
    do {                                                                                  \
        if (!(cond))                                                                      \
            ::phi::kernels::cuda::fail(__FILE__, __LINE__,                                \
                                       ::phi::kernels::cuda::printf_string(__VA_ARGS__)); \
    } while (0)
/// After a kernel launch: a bad configuration is reported here, an asynchronous fault later.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
