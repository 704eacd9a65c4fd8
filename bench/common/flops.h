// Measured compute peaks: the limit that compute-bound benchmarks (prefill, batched decode) report
// their fraction against (issue 18: "each figure as a fraction of the fp32 FMA peak measured in the
// same run").
#pragma once

namespace phi::bench {

/// Which instruction the peak is measured for. F32Fma: fused multiply-adds on the widest fp32
/// vectors the CPU has (AVX-512, else AVX2+FMA; 2 FLOP per lane). Bf16Dot: VDPBF16PS (4 FLOP per
/// 32-bit lane: two products and two adds). Int8Dot: VPDPBUSD (8 integer ops per 32-bit lane:
/// four byte products and four adds; AVX512-VNNI, else AVX-VNNI), in "GOP/s".
enum class PeakKind { F32Fma, Bf16Dot, Int8Dot };

/// Best rate over `reps` timed passes of independent multiply-add chains (enough accumulators to
/// cover the instruction's latency on two pipes) on `threads` OpenMP threads, in GFLOP/s (GOP/s for
/// Int8Dot); 0 when the CPU lacks the instruction.
double measure_peak_gflops(PeakKind kind, int threads, int reps = 5);

/// "avx512" / "avx2" / "avx512-bf16" / ... : the instruction set measure_peak_gflops uses for kind.
const char* peak_isa_name(PeakKind kind);

}  // namespace phi::bench
