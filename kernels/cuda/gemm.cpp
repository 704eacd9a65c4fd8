// GEMMs through cuBLAS: PyTorch Linear layout (row-major [out, in] weights) maps onto cuBLAS's
// column-major convention as Y^T[m, n] = W^T(op T on a [k, m] column-major view) X^T([k, n]).
#include <climits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {
namespace {

void check_dims(int64_t n, int64_t m, int64_t k, const char* what) {
    PHI_CUDA_REQUIRE(n >= 0 && m >= 0 && k >= 0 && n <= INT_MAX && m <= INT_MAX && k <= INT_MAX,
                     "%s: shape n %lld, m %lld, k %lld is negative or exceeds cuBLAS's int range", what,
                     (long long)n, (long long)m, (long long)k);
}

}  // namespace

void linear(const CublasHandle& h, void* y, DType y_dtype, const bf16* x, const bf16* w, const float* bias,
            int64_t n, int64_t m, int64_t k) {
    check_dims(n, m, k, "linear");
    PHI_CUDA_REQUIRE(y_dtype == DType::F32 || y_dtype == DType::BF16, "linear: output must be F32 or BF16");
    if (n == 0 || m == 0) return;
    if (bias != nullptr) broadcast_rows(y, y_dtype, bias, n, m, h.stream());
    const float alpha = 1.0f, beta = bias != nullptr ? 1.0f : 0.0f;
    const cudaDataType_t yt = y_dtype == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
    CUBLAS_CHECK(cublasGemmEx(h.get(), CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &alpha, w,
                              CUDA_R_16BF, int(k), x, CUDA_R_16BF, int(k), &beta, y, yt, int(m),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void linear_f32(const CublasHandle& h, float* y, const float* x, const float* w, int64_t n, int64_t m,
                int64_t k) {
    check_dims(n, m, k, "linear_f32");
    if (n == 0 || m == 0) return;
    const float alpha = 1.0f, beta = 0.0f;
    // CUBLAS_COMPUTE_32F (not _FAST_TF32) with default math: true fp32 products.
    CUBLAS_CHECK(cublasGemmEx(h.get(), CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &alpha, w,
                              CUDA_R_32F, int(k), x, CUDA_R_32F, int(k), &beta, y, CUDA_R_32F, int(m),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace phi::kernels::cuda
