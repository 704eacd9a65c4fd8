// Backend conformance (llama.cpp's test-backend-ops): every operation of the CUDA backend against
// the CPU backend (kernels/cpu/cpu_backend.h) on random shapes and data, one TEST per operation, so
// a first run on a GPU names the broken one ("CudaBackendOps.Attention: ... seed 3, T 17 ...").
// Inputs that a GPU operation reads as bf16 (GEMM inputs, K and V in the cache, weights) are
// rounded to bf16 first, so both backends see the same numbers and the tolerances measure only
// accumulation order and transcendental functions. Skips with the driver's reason without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/isa.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/cuda/cuda_test_util.h"

namespace phi::kernels {
namespace {

using cuda::test::random_floats;
using cuda::test::round_bf16;
using cuda::test::worst_ratio;

constexpr int k_seeds = 4;

/// The same tensor on both backends; the CPU one borrows `host` (kept alive here).
struct Twin {
    std::unique_ptr<std::vector<float>> host;
    std::unique_ptr<std::vector<uint16_t>> bits;  // weights: the bf16 bits both backends hold
    Buffer cpu, gpu;
};

struct Pair {
    std::unique_ptr<Backend> cpu = cpu::make_cpu_backend(cpu::choose_isa());
    std::unique_ptr<cuda::CudaBackend> gpu;
    Pair() {
        cuda::CudaBackendOptions o;
        o.max_tokens = 256;
        o.max_seqs = 8;
        o.max_blocks_per_seq = 64;
        o.use_graphs = false;
        gpu = cuda::make_cuda_backend(o);
    }

    /// fp32 activations; `bf16_exact` rounds them to bf16 first.
    Twin input(int64_t rows, int64_t cols, uint32_t seed, bool bf16_exact = false, float lo = -1.0f, float hi = 1.0f) {
        Twin t;
        t.host = std::make_unique<std::vector<float>>(random_floats(size_t(rows * cols), seed, lo, hi));
        if (bf16_exact) round_bf16(*t.host);
        t.cpu = cpu->upload_f32(t.host->data(), rows, cols);
        t.gpu = gpu->upload_f32(t.host->data(), rows, cols);
        return t;
    }
    Twin output(int64_t rows, int64_t cols) {
        Twin t;
        t.cpu = cpu->alloc(rows, cols);
        t.gpu = gpu->alloc(rows, cols);
        return t;
    }
    /// A bf16 weight [rows, cols] (both backends hold the same bits).
    Twin weight(int64_t rows, int64_t cols, uint32_t seed, float scale) {
        Twin t;
        t.host = std::make_unique<std::vector<float>>(random_floats(size_t(rows * cols), seed, -scale, scale));
        t.bits = std::make_unique<std::vector<uint16_t>>(round_bf16(*t.host));
        const HostTensor h{t.bits->data(), DType::BF16, rows, cols};
        t.cpu = cpu->upload_weight(h, WeightFormat::BF16);
        t.gpu = gpu->upload_weight(h, WeightFormat::BF16);
        return t;
    }

