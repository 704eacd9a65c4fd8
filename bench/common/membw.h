// Measured memory read bandwidth: the limit that memory-bound benchmarks (decode-time linear,
// attention over a long cache) report their fraction against.
#pragma once

#include <algorithm>
#include <cstddef>

namespace phi::bench {

/// Streams a `bytes` buffer (first-touched by the threads that read it, so pages are local) with
/// `threads` OpenMP threads, `reps` times, each thread summing its contiguous slice; returns the
/// best pass in GB/s (1e9 bytes per second). Portable code (no -march), integer sums the compiler
/// vectorises with SSE2: well above DRAM speed per core, so the memory is the limit.
/// With threads == 1 the pass is timed on the thread's CPU clock (see seconds_now).
double measure_read_bandwidth_gbs(size_t bytes = size_t(512) << 20, int threads = 2, int reps = 8);

/// A clock for benchmarks: wall time, or with thread_cpu the calling thread's CPU time, which on a
/// shared machine leaves out the time the thread was descheduled (meaningful for one thread only).
double seconds_now(bool thread_cpu);

/// Seconds per call of fn(i): the best of timed batches (each >= min_calls calls and >= 20 ms)
/// until min_seconds have been timed, so other load on a shared machine inflates it less.
/// thread_cpu (one thread only) times on the thread's CPU clock.
template <typename Fn>
double best_time(double min_seconds, Fn&& fn, size_t min_calls, bool thread_cpu) {
    for (size_t i = 0; i < 2; ++i) fn(i);  // warm-up
    double best = 1e30, total = 0.0;
    size_t i = 0;
    while (total < min_seconds) {
        size_t calls = 0;
        const double t0 = seconds_now(thread_cpu);
        double el = 0.0;
        while (el < 0.02 || calls < min_calls) {
            fn(i++);
            ++calls;
            el = seconds_now(thread_cpu) - t0;
        }
        best = std::min(best, el / double(calls));
        total += el;
    }
    return best;
}

}  // namespace phi::bench
