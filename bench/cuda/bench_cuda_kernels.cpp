// CUDA kernel rates against the limits measured in the same run: decode-time GEMV and paged
// attention as a fraction of the streaming-read bandwidth (what decode is bound by), prefill GEMMs
// as a fraction of the bf16 GEMM peak (a large square GEMM). Shapes: Phi-3-mini and Phi-3-medium
// at TP 1. Usage: bench_cuda_kernels [--quick]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kernels.h"

namespace {

using namespace phi::kernels::cuda;

/// Best time in ms of `reps` runs of f (after 3 warm-ups), timed with events on stream s.
double best_ms(cudaStream_t s, int reps, const std::function<void()>& f) {
    for (int i = 0; i < 3; ++i) f();
    CUDA_CHECK(cudaStreamSynchronize(s));
    Event a, b;
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
        a.record(s);
        f();
        b.record(s);
        b.synchronize();
        best = std::min(best, double(b.elapsed_ms_since(a)));
    }
    return best;
}

void fill_random_bf16(DeviceBuffer& b, size_t count, uint32_t seed) {
    std::vector<uint16_t> h(count);
    uint32_t x = seed * 2654435761u + 1;
    for (auto& v : h) {
        x = x * 1664525u + 1013904223u;
        v = uint16_t(0x3c00u | (x >> 23 & 0x7f) | ((x >> 8) & 0x8000u));  // small values of both signs
    }
    b.upload(h.data(), count * 2);
}

}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    if (cuda_device_count() == 0) {
        std::printf("bench_cuda_kernels: skipped: %s\n", cuda_unavailable_reason().c_str());
        return 0;
    }
    try {
        std::printf("device: %s\n", cuda_device_description(0).c_str());
        Stream s;
        CublasHandle blas(s);
        const int reps = quick ? 5 : 20;

        // Limits.
        const size_t bw_bytes = size_t(quick ? 1 : 4) << 30;
        DeviceBuffer big(bw_bytes), sink(4);
        CUDA_CHECK(cudaMemset(big.data(), 1, bw_bytes));
        const double bw_ms =
            best_ms(s, reps, [&] { stream_read(big.data(), bw_bytes, sink.as<uint32_t>(), s); });
        const double bw = double(bw_bytes) / (bw_ms * 1e-3) / 1e9;
        DeviceBuffer copy_dst(bw_bytes / 2);
        const double cp_ms = best_ms(s, reps, [&] {
            CUDA_CHECK(
                cudaMemcpyAsync(copy_dst.data(), big.data(), bw_bytes / 2, cudaMemcpyDeviceToDevice, s));
        });
        const double cp = double(bw_bytes) / (cp_ms * 1e-3) / 1e9;  // read + write bytes
        std::printf("streaming read: %.0f GB/s (peer: cudaMemcpy D2D read+write %.0f GB/s, ratio %.2f)\n", bw,
                    cp, bw / cp);
        copy_dst = DeviceBuffer();
        big = DeviceBuffer();

        const int64_t P = 8192;
        DeviceBuffer pa(size_t(P * P) * 2), pb(size_t(P * P) * 2), pc(size_t(P * P) * 2);
        fill_random_bf16(pa, size_t(P * P), 1);
        fill_random_bf16(pb, size_t(P * P), 2);
        const double peak_ms = best_ms(s, quick ? 3 : 10, [&] {
            linear(blas, pc.data(), phi::DType::BF16, pa.as<bf16>(), pb.as<bf16>(), nullptr, P, P, P);
        });
        const double peak = 2.0 * double(P) * P * P / (peak_ms * 1e-3) / 1e12;
        std::printf("bf16 GEMM peak (8192^3, cuBLAS): %.0f TFLOP/s\n\n", peak);
        pa = DeviceBuffer();
        pb = DeviceBuffer();
        pc = DeviceBuffer();

        struct Shape {
            const char* name;
            int64_t m, k;
        };
        const std::vector<Shape> shapes = {
            {"phi3-mini qkv", 9216, 3072},        {"phi3-mini gate_up", 16384, 3072},
            {"phi3-mini down", 3072, 8192},       {"phi3-medium qkv", 7680, 5120},
            {"phi3-medium gate_up", 35840, 5120}, {"phi3-medium down", 5120, 17920}};
        std::printf("%-22s %6s %10s %10s %9s %9s\n", "linear", "n", "us", "GB/s", "TFLOP/s", "fraction");
        for (const Shape& sh : shapes) {
            DeviceBuffer w(size_t(sh.m * sh.k) * 2), x(size_t(512 * sh.k) * 2), y(size_t(512 * sh.m) * 4);
            fill_random_bf16(w, size_t(sh.m * sh.k), 3);
            fill_random_bf16(x, size_t(512 * sh.k), 4);
            for (int64_t n : {int64_t(1), int64_t(16), int64_t(512)}) {
                const double ms = best_ms(s, reps, [&] {
                    linear(blas, y.data(), phi::DType::F32, x.as<bf16>(), w.as<bf16>(), nullptr, n, sh.m,
                           sh.k);
                });
                const double bytes = double(sh.m * sh.k) * 2 + double(n * sh.k) * 2 + double(n * sh.m) * 4;
                const double gbs = bytes / (ms * 1e-3) / 1e9;
                const double tf = 2.0 * double(n) * double(sh.m) * double(sh.k) / (ms * 1e-3) / 1e12;
                // Decode shapes are bandwidth-bound, prefill shapes compute-bound.
                const double frac = n <= 16 ? gbs / bw : tf / peak;
                std::printf("%-22s %6lld %10.1f %10.0f %9.1f %8.2f%s\n", sh.name, (long long)n, ms * 1e3, gbs,
                            tf, frac, n <= 16 ? " of bw" : " of peak");
            }
        }

        // Decode attention: one query per sequence over a bf16 paged cache.
        std::printf("\n%-34s %10s %10s %9s\n", "paged attention (decode)", "us", "GB/s", "fraction");
        struct Attn {
            const char* name;
            int64_t seqs, ctx, n_heads, n_kv, hd;
        };
        for (const Attn a : {Attn{"phi3-mini b1 ctx4096", 1, 4096, 32, 32, 96},
                             Attn{"phi3-mini b16 ctx2048", 16, 2048, 32, 32, 96},
                             Attn{"phi3-medium b8 ctx4096 (GQA)", 8, 4096, 40, 10, 128}}) {
            const int64_t bs = 16, blocks_per_seq = (a.ctx + bs - 1) / bs,
                          num_blocks = blocks_per_seq * a.seqs;
            const CacheLayout lay{num_blocks, bs, a.n_kv, a.hd};
            DeviceBuffer kc(size_t(num_blocks * bs * lay.row()) * 2),
                vc(size_t(num_blocks * bs * lay.row()) * 2);
            fill_random_bf16(kc, size_t(num_blocks * bs * lay.row()), 5);
            fill_random_bf16(vc, size_t(num_blocks * bs * lay.row()), 6);
            std::vector<int32_t> tables(static_cast<size_t>(num_blocks)), tok_seq(size_t(a.seqs)),
                tok_pos(size_t(a.seqs)), q_to_kv(size_t(a.n_heads));
            for (int64_t i = 0; i < num_blocks; ++i) tables[size_t(i)] = int32_t(i);
            for (int64_t i = 0; i < a.seqs; ++i) {
                tok_seq[size_t(i)] = int32_t(i);
                tok_pos[size_t(i)] = int32_t(a.ctx - 1);
            }
            for (int64_t h = 0; h < a.n_heads; ++h) q_to_kv[size_t(h)] = int32_t(h / (a.n_heads / a.n_kv));
            DeviceBuffer dt = to_device(tables), dseq = to_device(tok_seq), dpos = to_device(tok_pos),
                         dmap = to_device(q_to_kv), q(size_t(a.seqs * a.n_heads * a.hd) * 4),
                         out(size_t(a.seqs * a.n_heads * a.hd) * 2);
            CUDA_CHECK(cudaMemset(q.data(), 0, q.bytes()));
            const AttentionBatch batch{dseq.as<int32_t>(), dpos.as<int32_t>(), dt.as<int32_t>(),
                                       blocks_per_seq, a.seqs};
            const double ms = best_ms(s, reps, [&] {
                paged_attention(out.data(), phi::DType::BF16, q.as<float>(), a.n_heads * a.hd, kc.as<bf16>(),
                                vc.as<bf16>(), lay, batch, a.n_heads, dmap.as<int32_t>(), 0.1f, 0, s);
            });
            // Each KV head's rows are read once per query head that uses it (no sharing across a GQA group).
            const double bytes = 2.0 * double(a.seqs * a.ctx * a.n_kv * a.hd) * 2;
            const double gbs = bytes / (ms * 1e-3) / 1e9;
            std::printf("%-34s %10.1f %10.0f %8.2f of bw\n", a.name, ms * 1e3, gbs, gbs / bw);
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_cuda_kernels: %s\n", e.what());
        return 1;
    }
}
