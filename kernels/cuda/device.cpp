// GPU discovery and the RAII owners. Destructors never throw: a failing free is ignored (the
// context is being torn down, typically after an error that is already being reported).
#include "kernels/cuda/device.h"

#include <fmt/format.h>

#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace phi::kernels::cuda {

int cuda_device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky error so later calls report their own
        return 0;
    }
    return n;
}

std::string cuda_unavailable_reason() {
    int n = 0;
    const cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        cudaGetLastError();
        return fmt::format("no usable GPU: cudaGetDeviceCount failed: {} ({})", cudaGetErrorString(rc),
                           int(rc));
    }
    if (n == 0) return "no usable GPU: the CUDA driver reports 0 devices";
    return "";
}

std::string cuda_device_description(int device) {
    cudaDeviceProp p{};
    CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    return fmt::format("{}, sm_{}{}, {} SMs, {:.1f} GiB", p.name, p.major, p.minor, p.multiProcessorCount,
                       double(p.totalGlobalMem) / double(1ull << 30));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
        if (ptr_) cudaFree(ptr_);
        ptr_ = std::exchange(o.ptr_, nullptr);
        bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
}

void DeviceBuffer::reserve(size_t bytes) {
    if (bytes <= bytes_) return;
    *this = DeviceBuffer(bytes);
}

void DeviceBuffer::upload(const void* src, size_t bytes, size_t offset) {
    PHI_CUDA_REQUIRE(offset + bytes <= bytes_, "upload of %zu bytes at %zu overflows a buffer of %zu", bytes,
                     offset, bytes_);
    CUDA_CHECK(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* dst, size_t bytes, size_t offset) const {
    PHI_CUDA_REQUIRE(offset + bytes <= bytes_, "download of %zu bytes at %zu overflows a buffer of %zu",
                     bytes, offset, bytes_);
    CUDA_CHECK(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost));
}

Stream::Stream() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
}
Stream::~Stream() {
    if (s_) cudaStreamDestroy(s_);
}
void Stream::synchronize() const {
    CUDA_CHECK(cudaStreamSynchronize(s_));
}

Event::Event() {
    CUDA_CHECK(cudaEventCreate(&e_));
}
Event::~Event() {
    if (e_) cudaEventDestroy(e_);
}
void Event::record(cudaStream_t s) {
    CUDA_CHECK(cudaEventRecord(e_, s));
}
void Event::synchronize() const {
    CUDA_CHECK(cudaEventSynchronize(e_));
}
float Event::elapsed_ms_since(const Event& start) const {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
}

CublasHandle::CublasHandle(cudaStream_t stream, size_t workspace_bytes)
    : stream_(stream), workspace_(workspace_bytes) {
    CUBLAS_CHECK(cublasCreate(&h_));
    CUBLAS_CHECK(cublasSetStream(h_, stream));
    CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH));
    if (workspace_bytes > 0) CUBLAS_CHECK(cublasSetWorkspace(h_, workspace_.data(), workspace_bytes));
}

CublasHandle::~CublasHandle() {
    if (h_) cublasDestroy(h_);
}

}  // namespace phi::kernels::cuda