    std::vector<float> read_cpu(const Tensor& t) {
        std::vector<float> v(size_t(t.numel()));
        cpu->read(t, v.data());
        return v;
    }
    std::vector<float> read_gpu(const Tensor& t) {
        std::vector<float> v(size_t(t.numel()));
        gpu->read(t, v.data());
        return v;
    }
    /// Fails naming the operation and its case when the GPU result leaves the CPU's tolerance.
    void expect_same(const Twin& t, const std::string& what, double abs_tol, double rel_tol) {
        expect_same(t.cpu, t.gpu, what, abs_tol, rel_tol);
    }
    void expect_same(const Tensor& c, const Tensor& g, const std::string& what, double abs_tol, double rel_tol) {
        const std::vector<float> want = read_cpu(c), got = read_gpu(g);
        EXPECT_LE(worst_ratio(got, want, abs_tol, rel_tol), 1.0)
            << what << ": the CUDA backend differs from the CPU backend (worst error / tolerance; abs " << abs_tol
            << ", rel " << rel_tol << ")";
    }
    void begin(const StepBatch& b) {
        cpu->begin_step(b, false);
        gpu->begin_step(b, false);
    }
    void end() {
        cpu->end_step();
        gpu->end_step();
    }
};

int64_t pick(std::mt19937& g, int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(g); }

/// A step of `S` sequences with random lengths, histories and LongRoPE choices over a paged cache of
/// `blocks` blocks of `bs` (each sequence owns distinct blocks).
struct RandomStep {
    StepBatch batch;
    std::vector<std::vector<int32_t>> tables;
    RandomStep(std::mt19937& g, int64_t S, int64_t max_new, int64_t max_start, int64_t bs, int64_t vocab) {
        tables.resize(size_t(S));
        int32_t next_block = 0;
        for (int64_t s = 0; s < S; ++s) {
            StepSeq q;
            q.first_token = batch.tokens();
            q.n_tokens = pick(g, 1, max_new);
            q.start_pos = pick(g, 0, max_start);
            q.long_rope = pick(g, 0, 1) == 1;
            const int64_t nb = (q.start_pos + q.n_tokens + bs - 1) / bs;
            for (int64_t b = 0; b < nb; ++b) tables[size_t(s)].push_back(next_block++);
            q.block_table = tables[size_t(s)];
            for (int64_t i = 0; i < q.n_tokens; ++i) {
                batch.ids.push_back(int32_t(pick(g, 0, vocab - 1)));
                batch.pos.push_back(int32_t(q.start_pos + i));
                if (i == q.n_tokens - 1 || pick(g, 0, 3) == 0) batch.logit_rows.push_back(int32_t(q.first_token + i));
            }
            batch.seqs.push_back(q);
        }
    }
    int64_t blocks_used() const {
        int64_t n = 0;
        for (const auto& t : tables) n += int64_t(t.size());
        return n;
    }
};

std::string shape(const char* op, int seed, const std::string& dims) { return fmt::format("{} (seed {}, {})", op, seed, dims); }

TEST(CudaBackendOps, Linear) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t T = pick(g, 1, 40), K = pick(g, 1, 300), N = pick(g, 1, 300);
        Pair p;
        Twin x = p.input(T, K, seed, true), w = p.weight(N, K, seed + 100, 0.1f), b = p.input(1, N, seed + 200);
        for (int variant = 0; variant < 4; ++variant) {
            LinearEpilogue ec, eg;
            if (variant >= 1) ec.bias = b.cpu, eg.bias = b.gpu;
            if (variant >= 2) ec.act = eg.act = Activation::GeluNew;
            Twin y = variant == 3 ? p.input(T, N, seed + 300) : p.output(T, N);
            if (variant == 3) ec.accumulate = eg.accumulate = true;
            p.cpu->linear(y.cpu, x.cpu, w.cpu, ec);
            p.gpu->linear(y.gpu, x.gpu, w.gpu, eg);
            static const char* names[] = {"plain", "bias", "bias+gelu_new", "bias+gelu_new+accumulate"};
            p.expect_same(y, shape("linear", seed, fmt::format("{} T {} K {} N {}", names[variant], T, K, N)), 2e-5,
                          1e-4);
        }
    }
}

TEST(CudaBackendOps, Norms) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t T = pick(g, 1, 40), D = pick(g, 1, 3000);
        Pair p;
        Twin x = p.input(T, D, seed, false, -3.0f, 5.0f), w = p.input(1, D, seed + 1), b = p.input(1, D, seed + 2);
        Twin y = p.output(T, D);
        p.cpu->layer_norm(y.cpu, x.cpu, w.cpu, b.cpu, 1e-5f);
        p.gpu->layer_norm(y.gpu, x.gpu, w.gpu, b.gpu, 1e-5f);
        p.expect_same(y, shape("layer_norm", seed, fmt::format("T {} D {}", T, D)), 1e-5, 1e-4);
        p.cpu->layer_norm(y.cpu, x.cpu, w.cpu, Tensor{}, 1e-5f);
        p.gpu->layer_norm(y.gpu, x.gpu, w.gpu, Tensor{}, 1e-5f);
        p.expect_same(y, shape("layer_norm without bias", seed, fmt::format("T {} D {}", T, D)), 1e-5, 1e-4);
        p.cpu->rms_norm(y.cpu, x.cpu, w.cpu, 1e-6f);
        p.gpu->rms_norm(y.gpu, x.gpu, w.gpu, 1e-6f);
        p.expect_same(y, shape("rms_norm", seed, fmt::format("T {} D {}", T, D)), 1e-5, 1e-4);
        // In place (y aliases x), as the final norm runs.
        p.cpu->rms_norm(x.cpu, x.cpu, w.cpu, 1e-6f);
        p.gpu->rms_norm(x.gpu, x.gpu, w.gpu, 1e-6f);
        p.expect_same(x, shape("rms_norm in place", seed, fmt::format("T {} D {}", T, D)), 1e-5, 1e-4);
    }
}

