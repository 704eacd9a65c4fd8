// Every CUDA kernel against the CPU reference (kernels/cpu, scalar level) on bf16-rounded inputs.
// Tolerances: fp32 outputs differ from the CPU only by summation order (a few ulp of the sum of
// magnitudes); bf16 outputs may also round the other way (one bf16 ulp, 2^-8 relative).
#include <gtest/gtest.h>

#include <numeric>

#include "kernels/cpu/kernels.h"
#include "tests/cuda/cuda_test_util.h"

namespace phi::kernels::cuda {
namespace {

namespace kc = kernels::cpu;
using namespace test;
constexpr kc::Isa k_ref = kc::Isa::Scalar;
constexpr double k_bf16_rel = 1.0 / 128;  // one bf16 ulp is at most 2^-7 relative

TEST(CudaDevice, CountIsZeroOrReasonIsEmpty) {
    const int n = cuda_device_count();  // never throws, with or without a driver
    EXPECT_GE(n, 0);
    if (n == 0) {
        EXPECT_FALSE(cuda_unavailable_reason().empty());
    } else {
        EXPECT_TRUE(cuda_unavailable_reason().empty());
        std::printf("GPU: %s\n", cuda_device_description(0).c_str());
    }
}

TEST(CudaDevice, ErrorsNameTheCall) {
    PHI_REQUIRE_GPU();
    try {
        DeviceBuffer b(16);
        b.upload(nullptr, 32);  // overflow: checked before the copy
        FAIL() << "no error";
    } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("overflows"), std::string::npos) << e.what();
    }
    try {
        CUDA_CHECK(cudaSetDevice(1 << 20));
        FAIL() << "no error";
    } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("cudaSetDevice"), std::string::npos) << e.what();
    }
}

struct LinearShape {
    int64_t n, m, k;
};

TEST(CudaKernels, LinearMatchesCpuForF32AndBf16Outputs) {
    PHI_REQUIRE_GPU();
    Stream stream;
    CublasHandle blas(stream);
    for (const LinearShape sh :
         {LinearShape{1, 96, 64}, LinearShape{7, 130, 72}, LinearShape{33, 256, 320}}) {
        for (bool with_bias : {false, true}) {
            std::vector<float> x = random_floats(size_t(sh.n * sh.k), 1),
                               w = random_floats(size_t(sh.m * sh.k), 2);
            std::vector<float> bias = random_floats(size_t(sh.m), 3);
            const auto xb = round_bf16(x), wb = round_bf16(w);
            round_bf16(bias);  // bf16-exact biases (as loaded with bf16 weights)
            std::vector<float> want(static_cast<size_t>(sh.n * sh.m));
            kc::linear(k_ref, want.data(), x.data(), sh.n, kc::WeightView{wb.data(), DType::BF16, sh.m, sh.k},
                       with_bias ? bias.data() : nullptr);
            DeviceBuffer dx = to_device(xb), dw = to_device(wb), db = to_device(bias);
            DeviceBuffer y32(want.size() * 4), y16(want.size() * 2);
            const float* bp = with_bias ? db.as<float>() : nullptr;
            linear(blas, y32.data(), DType::F32, dx.as<bf16>(), dw.as<bf16>(), bp, sh.n, sh.m, sh.k);
            linear(blas, y16.data(), DType::BF16, dx.as<bf16>(), dw.as<bf16>(), bp, sh.n, sh.m, sh.k);
            stream.synchronize();
            // |x|, |w| <= 1: the sum of magnitudes is at most k.
            EXPECT_CLOSE(to_host<float>(y32, want.size()), want, 1e-6 * double(sh.k), 0.0);
            EXPECT_CLOSE(widen_bf16(to_host<uint16_t>(y16, want.size())), want, 1e-6 * double(sh.k),
                         k_bf16_rel);
        }
    }
}

TEST(CudaKernels, LinearF32MatchesCpu) {
    PHI_REQUIRE_GPU();
    Stream stream;
    CublasHandle blas(stream);
    const int64_t n = 5, m = 16, k = 200;
    std::vector<float> x = random_floats(size_t(n * k), 4), w = random_floats(size_t(m * k), 5),
                       want(size_t(n * m));
    kc::linear(k_ref, want.data(), x.data(), n, kc::WeightView{w.data(), DType::F32, m, k}, nullptr);
    DeviceBuffer dx = to_device(x), dw = to_device(w), dy(want.size() * 4);
    linear_f32(blas, dy.as<float>(), dx.as<float>(), dw.as<float>(), n, m, k);
    stream.synchronize();
    EXPECT_CLOSE(to_host<float>(dy, want.size()), want, 1e-6 * double(k),
                 0.0);  // no TF32 (that would be 1e-3)
}

