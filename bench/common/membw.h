// Measured memory read bandwidth: the limit that memory-bound benchmarks (decode-time linear,
// attention over a long cache) report their fraction against.
#pragma once

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

}  // namespace phi::bench
