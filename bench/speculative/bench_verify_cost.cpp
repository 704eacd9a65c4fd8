// What a speculative verification step costs: the time of one (1 + k)-token step (logits for every
// row) against a one-token decode step, batch 1, on a real-shaped checkpoint, for each weight dtype:
//   build/bench/speculative/bench_verify_cost --model DIR [--k 4] [--context 256] [--dtypes f32,bf16,int8,int4]
// Both steps follow the same `context` cached tokens and alternate in one process, so the ratio is
// measured under the same machine load. A ratio near 1 means the step is bound by reading the
// weights, and each accepted proposal is close to free.
#include <CLI/CLI.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "cluster/communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/cpu/isa.h"
#include "worker/load_model.h"

namespace {

using clock_type = std::chrono::steady_clock;

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Precision {
    phi::DType dtype = phi::DType::F32;
    std::optional<phi::kernels::cpu::QuantFormat> quant;
};

Precision precision_of(const std::string& word) {
    if (word == "f32") return {phi::DType::F32, std::nullopt};
    if (word == "bf16") return {phi::DType::BF16, std::nullopt};
    if (word == "int8") return {phi::DType::BF16, phi::kernels::cpu::QuantFormat::Q8};
    if (word == "int4") return {phi::DType::BF16, phi::kernels::cpu::QuantFormat::Q4};
    throw phi::Error("--dtypes: unknown dtype '" + word + "' (f32, bf16, int8, int4)");
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_verify_cost"};
    std::string model_dir, dtypes = "f32,bf16,int8,int4";
    int k = 4, reps = 15;
    int64_t context = 256;
    app.add_option("--model", model_dir)->required();
    app.add_option("--k", k, "proposals verified per step")->check(CLI::Range(1, 16));
    app.add_option("--context", context, "cached tokens before the step")->check(CLI::Range(1, 4096));
    app.add_option("--dtypes", dtypes, "comma-separated weight dtypes");
    app.add_option("--reps", reps, "timed steps of each kind");
    CLI11_PARSE(app, argc, argv);

    phi::init_logging("warn", 0);
    phi::LocalCommunicator comm;
    std::printf("model %s, batch 1, %lld cached tokens, k %d, %d OpenMP threads\n", model_dir.c_str(),
                (long long)context, k, omp_get_max_threads());
    std::printf("%-6s %14s %18s %8s\n", "dtype", "1-token ms", "(1+k)-token ms", "ratio");
    std::stringstream list(dtypes);
    for (std::string word; std::getline(list, word, ',');) {
        const Precision p = precision_of(word);
        phi::ModelOptions opts;
        opts.isa = phi::kernels::cpu::choose_isa();
        opts.weight_dtype = p.dtype;
        opts.quant = p.quant;
        const int64_t bs = 16;
        opts.kv = phi::KvCacheConfig{(context + k + 1 + bs - 1) / bs + 1, bs};
        auto model = phi::load_model(model_dir, comm, opts);
        std::vector<int32_t> table(static_cast<size_t>(opts.kv.num_blocks), 0);
        for (size_t i = 0; i < table.size(); ++i) table[i] = int32_t(i);
        std::vector<int32_t> prompt(static_cast<size_t>(context), 0);
        for (int64_t i = 0; i < context; ++i) prompt[size_t(i)] = int32_t((i * 7919) % 50000);
        std::vector<float> logits;
        phi::SeqStep pre;
        pre.tokens = prompt;
        pre.block_table = table;
        model->forward(std::span<const phi::SeqStep>(&pre, 1), &logits);

        const std::vector<int32_t> one = {11}, many(size_t(1 + k), 11);
        auto time_step = [&](const std::vector<int32_t>& toks) {
            phi::SeqStep s;
            s.tokens = toks;
            s.start_pos = context;  // both kinds overwrite the same slots after the context
            s.block_table = table;
            s.all_logits = toks.size() > 1;
            const auto t0 = clock_type::now();
            model->forward(std::span<const phi::SeqStep>(&s, 1), &logits);
            return std::chrono::duration<double>(clock_type::now() - t0).count();
        };
        time_step(one);  // warm-up
        time_step(many);
        std::vector<double> t1, tk;
        for (int r = 0; r < reps; ++r) {
            t1.push_back(time_step(one));
            tk.push_back(time_step(many));
        }
        const double a = median(t1), b = median(tk);
        std::printf("%-6s %14.2f %18.2f %8.3f\n", word.c_str(), a * 1e3, b * 1e3, b / a);
        std::fflush(stdout);
    }
    return 0;
}
