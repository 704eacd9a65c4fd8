#include "worker/adapter_hooks.h"

namespace phi {

void install_adapter_hooks(StepExecutor& exec, PhiModel& model, LoraLoadOptions opts) {
    exec.set_adapter_hooks(
        [&model, opts](int32_t id, const std::string& path) {
            model.add_adapter(id, load_lora_adapter(path, model.config(), model.plan(), opts));
        },
        [&model](int32_t id) {
            if (model.has_adapter(id)) model.remove_adapter(id);
        });
}

}  // namespace phi
