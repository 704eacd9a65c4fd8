// Tensor parallelism on ONE GPU: N = 2 ranks as two threads (ThreadCommunicator, host staging of
// the all-reduce; NCCL cannot put two ranks on one GPU), each holding its shard of a Phi-3 MLP
// block (column-parallel gate_up, row-parallel down). The result equals N = 1 within rounding, and
// is bit-identical on both ranks.
#include <gtest/gtest.h>

#include <thread>

#include "cluster/thread_communicator.h"
#include "tests/cuda/cuda_test_util.h"

namespace phi::kernels::cuda {
namespace {

using namespace test;

/// One rank's MLP: rows [r f/N, (r+1) f/N) of gate and of up, columns of down.
std::vector<float> mlp_block(const std::vector<float>& x, const std::vector<float>& norm_w,
                             const std::vector<uint16_t>& gate_up, const std::vector<uint16_t>& down,
                             int64_t n, int64_t d, int64_t f, Communicator& comm) {
    const int N = comm.size(), r = comm.rank();
    const int64_t fl = f / N;
    std::vector<uint16_t> gu_l(static_cast<size_t>(2 * fl * d)), down_l(size_t(d * fl));
    for (int half = 0; half < 2; ++half)  // local gate | local up
        std::copy(gate_up.begin() + (half * f + r * fl) * d, gate_up.begin() + (half * f + (r + 1) * fl) * d,
                  gu_l.begin() + half * fl * d);
    for (int64_t o = 0; o < d; ++o)
        std::copy(down.begin() + o * f + r * fl, down.begin() + o * f + (r + 1) * fl,
                  down_l.begin() + o * fl);

    CUDA_CHECK(cudaSetDevice(0));
    Stream s;
    CublasHandle blas(s);
    DeviceBuffer dx = to_device(x), dw = to_device(norm_w), dgu = to_device(gu_l), ddown = to_device(down_l);
    DeviceBuffer h(static_cast<size_t>(n * d) * 2), gu(size_t(n * 2 * fl) * 4), a(size_t(n * fl) * 2),
        out(size_t(n * d) * 4);
    rms_norm(h.data(), DType::BF16, dx.as<float>(), dw.as<float>(), n, d, 1e-5f, s);
    linear(blas, gu.data(), DType::F32, h.as<bf16>(), dgu.as<bf16>(), nullptr, n, 2 * fl, d);
    silu_mul(a.data(), DType::BF16, gu.as<float>(), n, fl, s);
    linear(blas, out.data(), DType::F32, a.as<bf16>(), ddown.as<bf16>(), nullptr, n, d, fl);
    s.synchronize();
    std::vector<float> partial = to_host<float>(out, size_t(n * d));
    comm.all_reduce_sum(partial.data(), n * d);  // host staging
    return partial;
}

TEST(CudaTensorParallel, TwoThreadRanksOnOneGpuEqualOneRank) {
    PHI_REQUIRE_GPU();
    const int64_t n = 5, d = 256, f = 512;
    std::vector<float> x = random_floats(size_t(n * d), 40, -2.0f, 2.0f),
                       norm_w = random_floats(size_t(d), 41);
    std::vector<float> gu = random_floats(size_t(2 * f * d), 42, -0.1f, 0.1f),
                       dn = random_floats(size_t(d * f), 43, -0.1f, 0.1f);
    const auto gub = round_bf16(gu), dnb = round_bf16(dn);

    LocalCommunicator one;
    const std::vector<float> want = mlp_block(x, norm_w, gub, dnb, n, d, f, one);

    auto group = std::make_shared<ThreadGroup>(2);
    std::vector<std::vector<float>> got(2);
    std::vector<std::string> errors(2);
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r)
        ranks.emplace_back([&, r] {
            try {
                ThreadCommunicator comm(group, r);
                comm.set_timeout(std::chrono::milliseconds(30000));
                got[size_t(r)] = mlp_block(x, norm_w, gub, dnb, n, d, f, comm);
            } catch (const std::exception& e) {
                errors[size_t(r)] = e.what();
                group->abort(e.what());
            }
        });
    for (auto& t : ranks) t.join();
    ASSERT_EQ(errors[0], "");
    ASSERT_EQ(errors[1], "");
    EXPECT_EQ(got[0], got[1]);  // bit-identical on every rank
    // Same products, another summation split (two partial GEMMs) and rounding of the bf16 activation.
    EXPECT_CLOSE(got[0], want, 1e-3, 1e-2);
}

}  // namespace
}  // namespace phi::kernels::cuda
