#include "coordinator/app/model_setup.h"

#include <algorithm>

#include "coordinator/tokenizer/tokenizer.h"
#include "sharding/model_config.h"

namespace phi::app {

std::vector<int32_t> stop_ids_for(const std::filesystem::path& model_dir, const tokenizer::Tokenizer& tok) {
    std::vector<int32_t> ids;
    auto add = [&](int64_t id) {
        if (id >= 0 && id < tok.id_bound() && std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end())
            ids.push_back(int32_t(id));
    };
    const GenerationConfig gen = load_generation_config(model_dir);
    for (int64_t id : gen.eos_token_ids) add(id);
    if (tok.eos_token_id()) add(*tok.eos_token_id());
    for (const char* t : {"<|end|>", "<|im_end|>", "<|endoftext|>"})
        if (auto id = tok.token_to_id(t)) add(*id);
    return ids;
}

}  // namespace phi::app
