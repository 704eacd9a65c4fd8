// Helpers of the CUDA tests: the skip-without-GPU guard, random bf16-rounded data, device upload
// and download, and tolerance checks against the CPU reference.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kernels.h"
#include "common/dtype.h"

/// First line of every CUDA test: CI machines have nvcc but no GPU.
#define PHI_REQUIRE_GPU()                                                    \
    do {                                                                     \
        if (::phi::kernels::cuda::cuda_device_count() == 0)                  \
            GTEST_SKIP() << ::phi::kernels::cuda::cuda_unavailable_reason(); \
    } while (0)

namespace phi::kernels::cuda::test {

inline std::vector<float> random_floats(size_t count, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(count);
    for (float& f : v) f = dist(gen);
    return v;
}

/// Rounds v to bf16 in place; returns the bf16 bits.
inline std::vector<uint16_t> round_bf16(std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        out[i] = f32_to_bf16(v[i]);
        v[i] = bf16_to_f32(out[i]);
    }
    return out;
}

inline std::vector<float> widen_bf16(const std::vector<uint16_t>& b) {
    std::vector<float> v(b.size());
    for (size_t i = 0; i < b.size(); ++i) v[i] = bf16_to_f32(b[i]);
    return v;
}

/// max |got - want| / (abs_tol + rel_tol |want|) over all elements: <= 1 passes.
inline double worst_ratio(const std::vector<float>& got, const std::vector<float>& want, double abs_tol,
                          double rel_tol) {
    EXPECT_EQ(got.size(), want.size());
    double worst = 0.0;
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
        const double err = std::fabs(double(got[i]) - double(want[i]));
        const double r = err / (abs_tol + rel_tol * std::fabs(double(want[i])));
        if (!(r <= worst)) worst = r;  // NaN propagates
    }
    return worst;
}

/// Streamable like any EXPECT: EXPECT_CLOSE(got, want, 1e-5, 0.0) << "context".
#define EXPECT_CLOSE(got, want, abs_tol, rel_tol)                                                \
    EXPECT_LE(::phi::kernels::cuda::test::worst_ratio((got), (want), (abs_tol), (rel_tol)), 1.0) \
        << "worst error / tolerance "

}  // namespace phi::kernels::cuda::test
