// Norms, activations, add, RoPE and embedding: every level against double-precision references
// on odd sizes, in-place aliasing, and bitwise thread-count invariance.
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "kernels/cpu/kernels.h"
#include "test_util.h"

namespace {

using namespace phi;
using namespace phi::kernels::cpu;
using namespace phi::kernels::cpu::test;

const int64_t k_dims[] = {1, 7, 16, 33, 100, 2563};

TEST(Norms, LayerNormMatchesDouble) {
    for (Isa isa : levels_to_test()) {
        for (int64_t d : k_dims) {
            for (bool with_b : {false, true}) {
                const int64_t n = 5;
                std::vector<float> x = random_floats(n * d, uint32_t(d), -3.0f, 5.0f);  // mean != 0
                const std::vector<float> w = random_floats(d, 2, 0.5f, 1.5f);
                const std::vector<float> b = random_floats(d, 3);
                std::vector<float> y(n * d);
                layer_norm(isa, y.data(), x.data(), w.data(), with_b ? b.data() : nullptr, n, d, 1e-5f);
                for (int64_t t = 0; t < n; ++t) {
                    double mean = 0.0, var = 0.0;
                    for (int64_t i = 0; i < d; ++i) mean += x[t * d + i];
                    mean /= double(d);
                    for (int64_t i = 0; i < d; ++i) var += (x[t * d + i] - mean) * (x[t * d + i] - mean);
                    var /= double(d);
                    for (int64_t i = 0; i < d; ++i) {
                        const double ref =
                            (x[t * d + i] - mean) / std::sqrt(var + 1e-5) * w[i] + (with_b ? b[i] : 0.0);
                        ASSERT_NEAR(y[t * d + i], ref, 1e-5 * (std::fabs(ref) + 1.0))
                            << isa_label(isa) << " d=" << d;
                    }
                }
                // In place gives the same bits.
                layer_norm(isa, x.data(), x.data(), w.data(), with_b ? b.data() : nullptr, n, d, 1e-5f);
                EXPECT_TRUE(bitwise_equal(x, y)) << isa_label(isa);
            }
        }
    }
}

TEST(Norms, RmsNormMatchesDouble) {
    for (Isa isa : levels_to_test()) {
        for (int64_t d : k_dims) {
            const int64_t n = 4;
            std::vector<float> x = random_floats(n * d, uint32_t(d) + 9, -2.0f, 2.0f);
            const std::vector<float> w = random_floats(d, 4, 0.5f, 1.5f);
            std::vector<float> y(n * d);
            rms_norm(isa, y.data(), x.data(), w.data(), n, d, 1e-6f);
            for (int64_t t = 0; t < n; ++t) {
                double ms = 0.0;
                for (int64_t i = 0; i < d; ++i) ms += double(x[t * d + i]) * x[t * d + i];
                const double r = 1.0 / std::sqrt(ms / double(d) + 1e-6);
                for (int64_t i = 0; i < d; ++i) {
                    const double ref = x[t * d + i] * r * w[i];
                    ASSERT_NEAR(y[t * d + i], ref, 1e-5 * (std::fabs(ref) + 1e-3))
                        << isa_label(isa) << " d=" << d;
                }
            }
            rms_norm(isa, x.data(), x.data(), w.data(), n, d, 1e-6f);
            EXPECT_TRUE(bitwise_equal(x, y)) << isa_label(isa);
        }
    }
}

TEST(Norms, ThreadAndBatchInvarianceBitwise) {
    const int64_t n = 64, d = 1031;  // above the size where the norms go parallel
    const std::vector<float> x = random_floats(n * d, 5, -3.0f, 3.0f);
    const std::vector<float> w = random_floats(d, 6), b = random_floats(d, 7);
    for (Isa isa : levels_to_test()) {
        std::vector<float> a1(n * d), a2(n * d), r1(n * d), r2(n * d), single(d);
        {
            ThreadCount tc(1);
            layer_norm(isa, a1.data(), x.data(), w.data(), b.data(), n, d, 1e-5f);
            rms_norm(isa, r1.data(), x.data(), w.data(), n, d, 1e-5f);
        }
        {
            ThreadCount tc(2);
            layer_norm(isa, a2.data(), x.data(), w.data(), b.data(), n, d, 1e-5f);
            rms_norm(isa, r2.data(), x.data(), w.data(), n, d, 1e-5f);
        }
        EXPECT_TRUE(bitwise_equal(a1, a2)) << isa_label(isa);
        EXPECT_TRUE(bitwise_equal(r1, r2)) << isa_label(isa);
        layer_norm(isa, single.data(), x.data() + 17 * d, w.data(), b.data(), 1, d, 1e-5f);
        EXPECT_EQ(std::memcmp(single.data(), a1.data() + 17 * d, d * sizeof(float)), 0) << isa_label(isa);
    }
}

TEST(Elementwise, GeluNewMatchesFormula) {
    std::vector<float> x0 = random_floats(70001, 8, -8.0f, 8.0f);
    x0.insert(x0.end(), {0.0f, -0.0f, 1e-8f, -20.0f, 20.0f});
    for (Isa isa : levels_to_test()) {
        std::vector<float> x = x0;
        gelu_new(isa, x.data(), int64_t(x.size()));
        for (size_t i = 0; i < x.size(); ++i) {
            const double v = x0[i];
            const double ref = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            // tanh-form 1 + tanh(u) loses relative accuracy for very negative x (as HF's does).
            ASSERT_NEAR(x[i], ref, 1e-6 * std::fabs(v) + 1e-6 * std::fabs(ref) + 1e-30)
                << isa_label(isa) << " x=" << v;
        }
    }
}

// activation_math.h: every level runs the scalar reference's operations lane by lane, so the
// outputs are bitwise equal, including the vector tails and the clamped extremes.
TEST(Elementwise, GeluAndSiluAreBitwiseEqualAtEveryLevel) {
    std::vector<float> x0 = random_floats(50007, 12, -12.0f, 12.0f);
    x0.insert(x0.end(), {0.0f, -0.0f, 1e-30f, -1e-30f, 88.0f, -88.0f, 200.0f, -200.0f, 3e38f, -3e38f});
    std::vector<float> g_ref = x0;
    gelu_new(Isa::Scalar, g_ref.data(), int64_t(g_ref.size()));
    const int64_t n = 3, d = int64_t(x0.size()) / 6;
    std::vector<float> s_ref(size_t(n * d));
    silu_mul(Isa::Scalar, s_ref.data(), x0.data(), n, d);
    for (Isa isa : levels_to_test()) {
        std::vector<float> g = x0;
        gelu_new(isa, g.data(), int64_t(g.size()));
        EXPECT_TRUE(bitwise_equal(g, g_ref)) << isa_label(isa);
        std::vector<float> s(size_t(n * d));
        silu_mul(isa, s.data(), x0.data(), n, d);
        EXPECT_TRUE(bitwise_equal(s, s_ref)) << isa_label(isa);
        for (int64_t len : {int64_t(1), int64_t(7), int64_t(17), int64_t(33)}) {  // tails only
            std::vector<float> t(x0.begin(), x0.begin() + len);
            gelu_new(isa, t.data(), len);
            EXPECT_EQ(std::memcmp(t.data(), g_ref.data(), size_t(len) * 4), 0) << isa_label(isa) << " len " << len;
        }
    }
}

TEST(Elementwise, SiluMulMatchesFormula) {
    const int64_t n = 3, d = 1001;
    const std::vector<float> in = random_floats(n * 2 * d, 9, -10.0f, 10.0f);
    for (Isa isa : levels_to_test()) {
        std::vector<float> out(n * d);
        silu_mul(isa, out.data(), in.data(), n, d);
        for (int64_t t = 0; t < n; ++t) {
            for (int64_t j = 0; j < d; ++j) {
                const double g = in[t * 2 * d + j], u = in[t * 2 * d + d + j];
                const double ref = g / (1.0 + std::exp(-g)) * u;
                ASSERT_NEAR(out[t * d + j], ref, 1e-6 * (std::fabs(ref) + 1e-6)) << isa_label(isa);
            }
        }
    }
}

TEST(Elementwise, AddInplace) {
    const std::vector<float> x = random_floats(300007, 10), y0 = random_floats(300007, 11);
    for (Isa isa : levels_to_test()) {
        std::vector<float> y = y0;
        add_inplace(isa, y.data(), x.data(), int64_t(y.size()));
        for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], y0[i] + x[i]);
    }
}

