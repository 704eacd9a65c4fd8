// Decode (and prefill) throughput of the whole forward on a real-shaped checkpoint, at any TP size:
//   scripts/mpirun.sh -np N build/bench/decode/bench_decode --model DIR --dtype bf16 --batch 1,16
// Prints tokens/s and the weight bytes streamed per step as a fraction of the machine's read
// bandwidth measured in the same run (bench/common/membw).
#include <CLI/CLI.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include "bench/common/flops.h"
#include "bench/common/membw.h"
#include "cluster/mpi_communicator.h"
#include "common/log.h"
#include "kernels/cpu/isa.h"
#include "worker/load_model.h"
#include "worker/step_executor.h"

namespace {

using clock_type = std::chrono::steady_clock;

size_t streamed_bytes_per_step(const phi::ModelWeights& w, const phi::ModelConfig& c) {
    // Every weight the rank holds is read once per step (quantized ones as their blocks and scales;
    // norms and biases are a rounding error), except an untied embedding, read only row-wise. (Asked
    // of the config: a quantized LM head's host copy is gone once the backend holds its blocks.)
    return w.resident_bytes - (c.tie_word_embeddings ? 0 : w.embed.bytes.size());
}

// Parameters the LM head and the layers' linears multiply per token (for prefill GFLOP/s).
double matmul_params(const phi::ModelConfig& c) {
    const double d = double(c.d_model), hd = double(c.head_dim), ff = double(c.d_ff);
    const double mlp = c.arch == phi::Arch::Phi ? 2 * ff * d : 3 * ff * d * (c.arch == phi::Arch::PhiMoE ? 2 : 1);
    const double attn = (double(c.n_heads) + 2.0 * double(c.n_kv_heads)) * hd * d + double(c.n_heads) * hd * d;
    return double(c.n_layers) * (attn + mlp) + double(c.vocab_size) * d;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_decode"};
    std::string model_dir, dtype = "bf16", batches = "1,16", quant_acts = "f32";
    int steps = 8, prompt_len = 16, prefill_len = 0;
    app.add_option("--model", model_dir)->required();
    app.add_option("--dtype", dtype)->check(CLI::IsMember({"f32", "bf16", "int8", "int4"}));
    app.add_option("--quant-activations", quant_acts, "int8/int4 weights: f32 (weight-only) or int8")
        ->check(CLI::IsMember({"f32", "int8"}));
    app.add_option("--batch", batches, "comma-separated batch sizes");
    app.add_option("--steps", steps, "timed decode steps per batch size");
    app.add_option("--prompt", prompt_len, "prompt tokens per sequence before decoding");
    app.add_option("--prefill", prefill_len, "also time one prefill of this many tokens (0: skip)");
    CLI11_PARSE(app, argc, argv);

    phi::MpiSession mpi(&argc, &argv);
    phi::MpiCommunicator comm;
    phi::init_logging("warn", comm.rank());
    double bw = 0, peak = 0;
    // All cores of the machine, as all ranks together use them.
    if (comm.rank() == 0) {
        const int cores = int(std::thread::hardware_concurrency());
        bw = phi::bench::measure_read_bandwidth_gbs(size_t(1) << 30, cores);
        peak = phi::bench::measure_peak_gflops(phi::bench::PeakKind::F32Fma, cores);
    }
    comm.barrier();

    std::vector<int> bs;
    {
        std::stringstream ss(batches);
        for (std::string t; std::getline(ss, t, ',');) bs.push_back(std::stoi(t));
    }
    const int max_b = *std::max_element(bs.begin(), bs.end());
    phi::ModelOptions opts;
    opts.isa = phi::kernels::cpu::choose_isa();
    opts.weight_dtype = dtype == "f32" ? phi::DType::F32 : phi::DType::BF16;
    if (dtype == "int8") opts.quant = phi::kernels::cpu::QuantFormat::Q8;
    if (dtype == "int4") opts.quant = phi::kernels::cpu::QuantFormat::Q4;
    if (quant_acts == "int8") opts.quant_activations = phi::kernels::cpu::QuantActivations::Int8;
    opts.kv.block_size = 16;
    const int per_seq_blocks = (std::max(prompt_len, prefill_len) + steps + 16) / 16 + 1;
    opts.kv.num_blocks = int64_t(max_b) * per_seq_blocks + per_seq_blocks;
    const auto t_load = clock_type::now();
    auto model = phi::load_model(model_dir, comm, opts);
    const double load_s = std::chrono::duration<double>(clock_type::now() - t_load).count();
    phi::StepExecutor exec(*model, comm, phi::WatchdogOptions{std::chrono::milliseconds(600000)});
    if (comm.rank() != 0) {
        exec.follow();
        return 0;
    }
    const size_t bytes_rank = streamed_bytes_per_step(model->weights(), model->config());
    const size_t bytes_all = bytes_rank * size_t(comm.size());
    std::printf("model %s, %s weights (%s activations), tp %d, %d OpenMP thread(s) per rank, ISA %s, load %.1f s\n",
                model_dir.c_str(), dtype.c_str(), quant_acts.c_str(), comm.size(), omp_get_max_threads(),
                std::string(phi::kernels::cpu::isa_name(opts.isa)).c_str(), load_s);
    std::printf("measured read bandwidth: %.1f GB/s; weights streamed per step: %.2f GB (all ranks)\n", bw,
                double(bytes_all) / 1e9);
    std::printf("bandwidth-bound limit at batch 1: %.2f tok/s\n", bw * 1e9 / double(bytes_all));
    const double flops_per_token = 2.0 * matmul_params(model->config());
    std::printf("measured fp32 FMA peak (%s, all cores): %.1f GFLOP/s; compute-bound limit: %.1f tok/s\n",
                phi::bench::peak_isa_name(phi::bench::PeakKind::F32Fma), peak, peak * 1e9 / flops_per_token);

    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(model->config().vocab_size - 1));
    std::vector<float> logits;
    double tps_b1 = 0;
    for (int b : bs) {
        std::vector<phi::SeqPlan> seqs(static_cast<size_t>(b));
        for (int i = 0; i < b; ++i) {
            auto& s = seqs[size_t(i)];
            s.seq_id = i;
            s.tokens.resize(size_t(prompt_len));
            for (auto& t : s.tokens) t = tok(rng);
            s.block_table.resize(size_t(per_seq_blocks));
            std::iota(s.block_table.begin(), s.block_table.end(), i * per_seq_blocks);
        }
        phi::StepPlan plan;
        plan.seqs = seqs;
        exec.run(plan, &logits);  // prefill (untimed)
        for (auto& s : seqs) {
            s.start_pos = prompt_len;
            s.tokens = {tok(rng)};
        }
        double total = 0;
        for (int k = 0; k < steps + 1; ++k) {
            plan.seqs = seqs;
            const auto t0 = clock_type::now();
            exec.run(plan, &logits);
            const double dt = std::chrono::duration<double>(clock_type::now() - t0).count();
            if (k > 0) total += dt;  // first decode step warms caches
            for (auto& s : seqs) {
                s.start_pos += 1;
                s.tokens = {tok(rng)};
            }
        }
        const double step = total / steps;
        const double tps = b / step;
        if (b == 1) tps_b1 = tps;
        const double gbs = double(bytes_all) / step / 1e9;
        const double gflops = flops_per_token * tps / 1e9;
        std::printf("decode batch %2d: %7.2f tok/s, %7.1f ms/step, weights %.1f GB/s = %.2f of measured bandwidth, "
                    "%.1f GFLOP/s = %.2f of FMA peak%s\n",
                    b, tps, step * 1e3, gbs, gbs / bw, gflops, gflops / peak,
                    b > 1 && tps_b1 > 0 ? (" (" + std::to_string(tps / tps_b1).substr(0, 5) + "x batch 1)").c_str()
                                        : "");
    }
    if (prefill_len > 0) {
        phi::StepPlan plan;
        phi::SeqPlan s;
        s.seq_id = 999;
        s.tokens.resize(size_t(prefill_len));
        for (auto& t : s.tokens) t = tok(rng);
        s.block_table.resize(size_t(per_seq_blocks));
        std::iota(s.block_table.begin(), s.block_table.end(), max_b * per_seq_blocks);
        plan.seqs = {s};
        const auto t0 = clock_type::now();
        exec.run(plan, &logits);
        const double dt = std::chrono::duration<double>(clock_type::now() - t0).count();
        const double flops = flops_per_token * prefill_len;
        std::printf("prefill %d tokens: %.2f s, %.1f tok/s, %.1f GFLOP/s (weights only) = %.2f of FMA peak\n",
                    prefill_len, dt, prefill_len / dt, flops / dt / 1e9, flops / dt / 1e9 / peak);
    }
    exec.shutdown();
    return 0;
}
