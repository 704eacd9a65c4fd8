#include "coordinator/app/lora_setup.h"

#include "common/error.h"
#include "common/log.h"
#include "worker/lora_weights.h"

namespace phi::app {

void load_adapters(PhiModel& model, Communicator& comm,
                   const std::vector<std::pair<std::string, std::filesystem::path>>& adapters, int64_t max_lora_rank) {
    int32_t id = 1;
    for (const auto& [name, dir] : adapters) {
        std::string error;
        try {
            model.add_adapter(id, load_lora_adapter(dir, model.config(), model.plan(), {.max_lora_rank = max_lora_rank}));
        } catch (const Error& e) {
            error = e.what();
        }
        const std::string failed = ranks_that_failed(comm, error.empty());
        PHI_CHECK(failed.empty(), "LoRA adapter '{}' ({}): rank(s) {} could not load it{}", name, dir.string(), failed,
                  error.empty() ? " (their logs say why)" : ": " + error);
        if (comm.rank() == 0) log().info("LoRA adapter '{}' loaded from {} (id {})", name, dir.string(), id);
        ++id;
    }
}

}  // namespace phi::app
