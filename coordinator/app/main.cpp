// phi-worker: the process every rank runs (`mpirun -np N phi-worker ...`, see scripts/mpirun.sh).
//  * Server mode (`--config FILE.yaml`): rank 0 serves the native TCP protocol and OpenAI-compatible
//    HTTP over the engine; ranks > 0 follow rank 0's step plans.
//  * Offline mode (`--model DIR --prompt TEXT | --chat TEXT | --prompt-ids IDS`): generates once,
//    streaming text to stdout; the quickest check of a model before serving it.
//  * `--print-plan N --model DIR`: what each of N ranks would hold.
// Only the main thread calls MPI (the engine loop on rank 0, follow() elsewhere).
#include <CLI/CLI.hpp>

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cluster/mpi_communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "coordinator/app/cluster_config.h"
#include "coordinator/app/gpu_rank.h"
#include "coordinator/app/launch_checks.h"
#include "coordinator/app/lora_setup.h"
#include "coordinator/app/model_setup.h"
#include "coordinator/app/server.h"
#include "coordinator/app/sizing.h"
#include "coordinator/engine/engine.h"
#include "coordinator/serving/service.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "kernels/cpu/isa.h"
#include "worker/fixed_adapter_runner.h"
#include "worker/load_model.h"
#include "worker/lora_weights.h"
#include "worker/print_plan.h"

