// Helpers shared by the kernel tests: random buffers, the list of levels to test, bitwise compare,
// and an RAII guard for the OpenMP thread count.
#pragma once

#include <omp.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/isa.h"
#include "common/dtype.h"

namespace phi::kernels::cpu::test {

inline std::vector<float> random_floats(size_t count, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(count);
    for (float& f : v) f = dist(gen);
    return v;
}

/// Rounds every value to bf16 and returns the bf16 bits (the fp32 vector then holds the same values).
inline std::vector<uint16_t> round_to_bf16(std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        out[i] = f32_to_bf16(v[i]);
        v[i] = bf16_to_f32(out[i]);
    }
    return out;
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline std::string isa_label(Isa isa) {
    return std::string(isa_name(isa));
}

/// Sets the OpenMP thread count for a scope.
class ThreadCount {
  public:
    explicit ThreadCount(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
    ~ThreadCount() { omp_set_num_threads(saved_); }
    ThreadCount(const ThreadCount&) = delete;
    ThreadCount& operator=(const ThreadCount&) = delete;

  private:
    int saved_;
};

}  // namespace phi::kernels::cpu::test

namespace phi::kernels::cpu::test {

/// The levels to test: every supported one up to choose_isa(), so PHI_CPU_ISA=avx2 limits a run
/// to scalar and avx2 (and PHI_CPU_ISA=scalar to the reference alone).
inline std::vector<Isa> levels_to_test() {
    std::vector<Isa> out;
    const Isa top = choose_isa();
    for (Isa isa : supported_isas()) {
        if (int(isa) <= int(top)) out.push_back(isa);
    }
    return out;
}

}  // namespace phi::kernels::cpu::test
