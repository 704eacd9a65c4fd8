// Quantized weights (docs/QUANT.md): the quantizer bitwise against scripts/quant_reference.py's
// committed output (tests/fixtures/quant), slicing = quantizing the slice, the refusals, and the
// quantized linear at every level: F32 mode bitwise equal to the level's fp32 linear on the
// dequantized weights, Int8 mode bitwise equal to the scalar level, both against double-precision
// sums, and the determinism contract (batch and thread-count invariance, bitwise).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "common/error.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant.h"
#include "test_util.h"

namespace {

using namespace phi;
using namespace phi::kernels::cpu;
using namespace phi::kernels::cpu::test;

const QuantFormat k_formats[] = {QuantFormat::Q8, QuantFormat::Q4};
const QuantActivations k_modes[] = {QuantActivations::F32, QuantActivations::Int8};

std::string label(Isa isa, QuantFormat f, QuantActivations m) {
    return std::string(isa_name(isa)) + " " + std::string(quant_format_name(f)) +
           (m == QuantActivations::F32 ? " f32-act" : " int8-act");
}

std::filesystem::path fixture_dir() {
    const char* src = std::getenv("PHI_SOURCE_DIR");
    return std::filesystem::path(src != nullptr ? src : ".") / "tests" / "fixtures" / "quant";
}

template <typename T>
std::vector<T> read_raw(const std::string& name, size_t count) {
    const std::filesystem::path p = fixture_dir() / name;
    std::ifstream f(p, std::ios::binary);
    EXPECT_TRUE(f.good()) << "cannot open " << p << " (regenerate with scripts/quant_reference.py)";
    std::vector<T> v(count);
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(count * sizeof(T)));
    EXPECT_EQ(size_t(f.gcount()), count * sizeof(T)) << p;
    return v;
}

std::map<std::string, int64_t> read_shapes() {
    std::ifstream f(fixture_dir() / "shapes.txt");
    std::map<std::string, int64_t> m;
    std::string k;
    int64_t v = 0;
    while (f >> k >> v) m[k] = v;
    return m;
}

template <typename A, typename B>
bool same_bytes(const A& a, const B& b) {
    const size_t na = a.size() * sizeof(a[0]), nb = b.size() * sizeof(b[0]);
    return na == nb && std::memcmp(a.data(), b.data(), na) == 0;
}

// ---------------------------------------------------------------------------------------------
// The formats against the Python reference.

TEST(Quant, QuantizerMatchesPythonReferenceBitwise) {
    auto shapes = read_shapes();
    const int64_t rows = shapes["rows"], cols = shapes["cols"];
    ASSERT_GT(rows, 0);
    ASSERT_GT(cols, 0);
    const std::vector<float> w = read_raw<float>("weights_f32.bin", size_t(rows * cols));
    const WeightView wv{w.data(), DType::F32, rows, cols};

    const QuantTensor q8 = quantize(QuantFormat::Q8, wv);
    EXPECT_TRUE(same_bytes(q8.qs, read_raw<int8_t>("q8_qs.bin", size_t(rows * cols))));
    EXPECT_TRUE(same_bytes(q8.scales, read_raw<uint16_t>("q8_scales.bin", size_t(rows * cols / 32))));

    const QuantTensor q4 = quantize(QuantFormat::Q4, wv);
    EXPECT_TRUE(same_bytes(q4.qs, read_raw<uint8_t>("q4_qs.bin", size_t(rows * cols / 2))));
    EXPECT_TRUE(same_bytes(q4.scales, read_raw<uint16_t>("q4_scales.bin", size_t(rows * cols / 32))));

    // Spot checks of the spec on the hand-made blocks (row 1: d = 1, halves round away from 0).
    EXPECT_EQ(int8_t(q8.qs[size_t(cols + 1)]), 1);   // 0.5
    EXPECT_EQ(int8_t(q8.qs[size_t(cols + 3)]), 3);   // 2.5
    EXPECT_EQ(int8_t(q8.qs[size_t(cols + 6)]), -3);  // -2.5
    EXPECT_EQ(q8.scales[0], 0);                      // all-zero block
}