namespace {

using namespace phi;

struct OfflineArgs {
    std::string adapter_dir;  // --adapter: one LoRA adapter applied to every request
    std::string model_dir, prompt, chat, system, prompt_ids, dtype = "bf16", backend = "cpu",
                quant_activations = "f32";
    std::string kv_dtype = "f32";
    bool allow_shared_device = false;
    int64_t max_tokens = 128;
    int64_t max_lora_rank = 64;
    float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f, repetition_penalty = 1.0f;
    int top_k = 0;
    int64_t seed = -1;
    int ngram_k = 0;  // > 0: n-gram speculative decoding with this many proposals per step
    std::string draft_model;  // non-empty: draft-model speculative decoding
    int draft_k = 3;
    int64_t draft_layers = 0;
    int64_t vocab_limit = 0;  // without a tokenizer: ids at or above it are never generated
    bool rejection_sampling = false;
    int threads = 0;
    int tp = 0;
    int64_t watchdog_ms = 10000;
    int64_t plan_wait_ms = 120000;
};

std::vector<int32_t> parse_ids(const std::string& s) {
    std::vector<int32_t> ids;
    std::istringstream in(s);
    for (std::string tok; in >> tok;) {
        size_t used = 0;
        long v = -1;
        try {
            v = std::stol(tok, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        PHI_CHECK(used == tok.size() && v >= 0 && v <= INT32_MAX, "--prompt-ids: '{}' is not a token id", tok);
        ids.push_back(int32_t(v));
    }
    PHI_CHECK(!ids.empty(), "--prompt-ids is empty");
    return ids;
}

// Ranks > 0 leave a drain to rank 0's plan: SIGUSR1 (scripts/mpirun.sh's drain) must not end them
// early. SIGTERM/SIGINT keep their default action: teardown (coordinator/app/signals.h).
void ignore_drain_signal() { std::signal(SIGUSR1, SIG_IGN); }

int run_offline(MpiCommunicator& comm, const OfflineArgs& a) {
    PHI_CHECK(a.tp == 0 || a.tp == comm.size(),
              "--tp {} does not match the MPI world size {}: start {} ranks (mpirun -np {}) or change --tp", a.tp,
              comm.size(), a.tp, a.tp);
    const int modes = !a.prompt.empty() + !a.chat.empty() + !a.prompt_ids.empty();
    PHI_CHECK(modes == 1, "give exactly one of --prompt, --chat and --prompt-ids (or --config, or --print-plan)");
    const bool gpu = a.backend == "cuda";
    PHI_CHECK(gpu || !a.allow_shared_device, "--allow-shared-device is for --backend cuda");
    PHI_CHECK(!gpu || a.adapter_dir.empty(),
              "--adapter: LoRA adapters do not run on the cuda backend yet (not checked on a GPU); use --backend cpu");
    app::GpuPlacement placement;
    if (gpu) {
        // Every rank for itself, before any collective: no GPU ends the job at once.
        app::ClusterConfig as_config;
        as_config.dtype = a.dtype;
        as_config.quant_activations = a.quant_activations;
        as_config.threads_per_rank = a.threads;
        try {
            app::check_cuda_options(as_config, "offline");
        } catch (const Error& e) {
            PHI_FAIL("{} (--dtype, --quant-activations and --threads are the offline flags)", e.what());
        }
        placement = app::choose_gpu(comm, a.allow_shared_device);
    }
    const app::LaunchAgreement launch = app::agree_at_launch(comm, a.threads);
    ModelOptions opts;
    opts.isa = launch.isa.isa;
    const WeightPrecision precision = app::weight_precision(a.dtype);
    PHI_CHECK(a.quant_activations == "f32" || precision.quant,
              "--quant-activations {} quantizes the inputs of int8/int4 linear weights: add --dtype int8 or int4",
              a.quant_activations);
    opts.weight_dtype = precision.dtype;
    opts.quant = precision.quant;
    opts.quant_activations =
        a.quant_activations == "int8" ? kernels::cpu::QuantActivations::Int8 : kernels::cpu::QuantActivations::F32;
    opts.kv.block_size = 16;
    opts.kv.num_blocks = (a.max_tokens + 16 * 1024) / 16;
    opts.kv.dtype = a.kv_dtype == "bf16" ? DType::BF16 : DType::F32;
    std::unique_ptr<PhiModel> cpu_model;
    std::unique_ptr<app::GpuRank> gpu_rank;
    const engine::EngineConfig engine_defaults;
    if (gpu) {
        app::GpuModelOptions go;
        go.kv_blocks = opts.kv.num_blocks;
        go.block_size = opts.kv.block_size;
        go.max_tokens = engine_defaults.max_batched_tokens;
        go.max_seqs = engine_defaults.max_num_seqs;
        go.max_context = opts.kv.num_blocks * opts.kv.block_size;
        gpu_rank = app::start_gpu_rank(comm, a.model_dir, placement, go);
    } else {
        cpu_model = load_model(a.model_dir, comm, opts);
    }
    std::unique_ptr<PhiModel> draft_model;
    if (!a.draft_model.empty()) {
        PHI_CHECK(!gpu, "--draft-model runs on the CPU backend only for now; use --ngram-k with --backend cuda");
        PHI_CHECK(a.ngram_k == 0, "--ngram-k and --draft-model are two proposers: pick one");
        ModelOptions dopts = opts;
        dopts.layers = a.draft_layers;
        dopts.debug_dump_dir = std::nullopt;
        draft_model = load_model(a.draft_model, comm, dopts);
    }
    ModelRunner* runner = gpu ? static_cast<ModelRunner*>(&gpu_rank->model()) : cpu_model.get();
    std::unique_ptr<FixedAdapterRunner> with_adapter;
    if (!a.adapter_dir.empty()) {
        PHI_CHECK(!precision.quant, "--adapter runs on f32 and bf16 weights (each checked against HF + PEFT); with "
                                    "--dtype {} it is not verified yet: use --dtype bf16",
                  a.dtype);
        app::load_adapters(*cpu_model, comm, {{"adapter", a.adapter_dir}}, a.max_lora_rank);
        with_adapter = std::make_unique<FixedAdapterRunner>(*cpu_model, 1);
        runner = with_adapter.get();
        if (comm.rank() == 0) log().info("LoRA adapter {} applied to every request", a.adapter_dir);
    }
    ModelRunner& model = *runner;
    WatchdogOptions wd;
    wd.step_base = std::chrono::milliseconds(a.watchdog_ms);
    wd.plan_wait = std::chrono::milliseconds(a.plan_wait_ms);
    StepExecutor exec(model, comm, wd, draft_model.get());
    if (comm.rank() == 0)
        log().info("model {} loaded on {} rank(s): {} layers, d_model {}, {} heads, {}", a.model_dir, comm.size(),
                   model.config().n_layers, model.config().d_model, model.config().n_heads,
                   gpu ? gpu_rank->describe() : fmt::format("ISA {}", kernels::cpu::isa_name(opts.isa)));
    if (comm.rank() != 0) {
        ignore_drain_signal();
        exec.follow();
        return 0;
    }
    // Rank 0: without a tokenizer only --prompt-ids works, and ids are printed.
    std::optional<tokenizer::Tokenizer> tok;
    const bool has_tokenizer = std::filesystem::exists(std::filesystem::path(a.model_dir) / "tokenizer.json") ||
                               std::filesystem::exists(std::filesystem::path(a.model_dir) / "tokenizer.json.gz");
    if (has_tokenizer) tok.emplace(tokenizer::Tokenizer::load(a.model_dir));
    PHI_CHECK(tok || !a.prompt_ids.empty(), "{} has no tokenizer.json: use --prompt-ids", a.model_dir);

    engine::EngineConfig ec;
    PHI_CHECK(a.vocab_limit == 0 || !tok, "--vocab-limit is for a model folder without a tokenizer (its size is the limit)");
    ec.vocab_limit = tok ? tok->vocab_size() : (a.vocab_limit > 0 ? a.vocab_limit : model.config().vocab_size);
    if (tok) {
        for (int32_t id : app::stop_ids_for(a.model_dir, &*tok, 0)) ec.eos_ids.push_back(id);
    }
    if (a.ngram_k > 0) {
        ec.speculative.method = engine::SpeculativeConfig::Method::Ngram;
        ec.speculative.k = a.ngram_k;
    }
    if (draft_model) {
        ec.speculative.method = engine::SpeculativeConfig::Method::Draft;
        ec.speculative.k = a.draft_k;
        ec.speculative.rejection_sampling = a.rejection_sampling;
    }
    engine::Engine engine(exec, ec);

    sampling::SamplingParams sp;
    sp.temperature = a.temperature;
    sp.top_p = a.top_p;
    sp.top_k = a.top_k;
    sp.min_p = a.min_p;
    sp.repetition_penalty = a.repetition_penalty;
    sp.max_tokens = int32_t(a.max_tokens);
    if (a.seed >= 0) sp.seed = uint64_t(a.seed);

    int64_t n_tokens = 0;
    std::string reason;
    const auto t0 = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point t_first{};
    if (tok) {
        serving::Metrics metrics;
        serving::Service svc(engine, &*tok, std::filesystem::path(a.model_dir).filename().string(), {}, metrics);
        svc.set_ready(true);
        serving::GenerationRequest req;
        if (!a.prompt_ids.empty()) {
            req.kind = serving::PromptKind::TokenIds;
            req.token_ids = parse_ids(a.prompt_ids);
        } else if (!a.chat.empty()) {
            req.kind = serving::PromptKind::Chat;
            req.messages = nlohmann::ordered_json::array();
            if (!a.system.empty()) req.messages.push_back({{"role", "system"}, {"content", a.system}});
            req.messages.push_back({{"role", "user"}, {"content", a.chat}});
        } else {
            req.kind = serving::PromptKind::Text;
            req.text = a.prompt;
        }
        req.params = sp;
        bool done = false;
        svc.submit(req, [&](const serving::OutputEvent& e) {
            if (e.kind == serving::OutputEvent::Kind::Token) {
                if (n_tokens++ == 0) t_first = std::chrono::steady_clock::now();
                std::fwrite(e.text.data(), 1, e.text.size(), stdout);
                std::fflush(stdout);
            } else if (e.kind == serving::OutputEvent::Kind::ChoiceDone) {
                std::fwrite(e.text.data(), 1, e.text.size(), stdout);
                reason = e.finish_reason + (e.error.empty() ? "" : ": " + e.error);
            } else {
                done = true;
            }
        });
        while (!done) engine.step();
        std::printf("\n");
    } else {
        engine::EngineRequest req;
        req.prompt = parse_ids(a.prompt_ids);
        req.params = sp;
        bool done = false;
        std::printf("generated ids:");
        engine.submit(req, [&](const engine::Event& e) {
            if (e.kind == engine::Event::Kind::Token) {
                if (n_tokens++ == 0) t_first = std::chrono::steady_clock::now();
                std::printf(" %d", e.token);
                std::fflush(stdout);
            } else {
                reason = engine::finish_reason_name(e.reason);
                done = true;
            }
        });
        while (!done) engine.step();
        std::printf("\n");
    }
    exec.shutdown();
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double ttft = std::chrono::duration<double>(t_first - t0).count();
    const engine::EngineStats st = engine.stats();
    std::fprintf(stderr,
                 "[%lld tokens, finish: %s, first token %.3f s, %.2f tok/s after it, %.2f tokens/step, "
                 "speculative accepted %lld of %lld, %d rank(s)]\n",
                 (long long)n_tokens, reason.c_str(), ttft, n_tokens > 1 ? double(n_tokens - 1) / (total - ttft) : 0.0,
                 st.decode_seq_steps > 0 ? double(st.decode_tokens) / double(st.decode_seq_steps) : 0.0,
                 (long long)st.spec_accepted, (long long)st.spec_proposed, comm.size());
    return 0;
}

int run_server(MpiCommunicator& comm, const std::string& config_path) {
    // Rank 0 reads the file; every rank parses the same bytes, checked by hash.
    std::string text;
    uint64_t n = 0, hash = 0;
    if (comm.rank() == 0) {
        std::ifstream f(config_path, std::ios::binary);
        PHI_CHECK(f.good(), "cannot read the config file {}", config_path);
        std::stringstream ss;
        ss << f.rdbuf();
        text = ss.str();
        n = text.size();
        hash = fnv1a(text.data(), text.size());
    }
    comm.broadcast(&n, sizeof(n), 0);
    comm.broadcast(&hash, sizeof(hash), 0);
    text.resize(n);
    comm.broadcast(text.data(), n, 0);
    PHI_CHECK(fnv1a(text.data(), text.size()) == hash, "rank {}: the config received from rank 0 is corrupt",
              comm.rank());
    const auto base = std::filesystem::absolute(config_path).parent_path();
    const app::ClusterConfig cfg = app::parse_cluster_config(text, config_path, base);
    return app::serve(comm, cfg);
}

// What `phi-worker` alone prints: the one thing to type next. Every rank of `mpirun -np N
// phi-worker` would print it; rank 0 (or a process outside mpirun) does.
int print_usage() {
    const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
    if (rank == nullptr || std::string(rank) == "0") {
        std::fprintf(stderr,
                     "usage: phi-worker --config FILE.yaml          serve a cluster (one process per rank, under MPI)\n"
                     "       phi-worker --model DIR --prompt TEXT   generate once (offline check of a model)\n"
                     "       phi-worker --print-plan N --model DIR  what each of N ranks would hold\n"
                     "The default config serves the bundled model on any number of ranks:\n"
                     "  scripts/mpirun.sh -np 2 phi-worker --config %s\n"
                     "phi-worker --help lists every option.\n",
                     PHI_DEFAULT_CONFIG);
    }
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 1) return print_usage();
    CLI::App cli{"phi-worker: one rank of a phi-cluster (start N of them with scripts/mpirun.sh -np N)"};
    std::string config, log_level = "info";
    int print_plan = 0;
    OfflineArgs a;
    cli.add_option("--config", config,
                   std::string("cluster YAML file: serve (see configs/; the default: ") + PHI_DEFAULT_CONFIG + ")");
    cli.add_option("--model", a.model_dir, "HF model folder (offline mode and --print-plan)");
    cli.add_option("--prompt", a.prompt, "offline: complete this text");
    cli.add_option("--chat", a.chat, "offline: answer this user message through the chat template");
    cli.add_option("--system", a.system, "offline: system message for --chat");
    cli.add_option("--prompt-ids", a.prompt_ids, "offline: prompt as space-separated token ids");
    cli.add_option("--adapter", a.adapter_dir,
                   "offline: a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) applied to "
                   "every request (backend cpu)");
    cli.add_option("--max-lora-rank", a.max_lora_rank, "offline: largest LoRA rank --adapter may have")
        ->check(CLI::Range(1, 4096));
    cli.add_option("--max-tokens", a.max_tokens, "offline: tokens to generate")->check(CLI::Range(1, 1 << 20));
    cli.add_option("--temperature", a.temperature, "offline: 0 = greedy")->check(CLI::Range(0.0, 100.0));
    cli.add_option("--top-p", a.top_p)->check(CLI::Range(0.0, 1.0));
    cli.add_option("--top-k", a.top_k)->check(CLI::Range(-1, 1 << 30));
    cli.add_option("--min-p", a.min_p)->check(CLI::Range(0.0, 1.0));
    cli.add_option("--repetition-penalty", a.repetition_penalty)->check(CLI::Range(0.01, 100.0));
    cli.add_option("--seed", a.seed);
    cli.add_option("--ngram-k", a.ngram_k, "offline: n-gram speculative decoding, proposals per step (0 = off)")
        ->check(CLI::Range(0, 16));
    cli.add_option("--vocab-limit", a.vocab_limit,
                   "offline, for a model folder without a tokenizer: ids at or above N are never generated (the "
                   "tokenizer the ids come from is smaller than the model's vocabulary; server mode: vocab_limit)")
        ->check(CLI::Range(int64_t(1), int64_t(1) << 31));
    cli.add_option("--draft-model", a.draft_model,
                   "offline: draft-model speculative decoding with this Phi checkpoint (same tokenizer; server "
                   "mode: speculative.draft_model)");
    cli.add_option("--draft-k", a.draft_k, "offline: proposals per step with --draft-model")->check(CLI::Range(1, 16));
    cli.add_option("--draft-layers", a.draft_layers,
                   "offline: only the draft checkpoint's first N layers (0 = all); with the served model as the "
                   "draft, an early-exit draft")
        ->check(CLI::Range(0, 1024));
    cli.add_flag("--rejection-sampling", a.rejection_sampling,
                 "offline, with --draft-model: sampled requests accept proposals with min(1, p/q) (the target's "
                 "distribution, not the non-speculative tokens)");
    cli.add_option("--dtype", a.dtype,
                   "offline: weight dtype. bf16 (the default) rounds f32 checkpoints' weights to bf16 and halves "
                   "their memory; --dtype f32 keeps full precision, as the parity checks against HF transformers "
                   "do; int8 and int4 quantize the layers' linear weights in blocks of 32 and an untied LM head to int8 "
                   "(docs/QUANT.md; the embedding stays bf16) (server mode: `dtype: ...` in the YAML)")
        ->check(CLI::IsMember({"f32", "bf16", "int8", "int4"}))
        ->capture_default_str();
    cli.add_option("--quant-activations", a.quant_activations,
                   "offline, --dtype int8|int4: f32 (weight-only, the default) or int8 (each linear's input rounded "
                   "to int8 per block of 32 for integer dot products; server mode: `quant_activations: int8`)")
        ->check(CLI::IsMember({"f32", "int8"}))
        ->capture_default_str();
    cli.add_option("--kv-dtype", a.kv_dtype,
                   "offline: how the KV cache stores K and V; bf16 halves its memory (K and V rounded to bf16, "
                   "as HF with bf16 K/V; server mode: `kv_cache: {dtype: bf16}`; --backend cuda is always bf16)")
        ->check(CLI::IsMember({"f32", "bf16"}))
        ->capture_default_str();
    cli.add_option("--backend", a.backend,
                   "offline: cpu, or cuda (each rank takes the GPU of its node-local rank; weights and KV cache bf16)")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
    cli.add_flag("--allow-shared-device", a.allow_shared_device,
                   "offline, --backend cuda: let several ranks share one GPU (testing; host-staged all-reduce)");
    cli.add_option("--threads", a.threads, "offline: threads per rank (0: the CPUs of its affinity mask / the ranks sharing them)");
    cli.add_option("--tp", a.tp, "offline: expected tensor-parallel size (must equal the MPI world size)");
    cli.add_option("--watchdog-ms", a.watchdog_ms, "offline: base deadline of a step's collectives")
        ->check(CLI::Range(100, 86400000));
    cli.add_option("--plan-wait-ms", a.plan_wait_ms, "offline: how long ranks > 0 wait for rank 0's next plan")
        ->check(CLI::Range(100, 86400000));
    cli.add_option("--print-plan", print_plan, "print what each of N ranks would hold, then exit")
        ->check(CLI::Range(1, 4096));
    cli.add_option("--log-level", log_level, "trace, debug, info, warn, error (server mode: the config's)");
    CLI11_PARSE(cli, argc, argv);

    // Block the shutdown signals before MPI starts its own threads, so every thread inherits the
    // mask: in server mode one thread takes them with sigwait (app/signals.h); a thread of MPI's
    // with the default action would otherwise be killed by the drain signal.
    sigset_t sigs;
    sigemptyset(&sigs);
    for (int s : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&sigs, s);
    if (!config.empty()) pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    MpiSession mpi(&argc, &argv);
    int rank = 0;
    try {
        MpiCommunicator comm;
        rank = comm.rank();
        init_logging(log_level, rank);
        if (!config.empty()) return run_server(comm, config);
        PHI_CHECK(!a.model_dir.empty(), "give --config FILE.yaml to serve, or --model DIR for offline generation");
        if (print_plan > 0) {
            if (rank == 0) std::fputs(print_plan_report(a.model_dir, print_plan).c_str(), stdout);
            return 0;
        }
        return run_offline(comm, a);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "phi-worker rank %d: error: %s\n", rank, e.what());
        std::fflush(stderr);
        // Exiting without MPI_Finalize makes mpirun end the whole job at once, so no rank is left
        // waiting in a collective for this one.
        std::_Exit(1);
    }
}