TEST(CudaKernels, EmbeddingMatchesCpuIncludingOtherRanksIds) {
    PHI_REQUIRE_GPU();
    const int64_t rows = 50, d = 72, offset = 100;
    std::vector<float> e = random_floats(size_t(rows * d), 6);
    const auto eb = round_bf16(e);
    const std::vector<int32_t> ids = {100, 149, 99, 150, 120, 0, 125};
    std::vector<float> want(ids.size() * size_t(d));
    kc::embedding(want.data(), kc::WeightView{eb.data(), DType::BF16, rows, d}, ids.data(),
                  int64_t(ids.size()), offset);
    Stream s;
    DeviceBuffer de = to_device(eb), di = to_device(ids), out(want.size() * 4);
    embedding(out.as<float>(), de.as<bf16>(), rows, d, di.as<int32_t>(), int64_t(ids.size()), offset, s);
    s.synchronize();
    EXPECT_EQ(to_host<float>(out, want.size()), want);
}

TEST(CudaKernels, NormsMatchCpu) {
    PHI_REQUIRE_GPU();
    Stream s;
    for (int64_t d : {64, 3072, 5000}) {
        const int64_t n = 6;
        std::vector<float> x = random_floats(size_t(n * d), 7, -3.0f, 3.0f), w = random_floats(size_t(d), 8),
                           b = random_floats(size_t(d), 9);
        std::vector<float> ln(x.size()), rms(x.size());
        kc::layer_norm(k_ref, ln.data(), x.data(), w.data(), b.data(), n, d, 1e-5f);
        kc::rms_norm(k_ref, rms.data(), x.data(), w.data(), n, d, 1e-5f);
        DeviceBuffer dx = to_device(x), dw = to_device(w), db = to_device(b);
        DeviceBuffer y32(x.size() * 4), y16(x.size() * 2), r32(x.size() * 4), r16(x.size() * 2);
        layer_norm(y32.data(), DType::F32, dx.as<float>(), dw.as<float>(), db.as<float>(), n, d, 1e-5f, s);
        layer_norm(y16.data(), DType::BF16, dx.as<float>(), dw.as<float>(), db.as<float>(), n, d, 1e-5f, s);
        rms_norm(r32.data(), DType::F32, dx.as<float>(), dw.as<float>(), n, d, 1e-5f, s);
        rms_norm(r16.data(), DType::BF16, dx.as<float>(), dw.as<float>(), n, d, 1e-5f, s);
        s.synchronize();
        EXPECT_CLOSE(to_host<float>(y32, x.size()), ln, 1e-5, 1e-5);
        EXPECT_CLOSE(widen_bf16(to_host<uint16_t>(y16, x.size())), ln, 1e-5, k_bf16_rel);
        EXPECT_CLOSE(to_host<float>(r32, x.size()), rms, 1e-5, 1e-5);
        EXPECT_CLOSE(widen_bf16(to_host<uint16_t>(r16, x.size())), rms, 1e-5, k_bf16_rel);
    }
}

