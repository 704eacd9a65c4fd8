#include "coordinator/app/server.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <thread>

#include "common/log.h"
#include "coordinator/app/launch_checks.h"
#include "coordinator/app/model_setup.h"
#include "coordinator/app/sizing.h"
#include "coordinator/engine/engine.h"
#include "coordinator/http/http_server.h"
#include "coordinator/native/native_server.h"
#include "coordinator/serving/service.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "kernels/cpu/isa.h"
#include "sharding/model_config.h"
#include "worker/load_model.h"

namespace phi::app {
namespace {

sigset_t shutdown_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    return set;
}

}  // namespace

int serve(MpiCommunicator& comm, const ClusterConfig& cfg) {
    log().set_level(spdlog::level::from_str(cfg.log_level));
    // tp left out of the config (0) means "as many ranks as mpirun started".
    PHI_CHECK(cfg.tp == 0 || cfg.tp == comm.size(),
              "tp: {} in the config, but {} MPI ranks were started: start {} ranks (scripts/mpirun.sh -np {}), set "
              "tp: {}, or leave tp out to use the MPI world size",
              cfg.tp, comm.size(), cfg.tp, cfg.tp, comm.size());
    PHI_CHECK(cfg.backend == "cpu",
              "backend: cuda is not served by this build yet: the CUDA kernels are tested on their own "
              "(scripts/gpu_check.sh); use backend: cpu");
    // Signals are taken by one thread with sigwait (below); every thread inherits the mask.
    const sigset_t sigs = shutdown_signals();
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

    const LaunchAgreement launch = agree_at_launch(comm, cfg.threads_per_rank);
    const int threads = launch.threads.threads;
    const ModelConfig mc = load_model_config(cfg.model / "config.json");
    // Sizes first: a max_context the cache cannot hold is refused before any weight is read.
    const ClusterSizing sizing = size_cluster(cfg, mc, comm.size(), comm.rank());
    log().info("{}", describe_sizing(sizing));
    check_sizing(sizing);
    ModelOptions opts;
    opts.isa = launch.isa.isa;
    opts.weight_dtype = sizing.weight_dtype;
    opts.kv = KvCacheConfig{sizing.kv_blocks, cfg.block_size};
    auto model = load_model(cfg.model, comm, opts);
    WatchdogOptions wd;
    wd.step_base = cfg.watchdog_step_base;
    wd.plan_wait = cfg.plan_wait;
    StepExecutor exec(*model, comm, wd);
    log().info("rank {}/{}: {} loaded ({} bytes resident), {} threads, ISA {}, {} KV blocks of {} tokens", comm.rank(),
               comm.size(), cfg.model.string(), model->weights().resident_bytes, threads,
               kernels::cpu::isa_name(opts.isa), opts.kv.num_blocks, opts.kv.block_size);
    if (comm.rank() != 0) {
        exec.follow();  // returns on rank 0's shutdown plan; signals stay blocked here
        return 0;
    }

    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(cfg.tokenizer);
    engine::EngineConfig ec;
    ec.max_num_seqs = cfg.max_num_seqs;
    ec.max_batched_tokens = cfg.max_batched_tokens;
    ec.max_queued = cfg.max_queued;
    ec.max_context = cfg.max_context;
    ec.prefix_caching = cfg.prefix_caching;
    ec.vocab_limit = tok.vocab_size();
    ec.eos_ids = stop_ids_for(cfg.model, tok);
    PHI_CHECK(tok.vocab_size() <= mc.vocab_size, "the tokenizer in {} has {} tokens but the model's vocabulary has only {} rows",
              cfg.tokenizer.string(), tok.vocab_size(), mc.vocab_size);
    ec.heartbeat = cfg.heartbeat;
    engine::Engine engine(exec, ec);
    serving::Metrics metrics;
    serving::ServiceLimits limits;
    limits.max_prompt_tokens = cfg.max_prompt_tokens;
    limits.request_deadline = std::chrono::milliseconds(int64_t(cfg.request_deadline_s * 1000));
    serving::Service svc(engine, tok, cfg.model_name, limits, metrics);
    svc.stall_after = cfg.watchdog_step_base + cfg.heartbeat * 2;

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
    for (int i = 0; i < 2; ++i) io_threads.emplace_back([&io] { io.run(); });

    std::atomic<int> signals{0};
    std::thread signal_thread([&] {
        for (;;) {
            int sig = 0;
            if (sigwait(&sigs, &sig) != 0) continue;
            if (sig == SIGUSR1 && signals.load() < 0) return;  // our own wake-up at exit
            const int n = ++signals;
            if (n == 1) {
                log().info("signal {}: draining (no new requests; {} in flight, up to {} s)", sig, svc.in_flight(),
                           cfg.shutdown_timeout_s);
                svc.begin_drain();
                if (tcp) tcp->stop_accepting();
                if (web) web->stop_accepting();
                engine.notify();
            } else {
                log().warn("second signal {}: exiting now", sig);
                std::_Exit(1);
            }
        }
    });
    svc.set_ready(true);
    log().info("serving '{}' on {} rank(s)", cfg.model_name, comm.size());

    int code = 0;
    std::chrono::steady_clock::time_point drain_deadline{};
    try {
        engine.run([&] {
            if (signals.load() == 0) return false;
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
        // A lost or stalled rank: tell every client, then end (mpirun ends the other ranks).
        log().critical("{}", e.what());
        engine.abort_all(engine::FinishReason::Error, "the cluster lost a rank; this request cannot finish");
        if (tcp) tcp->fail_all("the cluster lost a rank");
        std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let the io threads write the errors
        std::_Exit(2);
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
    signals = -1000;
    pthread_kill(signal_thread.native_handle(), SIGUSR1);
    signal_thread.join();
    exec.shutdown();
    log().info("shut down cleanly after {} steps", engine.stats().steps);
    return code;
}

}  // namespace phi::app
