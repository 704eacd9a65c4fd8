// RAII owners of CUDA resources (device memory, streams, events, cuBLAS handles) and the GPU
// discovery that lets every CUDA test and benchmark skip cleanly on a machine without a GPU. No
// global state: a context owns these objects and passes them in.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace phi::kernels::cuda {

/// Number of visible GPUs; 0 (never an exception) when there is no driver or no device.
int cuda_device_count();
/// Why there is no usable GPU (the runtime's error string), or "" when there is one.
std::string cuda_unavailable_reason();
/// "NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB" for logs and benchmark headers.
std::string cuda_device_description(int device = 0);

/// cudaMalloc'd bytes, freed on destruction; move-only.
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes);
    ~DeviceBuffer();
    DeviceBuffer(DeviceBuffer&& o) noexcept;
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    void* data() { return ptr_; }
    const void* data() const { return ptr_; }
    template <class T>
    T* as() {
        return static_cast<T*>(ptr_);
    }
    template <class T>
    const T* as() const {
        return static_cast<const T*>(ptr_);
    }
    size_t bytes() const { return bytes_; }
    bool empty() const { return bytes_ == 0; }
    /// Grows (discarding the contents) when smaller than `bytes`.
    void reserve(size_t bytes);

    /// Synchronous copies (tests, loading); hot paths use cudaMemcpyAsync on a Stream.
    void upload(const void* src, size_t bytes, size_t offset = 0);
    void download(void* dst, size_t bytes, size_t offset = 0) const;

  private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

/// A DeviceBuffer holding a copy of a host vector (tests and weight upload).
template <class T>
DeviceBuffer to_device(const std::vector<T>& v) {
    DeviceBuffer b(v.size() * sizeof(T));
    if (!v.empty()) b.upload(v.data(), v.size() * sizeof(T));
    return b;
}

template <class T>
std::vector<T> to_host(const DeviceBuffer& b, size_t count) {
    std::vector<T> v(count);
    if (count > 0) b.download(v.data(), count * sizeof(T));
    return v;
}

/// A non-blocking stream (does not synchronise with the legacy default stream).
class Stream {
  public:
    Stream();
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t get() const { return s_; }
    operator cudaStream_t() const { return s_; }
    void synchronize() const;

  private:
    cudaStream_t s_ = nullptr;
};

class Event {
  public:
    Event();
    ~Event();
    Event(const Event&) = delete;
    Event& operator=(const Event&) = delete;
    cudaEvent_t get() const { return e_; }
    void record(cudaStream_t s);
    void synchronize() const;
    /// Milliseconds from `start` to this event (both recorded and complete).
    float elapsed_ms_since(const Event& start) const;

  private:
    cudaEvent_t e_ = nullptr;
};

/// A cuBLAS handle bound to one stream, with its own workspace (so a CUDA graph can capture its
/// GEMMs) and default math (no TF32 for fp32 GEMMs: fp32 stays fp32).
class CublasHandle {
  public:
    explicit CublasHandle(cudaStream_t stream, size_t workspace_bytes = size_t(32) << 20);
    ~CublasHandle();
    CublasHandle(const CublasHandle&) = delete;
    CublasHandle& operator=(const CublasHandle&) = delete;
    cublasHandle_t get() const { return h_; }
    cudaStream_t stream() const { return stream_; }

  private:
    cublasHandle_t h_ = nullptr;
    cudaStream_t stream_ = nullptr;
    DeviceBuffer workspace_;
};

}  // namespace phi::kernels::cuda
