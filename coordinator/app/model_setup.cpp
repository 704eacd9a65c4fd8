#include "coordinator/app/model_setup.h"

#include <algorithm>

#include "common/error.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "sharding/model_config.h"

namespace phi::app {

std::vector<int32_t> stop_ids_for(const std::filesystem::path& model_dir, const tokenizer::Tokenizer* tok,
                                  int64_t id_bound) {
    std::vector<int32_t> ids;
    const int64_t bound = tok ? tok->id_bound() : id_bound;
    auto add = [&](int64_t id) {
        if (id >= 0 && id < bound && std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end())
            ids.push_back(int32_t(id));
    };
    const GenerationConfig gen = load_generation_config(model_dir);
    for (int64_t id : gen.eos_token_ids) add(id);
    if (!tok) {
        for (int64_t id : load_model_config(model_dir / "config.json").eos_token_ids) add(id);
        return ids;
    }
    if (tok->eos_token_id()) add(*tok->eos_token_id());
    for (const char* t : {"<|end|>", "<|im_end|>", "<|endoftext|>"})
        if (auto id = tok->token_to_id(t)) add(*id);
    return ids;
}

void require_tokenizer_or_ids_only(const std::filesystem::path& tokenizer_dir, bool skip_tokenizer_init) {
    PHI_CHECK(skip_tokenizer_init || has_tokenizer_file(tokenizer_dir),
              "{} has no tokenizer.json (or tokenizer.json.gz): set the YAML key `tokenizer:` to a folder that "
              "holds the model's tokenizer.json (e.g. the base model's HF folder), or set "
              "`skip_tokenizer_init: true` to serve token ids only (the native protocol and /v1/completions "
              "with a token-id prompt)",
              tokenizer_dir.string());
}

bool has_tokenizer_file(const std::filesystem::path& dir) {
    std::error_code ec;
    return std::filesystem::exists(dir / "tokenizer.json", ec) || std::filesystem::exists(dir / "tokenizer.json.gz", ec);
}

}  // namespace phi::app