TEST(Quant, ActivationsMatchPythonReferenceBitwise) {
    auto shapes = read_shapes();
    const int64_t n = shapes["tokens"], cols = shapes["cols"];
    ASSERT_GT(n, 0);
    const std::vector<float> x = read_raw<float>("act_f32.bin", size_t(n * cols));
    const QuantizedActivations a = quantize_activations(x.data(), n, cols);
    EXPECT_TRUE(same_bytes(a.q, read_raw<int8_t>("act_q.bin", size_t(n * cols))));
    EXPECT_TRUE(same_bytes(a.d, read_raw<float>("act_d.bin", size_t(n * cols / 32))));
    EXPECT_TRUE(same_bytes(a.sum, read_raw<int32_t>("act_sum.bin", size_t(n * cols / 32))));
}

// Halves and their neighbours (d = 1: the block's largest |x| is 127): q is std::round, halves away
// from zero, as the Python reference (numpy's rint would round them to even).
TEST(Quant, ActivationRoundingIsHalfAwayFromZeroAtTheEdges) {
    const float vals[] = {127.0f,        -127.0f,      0.5f,    -0.5f,   1.5f,       -1.5f,        2.5f,    -2.5f,
                          126.5f,        -126.5f,      0.49999997f, -0.49999997f, 0.50000006f, -0.50000006f,
                          1.4999999f,    -1.4999999f,  1e-8f,   -1e-8f,  0.0f,       -0.0f,        63.5f,   -63.5f,
                          126.49999f,    -126.49999f,  3.0f,    -3.0f,   100.25f,    -100.75f,     7.5f,    -8.5f,
                          0.75f,         -0.25f};
    static_assert(std::size(vals) == 32);
    const QuantizedActivations a = quantize_activations(vals, 1, 32);
    ASSERT_EQ(a.d[0], 1.0f);
    for (int i = 0; i < 32; ++i)
        EXPECT_EQ(int(a.q[size_t(i)]), int(std::round(vals[i]))) << "x = " << vals[i];
}

TEST(Quant, Bf16SourceEqualsF32SourceWithSameValues) {
    std::vector<float> w = random_floats(7 * 96, 5, -3.0f, 3.0f);
    const std::vector<uint16_t> wb = round_to_bf16(w);
    for (QuantFormat f : k_formats) {
        const QuantTensor a = quantize(f, WeightView{w.data(), DType::F32, 7, 96});
        const QuantTensor b = quantize(f, WeightView{wb.data(), DType::BF16, 7, 96});
        EXPECT_EQ(a.qs, b.qs) << quant_format_name(f);
        EXPECT_EQ(a.scales, b.scales) << quant_format_name(f);
    }
}

// Each rank may quantize its own shard: the blocks are the slice of the whole tensor's.
TEST(Quant, QuantizingASliceEqualsSlicingTheQuantized) {
    const int64_t rows = 24, cols = 320;
    const std::vector<float> w = random_floats(size_t(rows * cols), 17, -2.0f, 2.0f);
    for (QuantFormat f : k_formats) {
        const QuantTensor whole = quantize(f, WeightView{w.data(), DType::F32, rows, cols});
        for (auto [r0, r1, c0, c1] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{0, 12, 0, 320},
                                      {12, 24, 0, 320},
                                      {0, 24, 0, 160},
                                      {0, 24, 160, 320},
                                      {5, 19, 64, 256}}) {
            std::vector<float> part;
            for (int64_t o = r0; o < r1; ++o) part.insert(part.end(), &w[o * cols + c0], &w[o * cols + c1]);
            const QuantTensor direct = quantize(f, WeightView{part.data(), DType::F32, r1 - r0, c1 - c0});
            const QuantTensor sliced = quant_slice(whole.view(), r0, r1, c0, c1);
            EXPECT_EQ(direct.qs, sliced.qs) << quant_format_name(f) << " " << r0 << " " << c0;
            EXPECT_EQ(direct.scales, sliced.scales) << quant_format_name(f) << " " << r0 << " " << c0;
        }
    }
}