TEST(CudaBackendOps, Elementwise) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t T = pick(g, 1, 40), F = pick(g, 1, 2000);
        const std::string dims = fmt::format("T {} F {}", T, F);
        Pair p;
        Twin x = p.input(T, F, seed, false, -6.0f, 6.0f);
        p.cpu->gelu_new(x.cpu);
        p.gpu->gelu_new(x.gpu);
        p.expect_same(x, shape("gelu_new", seed, dims), 1e-6, 1e-5);

        Twin in = p.input(T, 2 * F, seed + 1, false, -6.0f, 6.0f), out = p.output(T, F);
        p.cpu->silu_mul(out.cpu, in.cpu);
        p.gpu->silu_mul(out.gpu, in.gpu);
        p.expect_same(out, shape("silu_mul", seed, dims), 1e-6, 1e-5);

        Twin y = p.input(T, F, seed + 2), a = p.input(T, F, seed + 3), b = p.input(1, F, seed + 4);
        p.cpu->add(y.cpu, a.cpu);
        p.gpu->add(y.gpu, a.gpu);
        p.expect_same(y, shape("add", seed, dims), 0.0, 0.0);
        p.cpu->add_bias_rows(y.cpu, b.cpu);
        p.gpu->add_bias_rows(y.gpu, b.gpu);
        p.expect_same(y, shape("add_bias_rows", seed, dims), 0.0, 0.0);

        const int64_t col0 = pick(g, 0, F - 1), w = pick(g, 1, F - col0);
        Twin dst = p.output(T, w);
        p.cpu->copy_columns(dst.cpu, a.cpu, col0);
        p.gpu->copy_columns(dst.gpu, a.gpu, col0);
        p.expect_same(dst, shape("copy_columns", seed, fmt::format("{} col0 {} width {}", dims, col0, w)), 0.0, 0.0);
    }
}

TEST(CudaBackendOps, EmbeddingAndLogitRows) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t V = pick(g, 16, 500), D = pick(g, 1, 400), S = pick(g, 1, 6);
        Pair p;
        RandomStep st(g, S, 12, 0, 16, V);
        const int64_t T = st.batch.tokens(), R = st.batch.rows();
        const KvGeometry geom{1, st.blocks_used() + 1, 16, 1, 8, DType::BF16};
        p.cpu->create_kv_cache(geom);
        p.gpu->create_kv_cache(geom);
        p.begin(st.batch);
        // A vocabulary shard: rows [offset, offset + V / 2) of the table; other ids give zeros.
        const int64_t offset = pick(g, 0, V / 2);
        Twin table = p.weight(V / 2 + 1, D, seed + 7, 1.0f), x = p.output(T, D);
        p.cpu->embedding(x.cpu, table.cpu, offset);
        p.gpu->embedding(x.gpu, table.gpu, offset);
        p.expect_same(x, shape("embedding", seed, fmt::format("V {} D {} T {} offset {}", V, D, T, offset)), 0.0, 0.0);
        Twin src = p.input(T, D, seed + 8), rows = p.output(R, D);
        p.cpu->gather_logit_rows(rows.cpu, src.cpu);
        p.gpu->gather_logit_rows(rows.gpu, src.gpu);
        p.expect_same(rows, shape("gather_logit_rows", seed, fmt::format("T {} R {} D {}", T, R, D)), 0.0, 0.0);
        p.end();
    }
}

