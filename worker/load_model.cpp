#include "worker/load_model.h"

#include "common/log.h"
#include "sharding/safetensors.h"

namespace phi {

std::unique_ptr<PhiModel> load_model(const std::filesystem::path& model_dir, Communicator& comm,
                                     const ModelOptions& opts) {
    const ModelConfig cfg = load_model_config(model_dir / "config.json");
    const ShardPlan plan = make_shard_plan(cfg, comm.size(), comm.rank());
    Checkpoint ckpt(model_dir);
    ModelWeights w = load_model_weights(ckpt, cfg, plan, opts.weight_dtype);
    log().debug("loaded {}: {} bytes read, {} bytes resident; {}", model_dir.string(), w.checkpoint_bytes_read,
                w.resident_bytes, describe_shard_plan(cfg, plan));
    return std::make_unique<PhiModel>(cfg, plan, std::move(w), comm, opts);
}

}  // namespace phi
