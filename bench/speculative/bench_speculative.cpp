// Speculative decoding on the bundled code model, one rank, batch 1:
//   build/bench/speculative/bench_speculative [--model models/phi-tiny-code] [--k 4] [--gen 128]
//       [--method ngram|draft] [--draft-model DIR (default: --model)] [--draft-layers 2]
// Code prompts that repeat context (editing, refactoring: the answer copies much of the prompt).
// Each prompt runs without and with speculation in the same process, alternating, and the
// generated tokens must be identical; prints tokens/s of each, their ratio, the acceptance rate
// and the tokens per sequence step.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>

#include "cluster/communicator.h"
#include "common/log.h"
#include "coordinator/engine/engine.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "kernels/cpu/isa.h"
#include "worker/load_model.h"

namespace {

using clock_type = std::chrono::steady_clock;

const char* k_prompts[] = {
    // Rename a variable.
    "# Rename `total` to `acc` in this function.\n"
    "def sum_squares(values):\n    total = 0\n    for v in values:\n        total += v * v\n    return total\n\n"
    "# After the rename:\ndef sum_squares(values):\n    acc = 0\n",
    // Repeat a class with a changed method.
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n        self.items.append(x)\n\n"
    "    def pop(self):\n        return self.items.pop()\n\n    def size(self):\n        return len(self.items)\n\n"
    "# The same class, with a peek method added:\nclass Stack:\n    def __init__(self):\n",
    // Copy a list of similar lines.
    "config = {\n    'host': 'localhost',\n    'port': 8080,\n    'debug': False,\n    'workers': 4,\n}\n\n"
    "# Same config for staging:\nstaging = {\n    'host': 'localhost',\n",
};

struct Result {
    std::vector<int32_t> tokens;
    double seconds = 0;
};

Result generate(phi::engine::Engine& engine, const std::vector<int32_t>& prompt, int gen) {
    Result r;
    bool done = false;
    phi::engine::EngineRequest q;
    q.prompt = prompt;
    q.params.temperature = 0;
    q.params.max_tokens = gen;
    q.params.ignore_eos = true;
    engine.submit(q, [&](const phi::engine::Event& e) {
        if (e.kind == phi::engine::Event::Kind::Token) r.tokens.push_back(e.token);
        else done = true;
    });
    engine.step();  // the prefill and the first token: not timed
    const auto t0 = clock_type::now();
    while (!done) engine.step();
    r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"bench_speculative"};
    std::string model_dir = "models/phi-tiny-code";
    int k = 4, gen = 128, reps = 3;
    std::string method = "ngram", draft_dir;
    int64_t draft_layers = 2;
    app.add_option("--model", model_dir);
    app.add_option("--method", method, "ngram or draft")->check(CLI::IsMember({"ngram", "draft"}));
    app.add_option("--draft-model", draft_dir, "the draft checkpoint (default: --model, cut to --draft-layers)");
    app.add_option("--draft-layers", draft_layers, "the draft's first N layers (0 = all)");
    app.add_option("--k", k, "proposals per step")->check(CLI::Range(1, 16));
    app.add_option("--gen", gen, "tokens generated per prompt");
    app.add_option("--reps", reps, "runs of each prompt and mode");
    CLI11_PARSE(app, argc, argv);

    phi::init_logging("warn", 0);
    phi::LocalCommunicator comm;
    phi::ModelOptions opts;
    opts.isa = phi::kernels::cpu::choose_isa();
    opts.kv = phi::KvCacheConfig{256, 16};
    auto model = phi::load_model(model_dir, comm, opts);
    std::unique_ptr<phi::PhiModel> draft;
    if (method == "draft") {
        phi::ModelOptions dopts = opts;
        dopts.layers = draft_layers;
        draft = phi::load_model(draft_dir.empty() ? model_dir : draft_dir, comm, dopts);
    }
    phi::StepExecutor exec(*model, comm, phi::WatchdogOptions{}, draft.get());
    const phi::tokenizer::Tokenizer tok = phi::tokenizer::Tokenizer::load(model_dir);

    phi::engine::EngineConfig plain_cfg;
    plain_cfg.vocab_limit = tok.vocab_size();
    plain_cfg.prefix_caching = false;
    phi::engine::EngineConfig spec_cfg = plain_cfg;
    spec_cfg.speculative.method =
        method == "draft" ? phi::engine::SpeculativeConfig::Method::Draft : phi::engine::SpeculativeConfig::Method::Ngram;
    spec_cfg.speculative.k = k;
    // Engines run one at a time over the same runner (the KV cache is reused, nothing is shared).
    phi::engine::Engine plain(exec, plain_cfg), spec(exec, spec_cfg);

    double t_plain = 0, t_spec = 0;
    int64_t n_plain = 0, n_spec = 0;
    bool identical = true;
    for (const char* text : k_prompts) {
        const std::vector<int32_t> prompt = tok.encode(text);
        for (int rep = 0; rep < reps; ++rep) {
            const Result a = generate(plain, prompt, gen);
            const Result b = generate(spec, prompt, gen);
            identical = identical && a.tokens == b.tokens;
            t_plain += a.seconds;
            t_spec += b.seconds;
            n_plain += int64_t(a.tokens.size()) - 1;
            n_spec += int64_t(b.tokens.size()) - 1;
        }
    }
    const phi::engine::EngineStats s = spec.stats();
    const double acc = s.spec_proposed > 0 ? double(s.spec_accepted) / double(s.spec_proposed) : 0.0;
    std::printf("model %s, batch 1, greedy, %zu code prompts x %d runs, %d tokens each, k %d, %s\n", model_dir.c_str(),
                std::size(k_prompts), reps, gen, k,
                method == "draft" ? ("draft model: its first " + std::to_string(draft->config().n_layers) + " layers").c_str()
                                  : "n-gram 1-3");
    std::printf("without speculation: %.1f tok/s\nwith speculation: %.1f tok/s (%.2fx), acceptance %.3f "
                "(%lld of %lld proposals), %.2f tokens per sequence step\noutputs identical: %s\n",
                double(n_plain) / t_plain, double(n_spec) / t_spec, (double(n_spec) / t_spec) / (double(n_plain) / t_plain),
                acc, (long long)s.spec_accepted, (long long)s.spec_proposed,
                s.decode_seq_steps > 0 ? double(s.decode_tokens) / double(s.decode_seq_steps) : 0.0,
                identical ? "yes" : "NO");
    return identical ? 0 : 1;
}