TEST(CudaKernels, RopeWithPerTokenTablesMatchesCpu) {
    PHI_REQUIRE_GPU();
    // Partial rotary (Phi-2: 32 of 80 dims), two tables (LongRoPE short / long) with their scales,
    // q rows inside a wider qkv row (stride).
    const int64_t n = 9, heads = 3, hd = 80, rot = 32, half = rot / 2, stride = heads * hd + 40;
    std::vector<float> x = random_floats(size_t(n * stride), 10);
    std::vector<float> inv(static_cast<size_t>(2 * half));
    for (int64_t i = 0; i < half; ++i) {
        inv[size_t(i)] = 1.0f / std::pow(10000.0f, float(2 * i) / float(rot));
        inv[size_t(half + i)] = inv[size_t(i)] / (1.0f + 0.5f * float(i));
    }
    const std::vector<float> scale = {1.0f, 1.19f};
    const std::vector<int32_t> pos = {0, 1, 2, 17, 100, 1000, 4095, 4096, 32000};
    const std::vector<int32_t> table = {0, 0, 1, 0, 1, 1, 0, 1, 1};
    std::vector<float> want = x;
    for (int64_t t = 0; t < n; ++t)
        kc::rope(k_ref, want.data() + t * stride, &pos[size_t(t)], 1, heads, hd, rot,
                 inv.data() + table[size_t(t)] * half, scale[size_t(table[size_t(t)])]);
    Stream s;
    DeviceBuffer dx = to_device(x), dp = to_device(pos), dt = to_device(table), di = to_device(inv),
                 ds = to_device(scale);
    rope(dx.as<float>(), stride, dp.as<int32_t>(), dt.as<int32_t>(), di.as<float>(), ds.as<float>(), n, heads,
         hd, rot, s);
    s.synchronize();
    EXPECT_CLOSE(to_host<float>(dx, x.size()), want, 2e-6, 0.0);  // cos/sin within an ulp or two of libm
}

TEST(CudaKernels, ActivationsAndAddsMatchCpu) {
    PHI_REQUIRE_GPU();
    Stream s;
    const int64_t n = 5, d = 1000;
    std::vector<float> x = random_floats(size_t(n * 2 * d), 11, -6.0f, 6.0f);
    std::vector<float> gelu = x, silu(size_t(n * d));
    kc::gelu_new(k_ref, gelu.data(), int64_t(gelu.size()));
    kc::silu_mul(k_ref, silu.data(), x.data(), n, d);
    DeviceBuffer dx = to_device(x), g32(x.size() * 4), g16(x.size() * 2), s32(silu.size() * 4),
                 s16(silu.size() * 2);
    gelu_new(g32.data(), DType::F32, dx.as<float>(), int64_t(x.size()), s);
    gelu_new(g16.data(), DType::BF16, dx.as<float>(), int64_t(x.size()), s);
    silu_mul(s32.data(), DType::F32, dx.as<float>(), n, d, s);
    silu_mul(s16.data(), DType::BF16, dx.as<float>(), n, d, s);

    std::vector<float> y = random_floats(size_t(n * d), 12), b = random_floats(size_t(d), 13);
    std::vector<float> add = y, bias = y;
    kc::add_inplace(k_ref, add.data(), x.data(), n * d);
    for (int64_t t = 0; t < n; ++t) kc::add_inplace(k_ref, bias.data() + t * d, b.data(), d);
    DeviceBuffer dy1 = to_device(y), dy2 = to_device(y), db = to_device(b);
    add_inplace(dy1.as<float>(), dx.as<float>(), n * d, s);
    add_bias_rows(dy2.as<float>(), db.as<float>(), n, d, s);
    DeviceBuffer c16(y.size() * 2), br(y.size() * 4);
    convert_to_bf16(c16.as<bf16>(), dy1.as<float>(), n * d, s);
    broadcast_rows(br.data(), DType::F32, db.as<float>(), n, d, s);
    s.synchronize();

    EXPECT_CLOSE(to_host<float>(g32, x.size()), gelu, 1e-6, 1e-6);
    EXPECT_CLOSE(widen_bf16(to_host<uint16_t>(g16, x.size())), gelu, 1e-6, k_bf16_rel);
    EXPECT_CLOSE(to_host<float>(s32, silu.size()), silu, 1e-6, 1e-6);
    EXPECT_CLOSE(widen_bf16(to_host<uint16_t>(s16, silu.size())), silu, 1e-6, k_bf16_rel);
    EXPECT_EQ(to_host<float>(dy1, add.size()), add);  // one fp32 add: exact
    EXPECT_EQ(to_host<float>(dy2, bias.size()), bias);
    std::vector<uint16_t> want16(add.size());
    for (size_t i = 0; i < add.size(); ++i) want16[i] = f32_to_bf16(add[i]);
    EXPECT_EQ(to_host<uint16_t>(c16, add.size()), want16);  // round to nearest even, as torch
    std::vector<float> want_br(static_cast<size_t>(n * d));
    for (int64_t i = 0; i < n * d; ++i) want_br[size_t(i)] = b[size_t(i % d)];
    EXPECT_EQ(to_host<float>(br, want_br.size()), want_br);
}

