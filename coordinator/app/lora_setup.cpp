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
            LoraLoadOptions lo;
            lo.max_lora_rank = max_lora_rank;
            model.add_adapter(id, load_lora_adapter(dir, model.config(), model.plan(), lo));
        } catch (const Error& e) {
            error = e.what();
        }
        const uint64_t ok = error.empty() ? 1 : 0;
        std::vector<uint64_t> all(size_t(comm.size()));
        comm.all_gather_u64(&ok, 1, all.data());
        for (int r = 0; r < comm.size(); ++r)
            PHI_CHECK(all[size_t(r)] == 1, "LoRA adapter '{}' ({}): rank {} could not load it{}", name, dir.string(), r,
                      error.empty() ? "" : ": " + error);
        if (comm.rank() == 0) log().info("LoRA adapter '{}' loaded from {} (id {})", name, dir.string(), id);
        ++id;
    }
}

}  // namespace phi::app
