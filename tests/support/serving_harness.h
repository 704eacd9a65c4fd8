// An in-process single-rank serving stack for server tests: the random-weight fixture
// tests/fixtures/phi3_mini_4k_swa (vocab 397) with the 269-token byte-level tokenizer of
// tests/fixtures/serving_tokenizer, an Engine running on its own thread, and a Service. Transports
// (HTTP, native TCP) are started by the test on top of service(). With `token_ids_only`, another
// fixture can be served bare (no tokenizer), as `skip_tokenizer_init: true` serves it.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/communicator.h"
#include "coordinator/engine/engine.h"
#include "coordinator/serving/metrics.h"
#include "coordinator/serving/service.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/load_model.h"
#include "worker/adapter_hooks.h"
#include "worker/lora_weights.h"
#include "worker/step_executor.h"

namespace phi::test {

struct ServingHarnessOptions {
    engine::EngineConfig engine;  // vocab_limit is set to the tokenizer's size
    serving::ServiceLimits limits;
    int64_t kv_blocks = 512;
    int64_t block_size = 8;
    std::string fixture = "phi3_mini_4k_swa";
    bool token_ids_only = false;  // no tokenizer; vocab_limit is the model's vocabulary
    std::optional<std::filesystem::path> debug_dump_dir;  // PHI_DEBUG_DUMP for this model only
    /// LoRA adapters (name, folder), none resident at start: each is loaded on the engine thread
    /// when a request names it, at most `max_cpu_loras` in memory (lora.max_cpu_loras).
    std::vector<std::pair<std::string, std::filesystem::path>> lora_adapters;
    int64_t max_cpu_loras = 0;
};

class ServingHarness {
public:
    explicit ServingHarness(ServingHarnessOptions o = {}) {
        if (!o.token_ids_only) tok_.emplace(tokenizer::Tokenizer::load(fixture_dir("serving_tokenizer")));
        ModelOptions opts;
        opts.isa = kernels::cpu::choose_isa();
        opts.kv = KvCacheConfig{o.kv_blocks, o.block_size};
        opts.debug_dump_dir = o.debug_dump_dir;
        model_ = load_model(fixture_dir(o.fixture), comm_, opts);
        exec_ = std::make_unique<StepExecutor>(*model_, comm_, WatchdogOptions{});
        if (!o.lora_adapters.empty()) install_adapter_hooks(*exec_, *model_);
        o.engine.vocab_limit = tok_ ? tok_->vocab_size() : model_->config().vocab_size;
        if (o.engine.eos_ids.empty() && tok_ && tok_->eos_token_id()) o.engine.eos_ids = {*tok_->eos_token_id()};
        engine_ = std::make_unique<engine::Engine>(*exec_, o.engine);
        service_ = std::make_unique<serving::Service>(*engine_, tok_ ? &*tok_ : nullptr, "phi-test", o.limits,
                                                      metrics_);
        if (!o.lora_adapters.empty()) {
            std::vector<std::pair<std::string, std::string>> adapters;
            for (const auto& [name, dir] : o.lora_adapters) adapters.emplace_back(name, dir.string());
            service_->set_adapters(adapters, 0);
            service_->set_adapter_loading(exec_.get(), false, o.max_cpu_loras);
        }
        service_->set_ready(true);
        thread_ = std::thread([this] { engine_->run(stop_); });
    }
    ~ServingHarness() {
        stop_ = true;
        engine_->notify();
        thread_.join();
    }
    serving::Service& service() { return *service_; }
    engine::Engine& engine() { return *engine_; }
    const tokenizer::Tokenizer& tokenizer() const { return *tok_; }

private:
    LocalCommunicator comm_;
    std::optional<tokenizer::Tokenizer> tok_;
    std::unique_ptr<PhiModel> model_;
    std::unique_ptr<StepExecutor> exec_;
    std::unique_ptr<engine::Engine> engine_;
    serving::Metrics metrics_;
    std::unique_ptr<serving::Service> service_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

}  // namespace phi::test
