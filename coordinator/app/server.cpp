#include "coordinator/app/server.h"

#include <optional>
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <thread>

#include "common/log.h"
#include "coordinator/app/gpu_rank.h"
#include "coordinator/app/launch_checks.h"
#include "coordinator/app/lora_setup.h"
#include "coordinator/app/model_setup.h"
#include "coordinator/app/signals.h"
#include "coordinator/app/sizing.h"
#include "coordinator/engine/engine.h"
#include "coordinator/http/http_server.h"
#include "coordinator/native/native_server.h"
#include "coordinator/serving/service.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "kernels/cpu/isa.h"
#include "sharding/model_config.h"
#include "worker/adapter_hooks.h"
#include "worker/load_model.h"
#include "worker/lora_weights.h"

namespace phi::app {
namespace {

// Runs an io_context until it is stopped; a handler's exception (a bug) is logged and the thread
// goes on serving the other connections instead of ending the process.
void run_io(boost::asio::io_context& io) {
    for (;;) {
        try {
            io.run();
            return;
        } catch (const std::exception& e) {
            log().error("io thread: a handler failed: {}", e.what());
        }
    }
}

}  // namespace

int serve(MpiCommunicator& comm, const ClusterConfig& cfg) {
    log().set_level(spdlog::level::from_str(cfg.log_level));
    // tp left out of the config (0) means "as many ranks as mpirun started".
    PHI_CHECK(cfg.tp == 0 || cfg.tp == comm.size(),
              "tp: {} in the config, but {} MPI ranks were started: start {} ranks (scripts/mpirun.sh -np {}), set "
              "tp: {}, or leave tp out to use the MPI world size",
              cfg.tp, comm.size(), cfg.tp, cfg.tp, comm.size());
    // backend: cuda fails here, on every rank for itself and before any collective, when the build,
    // the options or the node cannot run it (no GPU: the driver's reason).
    const bool gpu = cfg.backend == "cuda";
    GpuPlacement placement;
    if (gpu) {
        check_cuda_options(cfg, "backend: cuda");
        placement = choose_gpu(comm, cfg.allow_shared_device);
    }
    // Signals are taken by one thread with sigwait (signals.h); every thread inherits the mask.
    const sigset_t sigs = shutdown_signals();
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

    // A bare checkpoint (no tokenizer files) is refused before loading, saying which YAML keys fix it.
    if (comm.rank() == 0) require_tokenizer_or_ids_only(cfg.tokenizer, cfg.skip_tokenizer_init);
    const LaunchAgreement launch = agree_at_launch(comm, cfg.threads_per_rank);
    const int threads = launch.threads.threads;
    const ModelConfig mc = load_model_config(cfg.model / "config.json");
    // Sizes first: a max_context the cache cannot hold is refused before any weight is read.
    ClusterConfig sized = cfg;
    if (gpu) {
        sized.kv_dtype = "bf16";  // the device cache
        if (cfg.kv_gpu_memory_fraction > 0) {
            const ClusterSizing weights_only = size_cluster(sized, mc, comm.size(), comm.rank(), launch.isa.isa);
            sized.kv_bytes = gpu_kv_bytes(cfg.kv_gpu_memory_fraction, gpu_free_bytes(placement.device),
                                          placement.ranks_per_gpu, weights_only.weight_bytes,
                                          gpu_activation_reserve(mc, cfg.max_batched_tokens));
        }
    }
    const ClusterSizing sizing = size_cluster(sized, mc, comm.size(), comm.rank(), launch.isa.isa);
    log().info("{}", describe_sizing(sizing));
    check_sizing(sizing);
    std::optional<DraftSizing> draft_sizing;
    if (cfg.spec_method == "draft") {
        ModelConfig dmc = load_model_config(cfg.spec_draft_model / "config.json");
        PHI_CHECK(cfg.spec_draft_layers <= dmc.n_layers, "speculative.draft_layers {} exceeds the {} layers of {}",
                  cfg.spec_draft_layers, dmc.n_layers, cfg.spec_draft_model.string());
        if (cfg.spec_draft_layers > 0) dmc.n_layers = cfg.spec_draft_layers;
        draft_sizing = size_draft(sizing, mc, dmc);
        log().info("{}", describe_draft_sizing(*draft_sizing));
    }
    const size_t resident_adapters = cfg.max_cpu_loras > 0
                                         ? std::min(cfg.lora_adapters.size(), size_t(cfg.max_cpu_loras))
                                         : cfg.lora_adapters.size();
    std::unique_ptr<PhiModel> cpu_model;
    std::unique_ptr<PhiModel> draft_model;
    std::unique_ptr<GpuRank> gpu_rank;
    if (gpu) {
        GpuModelOptions go;
        go.kv_blocks = sizing.kv_blocks;
        go.block_size = cfg.block_size;
        go.max_tokens = cfg.max_batched_tokens;
        go.max_seqs = cfg.max_num_seqs;
        go.max_context = sizing.max_context;
        gpu_rank = start_gpu_rank(comm, cfg.model, placement, go);
        log().info("rank {}/{}: {} loaded on {}, {} KV blocks of {} tokens (bf16)", comm.rank(), comm.size(),
                   cfg.model.string(), gpu_rank->describe(), sizing.kv_blocks, cfg.block_size);
    } else {
        ModelOptions opts;
        opts.isa = launch.isa.isa;
        opts.weight_dtype = sizing.weight.dtype;
        opts.quant = sizing.weight.quant;
        opts.quant_activations = cfg.quant_activations == "int8" ? kernels::cpu::QuantActivations::Int8
                                                                 : kernels::cpu::QuantActivations::F32;
        opts.kv = KvCacheConfig{sizing.kv_blocks, cfg.block_size, sizing.kv_dtype};
        cpu_model = load_model(cfg.model, comm, opts);
        // With max_cpu_loras only the first that many start in memory; the others load on demand.
        const std::vector<std::pair<std::string, std::filesystem::path>> resident(
            cfg.lora_adapters.begin(), cfg.lora_adapters.begin() + std::ptrdiff_t(resident_adapters));
        load_adapters(*cpu_model, comm, resident, cfg.max_lora_rank);
        if (draft_sizing) {
            ModelOptions dopts = opts;
            dopts.layers = cfg.spec_draft_layers;
            dopts.kv.num_blocks = draft_sizing->kv_blocks;
            dopts.debug_dump_dir = std::nullopt;
            draft_model = load_model(cfg.spec_draft_model, comm, dopts);
            log().info("rank {}/{}: draft model {} loaded ({} layers, {} bytes resident)", comm.rank(), comm.size(),
                       cfg.spec_draft_model.string(), draft_model->config().n_layers,
                       draft_model->weights().resident_bytes);
        }
        log().info("rank {}/{}: {} loaded ({} weights{}, {} bytes resident), {} threads, ISA {}, {} KV blocks of {} "
                   "tokens",
                   comm.rank(), comm.size(), cfg.model.string(), sizing.weight.name(),
                   cfg.quant_activations == "int8" ? ", int8 activations" : "", cpu_model->weights().resident_bytes,
                   threads, kernels::cpu::isa_name(opts.isa), opts.kv.num_blocks, opts.kv.block_size);
    }
    ModelRunner& model = gpu ? static_cast<ModelRunner&>(gpu_rank->model()) : *cpu_model;
    WatchdogOptions wd;
    wd.step_base = cfg.watchdog_step_base;
    wd.plan_wait = cfg.plan_wait;
    StepExecutor exec(model, comm, wd, draft_model.get());
    if (cpu_model && (cfg.lora_runtime_loading || cfg.max_cpu_loras > 0)) {
        // Every rank loads (or drops) its slices when rank 0's LoadAdapter plan arrives.
        install_adapter_hooks(exec, *cpu_model, LoraLoadOptions{.max_lora_rank = cfg.max_lora_rank});
    }
    if (comm.rank() != 0) {
        // Teardown (mpirun saw a rank die, or the operator's raw SIGTERM): nothing to hand over
        // here, so go at once. Drain (SIGUSR1) is rank 0's: this rank waits for its shutdown plan.
        SignalWatcher signals(
            [rank = comm.rank()](int sig) {
                log().warn("rank {}: signal {}: the cluster is being torn down; exiting", rank, sig);
                log().flush();
                std::_Exit(1);
            },
            nullptr);
        exec.follow();  // returns on rank 0's shutdown plan
        return 0;
    }

    std::optional<tokenizer::Tokenizer> tok;
    if (!cfg.skip_tokenizer_init) tok.emplace(tokenizer::Tokenizer::load(cfg.tokenizer));
    const tokenizer::Tokenizer* tok_ptr = tok ? &*tok : nullptr;
    if (!tok) log().info("token-ids-only mode (skip_tokenizer_init): prompts are token ids, outputs are ids");
    engine::EngineConfig ec;
    ec.max_num_seqs = cfg.max_num_seqs;
    ec.max_batched_tokens = cfg.max_batched_tokens;
    ec.max_queued = cfg.max_queued;
    ec.max_context = cfg.max_context;
    ec.prefix_caching = cfg.prefix_caching;
    if (cfg.spec_method == "ngram") ec.speculative.method = engine::SpeculativeConfig::Method::Ngram;
    if (cfg.spec_method == "draft") ec.speculative.method = engine::SpeculativeConfig::Method::Draft;
    ec.speculative.rejection_sampling = cfg.spec_rejection_sampling;
    ec.max_loras = cfg.max_loras;
    for (size_t i = 0; i < resident_adapters; ++i) ec.adapters.push_back(int32_t(i) + 1);
    ec.speculative.k = cfg.spec_k;
    ec.speculative.ngram_min = cfg.spec_ngram_min;
    ec.speculative.ngram_max = cfg.spec_ngram_max;
    ec.vocab_limit = tok ? tok->vocab_size() : (cfg.vocab_limit > 0 ? cfg.vocab_limit : mc.vocab_size);
    ec.eos_ids = stop_ids_for(cfg.model, tok_ptr, mc.vocab_size);
    PHI_CHECK(!tok || tok->vocab_size() <= mc.vocab_size,
              "the tokenizer in {} has {} tokens but the model's vocabulary has only {} rows", cfg.tokenizer.string(),
              tok ? tok->vocab_size() : 0, mc.vocab_size);
    ec.heartbeat = cfg.heartbeat;
    // Before the engine owns the cache: every rank times the largest step the engine will run.
    exec.calibrate(cfg.max_batched_tokens);
    engine::Engine engine(exec, ec);
    serving::Metrics metrics;
    serving::ServiceLimits limits;
    limits.max_prompt_tokens = cfg.max_prompt_tokens;
    limits.request_deadline = std::chrono::milliseconds(int64_t(cfg.request_deadline_s * 1000));
    serving::Service svc(engine, tok_ptr, cfg.model_name, limits, metrics);
    {
        std::vector<std::pair<std::string, std::string>> adapters;
        for (const auto& [name, dir] : cfg.lora_adapters) adapters.emplace_back(name, dir.string());
        svc.set_adapters(adapters, resident_adapters);
        if (cfg.lora_runtime_loading || cfg.max_cpu_loras > 0)
            svc.set_adapter_loading(&exec, cfg.lora_runtime_loading, cfg.max_cpu_loras);
    }
    svc.stall_after = cfg.heartbeat * 2;

    boost::asio::io_context io;
    auto work = boost::asio::make_work_guard(io);
    std::unique_ptr<native::NativeServer> tcp;
    std::unique_ptr<http::HttpServer> web;
    if (cfg.tcp.enabled()) {
        native::NativeOptions no;
        no.host = cfg.tcp.host;
        no.port = cfg.tcp.port;
        tcp = std::make_unique<native::NativeServer>(io, svc, no);
        tcp->start();
    }
    if (cfg.http.enabled()) {
        http::HttpOptions ho;
        ho.host = cfg.http.host;
        ho.port = cfg.http.port;
        ho.max_body_bytes = size_t(cfg.max_body_bytes);
        web = std::make_unique<http::HttpServer>(io, svc, ho);
        web->start();
        log().info("OpenAI-compatible HTTP listening on {}:{}", cfg.http.host, web->port());
    }
    std::vector<std::thread> io_threads;
    for (int i = 0; i < 2; ++i) io_threads.emplace_back([&io] { run_io(io); });

    // Teardown (a lost or stalled rank, or SIGTERM/SIGINT): the engine thread may be stuck in a
    // collective, so every client is failed from the io threads; the process then exits without
    // waiting for anything else (mpirun SIGKILLs the ranks a few seconds after its SIGTERM).
    std::atomic<bool> tearing_down{false};
    auto teardown = [&](const std::string& why, int code) {
        if (tearing_down.exchange(true)) {
            for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // the first caller exits
        }
        log().critical("{}; failing every client and exiting", why);
        const std::string msg = why + "; this request cannot finish";
        svc.fail(why);
        if (tcp) {
            tcp->fail_all(msg);
            tcp->close_all();
        }
        if (web) web->fail_all(msg);
        // Until every failed client's error is on the wire (a peer that does not read has at most
        // this long, within mpirun's SIGTERM -> SIGKILL period, scripts/mpirun.sh): these frames
        // are the only word the clients get.
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(800);
        while (std::chrono::steady_clock::now() < until &&
               ((tcp && tcp->connections() > 0) || (web && web->unflushed_failures() > 0)))
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        log().flush();
        std::_Exit(code);
    };

    std::atomic<bool> draining{false};
    SignalWatcher signals(
        [&](int sig) {
            teardown(fmt::format("signal {} at rank 0: the cluster is being torn down (a rank was lost, or the "
                                 "operator stopped it; drain with SIGUSR1)",
                                 sig),
                     1);
        },
        [&] {
            if (draining.exchange(true)) {
                log().info("SIGUSR1: already draining ({} in flight)", svc.in_flight());
                return;
            }
            log().info("SIGUSR1: draining (no new requests; {} in flight, up to {} s)", svc.in_flight(),
                       cfg.shutdown_timeout_s);
            svc.begin_drain();
            if (tcp) tcp->stop_accepting();
            if (web) web->stop_accepting();
            engine.notify();
        });
    svc.set_ready(true);
    log().info("serving '{}' on {} rank(s)", cfg.model_name, comm.size());

    int code = 0;
    std::chrono::steady_clock::time_point drain_deadline{};
    try {
        engine.run([&] {
            if (!draining.load()) return false;
            const auto now = std::chrono::steady_clock::now();
            if (drain_deadline == std::chrono::steady_clock::time_point{})
                drain_deadline = now + std::chrono::milliseconds(int64_t(cfg.shutdown_timeout_s * 1000));
            if (svc.in_flight() == 0) return true;
            if (now < drain_deadline) return false;
            log().warn("shutdown timeout: ending {} unfinished request(s)", svc.in_flight());
            engine.abort_all(engine::FinishReason::Error, "the server shut down before this request finished");
            return true;
        });
    } catch (const std::exception& e) {
        // Only the step's forward, plan and collectives throw here (a request's own output
        // handling is contained by the engine and the Service): a lost or stalled rank.
        teardown(fmt::format("the cluster lost a rank ({})", e.what()), 2);
    }
    // Graceful: let the last frames go out, close the listeners and connections, release the ranks.
    if (tcp) tcp->close_all();  // closes each connection once its queued frames are written (<= ~2 s)
    for (int i = 0; i < 250 && ((tcp && tcp->connections() > 0) || (web && web->connections() > 0)); ++i) {
        if (i == 25 && web) web->close_connections();  // responses done by now; idle keep-alives go
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (web) web->close_connections();
    work.reset();
    io.stop();
    for (auto& t : io_threads) t.join();
    exec.shutdown();
    log().info("shut down cleanly after {} steps", engine.stats().steps);
    return code;
}

}  // namespace phi::app
