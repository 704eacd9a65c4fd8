// GPU decode of a Phi-3-mini- or Phi-2-shaped model with random bf16 weights (no checkpoint needed):
// tokens/s at batch 1 and 16, eager against CUDA-graph replay (the peer, same run), and the
// fraction of the streaming-read bandwidth limit (weights + KV bytes read per step / time).
// Usage: bench_cuda_decode [--shape phi3-mini|phi2] [--layers N] [--steps N]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kernels.h"
#include "worker/cuda/cuda_model.h"

namespace {

using namespace phi;
namespace kcu = kernels::cuda;

OwnedTensor random_tensor(std::vector<int64_t> shape, DType dtype, uint32_t seed, float scale) {
    OwnedTensor t;
    t.dtype = dtype;
    t.shape = shape;
    const size_t n = size_t(t.rows() * t.cols());
    t.bytes = AlignedBuffer(n * dtype_size(dtype));
    uint32_t x = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        const float v = (float(x >> 8) / float(1u << 24) - 0.5f) * 2.0f * scale;
        if (dtype == DType::BF16) {
            t.bytes.as<uint16_t>()[i] = f32_to_bf16(v);
        } else {
            t.f32()[i] = v;
        }
    }
    return t;
}

OwnedTensor zeros(int64_t n) {
    OwnedTensor t;
    t.shape = {n};
    t.bytes = AlignedBuffer(size_t(n) * 4);
    for (int64_t i = 0; i < n; ++i) t.f32()[i] = 0.0f;
    return t;
}

OwnedTensor ones(int64_t n) {
    OwnedTensor t;
    t.shape = {n};
    t.bytes = AlignedBuffer(size_t(n) * 4);
    for (int64_t i = 0; i < n; ++i) t.f32()[i] = 1.0f;
    return t;
}

}  // namespace

