// NcclCommunicator, without MPI: the id is handed between threads of this process. One GPU runs
// the single-rank checks and the init deadline (a rank that never joins); the multi-rank checks
// need one GPU per rank (NCCL refuses two ranks on one GPU) and skip with that reason otherwise.
#include <gtest/gtest.h>

#include <thread>

#include "cluster/nccl_communicator.h"
#include "common/error.h"
#include "tests/cuda/cuda_test_util.h"

namespace phi {
namespace {

using namespace kernels::cuda;
using namespace kernels::cuda::test;

TEST(NcclCommunicator, SingleRankCollectivesAreIdentities) {
    PHI_REQUIRE_GPU();
    NcclCommunicator comm(NcclCommunicator::make_unique_id(), 0, 1, 0);
    std::vector<float> x = random_floats(1000, 50);
    const std::vector<float> before = x;
    comm.all_reduce_sum(x.data(), int64_t(x.size()));
    EXPECT_EQ(x, before);
    Stream s;
    DeviceBuffer d = to_device(x);
    comm.all_reduce_sum_device(d.as<float>(), int64_t(x.size()), s);
    comm.wait(s, "test");
    EXPECT_EQ(to_host<float>(d, x.size()), before);
    uint64_t h = 42, all = 0;
    comm.all_gather_u64(&h, 1, &all);
    EXPECT_EQ(all, 42u);
    EXPECT_EQ(comm.stats().all_reduces, 2);
}

TEST(NcclCommunicator, InitTimesOutWhenARankNeverJoins) {
    PHI_REQUIRE_GPU();
    const auto t0 = std::chrono::steady_clock::now();
    try {
        NcclCommunicator comm(NcclCommunicator::make_unique_id(), 0, 2, 0, std::chrono::milliseconds(2000));
        FAIL() << "init of 2 ranks completed with one";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("did not complete"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
}

TEST(NcclCommunicator, MultiGpuAllReduceIsIdenticalOnEveryRank) {
    PHI_REQUIRE_GPU();
    const int n = std::min(cuda_device_count(), 8);
    if (n < 2)
        GTEST_SKIP() << "needs 2 GPUs (NCCL cannot put two ranks on one GPU); " << cuda_device_count()
                     << " visible";
    const ncclUniqueId id = NcclCommunicator::make_unique_id();
    const int64_t count = 100003;
    std::vector<std::vector<float>> host(static_cast<size_t>(n)), dev(static_cast<size_t>(n));
    std::vector<std::string> errors(static_cast<size_t>(n));
    std::vector<std::thread> ranks;
    for (int r = 0; r < n; ++r)
        ranks.emplace_back([&, r] {
            try {
                NcclCommunicator comm(id, r, n, r);
                comm.set_timeout(std::chrono::milliseconds(30000));
                std::vector<float> x = random_floats(size_t(count), 60 + uint32_t(r));
                Stream s;
                DeviceBuffer d = to_device(x);
                comm.all_reduce_sum_device(d.as<float>(), count, s);
                comm.wait(s, "all-reduce");
                dev[size_t(r)] = to_host<float>(d, size_t(count));
                comm.all_reduce_sum(x.data(), count);
                host[size_t(r)] = x;
                int root_value = r == 1 ? 7 : 0;
                comm.broadcast(&root_value, sizeof(root_value), 1);
                EXPECT_EQ(root_value, 7);
            } catch (const std::exception& e) {
                errors[size_t(r)] = e.what();
            }
        });
    for (auto& t : ranks) t.join();
    for (int r = 0; r < n; ++r) ASSERT_EQ(errors[size_t(r)], "") << "rank " << r;
    std::vector<float> serial(static_cast<size_t>(count), 0.0f);
    for (int r = 0; r < n; ++r) {
        const std::vector<float> x = random_floats(size_t(count), 60 + uint32_t(r));
        for (int64_t i = 0; i < count; ++i) serial[size_t(i)] += x[size_t(i)];
    }
    for (int r = 0; r < n; ++r) {
        EXPECT_EQ(dev[size_t(r)], dev[0]) << "rank " << r;  // identical bits everywhere
        EXPECT_EQ(host[size_t(r)], dev[0]) << "rank " << r;
    }
    EXPECT_CLOSE(dev[0], serial, 1e-6 * n, 0.0);  // NCCL's order, not 0..N-1: equal within rounding
}

}  // namespace
}  // namespace phi
