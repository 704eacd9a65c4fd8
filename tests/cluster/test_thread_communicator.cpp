// ThreadCommunicator: tensor parallelism with ranks as threads of one process (no MPI). The
// all-reduce is bit-identical to a serial fixed-order sum on every rank; a stalled rank ends the
// group with an error naming it; and the real model at N = 2 and 4 (one PhiModel per thread, rank 0
// driving a StepExecutor, the others following) matches the single-rank model and HF's tokens.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <exception>
#include <functional>
#include <string>
#include <thread>

#include "cluster/thread_communicator.h"
#include "tests/cluster/thread_ranks.h"
#include "common/error.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/generate.h"
#include "worker/load_model.h"
#include "worker/step_executor.h"

namespace phi {
namespace {

using test::run_ranks;

float value(int64_t i, int r) {
    return std::sin(float(i * 7 + r * 13)) * std::pow(10.0f, float((i + r) % 7) - 3);
}

TEST(ThreadCommunicator, AllReduceIsBitIdenticalToSerialFixedOrderSum) {
    for (int n : {1, 2, 3, 4}) {
        for (int64_t count : {1, 7, 1000, 100003}) {
            std::vector<float> expect(size_t(count), 0.0f);
            for (int r = 0; r < n; ++r)
                for (int64_t i = 0; i < count; ++i)
                    expect[size_t(i)] = r == 0 ? value(i, r) : expect[size_t(i)] + value(i, r);
            std::vector<std::vector<float>> got(static_cast<size_t>(n));
            run_ranks(n, [&](ThreadCommunicator& comm) {
                std::vector<float> x(static_cast<size_t>(count));
                for (int64_t i = 0; i < count; ++i) x[size_t(i)] = value(i, comm.rank());
                comm.all_reduce_sum(x.data(), count);
                got[size_t(comm.rank())] = std::move(x);
            });
            for (int r = 0; r < n; ++r)
                EXPECT_EQ(got[size_t(r)], expect) << "rank " << r << " of " << n << ", " << count;
        }
    }
}

TEST(ThreadCommunicator, BroadcastGatherAllGather) {
    const int n = 3;
    run_ranks(n, [&](ThreadCommunicator& comm) {
        const int r = comm.rank();
        uint64_t word = r == 1 ? 0xfeedbeefULL : 0;
        comm.broadcast(&word, sizeof(word), 1);
        EXPECT_EQ(word, 0xfeedbeefULL);

        const float mine[2] = {float(r), float(10 * r)};
        std::vector<float> all(size_t(2 * n), -1.0f);
        comm.gather(mine, 2, all.data(), 2);
        if (r == 2) {
            for (int q = 0; q < n; ++q) {
                EXPECT_EQ(all[size_t(2 * q)], float(q));
                EXPECT_EQ(all[size_t(2 * q + 1)], float(10 * q));
            }
        } else {
            EXPECT_EQ(all[0], -1.0f);  // untouched off the root
        }
        std::vector<float> every(size_t(2 * n));
        comm.all_gather(mine, 2, every.data());
        for (int q = 0; q < n; ++q) EXPECT_EQ(every[size_t(2 * q + 1)], float(10 * q));

        const uint64_t h = 1000 + uint64_t(r);
        std::vector<uint64_t> hs(static_cast<size_t>(n));
        comm.all_gather_u64(&h, 1, hs.data());
        for (int q = 0; q < n; ++q) EXPECT_EQ(hs[size_t(q)], 1000 + uint64_t(q));
        comm.barrier();
        EXPECT_EQ(comm.stats().broadcasts, 1);
        EXPECT_EQ(comm.stats().gathers, 2);
    });
}

TEST(ThreadCommunicator, RanksThatFailedIsTheSameListOnEveryRank) {
    LocalCommunicator one;
    EXPECT_EQ(ranks_that_failed(one, true), "");
    EXPECT_EQ(ranks_that_failed(one, false), "0");
    const int n = 4;
    for (unsigned failing : {0u, 0b0010u, 0b1011u, 0b1111u}) {
        std::vector<std::string> got(static_cast<size_t>(n));
        run_ranks(n, [&](ThreadCommunicator& comm) {
            got[size_t(comm.rank())] = ranks_that_failed(comm, ((failing >> comm.rank()) & 1u) == 0);
        });
        std::string want;
        for (int r = 0; r < n; ++r)
            if ((failing >> r) & 1u) want += (want.empty() ? "" : ", ") + std::to_string(r);
        for (int r = 0; r < n; ++r) EXPECT_EQ(got[size_t(r)], want) << "rank " << r << ", failing mask " << failing;
    }
}

TEST(ThreadCommunicator, StalledRankTimesOutNamingIt) {
    auto group = std::make_shared<ThreadGroup>(2);
    std::string msg;
    std::thread waiter([&] {
        ThreadCommunicator comm(group, 0);
        comm.set_timeout(std::chrono::milliseconds(200));
        float x = 1.0f;
        try {
            comm.all_reduce_sum(&x, 1);
        } catch (const Error& e) {
            msg = e.what();
        }
    });
    const auto t0 = std::chrono::steady_clock::now();
    waiter.join();  // rank 1 never arrives
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_NE(msg.find("rank(s) 1 stalled"), std::string::npos) << msg;
    // Once failed, the group refuses every later collective at once.
    ThreadCommunicator late(group, 1);
    float y = 0.0f;
    EXPECT_THROW(late.all_reduce_sum(&y, 1), Error);
}

TEST(ThreadCommunicator, MismatchedCollectivesFailOnEveryRank) {
    EXPECT_THROW(run_ranks(2,
                           [](ThreadCommunicator& comm) {
                               float x[4] = {};
                               comm.all_reduce_sum(x, comm.rank() == 0 ? 4 : 3);
                           }),
                 Error);
}

// The model at N = 2 and 4 as threads.
struct TpCase {
    std::string fixture;
    int n;
};
void PrintTo(const TpCase& c, std::ostream* os) {
    *os << c.fixture << " n=" << c.n;
}

class ThreadTensorParallel : public ::testing::TestWithParam<TpCase> {};

TEST_P(ThreadTensorParallel, MatchesSingleRankAndHf) {
    const TpCase tc = GetParam();
    const auto dir = test::fixture_dir(tc.fixture);
    const ModelConfig cfg = load_model_config(dir / "config.json");
    ASSERT_EQ(cfg.n_heads % tc.n, 0);
    const test::Golden g = test::load_golden(tc.fixture);
    ModelOptions opts;
    opts.isa = kernels::cpu::choose_isa();
    opts.kv = KvCacheConfig{64, 4};

    std::vector<int32_t> table(16);
    for (int i = 0; i < 16; ++i) table[size_t(i)] = i;
    LocalCommunicator local;
    auto single = load_model(dir, local, opts);
    SeqStep st;
    st.tokens = g.prompt;
    st.block_table = table;
    st.all_logits = true;
    std::vector<float> ref_logits;
    single->forward(std::span<const SeqStep>(&st, 1), &ref_logits);
    const int64_t vp1 = single->plan().vocab_padded;

    std::vector<float> tp_logits;
    int64_t vp_tp = 0, per_step = 0, reduces_in_prompt = 0;
    GreedyResult greedy;
    std::vector<uint64_t> hashes(static_cast<size_t>(tc.n));
    run_ranks(tc.n, [&](ThreadCommunicator& comm) {
        omp_set_num_threads(1);  // N ranks already share the cores
        auto model = load_model(dir, comm, opts);
        WatchdogOptions wd;
        wd.plan_wait = std::chrono::milliseconds(60000);
        StepExecutor exec(*model, comm, wd);
        if (comm.rank() != 0) {
            exec.follow();
        } else {
            vp_tp = model->plan().vocab_padded;
            per_step = model->plan().all_reduces_per_step;
            StepPlan plan;
            SeqPlan sp;
            sp.tokens = g.prompt;
            sp.block_table = table;
            sp.all_logits = true;
            plan.seqs.push_back(sp);
            comm.reset_stats();
            exec.run(plan, &tp_logits);
            reduces_in_prompt = comm.stats().all_reduces;
            greedy = generate_greedy(exec, g.prompt, int64_t(g.greedy.size()), g.tokenizer_size, 16);
            exec.shutdown();
        }
        hashes[size_t(comm.rank())] = exec.last_activation_hash();
    });

    EXPECT_EQ(per_step, (cfg.parallel_residual ? 1 : 2) * cfg.n_layers + 1);
    EXPECT_EQ(reduces_in_prompt, per_step);
    float worst = 0.0f;
    for (size_t r = 0; r < g.prompt.size(); ++r)
        for (int64_t j = 0; j < cfg.vocab_size; ++j)
            worst = std::max(worst, std::fabs(tp_logits[r * size_t(vp_tp) + size_t(j)] -
                                              ref_logits[r * size_t(vp1) + size_t(j)]));
    std::printf("[%s] threads tp %d vs tp 1: max abs logit difference %.3g\n", tc.fixture.c_str(), tc.n,
                worst);
    EXPECT_LE(worst, 1e-5f);
    EXPECT_EQ(greedy.tokens, g.greedy);
    for (int r = 1; r < tc.n; ++r) EXPECT_EQ(hashes[size_t(r)], hashes[0]) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ThreadTensorParallel,
                         ::testing::Values(TpCase{"phi3_mini_4k_swa", 2}, TpCase{"phi3_mini_4k_swa", 4},
                                           TpCase{"phi_40q10kv", 2}, TpCase{"phi_40q10kv", 4}),
                         [](const auto& info) {
                             return info.param.fixture + "_n" + std::to_string(info.param.n);
                         });

}  // namespace
}  // namespace phi