TEST(CudaKernels, GatherRows) {
    PHI_REQUIRE_GPU();
    Stream s;
    const int64_t d = 33;
    std::vector<float> x = random_floats(size_t(10 * d), 14);
    const std::vector<int32_t> rows = {3, 3, 0, 9, 5};
    std::vector<float> want;
    for (int32_t r : rows) want.insert(want.end(), x.begin() + r * d, x.begin() + (r + 1) * d);
    DeviceBuffer dx = to_device(x), dr = to_device(rows), out(want.size() * 4);
    gather_rows(out.as<float>(), dx.as<float>(), dr.as<int32_t>(), int64_t(rows.size()), d, s);
    s.synchronize();
    EXPECT_EQ(to_host<float>(out, want.size()), want);
}

// Paged attention: three sequences in one batch (a prefill chunk after a cached prefix, a fresh
// prefill longer than one key chunk, a decode), scattered blocks, GQA, with and without a window.
TEST(CudaKernels, PagedAttentionMatchesCpuForPrefillAndDecode) {
    PHI_REQUIRE_GPU();
    const int64_t bs = 16, nkv = 2, hd = 96, n_heads = 6, num_blocks = 64;
    const std::vector<int32_t> q_to_kv = {0, 0, 0, 1, 1, 1};
    struct Seq {
        int64_t start, n;
        std::vector<int32_t> table;
    };
    std::mt19937 gen(15);
    std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), gen);
    std::vector<Seq> seqs = {{40, 9, {}}, {0, 300, {}}, {77, 1, {}}};
    int64_t used = 0;
    for (Seq& q : seqs) {
        const int64_t nb = (q.start + q.n + bs - 1) / bs;
        q.table.assign(perm.begin() + used, perm.begin() + used + nb);
        used += nb;
    }
    ASSERT_LE(used, num_blocks);
    const int64_t row = nkv * hd, cache_elems = num_blocks * bs * row;
    for (int64_t window : {int64_t(0), int64_t(50)}) {
        // Every position's K/V (prefix and new), bf16-rounded.
        std::vector<float> kc32(static_cast<size_t>(cache_elems), 0.0f), vc32(size_t(cache_elems), 0.0f);
        Stream s;
        DeviceBuffer kc16(static_cast<size_t>(cache_elems) * 2), vc16(size_t(cache_elems) * 2);
        CUDA_CHECK(cudaMemset(kc16.data(), 0, kc16.bytes()));
        CUDA_CHECK(cudaMemset(vc16.data(), 0, vc16.bytes()));
        const kc::KvLayout lay{num_blocks, bs, nkv, hd};
        const CacheLayout glay{num_blocks, bs, nkv, hd};
        std::vector<float> q_all, want;
        std::vector<int32_t> tok_seq, tok_pos, tables(seqs.size() * 32, 0);
        std::vector<float> k_new_all, v_new_all;
        std::vector<int32_t> slots_new;
        for (size_t i = 0; i < seqs.size(); ++i) {
            const Seq& q = seqs[i];
            std::copy(q.table.begin(), q.table.end(), tables.begin() + int64_t(i) * 32);
            const int64_t total = q.start + q.n;
            std::vector<float> k = random_floats(size_t(total * row), 100 + uint32_t(i), -2.0f, 2.0f);
            std::vector<float> v = random_floats(size_t(total * row), 200 + uint32_t(i));
            round_bf16(k);
            round_bf16(v);
            kc::kv_write(kc32.data(), vc32.data(), lay, q.table.data(), 0, total, k.data(), v.data());
            // The prefix goes straight into the GPU cache; the new tokens through kv_write below.
            for (int64_t p = 0; p < total; ++p) {
                const int32_t slot = q.table[size_t(p / bs)] * int32_t(bs) + int32_t(p % bs);
                if (p < q.start) {
                    std::vector<float> kr(k.begin() + p * row, k.begin() + (p + 1) * row),
                        vr(v.begin() + p * row, v.begin() + (p + 1) * row);
                    kc16.upload(round_bf16(kr).data(), size_t(row) * 2, size_t(slot) * size_t(row) * 2);
                    vc16.upload(round_bf16(vr).data(), size_t(row) * 2, size_t(slot) * size_t(row) * 2);
                } else {
                    slots_new.push_back(slot);
                    k_new_all.insert(k_new_all.end(), k.begin() + p * row, k.begin() + (p + 1) * row);
                    v_new_all.insert(v_new_all.end(), v.begin() + p * row, v.begin() + (p + 1) * row);
                }
            }
            std::vector<float> qv = random_floats(size_t(q.n * n_heads * hd), 300 + uint32_t(i), -2.0f, 2.0f);
            std::vector<float> o(qv.size());
            kc::paged_attention(k_ref, o.data(), qv.data(), kc32.data(), vc32.data(), lay, q.table.data(),
                                q.start, q.n, n_heads, q_to_kv.data(), 1.0f / std::sqrt(float(hd)), window);
            q_all.insert(q_all.end(), qv.begin(), qv.end());
            want.insert(want.end(), o.begin(), o.end());
            for (int64_t j = 0; j < q.n; ++j) {
                tok_seq.push_back(int32_t(i));
                tok_pos.push_back(int32_t(q.start + j));
            }
        }
        const int64_t T = int64_t(tok_seq.size());
        DeviceBuffer dslots = to_device(slots_new), dk = to_device(k_new_all), dv = to_device(v_new_all);
        kv_write(kc16.as<bf16>(), vc16.as<bf16>(), glay, dslots.as<int32_t>(), dk.as<float>(), dv.as<float>(),
                 row, T, s);
        DeviceBuffer dq = to_device(q_all), dseq = to_device(tok_seq), dpos = to_device(tok_pos),
                     dtab = to_device(tables), dmap = to_device(q_to_kv), out(want.size() * 4);
        AttentionBatch batch{dseq.as<int32_t>(), dpos.as<int32_t>(), dtab.as<int32_t>(), 32, T};
        paged_attention(out.data(), DType::F32, dq.as<float>(), n_heads * hd, kc16.as<bf16>(),
                        vc16.as<bf16>(), glay, batch, n_heads, dmap.as<int32_t>(),
                        1.0f / std::sqrt(float(hd)), window, s);
        s.synchronize();
        EXPECT_CLOSE(to_host<float>(out, want.size()), want, 2e-5, 1e-4) << "window " << window;
    }
}

