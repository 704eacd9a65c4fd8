// Memory read-bandwidth measurement shared by the benchmarks (see membw.h).
#include "bench/common/membw.h"

#include <omp.h>
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace phi::bench {
namespace {

uint64_t sum_slice(const uint64_t* p, size_t count) {
    uint64_t s = 0;
    for (size_t i = 0; i < count; ++i) s += p[i];
    return s;
}

}  // namespace

double seconds_now(bool thread_cpu) {
    if (thread_cpu) {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double measure_read_bandwidth_gbs(size_t bytes, int threads, int reps) {
    const size_t words = bytes / sizeof(uint64_t) / size_t(threads * 8) * size_t(threads * 8);
    struct Free {
        void operator()(uint64_t* p) const { std::free(p); }
    };
    std::unique_ptr<uint64_t, Free> buf(
        static_cast<uint64_t*>(std::aligned_alloc(64, words * sizeof(uint64_t))));
    if (!buf) return 0.0;
    uint64_t* data = buf.get();  // [words]
    const size_t per_thread = words / size_t(threads);
#pragma omp parallel num_threads(threads)
    {
        const size_t lo = size_t(omp_get_thread_num()) * per_thread;
        for (size_t i = lo; i < lo + per_thread; ++i) data[i] = i * 0x9e3779b97f4a7c15ull;
    }
    double best = 0.0;
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps + 1; ++r) {  // the first pass is a warm-up
        uint64_t total = 0;
        const double t0 = seconds_now(threads == 1);
#pragma omp parallel num_threads(threads) reduction(+ : total)
        total += sum_slice(data + size_t(omp_get_thread_num()) * per_thread, per_thread);
        const double s = seconds_now(threads == 1) - t0;
        sink = sink + total;
        if (r > 0 && s > 0.0) {
            const double gbs = double(per_thread * size_t(threads) * sizeof(uint64_t)) / s * 1e-9;
            best = gbs > best ? gbs : best;
        }
    }
    return best;
}

}  // namespace phi::bench
