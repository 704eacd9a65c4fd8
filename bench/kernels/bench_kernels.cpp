// Benchmark of the CPU kernels at the level choose_isa() picks (PHI_CPU_ISA to force one):
// linear with Phi-2 shapes at n=1 (decode: weight streaming, reported as a fraction of the measured
// read bandwidth) and n=16 (batch: reported in GFLOP/s and as a tokens/s ratio against n=1), fp32
// and bf16 weights, plus a Phi-2 decode estimate and decode attention over a 2048-token cache.
// Weights rotate over enough copies (>= 256 MiB) that every call streams them from DRAM.
// OMP_NUM_THREADS=1 times on the thread's CPU clock (robust on a shared, busy machine).
// `bench_kernels activations` runs only the GELU/SiLU part.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench/common/membw.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/kernels.h"

namespace {

using namespace phi;
using namespace phi::kernels::cpu;

constexpr size_t k_stream_bytes = size_t(256) << 20;
constexpr double k_min_seconds = 0.6;  // per configuration

float hash_value(uint64_t i) {  // deterministic pseudo-random in [-1, 1)
    uint64_t h = (i + 1) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return float(h & 0xffffff) / float(1 << 23) - 1.0f;
}

struct Shape {
    const char* name;
    int64_t rows, cols;
};

/// Weight copies of one shape and dtype, rotated through so each call reads from DRAM.
class Weights {
  public:
    Weights(const Shape& s, DType dt) : shape_(s), dtype_(dt) {
        bytes_ = size_t(s.rows * s.cols) * dtype_size(dt);
        copies_ = (k_stream_bytes + bytes_ - 1) / bytes_;
        buf_.reset(static_cast<std::byte*>(std::aligned_alloc(64, (bytes_ * copies_ + 63) / 64 * 64)));
        if (!buf_) std::abort();
        const int64_t count = int64_t(copies_) * s.rows * s.cols;
        if (dt == DType::BF16) {
            uint16_t* p = reinterpret_cast<uint16_t*>(buf_.get());
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < count; ++i) p[i] = f32_to_bf16(hash_value(uint64_t(i)) * 0.05f);
        } else {
            float* p = reinterpret_cast<float*>(buf_.get());
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < count; ++i) p[i] = hash_value(uint64_t(i)) * 0.05f;
        }
    }
    WeightView view(size_t copy) const {
        return {buf_.get() + (copy % copies_) * bytes_, dtype_, shape_.rows, shape_.cols};
    }
    size_t bytes() const {
        return bytes_;
    }
    size_t copies() const {
        return copies_;
    }

  private:
    Shape shape_;
    DType dtype_;
    size_t bytes_ = 0, copies_ = 0;
    struct Free {
        void operator()(std::byte* p) const { std::free(p); }
    };
    std::unique_ptr<std::byte, Free> buf_;  // [copies, rows, cols]
};

double time_linear(Isa isa, const Weights& w, int64_t n, const float* x, float* y, bool thread_cpu) {
    return phi::bench::best_time(
        k_min_seconds, [&](size_t i) { linear(isa, y, x, n, w.view(i), nullptr); }, w.copies(), thread_cpu);
}

/// GELU and SiLU over one 512-token prefill chunk of Phi-2's fc1 output (512 x 10240), at the
/// chosen level against the scalar reference (the same polynomial, activation_math.h).
void bench_activations(Isa isa, bool thread_cpu) {
    const int64_t n = 512, d = 10240, count = n * d;
    std::vector<float> src(static_cast<size_t>(2 * count)), x(static_cast<size_t>(count)), out(static_cast<size_t>(count));
    for (size_t i = 0; i < src.size(); ++i) src[i] = 4.0f * hash_value(i + 777);
    for (Isa level : {Isa::Scalar, isa}) {
        const double tg = phi::bench::best_time(
            k_min_seconds,
            [&](size_t) {
                std::copy(src.begin(), src.begin() + count, x.begin());
                gelu_new(level, x.data(), count);
            },
            1, thread_cpu);
        const double ts = phi::bench::best_time(
            k_min_seconds, [&](size_t) { silu_mul(level, out.data(), src.data(), n, d); }, 1, thread_cpu);
        std::printf("activations %-7s gelu_new %.2f ns/element (copy included), silu_mul %.2f ns/element; "
                    "Phi-2 512-token prefill's GELUs: %.0f ms\n",
                    std::string(isa_name(level)).c_str(), tg / double(count) * 1e9, ts / double(count) * 1e9,
                    32.0 * tg * 1e3);
        if (level == isa) break;
    }
}

}  // namespace