TEST(Quant, RefusesWhatItCannotRepresent) {
    std::vector<float> w(2 * 48, 0.5f);
    EXPECT_THROW(quantize(QuantFormat::Q8, WeightView{w.data(), DType::F32, 2, 48}), Error);  // 48 % 32
    std::vector<float> ok(2 * 64, 0.5f);
    const QuantTensor q = quantize(QuantFormat::Q4, WeightView{ok.data(), DType::F32, 2, 64});
    EXPECT_THROW(quant_slice(q.view(), 0, 2, 16, 64), Error);  // splits a block
    EXPECT_THROW(quant_slice(q.view(), 0, 3, 0, 64), Error);   // out of range
    ok[70] = NAN;
    EXPECT_THROW(quantize(QuantFormat::Q8, WeightView{ok.data(), DType::F32, 2, 64}), Error);
    ok[70] = 5e6f;  // 5e6 / 127 fits fp16 (max 65504), 5e6 / 8 does not
    EXPECT_NO_THROW(quantize(QuantFormat::Q8, WeightView{ok.data(), DType::F32, 2, 64}));
    EXPECT_THROW(quantize(QuantFormat::Q4, WeightView{ok.data(), DType::F32, 2, 64}), Error);
    std::vector<uint16_t> h(64);
    EXPECT_THROW(quantize(QuantFormat::Q8, WeightView{h.data(), DType::F16, 1, 64}), Error);
}

