// The engine end to end on a real-shaped checkpoint (random weights), at any TP size:
//   scripts/mpirun.sh -np N build/bench/engine/bench_engine --model DIR [--dtype bf16]
// Reports generated tokens/s at batch 1, 8 and 32 (greedy, 16-token prompts), prompt tokens/s for a
// 512-token prefill, the time per step spent sampling and gathering logits on rank 0, and the
// GFLOP/s reached against the matrix-multiply rate of the same kernels measured in the same run.
#include <CLI/CLI.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <random>

#include "cluster/mpi_communicator.h"
#include "common/log.h"
#include "coordinator/engine/engine.h"
#include "kernels/cpu/isa.h"
#include "worker/load_model.h"

namespace {

using clock_type = std::chrono::steady_clock;

// GFLOP/s of the linear kernel on a Phi-2-sized matrix at batch 64 with this rank's threads.
double measure_gemm_gflops(phi::kernels::cpu::Isa isa, phi::DType dtype) {
    const int64_t rows = 2560, cols = 2560, n = 64;
    std::vector<float> x(size_t(n * cols), 0.01f), y(size_t(n * rows));
    std::vector<uint16_t> wb(size_t(rows * cols), 0x3c00);
    std::vector<float> wf(size_t(rows * cols), 0.01f);
    phi::kernels::cpu::WeightView w{dtype == phi::DType::BF16 ? static_cast<const void*>(wb.data()) : wf.data(), dtype,
                                    rows, cols};
    phi::kernels::cpu::linear(isa, y.data(), x.data(), n, w, nullptr);
    const auto t0 = clock_type::now();
    int it = 0;
    while (std::chrono::duration<double>(clock_type::now() - t0).count() < 1.0) {
        phi::kernels::cpu::linear(isa, y.data(), x.data(), n, w, nullptr);
        ++it;
    }
    const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
    return 2.0 * double(rows * cols * n) * it / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_engine"};
    std::string model_dir, dtype = "bf16";
    int gen = 16, prefill = 512;
    app.add_option("--model", model_dir)->required();
    app.add_option("--dtype", dtype)->check(CLI::IsMember({"f32", "bf16"}));
    app.add_option("--gen", gen, "tokens generated per request");
    app.add_option("--prefill", prefill, "prompt tokens of the prefill measurement");
    CLI11_PARSE(app, argc, argv);

    phi::MpiSession mpi(&argc, &argv);
    phi::MpiCommunicator comm;
    phi::init_logging("warn", comm.rank());
    phi::ModelOptions opts;
    opts.isa = phi::kernels::cpu::choose_isa();
    opts.weight_dtype = dtype == "bf16" ? phi::DType::BF16 : phi::DType::F32;
    opts.kv = phi::KvCacheConfig{512, 16};
    auto model = phi::load_model(model_dir, comm, opts);
    phi::StepExecutor exec(*model, comm, phi::WatchdogOptions{std::chrono::milliseconds(600000)});
    if (comm.rank() != 0) {
        exec.follow();
        return 0;
    }
    const double gemm = measure_gemm_gflops(opts.isa, opts.weight_dtype) * comm.size();
    const auto& c = model->config();
    const double flops_per_token =
        2.0 * double(c.n_layers) * double(c.d_model) * double(4 * c.d_model + 2 * c.d_ff) + 2.0 * double(c.vocab_size * c.d_model);
    std::printf("model %s, %s weights, tp %d, %d thread(s) per rank; linear kernel at batch 64: %.1f GFLOP/s "
                "(all ranks)\n",
                model_dir.c_str(), dtype.c_str(), comm.size(), omp_get_max_threads(), gemm);

    phi::engine::EngineConfig ec;
    ec.max_num_seqs = 64;
    ec.max_batched_tokens = 1024;
    ec.prefix_caching = false;
    phi::engine::Engine engine(exec, ec);
    std::mt19937 rng(11);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(c.vocab_size - 1));
    double tps1 = 0;
    for (int batch : {1, 8, 32}) {
        int done = 0;
        for (int i = 0; i < batch; ++i) {
            phi::engine::EngineRequest r;
            for (int k = 0; k < 16; ++k) r.prompt.push_back(tok(rng));
            r.params.temperature = 0;
            r.params.max_tokens = gen;
            engine.submit(r, [&](const phi::engine::Event& e) { done += e.kind == phi::engine::Event::Kind::Finished; });
        }
        engine.step();  // prefill (not timed)
        const auto s0 = engine.stats();
        const double g0 = exec.comm().stats().gather_seconds;
        const auto t0 = clock_type::now();
        while (done < batch) engine.step();
        const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
        const auto s1 = engine.stats();
        const double toks = double(s1.generated_tokens - s0.generated_tokens);
        const double steps = double(s1.steps - s0.steps);
        if (batch == 1) tps1 = toks / s;
        const double gather_ms = (exec.comm().stats().gather_seconds - g0) / steps * 1e3;
        std::printf("batch %2d: %7.2f generated tok/s (%.2fx batch 1), %6.1f ms/step, sampling %.2f ms/step, "
                    "logits gather %.2f ms/step, %.1f GFLOP/s = %.2f of the measured matmul rate\n",
                    batch, toks / s, toks / s / tps1, s / steps * 1e3,
                    (s1.sample_seconds - s0.sample_seconds) / steps * 1e3, gather_ms, toks / s * flops_per_token / 1e9,
                    toks / s * flops_per_token / 1e9 / gemm);
    }
    {
        int done = 0;
        phi::engine::EngineRequest r;
        for (int k = 0; k < prefill; ++k) r.prompt.push_back(tok(rng));
        r.params.temperature = 0;
        r.params.max_tokens = 1;
        engine.submit(r, [&](const phi::engine::Event& e) { done += e.kind == phi::engine::Event::Kind::Finished; });
        const auto t0 = clock_type::now();
        while (!done) engine.step();
        const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
        std::printf("prefill %d tokens: %.2f s = %.1f prompt tok/s, %.1f GFLOP/s = %.2f of the measured matmul rate\n",
                    prefill, s, prefill / s, prefill * flops_per_token / s / 1e9, prefill * flops_per_token / s / 1e9 / gemm);
    }
    const auto& cs = exec.comm().stats();
    std::printf("rank 0 collectives: %.3f s in all-reduces (%lld calls), %lld gathers\n", cs.all_reduce_seconds,
                (long long)cs.all_reduces, (long long)cs.gathers);
    exec.shutdown();
    return 0;
}