int main(int argc, char** argv) {
    const Isa isa = choose_isa();
    const int threads = omp_get_max_threads();
    // One thread: time on the thread's CPU clock, so other load on a shared machine does not count.
    const bool thread_cpu = threads == 1;
    std::printf("bench_kernels: isa=%s threads=%d clock=%s\n", std::string(isa_name(isa)).c_str(), threads,
                thread_cpu ? "thread-cpu" : "wall");
    if (argc > 1 && std::string(argv[1]) == "activations") {
        bench_activations(isa, thread_cpu);
        return 0;
    }
    const double bw = phi::bench::measure_read_bandwidth_gbs(size_t(512) << 20, threads);
    std::printf("measured read bandwidth (512 MiB, %d threads): %.1f GB/s\n\n", threads, bw);

    const Shape shapes[] = {{"attn 2560x2560", 2560, 2560},
                            {"fc1 10240x2560", 10240, 2560},
                            {"fc2 2560x10240", 2560, 10240},
                            {"lm_head 51200x2560", 51200, 2560}};
    const int64_t n_max = 16;
    std::vector<float> x(size_t(n_max) * 10240), y(size_t(n_max) * 51200);
    for (size_t i = 0; i < x.size(); ++i) x[i] = hash_value(i + 12345);

    std::printf("%-20s %-5s %3s %10s %9s %8s %9s %9s %12s\n", "linear", "dtype", "n", "ms/call", "GB/s",
                "of BW", "GFLOP/s", "tok/s", "tok/s vs n=1");
    for (DType dt : {DType::BF16, DType::F32}) {
        double t1[4] = {}, t16[4] = {};
        double bytes[4] = {};
        for (int si = 0; si < 4; ++si) {
            const Shape& s = shapes[si];
            const Weights w(s, dt);
            bytes[si] = double(w.bytes());
            for (int64_t n : {int64_t(1), n_max}) {
                const double t = time_linear(isa, w, n, x.data(), y.data(), thread_cpu);
                (n == 1 ? t1 : t16)[si] = t;
                const double gbs = double(w.bytes()) / t * 1e-9;
                const double gflops = 2.0 * double(n) * double(s.rows * s.cols) / t * 1e-9;
                const double tok = double(n) / t;
                std::printf("%-20s %-5s %3lld %10.3f %9.1f %7.0f%% %9.1f %9.0f", s.name,
                            std::string(dtype_name(dt)).c_str(), (long long)n, t * 1e3, gbs, 100.0 * gbs / bw,
                            gflops, tok);
                if (n == 1) {
                    std::printf("\n");
                } else {
                    std::printf(" %11.2fx\n", tok / (1.0 / t1[si]));
                }
            }
        }
        // Phi-2 decode: 32 layers of q,k,v,dense (2560x2560) + fc1 + fc2, then lm_head.
        auto per_token = [&](const double* t) { return 32.0 * (4.0 * t[0] + t[1] + t[2]) + t[3]; };
        const double model_bytes = 32.0 * (4.0 * bytes[0] + bytes[1] + bytes[2]) + bytes[3];
        const double tt1 = per_token(t1), tt16 = per_token(t16);
        std::printf(
            "  Phi-2 linear layers, %s: n=1 %.2f tok/s (%.2f GB/token, %.1f GB/s = %.0f%% of BW); "
            "n=16 %.1f tok/s (%.2fx n=1)\n\n",
            std::string(dtype_name(dt)).c_str(), 1.0 / tt1, model_bytes * 1e-9, model_bytes / tt1 * 1e-9,
            100.0 * model_bytes / tt1 * 1e-9 / bw, 16.0 / tt16, (16.0 / tt16) * tt1);
    }

    // Decode attention, Phi-2 shaped: 32 heads x 80, one query over a 2048-token paged cache.
    {
        const KvLayout layout{2048 / 16 * 4, 16, 32, 80};  // 4 sequences' worth of blocks
        const int64_t ctx = 2048, per_block = layout.block_size * layout.n_kv_heads * layout.head_dim;
        std::vector<float> kc(size_t(layout.num_blocks * per_block)), vc(kc.size());
        for (size_t i = 0; i < kc.size(); ++i) kc[i] = hash_value(i), vc[i] = hash_value(i + 7);
        std::vector<int32_t> table(ctx / layout.block_size);
        for (size_t i = 0; i < table.size(); ++i) table[i] = int32_t((i * 7) % size_t(layout.num_blocks));
        std::vector<int32_t> q_to_kv(32);
        std::iota(q_to_kv.begin(), q_to_kv.end(), 0);
        std::vector<float> q(32 * 80), out(32 * 80);
        for (size_t i = 0; i < q.size(); ++i) q[i] = hash_value(i + 99);
        auto call = [&] {
            paged_attention(isa, out.data(), q.data(), kc.data(), vc.data(), layout, table.data(), ctx - 1, 1,
                            32, q_to_kv.data(), 1.0f / std::sqrt(80.0f), 0);
        };
        const double t = phi::bench::best_time(k_min_seconds, [&](size_t) { call(); }, 1, thread_cpu);
        const double kv_bytes = 2.0 * double(ctx * 32 * 80) * 4.0;
        std::printf("paged_attention decode (ctx 2048, 32x80, fp32 KV %.0f MB): %.3f ms, %.1f GB/s\n",
                    kv_bytes * 1e-6, t * 1e3, kv_bytes / t * 1e-9);
    }
    bench_activations(isa, thread_cpu);
    return 0;
}