// The error of each weight is at most half a step, except the Q4 value clamped from +8 to +7.
TEST(Quant, DequantizedWithinHalfAStep) {
    const int64_t rows = 9, cols = 256;
    const std::vector<float> w = random_floats(size_t(rows * cols), 23, -4.0f, 4.0f);
    for (QuantFormat f : k_formats) {
        const QuantTensor q = quantize(f, WeightView{w.data(), DType::F32, rows, cols});
        std::vector<float> dq(w.size());
        dequantize(q.view(), dq.data());
        for (int64_t i = 0; i < rows * cols; ++i) {
            const float d = std::fabs(f16_to_f32(q.scales[size_t(i / 32)]));
            const float bound = (f == QuantFormat::Q4 ? d : 0.5f * d) * (1.0f + 1e-3f);
            ASSERT_LE(std::fabs(dq[size_t(i)] - w[size_t(i)]), bound) << quant_format_name(f) << " i=" << i;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The linear kernels.

struct QProblem {
    int64_t n, rows, cols;
    std::vector<float> x, bias;
    QuantTensor q;
    std::vector<float> dq;  // dequantized [rows, cols]

    QProblem(QuantFormat f, int64_t n_, int64_t rows_, int64_t cols_, uint32_t seed)
        : n(n_),
          rows(rows_),
          cols(cols_),
          x(random_floats(size_t(n_ * cols_), seed, -2.0f, 2.0f)),
          bias(random_floats(size_t(rows_), seed + 2)) {
        const std::vector<float> w = random_floats(size_t(rows * cols), seed + 1);
        q = quantize(f, WeightView{w.data(), DType::F32, rows, cols});
        dq.resize(w.size());
        dequantize(q.view(), dq.data());
    }
    std::vector<float> run(Isa isa, QuantActivations m, bool with_bias, int64_t t0 = 0,
                           int64_t nt = -1) const {
        if (nt < 0) nt = n;
        std::vector<float> y(size_t(nt * rows), NAN);
        linear_quant(isa, y.data(), x.data() + t0 * cols, nt, q.view(), with_bias ? bias.data() : nullptr, m);
        return y;
    }
    /// The Int8 mode at avx512 on the Dot16-packed weight (quant_packs_for_int8_dot must hold).
    std::vector<float> run_packed(bool with_bias, int64_t t0 = 0, int64_t nt = -1) const {
        if (nt < 0) nt = n;
        const QuantTensor packed = pack_for_int8_dot(q);
        std::vector<float> y(size_t(nt * rows), NAN);
        linear_quant(Isa::Avx512, y.data(), x.data() + t0 * cols, nt, packed.view(), with_bias ? bias.data() : nullptr,
                     QuantActivations::Int8);
        return y;
    }
    std::vector<float> run_fp32(Isa isa, bool with_bias) const {
        std::vector<float> y(size_t(n * rows), NAN);
        linear(isa, y.data(), x.data(), n, WeightView{dq.data(), DType::F32, rows, cols},
               with_bias ? bias.data() : nullptr);
        return y;
    }
};

/// Double-precision value of what a mode computes: x (or its int8 quantization) times the
/// dequantized weights.
void expect_close_to_exact(const QProblem& p, QuantActivations m, const std::vector<float>& y, bool with_bias,
                           const std::string& what) {
    std::vector<float> xe = p.x;
    if (m == QuantActivations::Int8) {
        const QuantizedActivations a = quantize_activations(p.x.data(), p.n, p.cols);
        for (int64_t i = 0; i < p.n * p.cols; ++i)
            xe[size_t(i)] = float(a.q[size_t(i)]) * a.d[size_t(i / 32)];
    }
    for (int64_t t = 0; t < p.n; ++t) {
        for (int64_t o = 0; o < p.rows; ++o) {
            double exact = with_bias ? p.bias[size_t(o)] : 0.0, mag = std::fabs(exact);
            for (int64_t i = 0; i < p.cols; ++i) {
                const double prod = double(xe[size_t(t * p.cols + i)]) * double(p.dq[size_t(o * p.cols + i)]);
                exact += prod;
                mag += std::fabs(prod);
            }
            ASSERT_NEAR(y[size_t(t * p.rows + o)], exact, 1e-5 * mag + 1e-30)
                << what << " t=" << t << " o=" << o << " n=" << p.n << " rows=" << p.rows
                << " cols=" << p.cols;
        }
    }
}

TEST(QuantLinear, F32ModeIsTheLevelsFp32LinearOnDequantizedWeights) {
    ThreadCount tc(1);
    uint32_t seed = 1;
    for (QuantFormat f : k_formats) {
        // 13 and 25 tokens: the F32 mode widens weight blocks to fp32 for the fp32 tile from two
        // of that tile's token groups on for int4 (8 tokens at avx2, 12 at avx512), four for int8.
        for (int64_t n : {1, 3, 6, 9, 13, 25}) {
            for (int64_t rows : {1, 5, 18}) {
                for (int64_t cols : {32, 96, 288}) {
                    const QProblem p(f, n, rows, cols, seed += 3);
                    const bool with_bias = seed % 2 == 0;
                    for (Isa isa : levels_to_test()) {
                        const std::vector<float> y = p.run(isa, QuantActivations::F32, with_bias);
                        ASSERT_TRUE(bitwise_equal(y, p.run_fp32(isa, with_bias)))
                            << label(isa, f, QuantActivations::F32) << " n=" << n << " rows=" << rows
                            << " cols=" << cols;
                        expect_close_to_exact(p, QuantActivations::F32, y, with_bias,
                                              label(isa, f, QuantActivations::F32));
                    }
                }
            }
        }
    }
}

TEST(QuantLinear, Int8ModeEveryLevelBitwiseEqualsScalar) {
    ThreadCount tc(1);
    uint32_t seed = 500;
    for (QuantFormat f : k_formats) {
        // Block counts 1..9 and 80 cover the partial and full groups of 8 blocks.
        for (int64_t n : {1, 2, 7}) {
            for (int64_t rows : {1, 6, 17}) {
                for (int64_t cols : {32, 224, 256, 288, 2560}) {
                    const QProblem p(f, n, rows, cols, seed += 3);
                    const bool with_bias = seed % 2 == 0;
                    const std::vector<float> ref = p.run(Isa::Scalar, QuantActivations::Int8, with_bias);
                    expect_close_to_exact(p, QuantActivations::Int8, ref, with_bias,
                                          label(Isa::Scalar, f, QuantActivations::Int8));
                    for (Isa isa : levels_to_test()) {
                        ASSERT_TRUE(bitwise_equal(p.run(isa, QuantActivations::Int8, with_bias), ref))
                            << label(isa, f, QuantActivations::Int8) << (quant_uses_vnni(isa) ? " vnni" : "")
                            << " n=" << n << " rows=" << rows << " cols=" << cols;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Dot16 layout of the int8-activation kernel at avx512 with AVX512-VNNI.

bool dot16_runs_here() { return quant_packs_for_int8_dot(Isa::Avx512); }
#define SKIP_WITHOUT_DOT16() \
    if (!dot16_runs_here()) GTEST_SKIP() << "this CPU lacks AVX-512 with AVX512-VNNI (the Dot16 kernel's level)"

TEST(QuantDot16, PackingFollowsTheSpecifiedLayout) {
    const int64_t rows = 3, cols = 32 * 19;  // 19 blocks: one full group and one padded group
    const std::vector<float> w = random_floats(size_t(rows * cols), 41, -3.0f, 3.0f);
    for (QuantFormat f : k_formats) {
        const QuantTensor q = quantize(f, WeightView{w.data(), DType::F32, rows, cols});
        const QuantTensor p = pack_for_int8_dot(q);
        const int64_t nb = cols / 32, nbp = quant_dot16_blocks(cols), bb = quant_block_bytes(f);
        ASSERT_EQ(nbp, 32);
        ASSERT_EQ(p.layout, QuantLayout::Dot16);
        ASSERT_EQ(p.qs.size(), size_t(rows * nbp * bb));
        ASSERT_EQ(p.scales.size(), size_t(rows * nbp));
        // What the start-up sizing counts for this layout.
        EXPECT_EQ(int64_t(p.qs.size() + 2 * p.scales.size()), quant_tensor_bytes(f, rows, cols, QuantLayout::Dot16));
        EXPECT_EQ(int64_t(q.qs.size() + 2 * q.scales.size()), quant_tensor_bytes(f, rows, cols));
        for (int64_t o = 0; o < rows; ++o) {
            for (int64_t b = 0; b < nbp; ++b) {
                const int64_t g = b / 16, l = b % 16;
                EXPECT_EQ(p.scales[size_t(o * nbp + b)], b < nb ? q.scales[size_t(o * nb + b)] : 0);
                for (int64_t k = 0; k < bb; ++k) {
                    const uint8_t got = p.qs[size_t((o * nbp + g * 16) * bb + (k / 4) * 64 + l * 4 + k % 4)];
                    uint8_t want = f == QuantFormat::Q8 ? 128 : 0x88;  // q = 0 in the padding
                    if (b < nb) {
                        const uint8_t v = q.qs[size_t((o * nb + b) * bb + k)];
                        want = f == QuantFormat::Q8 ? uint8_t(int(int8_t(v)) + 128) : v;
                    }
                    ASSERT_EQ(got, want) << quant_format_name(f) << " o=" << o << " b=" << b << " k=" << k;
                }
            }
        }
        EXPECT_THROW(pack_for_int8_dot(p), Error);
        std::vector<float> out(size_t(rows * cols));
        EXPECT_THROW(dequantize(p.view(), out.data()), Error);
        EXPECT_THROW(quant_slice(p.view(), 0, 1, 0, 32), Error);
    }
}

TEST(QuantDot16, OnlyTheInt8ModeAtAvx512WithVnniKeepsThePackedLayout) {
    EXPECT_EQ(quant_weight_layout(QuantActivations::Int8, Isa::Avx512),
              dot16_runs_here() ? QuantLayout::Dot16 : QuantLayout::Rows);
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
        EXPECT_EQ(quant_weight_layout(QuantActivations::F32, isa), QuantLayout::Rows) << isa_name(isa);
    }
    EXPECT_EQ(quant_weight_layout(QuantActivations::Int8, Isa::Avx2), QuantLayout::Rows);
    EXPECT_EQ(quant_weight_layout(QuantActivations::Int8, Isa::Scalar), QuantLayout::Rows);
}

// A packed weight is read only where it was packed for: the weight-only mode and the other levels
// refuse it with a message instead of reading the bytes in the wrong layout.
TEST(QuantDot16, OtherModesAndLevelsRefuseAPackedWeight) {
    const QProblem p(QuantFormat::Q8, 2, 3, 64, 5);
    const QuantTensor packed = pack_for_int8_dot(p.q);
    std::vector<float> y(6);
    for (Isa isa : levels_to_test()) {
        EXPECT_THROW(linear_quant(isa, y.data(), p.x.data(), 2, packed.view(), nullptr, QuantActivations::F32), Error)
            << isa_name(isa);
        if (isa != Isa::Avx512 || !dot16_runs_here()) {
            EXPECT_THROW(linear_quant(isa, y.data(), p.x.data(), 2, packed.view(), nullptr, QuantActivations::Int8),
                         Error)
                << isa_name(isa);
        }
    }
}

TEST(QuantDot16, BitwiseEqualsTheScalarInt8Mode) {
    SKIP_WITHOUT_DOT16();
    uint32_t seed = 900;
    for (int threads : {1, 2}) {
        ThreadCount tc(threads);
        for (QuantFormat f : k_formats) {
            // Block counts 1, 7, 8, 9, 16, 17, 40 and 80: partial halves, full and padded groups.
            for (int64_t n : {1, 2, 3, 4, 7, 16}) {
                for (int64_t rows : {1, 5, 17}) {
                    for (int64_t cols : {32, 224, 256, 288, 512, 544, 1280, 2560}) {
                        const QProblem p(f, n, rows, cols, seed += 3);
                        const bool with_bias = seed % 2 == 0;
                        ASSERT_TRUE(bitwise_equal(p.run_packed(with_bias),
                                                  p.run(Isa::Scalar, QuantActivations::Int8, with_bias)))
                            << quant_format_name(f) << " n=" << n << " rows=" << rows << " cols=" << cols
                            << " threads=" << threads;
                    }
                }
            }
        }
    }
}

// The Dot16 path's activation pass at each level against the portable quantizer and the layout
// change, every buffer bitwise: halves and their neighbours at several scales, zero, denormal, huge
// and non-finite blocks, random rows; one and two threads (the pass runs in parallel from 64k values).
TEST(QuantDot16, ActivationPassEqualsThePortableQuantizerBitwise) {
    const float edges[] = {127.0f,  -127.0f,  0.5f,     -0.5f,     1.5f,        -1.5f,        2.5f,        -2.5f,
                           126.5f,  -126.5f,  0.49999997f, -0.49999997f, 0.50000006f, -0.50000006f, 1.4999999f,
                           -1.4999999f, 1e-8f, -1e-8f, 0.0f,     -0.0f,     63.5f,       -63.5f,       126.49999f,
                           -126.49999f, 3.0f,   -3.0f,    100.25f,  -100.75f,  7.5f,        -8.5f,        0.75f,
                           -0.25f};
    static_assert(std::size(edges) == 32);
    const float specials[] = {0.0f, 1e-45f, 3e-39f, 3.4e38f, 3.40282347e38f, INFINITY, -INFINITY, NAN};
    for (int threads : {1, 2}) {
        ThreadCount tc(threads);
        for (int64_t n : {1, 3, 8}) {
            for (int64_t cols : {32, 224, 512, 544, 2560, 10240}) {
                std::vector<float> x = random_floats(size_t(n * cols), uint32_t(n * 7919 + cols), -4.0f, 4.0f);
                const int64_t nb = n * cols / 32;
                for (int64_t b = 0; b < nb; ++b) {
                    float* blk = x.data() + b * 32;
                    const float scale = std::ldexp(1.0f, int(b % 41) - 20);
                    switch (b % 5) {
                        case 0:  // halves at a power-of-two scale: x / d lands on them exactly
                            for (int i = 0; i < 32; ++i) blk[i] = edges[i] * scale;
                            break;
                        case 1:  // one special value among ordinary ones
                            blk[b % 32] = specials[size_t(b / 5) % std::size(specials)];
                            break;
                        case 2:  // a block of zeros (d = 0), signed
                            for (int i = 0; i < 32; ++i) blk[i] = i % 2 ? -0.0f : 0.0f;
                            break;
                        default:
                            break;
                    }
                }
                for (QuantFormat f : k_formats) {
                    const Dot16Activations want = quantize_activations_dot16(Isa::Scalar, x.data(), n, cols, f);
                    for (Isa isa : levels_to_test()) {
                        const Dot16Activations got = quantize_activations_dot16(isa, x.data(), n, cols, f);
                        const std::string what = isa_label(isa) + " " + std::string(quant_format_name(f)) +
                                                 " n=" + std::to_string(n) + " cols=" + std::to_string(cols) +
                                                 " threads=" + std::to_string(threads);
                        ASSERT_EQ(got.q.size(), want.q.size()) << what;
                        ASSERT_EQ(got.d.size(), want.d.size()) << what;
                        EXPECT_EQ(std::memcmp(got.q.data(), want.q.data(), want.q.size()), 0) << what;
                        EXPECT_EQ(std::memcmp(got.d.data(), want.d.data(), want.d.size() * sizeof(float)), 0) << what;
                        EXPECT_EQ(std::memcmp(got.offset_sum.data(), want.offset_sum.data(),
                                              want.offset_sum.size() * sizeof(int32_t)),
                                  0)
                            << what;
                    }
                }
            }
        }
    }
}

TEST(QuantDot16, BatchInvarianceAndNonFiniteInput) {
    SKIP_WITHOUT_DOT16();
    for (QuantFormat f : k_formats) {
        const int64_t n = 40, rows = 19, cols = 3008;  // 94 blocks: crosses the token super-blocks
        const QProblem p(f, n, rows, cols, 11);
        const std::vector<float> all = p.run_packed(true);
        for (int64_t t = 0; t < n; ++t) {
            const std::vector<float> one = p.run_packed(true, t, 1);
            ASSERT_EQ(std::memcmp(one.data(), all.data() + t * rows, size_t(rows) * sizeof(float)), 0)
                << quant_format_name(f) << " token " << t;
        }
        QProblem bad(f, 2, 3, 64, 9);
        bad.x[40] = INFINITY;  // token 0, block 1
        const std::vector<float> y = bad.run_packed(false);
        for (int64_t o = 0; o < 3; ++o) {
            EXPECT_TRUE(std::isnan(y[size_t(o)])) << quant_format_name(f);
            EXPECT_TRUE(std::isfinite(y[size_t(3 + o)])) << quant_format_name(f);
        }
    }
}

TEST(QuantLinear, LongRowsAndLargeValues) {
    for (QuantFormat f : k_formats) {
        const QProblem p(f, 5, 7, 10240, 77);
        for (QuantActivations m : k_modes) {
            for (Isa isa : levels_to_test())
                expect_close_to_exact(p, m, p.run(isa, m, true), true, label(isa, f, m));
        }
    }
}

TEST(QuantLinear, NonFiniteActivationGivesNaNInInt8Mode) {
    QProblem p(QuantFormat::Q8, 2, 3, 64, 9);
    p.x[40] = INFINITY;  // token 0, block 1
    for (Isa isa : levels_to_test()) {
        const std::vector<float> y = p.run(isa, QuantActivations::Int8, false);
        for (int64_t o = 0; o < 3; ++o) {
            EXPECT_TRUE(std::isnan(y[size_t(o)])) << isa_name(isa);
            EXPECT_TRUE(std::isfinite(y[size_t(3 + o)])) << isa_name(isa);
        }
    }
}

// The contract: a token's output does not depend on n or on the batch's other tokens.
TEST(QuantLinear, BatchInvarianceBitwise) {
    for (QuantFormat f : k_formats) {
        // 40 tokens x 3008 columns crosses the token super-blocks of both modes; 70 x 6016 those of
        // the F32 mode's widened path (30 tokens at avx512, 16 at avx2).
        for (auto [n, rows, cols] :
             {std::tuple<int64_t, int64_t, int64_t>{8, 37, 288}, {40, 19, 3008}, {70, 9, 6016}}) {
            const QProblem p(f, n, rows, cols, 7 + uint32_t(cols));
            for (QuantActivations m : k_modes) {
                for (Isa isa : levels_to_test()) {
                    const std::vector<float> all = p.run(isa, m, true);
                    for (int64_t t = 0; t < n; ++t) {
                        const std::vector<float> one = p.run(isa, m, true, t, 1);
                        ASSERT_EQ(
                            std::memcmp(one.data(), all.data() + t * rows, size_t(rows) * sizeof(float)), 0)
                            << label(isa, f, m) << " token " << t << " of " << n;
                    }
                    const int64_t t0 = 1, nt = n - 2;
                    const std::vector<float> mid = p.run(isa, m, true, t0, nt);
                    ASSERT_EQ(
                        std::memcmp(mid.data(), all.data() + t0 * rows, size_t(nt * rows) * sizeof(float)), 0)
                        << label(isa, f, m);
                }
            }
        }
    }
}

TEST(QuantLinear, ThreadCountInvarianceBitwise) {
    for (QuantFormat f : k_formats) {
        for (int64_t n : {11, 29}) {  // 29: the F32 mode's widened path at every level
            const QProblem p(f, n, 133, 512, 99);
            for (QuantActivations m : k_modes) {
                for (Isa isa : levels_to_test()) {
                    std::vector<float> one, two, three;
                    {
                        ThreadCount tc(1);
                        one = p.run(isa, m, true);
                    }
                    {
                        ThreadCount tc(2);
                        two = p.run(isa, m, true);
                    }
                    {
                        ThreadCount tc(3);
                        three = p.run(isa, m, true);
                    }
                    EXPECT_TRUE(bitwise_equal(one, two)) << label(isa, f, m) << " n=" << n;
                    EXPECT_TRUE(bitwise_equal(one, three)) << label(isa, f, m) << " n=" << n;
                }
            }
        }
    }
}

TEST(QuantLinear, RejectsBadShapes) {
    std::vector<uint8_t> qs(64);
    std::vector<uint16_t> sc(2);
    std::vector<float> x(48), y(2);
    const QuantWeightView bad{QuantFormat::Q8, qs.data(), sc.data(), 1, 48};
    EXPECT_THROW(linear_quant(Isa::Scalar, y.data(), x.data(), 1, bad, nullptr, QuantActivations::F32),
                 Error);
    const QuantWeightView good{QuantFormat::Q8, qs.data(), sc.data(), 2, 32};
    EXPECT_THROW(linear_quant(Isa::Scalar, y.data(), x.data(), -1, good, nullptr, QuantActivations::Int8),
                 Error);
}

}  // namespace
