// Compute-peak measurement shared by the benchmarks (see flops.h). Each chain function is compiled
// for its own instruction set through a target attribute and called only when cpu_features() has
// it; they have internal linkage, so no copy of a shared inline function is built for a wider ISA.
#include "bench/common/flops.h"

// GCC 12 warns falsely about the _mm512_undefined_* placeholders inside its own reduce intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "kernels/cpu/isa.h"

namespace phi::bench {
namespace {

using kernels::cpu::cpu_features;
namespace kc = kernels::cpu;

// 12 independent accumulators: more than latency (4 cycles) x pipes (2) of every core we target,
// and few enough to stay in the 16 ymm registers of AVX2 beside the two operands.
constexpr int k_chains = 12;
constexpr int64_t k_iters = 4'000'000;

__attribute__((target("avx2,fma"))) float chain_avx2(int64_t iters, float seed) {
    __m256 acc[k_chains];
    for (int k = 0; k < k_chains; ++k) acc[k] = _mm256_set1_ps(seed + float(k));
    const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
        for (int k = 0; k < k_chains; ++k) acc[k] = _mm256_fmadd_ps(acc[k], m, c);
    }
    __m256 s = acc[0];
    for (int k = 1; k < k_chains; ++k) s = _mm256_add_ps(s, acc[k]);
    return _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) float chain_avx512(int64_t iters, float seed) {
    __m512 acc[k_chains];
    for (int k = 0; k < k_chains; ++k) acc[k] = _mm512_set1_ps(seed + float(k));
    const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
    for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
        for (int k = 0; k < k_chains; ++k) acc[k] = _mm512_fmadd_ps(acc[k], m, c);
    }
    __m512 s = acc[0];
    for (int k = 1; k < k_chains; ++k) s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bf16"))) float chain_bf16(int64_t iters, float seed) {
    __m512 acc[k_chains];
    for (int k = 0; k < k_chains; ++k) acc[k] = _mm512_set1_ps(seed + float(k));
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(-1e-3f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
    for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
        for (int k = 0; k < k_chains; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
    }
    __m512 s = acc[0];
    for (int k = 1; k < k_chains; ++k) s = _mm512_add_ps(s, acc[k]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512vnni"))) float chain_vnni512(int64_t iters, float seed) {
    __m512i acc[k_chains];
    for (int k = 0; k < k_chains; ++k) acc[k] = _mm512_set1_epi32(int(seed) + k);
    const __m512i u = _mm512_set1_epi8(3), s8 = _mm512_set1_epi8(-2);
    for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
        for (int k = 0; k < k_chains; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], u, s8);
    }
    __m512i s = acc[0];
    for (int k = 1; k < k_chains; ++k) s = _mm512_add_epi32(s, acc[k]);
    return float(_mm512_reduce_add_epi32(s));
}

__attribute__((target("avx2,avxvnni"))) float chain_avxvnni(int64_t iters, float seed) {
    __m256i acc[k_chains];
    for (int k = 0; k < k_chains; ++k) acc[k] = _mm256_set1_epi32(int(seed) + k);
    const __m256i u = _mm256_set1_epi8(3), s8 = _mm256_set1_epi8(-2);
    for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
        for (int k = 0; k < k_chains; ++k) acc[k] = _mm256_dpbusd_avx_epi32(acc[k], u, s8);
    }
    __m256i s = acc[0];
    for (int k = 1; k < k_chains; ++k) s = _mm256_add_epi32(s, acc[k]);
    return float(_mm256_extract_epi32(s, 0));
}

/// The chain to run for kind and its operations per iteration, or null when the CPU lacks it.
struct Chain {
    float (*fn)(int64_t, float) = nullptr;
    double ops_per_iter = 0;
    const char* isa = "none";
};

Chain chain_for(PeakKind kind) {
    const uint64_t f = cpu_features();
    const bool avx512 = (f & kc::k_feature_avx512f) != 0;
    switch (kind) {
        case PeakKind::F32Fma:
            if (avx512) return {chain_avx512, k_chains * 16.0 * 2.0, "avx512"};
            if ((f & kc::k_feature_avx2) && (f & kc::k_feature_fma)) return {chain_avx2, k_chains * 8.0 * 2.0, "avx2"};
            return {};
        case PeakKind::Bf16Dot:
            if (avx512 && (f & kc::k_feature_avx512bf16)) return {chain_bf16, k_chains * 16.0 * 4.0, "avx512-bf16"};
            return {};
        case PeakKind::Int8Dot:
            if (avx512 && (f & kc::k_feature_avx512vnni)) return {chain_vnni512, k_chains * 16.0 * 8.0, "avx512-vnni"};
            if (f & kc::k_feature_avxvnni) return {chain_avxvnni, k_chains * 8.0 * 8.0, "avx-vnni"};
            return {};
    }
    return {};
}

}  // namespace

const char* peak_isa_name(PeakKind kind) { return chain_for(kind).isa; }

double measure_peak_gflops(PeakKind kind, int threads, int reps) {
    const Chain c = chain_for(kind);
    if (c.fn == nullptr) return 0.0;
    threads = std::max(threads, 1);
    double best = 0.0;
    float sink = 0.0f;
    for (int r = 0; r < reps + 1; ++r) {  // the first pass warms up (clock ramp, 512-bit units)
        double t0 = 0.0, t1 = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
#pragma omp barrier
#pragma omp master
            t0 = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
            sink += c.fn(k_iters, float(omp_get_thread_num()));
#pragma omp barrier
#pragma omp master
            t1 = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
        }
        if (r > 0) best = std::max(best, double(threads) * double(k_iters) * c.ops_per_iter / (t1 - t0) / 1e9);
    }
    // Keeps the chains from being optimised away without printing anything.
    if (sink == 1.2345f) best += 1e-12;
    return best;
}

}  // namespace phi::bench
