// Benchmark of the quantized linear (kernels/cpu/quant.h) against bf16 weights, Phi-2 shapes, at
// the level choose_isa() picks: n=1 (decode, weight streaming: GB/s of weights read and fraction of
// the measured read bandwidth) and n=16 (`--tokens 1,16,128` picks other counts: prefill-sized ones
// show the compute-bound regime, where tok/s is the figure). Configurations run interleaved, three rounds, and each
// prints min/median/max of its rounds and the median ratio to bf16 from the same rounds (a shared,
// busy machine moves all configurations of a round together). Weights rotate over >= 128 MiB of
// copies per shape so every call streams them from DRAM. OMP_NUM_THREADS=1 times on the thread's
// CPU clock (robust on a shared, busy machine).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/common/membw.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant.h"

namespace {

using namespace phi;
using namespace phi::kernels::cpu;

constexpr size_t k_stream_bytes = size_t(128) << 20;
constexpr double k_min_seconds = 0.25;  // per configuration and round

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
    double per_layer;  // calls per Phi-2 layer
};

enum class Kind { Bf16, Q8, Q4 };

/// Copies of one shape's weights in one format, rotated through.
struct Copies {
    Kind kind;
    Shape shape;
    std::vector<std::vector<uint16_t>> bf16;
    std::vector<QuantTensor> q;
    std::vector<QuantTensor> packed;  // the Dot16 layout the Int8 mode reads at this level, if any
    size_t bytes = 0;

    Copies(Kind k, const Shape& s) : kind(k), shape(s) {
        std::vector<uint16_t> w(size_t(s.rows * s.cols));
        for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(hash_value(i) * 0.05f);
        if (k == Kind::Bf16) {
            bytes = w.size() * 2;
        } else {
            q.push_back(quantize(k == Kind::Q8 ? QuantFormat::Q8 : QuantFormat::Q4,
                                 WeightView{w.data(), DType::BF16, s.rows, s.cols}));
            bytes = q[0].qs.size() + q[0].scales.size() * 2;
        }
        const size_t copies = (k_stream_bytes + bytes - 1) / bytes;
        if (k == Kind::Bf16) {
            bf16.assign(copies, w);
        } else {
            while (q.size() < copies) q.push_back(q[0]);
            if (quant_packs_for_int8_dot(choose_isa())) {
                for (const QuantTensor& t : q) packed.push_back(pack_for_int8_dot(t));
            }
        }
    }
    size_t count() const { return kind == Kind::Bf16 ? bf16.size() : q.size(); }
};

struct Config {
    std::string name;
    Kind kind;
    QuantActivations mode;
};