TEST(Rope, NeoxRotateHalfPartial) {
    const int64_t n = 4, heads = 3, head_dim = 20, rotary_dim = 12, half = rotary_dim / 2;
    const std::vector<int32_t> pos = {0, 1, 517, 4095};
    std::vector<float> inv_freq(half);
    for (int64_t i = 0; i < half; ++i)
        inv_freq[i] = float(1.0 / std::pow(10000.0, double(2 * i) / rotary_dim));
    const std::vector<float> x0 = random_floats(n * heads * head_dim, 12);
    const float scale = 1.1902381f;
    for (Isa isa : levels_to_test()) {
        std::vector<float> x = x0;
        rope(isa, x.data(), pos.data(), n, heads, head_dim, rotary_dim, inv_freq.data(), scale);
        for (int64_t t = 0; t < n; ++t) {
            for (int64_t h = 0; h < heads; ++h) {
                const float* a = x0.data() + (t * heads + h) * head_dim;
                const float* b = x.data() + (t * heads + h) * head_dim;
                for (int64_t i = 0; i < half; ++i) {
                    const double ang = double(float(pos[t]) * inv_freq[i]);  // fp32 angle, as HF
                    const double c = std::cos(ang) * scale, s = std::sin(ang) * scale;
                    ASSERT_NEAR(b[i], a[i] * c - a[i + half] * s, 1e-6) << t << " " << i;
                    ASSERT_NEAR(b[i + half], a[i + half] * c + a[i] * s, 1e-6) << t << " " << i;
                }
                for (int64_t i = rotary_dim; i < head_dim; ++i) ASSERT_EQ(b[i], a[i]);  // pass-through
            }
        }
    }
    std::vector<float> x = x0;
    EXPECT_THROW(rope(Isa::Scalar, x.data(), pos.data(), n, heads, head_dim, 21, inv_freq.data(), 1.0f),
                 phi::Error);
}

TEST(Embedding, F32Bf16AndOutOfShard) {
    const int64_t rows = 5, cols = 9, offset = 10;
    std::vector<float> table = random_floats(rows * cols, 13);
    const std::vector<uint16_t> tb = round_to_bf16(table);
    const std::vector<int32_t> ids = {10, 14, 9, 15, 12};
    for (const WeightView& wv :
         {WeightView{table.data(), DType::F32, rows, cols}, WeightView{tb.data(), DType::BF16, rows, cols}}) {
        std::vector<float> out(ids.size() * cols, NAN);
        embedding(out.data(), wv, ids.data(), int64_t(ids.size()), offset);
        for (size_t t = 0; t < ids.size(); ++t) {
            const int64_t r = ids[t] - offset;
            for (int64_t j = 0; j < cols; ++j) {
                const float want = (r >= 0 && r < rows) ? table[r * cols + j] : 0.0f;
                ASSERT_EQ(out[t * cols + j], want) << dtype_name(wv.dtype) << " t=" << t;
            }
        }
    }
}

}  // namespace
