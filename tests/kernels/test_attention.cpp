// kv_write + paged_attention: every level against a naive dense causal attention (double) over
// contiguous K/V, with shuffled non-contiguous block tables, GQA, sliding windows and odd head
// dims; bitwise batch/thread invariance; bad block ids and KV-head maps rejected.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "kernels/cpu/kernels.h"
#include "test_util.h"

namespace {

using namespace phi;
using namespace phi::kernels::cpu;
using namespace phi::kernels::cpu::test;

struct Case {
    int64_t ctx;  // tokens in the sequence (cached + new)
    int64_t n;    // new queries (the last n positions)
    int64_t n_heads;
    int64_t n_kv_heads;
    int64_t head_dim;
    int64_t block_size;
    int64_t window;  // sliding window, 0 = none
};

struct AttnProblem {
    Case c;
    KvLayout layout;
    std::vector<int32_t> block_table;  // [ceil(ctx / block_size)], shuffled, with gaps
    std::vector<float> k, v;           // [ctx, n_kv_heads, head_dim] contiguous
    std::vector<float> k_cache, v_cache;
    std::vector<float> q;          // [n, n_heads, head_dim]
    std::vector<int32_t> q_to_kv;  // [n_heads]

    AttnProblem(const Case& c_, uint32_t seed) : c(c_) {
        const int64_t blocks = (c.ctx + c.block_size - 1) / c.block_size;
        layout = {2 * blocks + 3, c.block_size, c.n_kv_heads, c.head_dim};
        std::vector<int32_t> ids(layout.num_blocks);
        std::iota(ids.begin(), ids.end(), 0);
        std::mt19937 gen(seed);
        std::shuffle(ids.begin(), ids.end(), gen);
        block_table.assign(ids.begin(), ids.begin() + blocks);
        const int64_t row = c.n_kv_heads * c.head_dim;
        k = random_floats(c.ctx * row, seed + 1);
        v = random_floats(c.ctx * row, seed + 2);
        q = random_floats(c.n * c.n_heads * c.head_dim, seed + 3, -2.0f, 2.0f);
        const size_t cache = size_t(layout.num_blocks * c.block_size * row);
        k_cache.assign(cache, NAN);  // unwritten slots must never be read
        v_cache.assign(cache, NAN);
        const int64_t group = c.n_heads / c.n_kv_heads;
        for (int64_t h = 0; h < c.n_heads; ++h) q_to_kv.push_back(int32_t(h / group));
        // Two writes: the cached prefix, then the new tokens.
        const int64_t start = c.ctx - c.n;
        kv_write(k_cache.data(), v_cache.data(), layout, block_table.data(), 0, start, k.data(), v.data());
        kv_write(k_cache.data(), v_cache.data(), layout, block_table.data(), start, c.n,
                 k.data() + start * row, v.data() + start * row);
    }

    int64_t start() const { return c.ctx - c.n; }
    float scale() const { return 1.0f / std::sqrt(float(c.head_dim)); }

    /// Queries [i0, i0 + ni) as one call.
    std::vector<float> run(Isa isa, int64_t i0 = 0, int64_t ni = -1) const {
        if (ni < 0) ni = c.n;
        const int64_t qrow = c.n_heads * c.head_dim;
        std::vector<float> out(ni * qrow, NAN);
        paged_attention(isa, out.data(), q.data() + i0 * qrow, k_cache.data(), v_cache.data(), layout,
                        block_table.data(), start() + i0, ni, c.n_heads, q_to_kv.data(), scale(), c.window);
        return out;
    }