RopeSpec random_rope(std::mt19937& g, int64_t head_dim) {
    RopeSpec r;
    r.rotary_dim = 2 * pick(g, 1, head_dim / 2);
    for (int64_t i = 0; i < r.rotary_dim / 2; ++i) {
        const float f = std::pow(10000.0f, -2.0f * float(i) / float(r.rotary_dim));
        r.inv_freq_short.push_back(f);
        r.inv_freq_long.push_back(f / float(pick(g, 1, 40)));
    }
    r.scale_short = 1.0f;
    r.scale_long = 1.19f;
    return r;
}

TEST(CudaBackendOps, Rope) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t H = pick(g, 1, 8), hd = 2 * pick(g, 2, 64), S = pick(g, 1, 6);
        Pair p;
        RandomStep st(g, S, 10, 800, 16, 100);
        const KvGeometry geom{1, st.blocks_used() + 1, 16, 1, hd, DType::BF16};
        p.cpu->create_kv_cache(geom);
        p.gpu->create_kv_cache(geom);
        const RopeSpec spec = random_rope(g, hd);
        p.begin(st.batch);
        Twin x = p.input(st.batch.tokens(), H * hd, seed);
        p.cpu->rope(x.cpu, H, hd, spec);
        p.gpu->rope(x.gpu, H, hd, spec);
        // Angles up to ~800 rad: sin/cos arguments differ by fp32 rounding of pos * inv_freq.
        p.expect_same(x, shape("rope", seed, fmt::format("H {} hd {} rotary {} T {}", H, hd, spec.rotary_dim,
                                                         st.batch.tokens())),
                      2e-4, 1e-4);
        p.end();
    }
}

TEST(CudaBackendOps, KvWriteAndPagedAttention) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t nkv = pick(g, 1, 4), group = pick(g, 1, 4), nq = nkv * group, hd = 8 * pick(g, 1, 16);
        const int64_t bs = std::int64_t(1) << pick(g, 0, 4), S = pick(g, 1, 5);
        const int64_t window = pick(g, 0, 1) ? pick(g, 2, 20) : 0;
        std::vector<int32_t> q_to_kv(static_cast<size_t>(nq));
        for (int64_t h = 0; h < nq; ++h) q_to_kv[size_t(h)] = int32_t(h / group);
        Pair p;
        // Step 1 fills each sequence's history (start 0); step 2 adds tokens after it and reads it back
        // through the block tables.
        RandomStep first(g, S, 24, 0, bs, 100);
        StepBatch second = first.batch;
        second.ids.clear();
        second.pos.clear();
        second.logit_rows.clear();
        std::vector<std::vector<int32_t>> tables2(static_cast<size_t>(S));
        int32_t next_block = int32_t(first.blocks_used());
        for (int64_t s = 0; s < S; ++s) {
            StepSeq& q = second.seqs[size_t(s)];
            q.start_pos = first.batch.seqs[size_t(s)].n_tokens;
            q.first_token = second.tokens();
            q.n_tokens = pick(g, 1, 4);
            tables2[size_t(s)] = first.tables[size_t(s)];
            while (int64_t(tables2[size_t(s)].size()) * bs < q.start_pos + q.n_tokens)
                tables2[size_t(s)].push_back(next_block++);
            q.block_table = tables2[size_t(s)];
            for (int64_t i = 0; i < q.n_tokens; ++i) {
                second.ids.push_back(1);
                second.pos.push_back(int32_t(q.start_pos + i));
            }
            second.logit_rows.push_back(int32_t(second.tokens() - 1));
        }
        const KvGeometry geom{2, next_block + 1, bs, nkv, hd, DType::BF16};
        p.cpu->create_kv_cache(geom);
        p.gpu->create_kv_cache(geom);
        const std::string dims = fmt::format("nq {} nkv {} hd {} block {} S {} window {}", nq, nkv, hd, bs, S, window);
        const float scale = 1.0f / std::sqrt(float(hd));
        int step = 0;
        for (const StepBatch* b : {&first.batch, &second}) {
            const int64_t T = b->tokens();
            p.begin(*b);
            // K and V bf16-exact: the GPU cache is bf16, so both caches then hold the same values.
            Twin k = p.input(T, nkv * hd, seed * 10 + step, true, -2.0f, 2.0f);
            Twin v = p.input(T, nkv * hd, seed * 10 + step + 5, true);
            Twin q = p.input(T, nq * hd, seed * 10 + step + 7, false, -2.0f, 2.0f), out = p.output(T, nq * hd);
            p.cpu->kv_write(1, k.cpu, v.cpu);
            p.gpu->kv_write(1, k.gpu, v.gpu);
            p.cpu->attention(out.cpu, q.cpu, 1, nq, q_to_kv, scale, window);
            p.gpu->attention(out.gpu, q.gpu, 1, nq, q_to_kv, scale, window);
            p.expect_same(out, shape(step == 0 ? "kv_write + attention (prefill)" : "kv_write + attention (paged history)",
                                     seed, dims),
                          2e-5, 1e-4);
            p.end();
            ++step;
        }
    }
}

