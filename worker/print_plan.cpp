// The sizing report of --print-plan, read from the checkpoint headers only (no weight bytes).
#include "worker/print_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sharding/model_config.h"
#include "sharding/safetensors.h"
#include "sharding/shard_plan.h"
#include "worker/model_weights.h"

namespace phi {

std::string print_plan_report(const std::filesystem::path& model_dir, int world) {
    const ModelConfig cfg = load_model_config(model_dir / "config.json");
    Checkpoint ckpt(model_dir);
    std::string out = fmt::format("model {} ({}), tp size {}\n", model_dir.string(), cfg.architecture, world);
    size_t total = 0;
    for (int r = 0; r < world; ++r) {
        const ShardPlan plan = make_shard_plan(cfg, world, r);
        const auto held = plan_model_weights(ckpt, cfg, plan, DType::BF16);
        size_t bytes = 0;
        out += describe_shard_plan(cfg, plan) + "\n";
        for (const HeldTensor& h : held) {
            out += fmt::format("  {:<70} [{}] {} {} bytes\n", h.source, fmt::join(h.shape, ", "), dtype_name(h.dtype),
                               h.bytes);
            bytes += h.bytes;
        }
        const int64_t kv_per_token = cfg.n_layers * 2 * plan.n_kv_heads_local * cfg.head_dim * 4;
        out += fmt::format("  rank {} total: {} weight bytes (bf16 linear weights, fp32 norms/biases), "
                           "{} KV bytes per token (fp32)\n",
                           r, bytes, kv_per_token);
        total += bytes;
    }
    out += fmt::format("all ranks: {} weight bytes\n", total);
    return out;
}

}  // namespace phi
