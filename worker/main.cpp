// phi-worker: the process every rank runs (`mpirun -np N phi-worker ...`). Rank 0 decides every
// step; ranks > 0 follow its plans. Until the engine and the servers exist it runs greedy decoding
// of a prompt given as token ids and prints the generated ids, or prints the shard plan.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "cluster/mpi_communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/cpu/isa.h"
#include "worker/generate.h"
#include "worker/load_model.h"
#include "worker/print_plan.h"

namespace {

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

struct Args {
    std::string model_dir, prompt_ids, dtype = "f32", log_level = "info";
    int64_t max_tokens = 32;
    int tp = 0;
    int print_plan = 0;
    int64_t watchdog_ms = 10000;
    int64_t plan_wait_ms = 120000;
    int64_t vocab_limit = 0;
};

int run(phi::Communicator& comm, const Args& a) {
    PHI_CHECK(a.tp == 0 || a.tp == comm.size(),
              "--tp {} does not match the MPI world size {}: start {} ranks (mpirun -np {}) or change --tp", a.tp,
              comm.size(), a.tp, a.tp);
    if (a.print_plan > 0) {
        if (comm.rank() == 0) std::fputs(phi::print_plan(a.model_dir, a.print_plan).c_str(), stdout);
        return 0;
    }
    const std::vector<int32_t> prompt = parse_ids(a.prompt_ids);
    phi::ModelOptions opts;
    opts.isa = phi::kernels::cpu::choose_isa();
    opts.weight_dtype = a.dtype == "bf16" ? phi::DType::BF16 : phi::DType::F32;
    opts.kv.block_size = 16;
    opts.kv.num_blocks = (int64_t(prompt.size()) + a.max_tokens + 15) / 16;
    auto model = phi::load_model(a.model_dir, comm, opts);
    phi::WatchdogOptions wd;
    wd.step_base = std::chrono::milliseconds(a.watchdog_ms);
    wd.plan_wait = std::chrono::milliseconds(a.plan_wait_ms);
    phi::StepExecutor exec(*model, comm, wd);
    if (comm.rank() != 0) {
        exec.follow();
        return 0;
    }
    phi::log().info("model {} loaded on {} rank(s): {} layers, d_model {}, {} heads, ISA {}", a.model_dir,
                    comm.size(), model->config().n_layers, model->config().d_model, model->config().n_heads,
                    phi::kernels::cpu::isa_name(opts.isa));
    const int64_t limit = a.vocab_limit > 0 ? std::min(a.vocab_limit, model->config().vocab_size)
                                            : model->config().vocab_size;
    const auto res = phi::generate_greedy(exec, prompt, a.max_tokens, limit);
    exec.shutdown();
    std::printf("generated ids:");
    for (int32_t t : res.tokens) std::printf(" %d", t);
    std::printf("\n");
    std::fflush(stdout);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"phi-worker: one rank of a phi-cluster (start N of them with mpirun -np N)"};
    Args a;
    app.add_option("--model", a.model_dir, "HF model folder (config.json, *.safetensors)")->required();
    app.add_option("--prompt-ids", a.prompt_ids, "prompt as space-separated token ids");
    app.add_option("--max-tokens", a.max_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
    app.add_option("--dtype", a.dtype, "weight dtype: f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
    app.add_option("--tp", a.tp, "expected tensor-parallel size (must equal the MPI world size)");
    app.add_option("--print-plan", a.print_plan, "print what each of N ranks would hold, then exit")
        ->check(CLI::Range(1, 4096));
    app.add_option("--watchdog-ms", a.watchdog_ms, "base deadline of a step's collectives")
        ->check(CLI::Range(100, 86400000));
    app.add_option("--plan-wait-ms", a.plan_wait_ms, "how long ranks > 0 wait for rank 0's next step plan")
        ->check(CLI::Range(100, 86400000));
    app.add_option("--vocab-limit", a.vocab_limit, "only ids below this are generated (the tokenizer's size)");
    app.add_option("--log-level", a.log_level, "trace, debug, info, warn, error");
    CLI11_PARSE(app, argc, argv);

    phi::MpiSession mpi(&argc, &argv);
    int code = 0;
    int rank = 0;
    try {
        phi::MpiCommunicator comm;
        rank = comm.rank();
        phi::init_logging(a.log_level, rank);
        if (a.print_plan == 0 && a.prompt_ids.empty()) PHI_FAIL("give --prompt-ids or --print-plan");
        code = run(comm, a);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "phi-worker rank %d: error: %s\n", rank, e.what());
        std::fflush(stderr);
        // A failing rank takes the whole group down at once: no rank is left waiting in a
        // collective for it.
        // Exiting without MPI_Finalize makes mpirun end the job at once; MPI_Abort would instead
        // wait out the SIGTERM->SIGKILL grace period meant for draining.
        std::_Exit(1);
    }
    return code;
}
