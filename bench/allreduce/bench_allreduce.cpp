// All-reduce latency and bandwidth of the fixed-order MPI communicator, 4 KB to 8 MB:
//   scripts/mpirun.sh -np N build/bench/allreduce/bench_allreduce
// Bus bandwidth uses the usual ring convention 2 (N-1) / N x bytes / time, so numbers compare
// across N; the machine's memory bandwidth is printed beside it as the limit on one node.
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "bench/common/membw.h"
#include "cluster/mpi_communicator.h"

int main(int argc, char** argv) {
    phi::MpiSession mpi(&argc, &argv);
    phi::MpiCommunicator comm;
    double bw = 0;
    if (comm.rank() == 0) bw = phi::bench::measure_read_bandwidth_gbs(size_t(256) << 20, int(std::thread::hardware_concurrency()));
    comm.barrier();
    if (comm.rank() == 0)
        std::printf("all-reduce (fixed order), %d ranks, memory read bandwidth %.1f GB/s\n%10s %12s %12s\n", comm.size(),
                    bw, "bytes", "latency us", "bus GB/s");
    for (size_t bytes = 4096; bytes <= (size_t(8) << 20); bytes *= 2) {
        const int64_t n = int64_t(bytes / 4);
        std::vector<float> x(size_t(n), 1.0f);
        const int iters = bytes <= (size_t(64) << 10) ? 200 : bytes <= (size_t(1) << 20) ? 50 : 10;
        for (int i = 0; i < 5; ++i) comm.all_reduce_sum(x.data(), n);
        comm.barrier();
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) comm.all_reduce_sum(x.data(), n);
        comm.barrier();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
        if (comm.rank() == 0)
            std::printf("%10zu %12.1f %12.2f\n", bytes, s * 1e6,
                        2.0 * (comm.size() - 1) / comm.size() * double(bytes) / s / 1e9);
    }
    return 0;
}
