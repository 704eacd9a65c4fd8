// MoE on the GPU against the CPU: the sparsemixer router (same experts, same weights), stable
// per-expert lists, and the whole MLP (route, dispatch, expert GEMMs, combine) against
// PhiModel::moe_mlp's algorithm built from the CPU kernels on the same bf16-rounded values.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "kernels/moe_routing.h"
#include "kernels/cpu/kernels.h"
#include "tests/cuda/cuda_test_util.h"

namespace phi::kernels::cuda {
namespace {

namespace kc = kernels::cpu;
using namespace test;

// The CPU reference of moe_route is kernels/moe_routing.h sparsemixer_top2, which PhiModel uses.

TEST(CudaMoe, RouterAndListsMatchCpu) {
    PHI_REQUIRE_GPU();
    const int64_t n = 1500, E = 16;  // more tokens than one block: the list scan runs in chunks
    std::vector<float> scores = random_floats(size_t(n * E), 20, -2.0f, 2.0f);
    std::vector<int32_t> idx(static_cast<size_t>(2 * n));
    std::vector<float> w(static_cast<size_t>(2 * n));
    for (int64_t t = 0; t < n; ++t)
        kernels::sparsemixer_top2(&scores[size_t(t * E)], E, 0.01f, &idx[size_t(2 * t)], &w[size_t(2 * t)]);
    Stream s;
    DeviceBuffer ds = to_device(scores), di(idx.size() * 4), dw(w.size() * 4), doff(size_t(E + 1) * 4),
                 drows(idx.size() * 4), dinv(idx.size() * 4);
    moe_route(di.as<int32_t>(), dw.as<float>(), ds.as<float>(), n, E, 0.01f, s);
    moe_build_lists(doff.as<int32_t>(), drows.as<int32_t>(), dinv.as<int32_t>(), di.as<int32_t>(), n, E, s);
    s.synchronize();
    EXPECT_EQ(to_host<int32_t>(di, idx.size()), idx);
    EXPECT_CLOSE(to_host<float>(dw, w.size()), w, 1e-6, 1e-6);
    // Expected lists: for each expert, its tokens in order.
    std::vector<int32_t> off(static_cast<size_t>(E + 1), 0), rows;
    for (int64_t e = 0; e < E; ++e) {
        off[size_t(e)] = int32_t(rows.size());
        for (int64_t t = 0; t < n; ++t)
            if (idx[size_t(2 * t)] == e || idx[size_t(2 * t + 1)] == e) rows.push_back(int32_t(t));
    }
    off[size_t(E)] = int32_t(rows.size());
    EXPECT_EQ(to_host<int32_t>(doff, off.size()), off);
    EXPECT_EQ(to_host<int32_t>(drows, rows.size()), rows);
    const auto inv = to_host<int32_t>(dinv, idx.size());
    for (int64_t t = 0; t < n; ++t)
        for (int k = 0; k < 2; ++k) {
            const int32_t at = inv[size_t(2 * t + k)];
            EXPECT_EQ(rows[size_t(at)], t);
            EXPECT_GE(at, off[size_t(idx[size_t(2 * t + k)])]);
            EXPECT_LT(at, off[size_t(idx[size_t(2 * t + k)] + 1)]);
        }
}

TEST(CudaMoe, MlpMatchesCpu) {
    PHI_REQUIRE_GPU();
    const int64_t n = 37, d = 128, f = 96, E = 8;
    std::vector<float> h = random_floats(size_t(n * d), 21), router = random_floats(size_t(E * d), 22);
    std::vector<float> h16 = h;
    const auto h16b = round_bf16(h16);
    std::vector<std::vector<float>> up(static_cast<size_t>(E)), down(static_cast<size_t>(E));
    std::vector<std::vector<uint16_t>> upb(static_cast<size_t>(E)), downb(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) {
        up[size_t(e)] = random_floats(size_t(2 * f * d), 30 + uint32_t(e), -0.2f, 0.2f);
        down[size_t(e)] = random_floats(size_t(d * f), 60 + uint32_t(e), -0.2f, 0.2f);
        upb[size_t(e)] = round_bf16(up[size_t(e)]);
        downb[size_t(e)] = round_bf16(down[size_t(e)]);
    }
    // CPU: router on fp32 h, experts on bf16-rounded h; the activation rounded to bf16 (the GPU's
    // GEMM input) before the down projection.
    std::vector<float> scores(static_cast<size_t>(n * E));
    kc::linear(kc::Isa::Scalar, scores.data(), h.data(), n, kc::WeightView{router.data(), DType::F32, E, d},
               nullptr);
    std::vector<int32_t> idx(static_cast<size_t>(2 * n));
    std::vector<float> wt(static_cast<size_t>(2 * n));
    for (int64_t t = 0; t < n; ++t)
        kernels::sparsemixer_top2(&scores[size_t(t * E)], E, 0.01f, &idx[size_t(2 * t)], &wt[size_t(2 * t)]);
    std::vector<float> want(static_cast<size_t>(n * d), 0.0f);
    for (int64_t e = 0; e < E; ++e) {
        std::vector<int64_t> rows;
        for (int64_t t = 0; t < n; ++t)
            if (idx[size_t(2 * t)] == e || idx[size_t(2 * t + 1)] == e) rows.push_back(t);
        if (rows.empty()) continue;
        const int64_t ne = int64_t(rows.size());
        std::vector<float> xs(static_cast<size_t>(ne * d)), gu(size_t(ne * 2 * f)), a(size_t(ne * f)),
            y(size_t(ne * d));
        for (int64_t i = 0; i < ne; ++i)
            std::memcpy(&xs[size_t(i * d)], &h16[size_t(rows[size_t(i)] * d)], size_t(d) * 4);
        kc::linear(kc::Isa::Scalar, gu.data(), xs.data(), ne,
                   kc::WeightView{upb[size_t(e)].data(), DType::BF16, 2 * f, d}, nullptr);
        kc::silu_mul(kc::Isa::Scalar, a.data(), gu.data(), ne, f);
        round_bf16(a);
        kc::linear(kc::Isa::Scalar, y.data(), a.data(), ne,
                   kc::WeightView{downb[size_t(e)].data(), DType::BF16, d, f}, nullptr);
        for (int64_t i = 0; i < ne; ++i) {
            const int64_t t = rows[size_t(i)];
            const float w = idx[size_t(2 * t)] == e ? wt[size_t(2 * t)] : wt[size_t(2 * t + 1)];
            for (int64_t j = 0; j < d; ++j) want[size_t(t * d + j)] += y[size_t(i * d + j)] * w;
        }
    }

    Stream s;
    CublasHandle blas(s);
    DeviceBuffer dh = to_device(h), dh16 = to_device(h16b), drouter = to_device(router), out(want.size() * 4);
    std::vector<DeviceBuffer> dup, ddown;
    std::vector<const bf16*> pup, pdown;
    for (int64_t e = 0; e < E; ++e) {
        dup.push_back(to_device(upb[size_t(e)]));
        ddown.push_back(to_device(downb[size_t(e)]));
        pup.push_back(dup.back().as<bf16>());
        pdown.push_back(ddown.back().as<bf16>());
    }
    MoeWorkspace ws;
    moe_mlp(blas, out.as<float>(), dh.as<float>(), dh16.as<bf16>(), drouter.as<float>(), pup, pdown, n, d, f,
            E, 0.01f, ws);
    s.synchronize();
    // |y| is about sqrt(f) * 0.2 * |a|; a bf16 activation may round the other way: one ulp each.
    EXPECT_CLOSE(to_host<float>(out, want.size()), want, 2e-3, 1e-2);
}

}  // namespace
}  // namespace phi::kernels::cuda