TEST(CudaKernels, ArgmaxMatchesCpuWithTies) {
    PHI_REQUIRE_GPU();
    const int64_t rows = 4, stride = 5000, limit = 4990;
    std::vector<float> x = random_floats(size_t(rows * stride), 16, -10.0f, 10.0f);
    x[size_t(0 * stride + 10)] = 50.0f;
    x[size_t(0 * stride + 4000)] = 50.0f;  // tie: the lower index wins
    x[size_t(1 * stride + 4995)] = 99.0f;  // beyond the limit: ignored
    x[size_t(2 * stride + 4989)] = 60.0f;
    Stream s;
    DeviceBuffer dx = to_device(x), out(size_t(rows) * 4);
    argmax(out.as<int32_t>(), dx.as<float>(), rows, stride, limit, s);
    s.synchronize();
    const auto got = to_host<int32_t>(out, size_t(rows));
    for (int64_t r = 0; r < rows; ++r) {
        int64_t best = 0;
        for (int64_t i = 1; i < limit; ++i)
            if (x[size_t(r * stride + i)] > x[size_t(r * stride + best)]) best = i;
        EXPECT_EQ(got[size_t(r)], best) << "row " << r;
    }
    EXPECT_EQ(got[0], 10);
}

// Draws at evenly spaced uniforms (j + 0.5) / M follow the inverse CDF: each kept token is drawn
// about M p_i times (within 2), every other token never.
TEST(CudaKernels, TopKTopPSamplerFollowsTheFilteredDistribution) {
    PHI_REQUIRE_GPU();
    const int64_t vocab = 300, stride = 304, M = 4000;
    std::vector<float> row = random_floats(size_t(vocab), 17, -4.0f, 4.0f);
    struct Params {
        float temp;
        int32_t k;
        float p;
    };
    for (const Params prm :
         {Params{1.0f, 0, 1.0f}, Params{0.7f, 20, 1.0f}, Params{1.3f, 0, 0.6f}, Params{0.9f, 40, 0.8f}}) {
        // Reference in double: temperature, top-k (ties kept), top-p (mass strictly above < p).
        std::vector<double> w(static_cast<size_t>(vocab));
        const double mx = *std::max_element(row.begin(), row.end());
        for (int64_t i = 0; i < vocab; ++i) w[size_t(i)] = std::exp((double(row[size_t(i)]) - mx) / prm.temp);
        std::vector<double> sorted = w;
        std::sort(sorted.rbegin(), sorted.rend());
        if (prm.k > 0)
            for (double& v : w)
                if (v < sorted[size_t(prm.k - 1)]) v = 0.0;
        if (prm.p < 1.0f) {
            const double z = std::accumulate(w.begin(), w.end(), 0.0);
            std::vector<double> keep = w;
            for (int64_t i = 0; i < vocab; ++i) {
                double above = 0.0;
                for (double u : w)
                    if (u > w[size_t(i)]) above += u;
                if (!(above < prm.p * z)) keep[size_t(i)] = 0.0;
            }
            w = keep;
        }
        const double z = std::accumulate(w.begin(), w.end(), 0.0);

        std::vector<float> logits(static_cast<size_t>(M * stride), -1.0f), temp(size_t(M), prm.temp),
            top_p(size_t(M), prm.p), uni(static_cast<size_t>(M));
        std::vector<int32_t> top_k(static_cast<size_t>(M), prm.k);
        for (int64_t j = 0; j < M; ++j) {
            std::copy(row.begin(), row.end(), logits.begin() + j * stride);
            uni[size_t(j)] = (float(j) + 0.5f) / float(M);
        }
        Stream s;
        DeviceBuffer dl = to_device(logits), dt = to_device(temp), dk = to_device(top_k),
                     dp = to_device(top_p), du = to_device(uni), out(size_t(M) * 4);
        sample_top_k_top_p(out.as<int32_t>(), dl.as<float>(), M, stride, vocab, dt.as<float>(),
                           dk.as<int32_t>(), dp.as<float>(), du.as<float>(), s);
        s.synchronize();
        std::vector<int64_t> counts(static_cast<size_t>(vocab), 0);
        for (int32_t id : to_host<int32_t>(out, size_t(M))) {
            ASSERT_GE(id, 0);
            ASSERT_LT(id, vocab);
            ++counts[size_t(id)];
        }
        for (int64_t i = 0; i < vocab; ++i) {
            const double expect = double(M) * w[size_t(i)] / z;
            EXPECT_NEAR(double(counts[size_t(i)]), expect, 2.0)
                << "token " << i << " temp " << prm.temp << " k " << prm.k << " p " << prm.p;
        }
    }
    // Temperature 0 is greedy; top-k 1 is greedy at any temperature.
    Stream s;
    std::vector<float> two(static_cast<size_t>(2 * stride), 0.0f);
    std::copy(row.begin(), row.end(), two.begin());
    std::copy(row.begin(), row.end(), two.begin() + stride);
    const int64_t best = std::max_element(row.begin(), row.end()) - row.begin();
    DeviceBuffer dl = to_device(two), dt = to_device(std::vector<float>{0.0f, 1.0f}),
                 dk = to_device(std::vector<int32_t>{0, 1}), dp = to_device(std::vector<float>{1.0f, 1.0f}),
                 du = to_device(std::vector<float>{0.99f, 0.99f}), out(8);
    sample_top_k_top_p(out.as<int32_t>(), dl.as<float>(), 2, stride, vocab, dt.as<float>(), dk.as<int32_t>(),
                       dp.as<float>(), du.as<float>(), s);
    s.synchronize();
    EXPECT_EQ(to_host<int32_t>(out, 2), (std::vector<int32_t>{int32_t(best), int32_t(best)}));
}

TEST(CudaKernels, StreamReadRuns) {
    PHI_REQUIRE_GPU();
    Stream s;
    DeviceBuffer data(static_cast<size_t>(64) << 20), sink(4);
    CUDA_CHECK(cudaMemset(data.data(), 0x5a, data.bytes()));
    CUDA_CHECK(cudaMemset(sink.data(), 0, 4));
    stream_read(data.data(), data.bytes(), sink.as<uint32_t>(), s);
    s.synchronize();
    EXPECT_EQ(to_host<uint32_t>(sink, 1)[0], 0u);
}

}  // namespace
}  // namespace phi::kernels::cuda
