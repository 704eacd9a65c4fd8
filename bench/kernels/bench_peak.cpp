// The machine's compute peaks (issue 18, item 5): fp32 FMA, bf16 dot (VDPBF16PS) and int8 dot
// (VPDPBUSD) chains on 1 thread and on all of them, best of 5 passes. The other benchmarks report
// their compute-bound figures as fractions of the fp32 FMA peak they measure the same way
// (bench/common/flops.h).
#include <omp.h>

#include <cstdio>
#include <thread>

#include "bench/common/flops.h"

int main() {
    using phi::bench::PeakKind;
    const int all = int(std::thread::hardware_concurrency());
    struct Row {
        PeakKind kind;
        const char* name;
    };
    const Row rows[] = {{PeakKind::F32Fma, "fp32 FMA (GFLOP/s)"},
                        {PeakKind::Bf16Dot, "bf16 dot (GFLOP/s)"},
                        {PeakKind::Int8Dot, "int8 dot (GOP/s)"}};
    std::printf("| peak | ISA | 1 thread | %d threads |\n|---|---|---|---|\n", all);
    for (const Row& r : rows) {
        const double one = phi::bench::measure_peak_gflops(r.kind, 1);
        const double many = phi::bench::measure_peak_gflops(r.kind, all);
        if (one == 0.0) {
            std::printf("| %s | %s | not on this CPU | |\n", r.name, phi::bench::peak_isa_name(r.kind));
            continue;
        }
        std::printf("| %s | %s | %.1f | %.1f |\n", r.name, phi::bench::peak_isa_name(r.kind), one, many);
    }
    return 0;
}