TEST(CudaBackendOps, Moe) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t E = pick(g, 2, 8), d = pick(g, 8, 128), f = pick(g, 8, 128), T = pick(g, 1, 24);
        Pair p;
        Twin router = p.input(E, d, seed + 1, false, -0.5f, 0.5f);
        std::vector<Twin> up, down;
        MoeWeights wc, wg;
        wc.router = router.cpu;
        wg.router = router.gpu;
        wc.jitter_eps = wg.jitter_eps = 0.01f;
        for (int64_t e = 0; e < E; ++e) {
            up.push_back(p.weight(2 * f, d, uint32_t(seed * 100 + e), 0.2f));
            down.push_back(p.weight(d, f, uint32_t(seed * 100 + 50 + e), 0.2f));
            wc.up.push_back(up.back().cpu);
            wg.up.push_back(up.back().gpu);
            wc.down.push_back(down.back().cpu);
            wg.down.push_back(down.back().gpu);
        }
        Twin h = p.input(T, d, seed + 2, true), out = p.output(T, d);
        p.cpu->moe(out.cpu, h.cpu, wc);
        p.gpu->moe(out.gpu, h.gpu, wg);
        // The GPU rounds the SiLU product to bf16 before the down GEMM (the CPU keeps fp32).
        p.expect_same(out, shape("moe", seed, fmt::format("E {} d {} f {} T {}", E, d, f, T)), 1e-3, 2e-2);
    }
}

TEST(CudaBackendOps, ArgmaxRows) {
    PHI_REQUIRE_GPU();
    for (int seed = 0; seed < k_seeds; ++seed) {
        std::mt19937 g(seed);
        const int64_t R = pick(g, 1, 12), vl = pick(g, 1, 5000), begin = pick(g, 0, 3) * vl;
        Pair p;
        Twin logits = p.input(R, vl, seed, true, -4.0f, 4.0f);  // bf16-exact: ties occur
        std::vector<int32_t> rows, limits;
        for (int64_t r = 0; r < R; ++r) {
            if (pick(g, 0, 2) == 0) continue;
            rows.push_back(int32_t(r));
            limits.push_back(int32_t(begin + pick(g, -3, vl + 3)));  // some rows: no id below the limit
        }
        const auto want = p.cpu->argmax_rows(logits.cpu, rows, limits, begin);
        const auto got = p.gpu->argmax_rows(logits.gpu, rows, limits, begin);
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
            EXPECT_EQ(got[i].id, want[i].id) << shape("argmax_rows", seed, fmt::format("R {} vl {} begin {} row {} limit {}",
                                                                                      R, vl, begin, rows[i], limits[i]));
            if (want[i].id >= 0) {
                EXPECT_EQ(got[i].value, want[i].value) << "argmax_rows value, seed " << seed;
            }
        }
    }
}

}  // namespace
}  // namespace phi::kernels
