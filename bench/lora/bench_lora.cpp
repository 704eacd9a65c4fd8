// Decode throughput with LoRA adapters against the base model, in the same process, one rank:
//   build/bench/lora/bench_lora --model DIR --adapters A1,A2,A3,A4 [--dtype bf16] [--context 128] [--steps 8]
// (adapters from bench/lora/make_random_adapter). Two batches, each timed as pairs of decode steps that
// alternate between the base variant and the adapter variant, so machine drift hits both alike:
//   batch 1:  one sequence on the base model vs one sequence with adapter 1;
//   batch 16: 16 sequences on the base model vs 16 sequences with the four adapters mixed (interleaved
//             1,2,3,4,1,..., so the forward groups them into four segments of four rows).
// Every sequence follows `context` cached tokens computed with its own adapter (one prefix per
// adapter, shared by that adapter's sequences: block-aligned prefix sharing as the prefix cache does)
// and decodes into its own blocks. Prints median tokens/s, adapter/base, the goal (0.9 at
// batch 1, 0.85 at batch 16) and two ideal ratios: the bytes bound, base weight bytes / (base + the
// batch's adapters' bytes as read), which a step that only streams weights would reach, and the FLOP
// bound, base multiply-adds per token / (base + one adapter's), which a compute-bound step would reach.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "cluster/communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/cpu/isa.h"
#include "worker/load_model.h"
#include "worker/lora_weights.h"

