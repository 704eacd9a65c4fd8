// A 64-byte aligned, zero-initialised heap buffer (RAII); the unit of weight and activation memory.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace phi {

class AlignedBuffer {
public:
    AlignedBuffer() = default;
    explicit AlignedBuffer(size_t bytes) : size_(bytes) {
        if (bytes == 0) return;
        const size_t rounded = (bytes + 63) / 64 * 64;
        void* p = std::aligned_alloc(64, rounded);
        if (p == nullptr) throw std::bad_alloc();
        std::memset(p, 0, rounded);
        ptr_.reset(static_cast<std::byte*>(p));
    }
    std::byte* data() { return ptr_.get(); }
    const std::byte* data() const { return ptr_.get(); }
    template <class T>
    T* as() { return reinterpret_cast<T*>(ptr_.get()); }
    template <class T>
    const T* as() const { return reinterpret_cast<const T*>(ptr_.get()); }
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

private:
    struct Free {
        void operator()(std::byte* p) const { std::free(p); }
    };
    std::unique_ptr<std::byte, Free> ptr_;
    size_t size_ = 0;
};

}  // namespace phi