double median3(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<int64_t> token_counts = {1, 16};
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--tokens" && i + 1 < argc) {
            token_counts.clear();
            for (const char* p = argv[++i]; *p != 0;) {
                char* end = nullptr;
                const long long v = std::strtoll(p, &end, 10);
                if (end == p || v < 1 || v > 4096) {
                    std::fprintf(stderr, "bench_quant: --tokens takes counts in [1, 4096] separated by commas\n");
                    return 2;
                }
                token_counts.push_back(v);
                p = *end == ',' ? end + 1 : end;
            }
        } else {
            std::fprintf(stderr, "usage: bench_quant [--tokens 1,16,128]\n");
            return 2;
        }
    }
    const Isa isa = choose_isa();
    const int threads = omp_get_max_threads();
    const bool thread_cpu = threads == 1;
    std::printf("bench_quant: isa=%s vnni=%d int8-act layout=%s threads=%d clock=%s\n",
                std::string(isa_name(isa)).c_str(), int(quant_uses_vnni(isa)),
                quant_packs_for_int8_dot(isa) ? "dot16" : "rows", threads, thread_cpu ? "thread-cpu" : "wall");
    const double bw = phi::bench::measure_read_bandwidth_gbs(size_t(512) << 20, threads);
    std::printf("measured read bandwidth (512 MiB, %d threads): %.1f GB/s\n", threads, bw);

    const Shape shapes[] = {{"qkv 7680x2560", 7680, 2560, 1.0},
                            {"dense 2560x2560", 2560, 2560, 1.0},
                            {"fc1 10240x2560", 10240, 2560, 1.0},
                            {"fc2 2560x10240", 2560, 10240, 1.0}};
    const Config configs[] = {{"bf16", Kind::Bf16, QuantActivations::F32},
                              {"int8 f32-act", Kind::Q8, QuantActivations::F32},
                              {"int8 int8-act", Kind::Q8, QuantActivations::Int8},
                              {"int4 f32-act", Kind::Q4, QuantActivations::F32},
                              {"int4 int8-act", Kind::Q4, QuantActivations::Int8}};
    std::vector<Copies> store;
    for (Kind k : {Kind::Bf16, Kind::Q8, Kind::Q4}) {
        for (const Shape& s : shapes) store.emplace_back(k, s);
    }
    auto find = [&](Kind k, int si) -> const Copies& { return store[size_t(int(k) * 4 + si)]; };

    // Load-time cost of the quantizer (bf16 source, the fc1 shape).
    {
        const Shape& s = shapes[2];
        std::vector<uint16_t> w(size_t(s.rows * s.cols));
        for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(hash_value(i) * 0.05f);
        for (QuantFormat f : {QuantFormat::Q8, QuantFormat::Q4}) {
            const double t = phi::bench::best_time(k_min_seconds,
                [&](size_t) {
                    (void)quantize(f, WeightView{w.data(), DType::BF16, s.rows, s.cols});
                },
                1, thread_cpu);
            std::printf("quantize %s %s: %.1f ns/weight (%.1f s for 2.7e9 weights)\n",
                        std::string(quant_format_name(f)).c_str(), s.name, t / double(w.size()) * 1e9,
                        t / double(w.size()) * 2.7e9);
        }
    }

    const int64_t n_max = *std::max_element(token_counts.begin(), token_counts.end());
    std::vector<float> x(size_t(n_max) * 10240), y(size_t(n_max) * 10240);
    for (size_t i = 0; i < x.size(); ++i) x[i] = hash_value(i + 12345);

    constexpr int k_rounds = 3;
    const size_t nc = std::size(configs);
    for (int64_t n : token_counts) {
        // seconds per Phi-2 layer (the four linears), per config and round
        std::vector<std::vector<double>> t(nc, std::vector<double>(k_rounds));
        for (int r = 0; r < k_rounds; ++r) {
            for (size_t c = 0; c < nc; ++c) {
                double layer = 0.0;
                for (int si = 0; si < 4; ++si) {
                    const Copies& w = find(configs[c].kind, si);
                    const double s = phi::bench::best_time(k_min_seconds,
                        [&](size_t i) {
                            if (w.kind == Kind::Bf16) {
                                const WeightView v{w.bf16[i % w.count()].data(), DType::BF16, w.shape.rows,
                                                   w.shape.cols};
                                linear(isa, y.data(), x.data(), n, v, nullptr);
                            } else {
                                const bool use_packed =
                                    configs[c].mode == QuantActivations::Int8 && !w.packed.empty();
                                const auto& q = use_packed ? w.packed : w.q;
                                linear_quant(isa, y.data(), x.data(), n, q[i % w.count()].view(), nullptr,
                                             configs[c].mode);
                            }
                        },
                        w.count(), thread_cpu);
                    layer += s * w.shape.per_layer;
                }
                t[c][size_t(r)] = layer;
            }
        }
        std::printf("\nn=%lld: one Phi-2 layer's linears (qkv, dense, fc1, fc2), %d interleaved rounds\n",
                    (long long)n, k_rounds);
        std::printf("%-15s %9s %9s %9s %9s %8s %10s %11s\n", "weights", "ms min", "ms med", "ms max", "GB/s",
                    "of BW", "tok/s*", "vs bf16");
        for (size_t c = 0; c < nc; ++c) {
            double bytes = 0.0;
            for (int si = 0; si < 4; ++si) bytes += double(find(configs[c].kind, si).bytes);
            const double med = median3(t[c]);
            std::vector<double> ratio(k_rounds);
            for (int r = 0; r < k_rounds; ++r) ratio[size_t(r)] = t[0][size_t(r)] / t[c][size_t(r)];
            const double gbs = bytes / med * 1e-9;
            std::printf("%-15s %9.2f %9.2f %9.2f %9.1f %7.0f%% %10.2f %10.2fx\n", configs[c].name.c_str(),
                        *std::min_element(t[c].begin(), t[c].end()) * 1e3, med * 1e3,
                        *std::max_element(t[c].begin(), t[c].end()) * 1e3, gbs, 100.0 * gbs / bw,
                        double(n) / (32.0 * med), median3(ratio));
        }
    }
    std::printf("\n* tok/s: 32 layers of these linears only (no attention, norms or LM head).\n");
    return 0;
}