    std::vector<double> naive() const {
        const int64_t d = c.head_dim, row = c.n_kv_heads * d;
        std::vector<double> out(c.n * c.n_heads * d, 0.0);
        for (int64_t i = 0; i < c.n; ++i) {
            const int64_t qpos = start() + i;
            for (int64_t h = 0; h < c.n_heads; ++h) {
                const int64_t kvh = q_to_kv[h];
                const float* qv = q.data() + (i * c.n_heads + h) * d;
                std::vector<double> s(c.ctx, -INFINITY);
                double mx = -INFINITY;
                for (int64_t p = 0; p < c.ctx; ++p) {
                    const bool visible = p <= qpos && (c.window <= 0 || p > qpos - c.window);
                    if (!visible) continue;
                    double acc = 0.0;
                    for (int64_t e = 0; e < d; ++e) acc += double(qv[e]) * k[p * row + kvh * d + e];
                    s[p] = acc * scale();
                    mx = std::max(mx, s[p]);
                }
                double sum = 0.0;
                for (int64_t p = 0; p < c.ctx; ++p) sum += std::exp(s[p] - mx);
                double* o = out.data() + (i * c.n_heads + h) * d;
                for (int64_t p = 0; p < c.ctx; ++p) {
                    const double prob = std::exp(s[p] - mx) / sum;
                    if (prob == 0.0) continue;
                    for (int64_t e = 0; e < d; ++e) o[e] += prob * v[p * row + kvh * d + e];
                }
            }
        }
        return out;
    }
};

const Case k_cases[] = {
    // ctx, n, heads, kv heads, head_dim, block, window
    {1, 1, 2, 2, 16, 4, 0},     // one token
    {23, 5, 6, 2, 20, 4, 0},    // GQA 3:1, head_dim tail for both widths
    {37, 37, 4, 4, 80, 8, 0},   // prefill from 0, Phi-2 head_dim
    {50, 9, 6, 3, 37, 5, 7},    // sliding window, odd everything
    {64, 3, 8, 1, 96, 16, 64},  // window == ctx (no effect), MQA
    {29, 29, 3, 1, 8, 3, 1},    // window 1: each query sees only itself
};

TEST(Attention, EveryLevelMatchesNaiveDense) {
    uint32_t seed = 10;
    for (const Case& c : k_cases) {
        const AttnProblem s(c, seed += 5);
        const std::vector<double> ref = s.naive();
        for (Isa isa : levels_to_test()) {
            const std::vector<float> out = s.run(isa);
            for (size_t i = 0; i < out.size(); ++i) {
                ASSERT_NEAR(out[i], ref[i], 2e-6 + 1e-5 * std::fabs(ref[i]))
                    << isa_label(isa) << " ctx=" << c.ctx << " head_dim=" << c.head_dim
                    << " window=" << c.window << " i=" << i;
            }
        }
    }
}

TEST(Attention, BatchAndThreadInvarianceBitwise) {
    const AttnProblem s({45, 11, 6, 2, 40, 4, 9}, 77);
    for (Isa isa : levels_to_test()) {
        const std::vector<float> all = s.run(isa);
        const int64_t qrow = s.c.n_heads * s.c.head_dim;
        for (int64_t i = 0; i < s.c.n; ++i) {
            const std::vector<float> one = s.run(isa, i, 1);
            ASSERT_EQ(std::memcmp(one.data(), all.data() + i * qrow, qrow * sizeof(float)), 0)
                << isa_label(isa) << " query " << i;
        }
        std::vector<float> t1, t3;
        {
            ThreadCount tc(1);
            t1 = s.run(isa);
        }
        {
            ThreadCount tc(3);
            t3 = s.run(isa);
        }
        EXPECT_TRUE(bitwise_equal(all, t1)) << isa_label(isa);
        EXPECT_TRUE(bitwise_equal(all, t3)) << isa_label(isa);
    }
}

TEST(Attention, KvWritePlacesTokensInBlocks) {
    const AttnProblem s({13, 13, 2, 2, 3, 4, 0}, 5);
    const int64_t row = 2 * 3;
    for (int64_t p = 0; p < 13; ++p) {
        const int64_t off = (s.block_table[p / 4] * 4 + p % 4) * row;
        for (int64_t e = 0; e < row; ++e) {
            EXPECT_EQ(s.k_cache[off + e], s.k[p * row + e]);
            EXPECT_EQ(s.v_cache[off + e], s.v[p * row + e]);
        }
    }
}

// kv_cache.dtype: bf16. K and V are rounded to bf16 on write (nearest even, as torch) and widened
// exactly on read, so at every level attention over the bf16 cache is bitwise attention over an fp32
// cache holding the rounded values, and every level stays within rounding of the scalar reference.
TEST(Attention, Bf16CacheIsTheFp32CacheOfRoundedValues) {
    uint32_t seed = 300;
    for (const Case& c : k_cases) {
        const AttnProblem s(c, seed += 7);
        const int64_t row = c.n_kv_heads * c.head_dim;
        std::vector<uint16_t> k16(s.k_cache.size(), 0x7fc0), v16(s.v_cache.size(), 0x7fc0);  // NaN: never read
        const int64_t start = s.start();
        kv_write(k16.data(), v16.data(), s.layout, s.block_table.data(), 0, start, s.k.data(), s.v.data());
        kv_write(k16.data(), v16.data(), s.layout, s.block_table.data(), start, c.n, s.k.data() + start * row,
                 s.v.data() + start * row);
        std::vector<float> k_rounded(k16.size()), v_rounded(v16.size());
        for (size_t i = 0; i < k16.size(); ++i) {
            k_rounded[i] = bf16_to_f32(k16[i]);
            v_rounded[i] = bf16_to_f32(v16[i]);
        }
        for (int64_t p = 0; p < c.ctx; ++p) {
            const int64_t off = (s.block_table[p / c.block_size] * c.block_size + p % c.block_size) * row;
            for (int64_t e = 0; e < row; ++e) {
                ASSERT_EQ(k16[off + e], f32_to_bf16(s.k[p * row + e]));
                ASSERT_EQ(v16[off + e], f32_to_bf16(s.v[p * row + e]));
            }
        }
        const int64_t qrow = c.n_heads * c.head_dim;
        auto run = [&](Isa isa, auto* kc, auto* vc) {
            std::vector<float> out(size_t(c.n * qrow), NAN);
            paged_attention(isa, out.data(), s.q.data(), kc, vc, s.layout, s.block_table.data(), start, c.n,
                            c.n_heads, s.q_to_kv.data(), s.scale(), c.window);
            return out;
        };
        const std::vector<float> ref16 = run(Isa::Scalar, k16.data(), v16.data());
        for (Isa isa : levels_to_test()) {
            const std::vector<float> out16 = run(isa, k16.data(), v16.data());
            EXPECT_TRUE(bitwise_equal(out16, run(isa, k_rounded.data(), v_rounded.data())))
                << isa_label(isa) << " ctx=" << c.ctx << " head_dim=" << c.head_dim;
            for (size_t i = 0; i < out16.size(); ++i) {
                ASSERT_NEAR(out16[i], ref16[i], 2e-6 + 1e-5 * std::fabs(ref16[i]))
                    << isa_label(isa) << " ctx=" << c.ctx << " i=" << i;
            }
        }
    }
    // Rounding: a tie goes to the even bf16 value, as torch's .to(torch.bfloat16).
    const KvLayout one{1, 1, 1, 2};
    const int32_t table[1] = {0};
    const float kv[2] = {1.0f + 1.0f / 256.0f, 1.0f + 3.0f / 256.0f};  // halfway cases: down to 1, up to 1+4/256
    uint16_t kc[2], vc[2];
    kv_write(kc, vc, one, table, 0, 1, kv, kv);
    EXPECT_EQ(bf16_to_f32(kc[0]), 1.0f);
    EXPECT_EQ(bf16_to_f32(kc[1]), 1.0f + 4.0f / 256.0f);
}

TEST(Attention, RejectsBadBlockIdsAndHeadMap) {
    AttnProblem s({10, 2, 2, 2, 8, 4, 0}, 3);
    std::vector<float> out(2 * 2 * 8);
    auto call = [&](Isa isa) {
        paged_attention(isa, out.data(), s.q.data(), s.k_cache.data(), s.v_cache.data(), s.layout,
                        s.block_table.data(), s.start(), 2, 2, s.q_to_kv.data(), 0.3f, 0);
    };
    for (Isa isa : levels_to_test()) {
        s.block_table[2] = int32_t(s.layout.num_blocks);
        EXPECT_THROW(call(isa), phi::Error);
        s.block_table[2] = -1;
        EXPECT_THROW(call(isa), phi::Error);
        s.block_table[2] = 0;
        s.q_to_kv[1] = 2;
        EXPECT_THROW(call(isa), phi::Error);
        s.q_to_kv[1] = 1;
        EXPECT_NO_THROW(call(isa));
    }
    std::vector<float> kv(2 * 8);
    s.block_table[0] = 99;
    EXPECT_THROW(kv_write(s.k_cache.data(), s.v_cache.data(), s.layout, s.block_table.data(), 0, 1, kv.data(),
                          kv.data()),
                 phi::Error);
}

}  // namespace
