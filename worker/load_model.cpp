#include "worker/load_model.h"

#include "common/error.h"
#include "common/log.h"
#include "kernels/cpu/cpu_backend.h"
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
    PHI_CHECK(opts.weight_dtype == DType::F32 || opts.weight_dtype == DType::BF16,
              "the CPU backend runs fp32 or bf16 weights, not {}", dtype_name(opts.weight_dtype));
    PhiModelOptions mo;
    mo.kv = opts.kv;
    mo.debug_dump_dir = opts.debug_dump_dir;
    mo.weight_format = opts.weight_dtype == DType::BF16 ? kernels::WeightFormat::BF16 : kernels::WeightFormat::F32;
    return std::make_unique<PhiModel>(cfg, plan, std::move(w), comm, kernels::cpu::make_cpu_backend(opts.isa),
                                      make_host_collectives(comm), mo);
}

}  // namespace phi
