// phi-worker: the process every rank runs. Until the engine and the servers exist it runs greedy
// decoding of a prompt given as token ids on the model folder and prints the generated ids.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <sstream>

#include "cluster/communicator.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/cpu/isa.h"
#include "worker/generate.h"
#include "worker/load_model.h"

namespace {

std::vector<int32_t> parse_ids(const std::string& s) {
    std::vector<int32_t> ids;
    std::istringstream in(s);
    for (std::string tok; in >> tok;) {
        size_t used = 0;
        long v = 0;
        try {
            v = std::stol(tok, &used);
        } catch (const std::exception&) {
            PHI_FAIL("--prompt-ids: '{}' is not an integer token id", tok);
        }
        PHI_CHECK(used == tok.size() && v >= 0 && v <= INT32_MAX, "--prompt-ids: '{}' is not a token id", tok);
        ids.push_back(int32_t(v));
    }
    PHI_CHECK(!ids.empty(), "--prompt-ids is empty");
    return ids;
}

int run(int argc, char** argv) {
    CLI::App app{"phi-worker: one rank of a phi-cluster"};
    std::string model_dir, prompt_ids, dtype = "f32", log_level = "info";
    int64_t max_tokens = 32;
    app.add_option("--model", model_dir, "HF model folder (config.json, *.safetensors)")->required();
    app.add_option("--prompt-ids", prompt_ids, "prompt as space-separated token ids")->required();
    app.add_option("--max-tokens", max_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
    app.add_option("--dtype", dtype, "weight dtype: f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
    CLI11_PARSE(app, argc, argv);

    phi::init_logging(log_level, 0);
    phi::LocalCommunicator comm;
    phi::ModelOptions opts;
    opts.isa = phi::kernels::cpu::choose_isa();
    opts.weight_dtype = dtype == "bf16" ? phi::DType::BF16 : phi::DType::F32;
    const std::vector<int32_t> prompt = parse_ids(prompt_ids);
    opts.kv.block_size = 16;
    opts.kv.num_blocks = (int64_t(prompt.size()) + max_tokens + 15) / 16;
    auto model = phi::load_model(model_dir, comm, opts);
    phi::log().info("model {} loaded: {} layers, d_model {}, {} heads, ISA {}", model_dir,
                    model->config().n_layers, model->config().d_model, model->config().n_heads,
                    phi::kernels::cpu::isa_name(opts.isa));
    const auto res = phi::generate_greedy(*model, prompt, max_tokens, model->config().vocab_size);
    std::printf("generated ids:");
    for (int32_t t : res.tokens) std::printf(" %d", t);
    std::printf("\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "phi-worker: error: %s\n", e.what());
        return 1;
    }
}