int main(int argc, char** argv) {
    int64_t layers = 32, steps = 64;
    std::string shape = "phi3-mini";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--shape") == 0) shape = argv[i + 1];
        if (std::strcmp(argv[i], "--layers") == 0) layers = std::stoll(argv[i + 1]);
        if (std::strcmp(argv[i], "--steps") == 0) steps = std::stoll(argv[i + 1]);
    }
    if (kcu::cuda_device_count() == 0) {
        std::printf("bench_cuda_decode: skipped: %s\n", kcu::cuda_unavailable_reason().c_str());
        return 0;
    }
    try {
        if (shape != "phi3-mini" && shape != "phi2") {
            std::fprintf(stderr, "bench_cuda_decode: --shape %s: use phi3-mini or phi2\n", shape.c_str());
            return 2;
        }
        const bool phi2 = shape == "phi2";
        const std::string json =
            phi2 ? R"({"architectures": ["PhiForCausalLM"], "model_type": "phi", "hidden_act": "gelu_new",
            "hidden_size": 2560, "intermediate_size": 10240, "num_attention_heads": 32, "num_key_value_heads": 32,
            "num_hidden_layers": )" + std::to_string(layers) +
                       R"(, "vocab_size": 51200, "max_position_embeddings": 2048, "layer_norm_eps": 1e-5,
            "partial_rotary_factor": 0.4, "qk_layernorm": false, "rope_theta": 10000.0, "rope_scaling": null,
            "tie_word_embeddings": false, "bos_token_id": 50256, "eos_token_id": 50256})"
                 : R"({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
            "hidden_size": 3072, "intermediate_size": 8192, "num_attention_heads": 32, "num_key_value_heads": 32,
            "num_hidden_layers": )" +
                       std::to_string(layers) + R"(, "vocab_size": 32064, "max_position_embeddings": 4096,
            "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "rope_scaling": null, "sliding_window": 2047, "tie_word_embeddings": false, "bos_token_id": 1,
            "eos_token_id": 32000, "attention_bias": false})";
        const ModelConfig cfg = parse_model_config(json, shape + " (bench)");
        const ShardPlan plan = make_shard_plan(cfg, 1, 0);
        const int64_t d = cfg.d_model, f = cfg.d_ff, hd = cfg.head_dim,
                      qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd;
        const int64_t up_rows = phi2 ? f : 2 * f;  // gelu_new fc1, or SwiGLU gate_up
        std::printf("device: %s\nmodel: %s shapes, %lld layers, random bf16 weights\n",
                    kcu::cuda_device_description(0).c_str(), shape.c_str(), (long long)layers);
        const auto t0 = std::chrono::steady_clock::now();
        // Each model takes its own host copy (uploaded, then freed).
        auto make_weights = [&] {
            ModelWeights w;
            for (int64_t l = 0; l < layers; ++l) {
                LayerWeights lw;
                lw.attn_norm_w = ones(d);
                lw.wqkv = random_tensor({qkv, d}, DType::BF16, uint32_t(4 * l + 1), 0.02f);
                lw.wo = random_tensor({d, cfg.n_heads * hd}, DType::BF16, uint32_t(4 * l + 2), 0.02f);
                lw.w_up = random_tensor({up_rows, d}, DType::BF16, uint32_t(4 * l + 3), 0.02f);
                lw.w_down = random_tensor({d, f}, DType::BF16, uint32_t(4 * l + 4), 0.02f);
                if (phi2) {  // LayerNorm with bias, biased projections, one norm (parallel block)
                    lw.attn_norm_b = zeros(d);
                    lw.bqkv = zeros(qkv);
                    lw.bo = zeros(d);
                    lw.b_up = zeros(f);
                    lw.b_down = zeros(d);
                } else {
                    lw.ffn_norm_w = ones(d);
                }
                w.layers.push_back(std::move(lw));
            }
            w.embed = random_tensor({plan.vocab_local, d}, DType::BF16, 7, 0.5f);
            w.lm_head = random_tensor({plan.vocab_local, d}, DType::BF16, 8, 0.02f);
            w.final_norm_w = ones(d);
            if (phi2) {
                w.final_norm_b = zeros(d);
                w.lm_head_b = zeros(plan.vocab_local);
            }
            return w;
        };
        make_weights();  // timed once for the header line
        const double weight_bytes = double(layers) * double(qkv * d + d * cfg.n_heads * hd + (up_rows + f) * d) * 2 +
                                    double(plan.vocab_local * d) * 2;
        std::printf("weights: %.2f GB (made in %.1f s)\n", weight_bytes / 1e9,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

        // Measured limit.
        kcu::Stream s;
        double bw = 0.0;
        {
            const size_t bytes = size_t(2) << 30;
            kcu::DeviceBuffer big(bytes), sink(4);
            CUDA_CHECK(cudaMemset(big.data(), 1, bytes));
            kcu::Event a, b;
            for (int i = 0; i < 6; ++i) {
                a.record(s);
                kcu::stream_read(big.data(), bytes, sink.as<uint32_t>(), s);
                b.record(s);
                b.synchronize();
                if (i > 0) bw = std::max(bw, double(bytes) / (b.elapsed_ms_since(a) * 1e-3) / 1e9);
            }
        }
        std::printf("streaming read: %.0f GB/s\n\n%-10s %6s %8s %10s %10s %9s\n", bw, "mode", "batch",
                    "context", "ms/step", "tok/s", "fraction");

        const int64_t prompt = 512, block = 16;
        for (int64_t batch : {int64_t(1), int64_t(16)}) {
            double eager_tps = 0.0;
            for (bool graphs : {false, true}) {
                LocalCommunicator comm;
                CudaModelOptions o;
                o.block_size = block;
                o.max_seqs = batch;
                o.max_tokens = std::max<int64_t>(prompt, batch);
                o.max_blocks_per_seq = (prompt + steps + block - 1) / block;
                o.kv_blocks = o.max_blocks_per_seq * batch;
                o.use_graphs = graphs;
                auto model = make_cuda_model(cfg, plan, make_weights(), comm, nullptr, o);
                PhiModel& m = *model;
                std::vector<std::vector<int32_t>> tables(static_cast<size_t>(batch)),
                    toks(static_cast<size_t>(batch));
                for (int64_t i = 0; i < batch; ++i) {
                    tables[size_t(i)].resize(size_t(o.max_blocks_per_seq));
                    std::iota(tables[size_t(i)].begin(), tables[size_t(i)].end(),
                              int32_t(i * o.max_blocks_per_seq));
                    toks[size_t(i)].assign(size_t(prompt), int32_t(100 + i));
                    SeqStep st;
                    st.tokens = toks[size_t(i)];
                    st.block_table = tables[size_t(i)];
                    m.forward(std::span<const SeqStep>(&st, 1), nullptr);  // prefill, one sequence at a time
                }
                std::vector<int32_t> next(static_cast<size_t>(batch), 5);
                std::vector<SeqStep> step(static_cast<size_t>(batch));
                std::vector<float> logits;
                double total_ms = 0.0;
                for (int64_t k = 0; k < steps; ++k) {
                    for (int64_t i = 0; i < batch; ++i) {
                        step[size_t(i)].tokens = std::span<const int32_t>(&next[size_t(i)], 1);
                        step[size_t(i)].start_pos = prompt + k;
                        step[size_t(i)].block_table = tables[size_t(i)];
                    }
                    const auto a = std::chrono::steady_clock::now();
                    m.forward(step, &logits);
                    if (k >= 3)
                        total_ms +=
                            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a)
                                .count();
                }
                const double ms = total_ms / double(steps - 3);
                const double tps = double(batch) * 1e3 / ms;
                const double kv_bytes =
                    2.0 * double(layers * batch * (prompt + steps / 2) * cfg.n_kv_heads * hd) * 2;
                const double frac = (weight_bytes + kv_bytes) / (ms * 1e-3) / 1e9 / bw;
                std::printf("%-10s %6lld %8lld %10.2f %10.1f %8.2f of bw", graphs ? "graphs" : "eager",
                            (long long)batch, (long long)prompt, ms, tps, frac);
                if (graphs) std::printf("   (%.2fx eager)", tps / eager_tps);
                std::printf("\n");
                if (!graphs) eager_tps = tps;
            }
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_cuda_decode: %s\n", e.what());
        return 1;
    }
}