namespace {

using clock_type = std::chrono::steady_clock;

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/// Bytes of the adapter's fp32 A and B as the forward reads them (the qkv B is block-diagonal, zeros
/// included).
size_t adapter_bytes(const phi::LoraAdapterWeights& w) {
    size_t n = 0;
    for (const phi::LoraLayerWeights& l : w.layers)
        for (const phi::LoraPair* p : {&l.qkv, &l.out, &l.up, &l.down})
            if (!p->empty()) n += p->a.bytes.size() + p->b.bytes.size();
    return n;
}

/// One decoding sequence: its adapter and its block table (the shared prefix, then its own blocks).
struct Seq {
    int32_t adapter = 0;
    std::vector<int32_t> table;
};

/// Runs one decode step of `seqs` at position `pos` and returns its wall time in seconds.
double step(phi::PhiModel& model, const std::vector<Seq>& seqs, int64_t pos, std::vector<float>& logits) {
    static const int32_t token = 1234;
    std::vector<phi::SeqStep> steps(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
        steps[i].tokens = std::span<const int32_t>(&token, 1);
        steps[i].start_pos = pos;
        steps[i].block_table = seqs[i].table;
        steps[i].adapter = seqs[i].adapter;
    }
    const auto t0 = clock_type::now();
    model.forward(steps, &logits);
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_lora"};
    std::string model_dir, adapter_list, dtype = "bf16";
    int64_t context = 128;
    int steps = 7;
    app.add_option("--model", model_dir, "base checkpoint (make_random_checkpoint phi2)")->required();
    app.add_option("--adapters", adapter_list, "four comma-separated PEFT adapter folders")->required();
    app.add_option("--dtype", dtype, "base weight dtype")->check(CLI::IsMember({"f32", "bf16"}));
    app.add_option("--context", context, "cached tokens before decoding (a multiple of 16)")
        ->check(CLI::Range(16, 2048));
    app.add_option("--steps", steps, "timed decode steps of each variant per batch")
        ->check(CLI::Range(1, 64));
    CLI11_PARSE(app, argc, argv);

    phi::init_logging("warn", 0);
    try {
        std::vector<std::string> dirs;
        std::stringstream list(adapter_list);
        for (std::string d; std::getline(list, d, ',');) dirs.push_back(d);
        PHI_CHECK(dirs.size() == 4, "--adapters: give four adapter folders, got {}", dirs.size());
        const int64_t bs = 16;
        PHI_CHECK(context % bs == 0, "--context {} is not a multiple of the block size {}", context, bs);

        // Blocks: one prefix of context/bs blocks per variant (base + 4 adapters), then each of the
        // 2 + 32 decoding sequences' own blocks for 1 warm-up + `steps` tokens.
        const int64_t n_variants = 5, prefix_blocks = context / bs, own_blocks = (1 + steps + bs - 1) / bs;
        const int64_t n_seqs = 2 + 32;
        phi::ModelOptions opts;
        opts.isa = phi::kernels::cpu::choose_isa();
        opts.weight_dtype = dtype == "f32" ? phi::DType::F32 : phi::DType::BF16;
        opts.kv = phi::KvCacheConfig{n_variants * prefix_blocks + n_seqs * own_blocks, bs};
        phi::LocalCommunicator comm;
        const auto t_load = clock_type::now();
        auto model = phi::load_model(model_dir, comm, opts);
        const size_t base_bytes = model->weights().resident_bytes;
        size_t one_adapter_bytes = 0;
        for (size_t i = 0; i < dirs.size(); ++i) {
            phi::LoraAdapterWeights w = phi::load_lora_adapter(dirs[i], model->config(), model->plan());
            PHI_CHECK(w.max_rank > 0, "adapter {} adapts nothing", dirs[i]);
            one_adapter_bytes = std::max(one_adapter_bytes, adapter_bytes(w));
            model->add_adapter(int32_t(i + 1), std::move(w));
        }
        std::printf(
            "model %s (%s weights, %.2f GB), 4 adapters (%.1f MB fp32 each as read), %lld cached tokens, "
            "%d OpenMP threads, %s; loaded in %.1f s\n",
            model_dir.c_str(), dtype.c_str(), double(base_bytes) / 1e9, double(one_adapter_bytes) / 1e6,
            (long long)context, omp_get_max_threads(),
            std::string(phi::kernels::cpu::isa_name(opts.isa)).c_str(),
            std::chrono::duration<double>(clock_type::now() - t_load).count());

        // Prefill: one prefix per variant, all five in one step.
        std::vector<std::vector<int32_t>> prefix_table(n_variants);
        std::vector<int32_t> prompt(static_cast<size_t>(context));
        for (int64_t i = 0; i < context; ++i) prompt[size_t(i)] = int32_t((i * 7919 + 13) % 50000);
        std::vector<phi::SeqStep> pre(n_variants);
        for (int64_t v = 0; v < n_variants; ++v) {
            for (int64_t b = 0; b < prefix_blocks; ++b)
                prefix_table[size_t(v)].push_back(int32_t(v * prefix_blocks + b));
            pre[size_t(v)].tokens = prompt;
            pre[size_t(v)].block_table = prefix_table[size_t(v)];
            pre[size_t(v)].adapter = int32_t(v);
        }
        std::vector<float> logits;
        const auto t_pre = clock_type::now();
        model->forward(pre, &logits);
        const int64_t V = model->vocab_padded(), vocab = model->config().vocab_size;
        double max_diff = 0;  // adapter 1's last-position logits against the base's: the adapter is live
        for (int64_t j = 0; j < vocab; ++j)
            max_diff = std::max(max_diff, double(std::fabs(logits[size_t(V + j)] - logits[size_t(j)])));
        std::printf("prefill %lld tokens in %.1f s; adapter 1 moves the last logits by up to %.3g\n",
                    (long long)(n_variants * context),
                    std::chrono::duration<double>(clock_type::now() - t_pre).count(), max_diff);

        int32_t next_block = int32_t(n_variants * prefix_blocks);
        auto make_seq = [&](int32_t adapter) {
            Seq s{adapter, prefix_table[size_t(adapter)]};
            for (int64_t b = 0; b < own_blocks; ++b) s.table.push_back(next_block++);
            return s;
        };
        struct Case {
            const char* name;
            int n_adapters;
            double goal;
            std::vector<Seq> base, lora;
        };
        std::vector<Case> cases(2);
        cases[0] = {"batch 1 (adapter 1)", 1, 0.9, {make_seq(0)}, {make_seq(1)}};
        cases[1] = {"batch 16 (4 adapters mixed)", 4, 0.85, {}, {}};
        for (int i = 0; i < 16; ++i) {
            cases[1].base.push_back(make_seq(0));
            cases[1].lora.push_back(make_seq(int32_t(1 + i % 4)));
        }

        // Multiply-adds per token: the layers' linears (Phi-2's MLP: fc1 + fc2) and the LM head; a
        // token's LoRA multiplies each element of its adapter's A and B once (qkv B's zero blocks too).
        const phi::ModelConfig& mc = model->config();
        const double d = double(mc.d_model), hd = double(mc.head_dim);
        const double base_macs =
            double(mc.n_layers) * ((double(mc.n_heads) + 2.0 * double(mc.n_kv_heads)) * hd * d +
                                   double(mc.n_heads) * hd * d + 2.0 * double(mc.d_ff) * d) +
            double(mc.vocab_size) * d;
        const double flop_bound = base_macs / (base_macs + double(one_adapter_bytes) / 4.0);
        std::printf("\n%-28s %11s %11s %10s %6s %12s %11s\n", "", "base tok/s", "LoRA tok/s", "LoRA/base",
                    "goal", "bytes bound", "FLOP bound");
        for (const Case& c : cases) {
            const double batch = double(c.base.size());
            step(*model, c.base, context, logits);  // warm-up (scratch sized, pages touched)
            step(*model, c.lora, context, logits);
            std::vector<double> tb, tl;
            for (int r = 0; r < steps; ++r) {
                const int64_t pos = context + 1 + r;
                if (r % 2 == 0) {  // alternate which variant runs first in each pair
                    tb.push_back(step(*model, c.base, pos, logits));
                    tl.push_back(step(*model, c.lora, pos, logits));
                } else {
                    tl.push_back(step(*model, c.lora, pos, logits));
                    tb.push_back(step(*model, c.base, pos, logits));
                }
            }
            const double base_tps = batch / median(tb), lora_tps = batch / median(tl);
            const double bytes_bound =
                double(base_bytes) / double(base_bytes + size_t(c.n_adapters) * one_adapter_bytes);
            std::printf("%-28s %11.2f %11.2f %10.3f %6.2f %12.3f %11.3f  %s\n", c.name, base_tps, lora_tps,
                        lora_tps / base_tps, c.goal, bytes_bound, flop_bound,
                        lora_tps / base_tps >= c.goal ? "meets goal" : "BELOW goal");
            std::fflush(stdout);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_lora: %s\n", e.what());
        return 1;
    }
    return 0;
}
