// linear: every level against a double-precision reference and the scalar level on odd shapes
// (tails of the SIMD width and of the register tiles), bf16 weights against fp32 weights holding
// the same values, and the determinism contract: batch and thread-count invariance, bitwise.
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "kernels/cpu/kernels.h"
#include "test_util.h"

namespace {

using namespace phi;
using namespace phi::kernels::cpu;
using namespace phi::kernels::cpu::test;

struct Problem {
    int64_t n, rows, cols;
    std::vector<float> x;      // [n, cols]
    std::vector<float> w;      // [rows, cols], bf16-representable values
    std::vector<uint16_t> wb;  // [rows, cols] the same values in bf16
    std::vector<float> bias;   // [rows]

    Problem(int64_t n_, int64_t rows_, int64_t cols_, uint32_t seed)
        : n(n_),
          rows(rows_),
          cols(cols_),
          x(random_floats(n_ * cols_, seed)),
          w(random_floats(rows_ * cols_, seed + 1)),
          bias(random_floats(rows_, seed + 2)) {
        wb = round_to_bf16(w);
    }
    WeightView f32() const { return {w.data(), DType::F32, rows, cols}; }
    WeightView bf16() const { return {wb.data(), DType::BF16, rows, cols}; }

    std::vector<float> run(Isa isa, const WeightView& wv, bool with_bias, int64_t t0 = 0,
                           int64_t nt = -1) const {
        if (nt < 0) nt = n;
        std::vector<float> y(nt * rows, NAN);
        linear(isa, y.data(), x.data() + t0 * cols, nt, wv, with_bias ? bias.data() : nullptr);
        return y;
    }
};

void expect_close_to_exact(const Problem& p, const std::vector<float>& y, bool with_bias,
                           const std::string& what) {
    for (int64_t t = 0; t < p.n; ++t) {
        for (int64_t o = 0; o < p.rows; ++o) {
            double exact = 0.0, mag = 0.0;
            for (int64_t i = 0; i < p.cols; ++i) {
                const double prod = double(p.x[t * p.cols + i]) * double(p.w[o * p.cols + i]);
                exact += prod;
                mag += std::fabs(prod);
            }
            if (with_bias) {
                exact += p.bias[o];
                mag += std::fabs(p.bias[o]);
            }
            // fp32 dot of length K: error well under K * 2^-24 * sum|x w|; 1e-5 relative to the
            // magnitude covers every K used here with room, and is far below any indexing bug.
            ASSERT_NEAR(y[t * p.rows + o], exact, 1e-5 * mag + 1e-30)
                << what << " t=" << t << " o=" << o << " n=" << p.n << " rows=" << p.rows
                << " cols=" << p.cols;
        }
    }
}

const int64_t k_ns[] = {1, 3, 7, 16};
const int64_t k_rows[] = {1, 5, 18, 37};
const int64_t k_cols[] = {1, 7, 8, 17, 33, 259};

TEST(Linear, EveryLevelMatchesExactAndScalar) {
    ThreadCount tc(1);  // ~100 tiny problems: fork/join would dominate on a busy machine
    uint32_t seed = 1;
    for (int64_t n : k_ns) {
        for (int64_t rows : k_rows) {
            for (int64_t cols : k_cols) {
                const Problem p(n, rows, cols, seed += 3);
                const bool with_bias = (seed % 2) == 0;
                const std::vector<float> ref = p.run(Isa::Scalar, p.f32(), with_bias);
                for (Isa isa : levels_to_test()) {
                    const std::vector<float> y = p.run(isa, p.f32(), with_bias);
                    expect_close_to_exact(p, y, with_bias, isa_label(isa));
                    for (size_t i = 0; i < y.size(); ++i) {
                        ASSERT_NEAR(y[i], ref[i], 1e-5 * (std::fabs(ref[i]) + 1.0))
                            << isa_label(isa) << " i=" << i;
                    }
                }
            }
        }
    }
}

// Long rows with a batch: the SIMD levels split K into blocks and pass partial sums between them.
TEST(Linear, LongRowsBatchMatchExact) {
    for (Isa isa : levels_to_test()) {
        for (int64_t cols : {1024, 1031, 2500}) {
            const Problem p(13, 9, cols, 200 + uint32_t(cols));
            expect_close_to_exact(p, p.run(isa, p.f32(), true), true, isa_label(isa));
            expect_close_to_exact(p, p.run(isa, p.bf16(), true), true, isa_label(isa));
        }
    }
}

TEST(Linear, Bf16WeightsEqualF32WeightsWithSameValues) {
    for (Isa isa : levels_to_test()) {
        for (int64_t cols : {7, 33, 259, 1000, 2100}) {
            const Problem p(9, 21, cols, 100 + uint32_t(cols));
            EXPECT_TRUE(bitwise_equal(p.run(isa, p.f32(), true), p.run(isa, p.bf16(), true)))
                << isa_label(isa) << " cols=" << cols;
        }
    }
}

// The contract: a row's output does not depend on n or on the batch's other rows.
TEST(Linear, BatchInvarianceBitwise) {
    // 40 tokens x 3000 columns also crosses the token super-block of the SIMD levels.
    for (auto [n, rows, cols] :
         {std::tuple<int64_t, int64_t, int64_t>{8, 37, 259}, {40, 35, 3000}, {13, 70, 64}}) {
        const Problem p(n, rows, cols, 7 + uint32_t(cols));
        for (Isa isa : levels_to_test()) {
            for (const WeightView& wv : {p.f32(), p.bf16()}) {
                const std::vector<float> all = p.run(isa, wv, true);
                for (int64_t t = 0; t < n; ++t) {
                    const std::vector<float> one = p.run(isa, wv, true, t, 1);
                    ASSERT_EQ(std::memcmp(one.data(), all.data() + t * rows, rows * sizeof(float)), 0)
                        << isa_label(isa) << " " << dtype_name(wv.dtype) << " row " << t << " of " << n;
                }
                // A middle slice as its own batch (other neighbours, other tile boundaries).
                const int64_t t0 = 1, nt = n - 2;
                const std::vector<float> mid = p.run(isa, wv, true, t0, nt);
                ASSERT_EQ(std::memcmp(mid.data(), all.data() + t0 * rows, nt * rows * sizeof(float)), 0)
                    << isa_label(isa) << " " << dtype_name(wv.dtype);
            }
        }
    }
}

TEST(Linear, ThreadCountInvarianceBitwise) {
    const Problem p(11, 133, 517, 99);
    for (Isa isa : levels_to_test()) {
        for (const WeightView& wv : {p.f32(), p.bf16()}) {
            std::vector<float> one, two, three;
            {
                ThreadCount tc(1);
                one = p.run(isa, wv, true);
            }
            {
                ThreadCount tc(2);
                two = p.run(isa, wv, true);
            }
            {
                ThreadCount tc(3);
                three = p.run(isa, wv, true);
            }
            EXPECT_TRUE(bitwise_equal(one, two)) << isa_label(isa) << " " << dtype_name(wv.dtype);
            EXPECT_TRUE(bitwise_equal(one, three)) << isa_label(isa) << " " << dtype_name(wv.dtype);
        }
    }
}

TEST(Linear, RejectsF16AndNegativeN) {
    std::vector<uint16_t> w(4);
    std::vector<float> x(2), y(2);
    const WeightView f16{w.data(), DType::F16, 2, 2};
    EXPECT_THROW(linear(Isa::Scalar, y.data(), x.data(), 1, f16, nullptr), phi::Error);
    const WeightView f32{x.data(), DType::F32, 1, 2};
    EXPECT_THROW(linear(Isa::Scalar, y.data(), x.data(), -1, f32, nullptr), phi::Error);
}

TEST(Linear, EmptyInnerDimGivesBias) {
    const std::vector<float> bias = {1.5f, -2.0f};
    for (Isa isa : levels_to_test()) {
        std::vector<float> y(4, NAN);
        const float dummy = 0.0f;
        linear(isa, y.data(), &dummy, 2, WeightView{&dummy, DType::F32, 2, 0}, bias.data());
        EXPECT_EQ(y, (std::vector<float>{1.5f, -2.0f, 1.5f, -2.0f})) << isa_label(isa);
    }
}

}  // namespace
