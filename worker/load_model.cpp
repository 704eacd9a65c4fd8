#include "worker/load_model.h"

#include "common/error.h"
#include "common/log.h"
#include "kernels/cpu/cpu_backend.h"
#include "sharding/safetensors.h"

namespace phi {

std::unique_ptr<PhiModel> load_model(const std::filesystem::path& model_dir, Communicator& comm,
                                     const ModelOptions& opts) {
    ModelConfig cfg = load_model_config(model_dir / "config.json");
    PHI_CHECK(opts.layers >= 0 && opts.layers <= cfg.n_layers, "{} has {} layers; cannot take its first {}",
              model_dir.string(), cfg.n_layers, opts.layers);
    if (opts.layers > 0) cfg.n_layers = opts.layers;
    const ShardPlan plan = make_shard_plan(cfg, comm.size(), comm.rank());
    Checkpoint ckpt(model_dir);
    PHI_CHECK(opts.weight_dtype == DType::F32 || opts.weight_dtype == DType::BF16,
              "the CPU backend runs fp32 or bf16 weights, not {}", dtype_name(opts.weight_dtype));
    PHI_CHECK(opts.quant || opts.quant_activations == kernels::cpu::QuantActivations::F32,
              "int8 activations (quant_activations: int8) apply to int8/int4 weights only; the weights are {}",
              opts.weight_dtype == DType::BF16 ? "bf16" : "f32");
    WeightPrecision precision(opts.weight_dtype, opts.quant);
    precision.layout = kernels::cpu::quant_weight_layout(opts.quant_activations, opts.isa);
    ModelWeights w = load_model_weights(ckpt, cfg, plan, precision);
    log().debug("loaded {} ({} weights): {} bytes read, {} bytes resident; {}", model_dir.string(), precision.name(),
                w.checkpoint_bytes_read, w.resident_bytes, describe_shard_plan(cfg, plan));
    PhiModelOptions mo;
    mo.kv = opts.kv;
    mo.debug_dump_dir = opts.debug_dump_dir;
    const kernels::WeightFormat plain =
        opts.weight_dtype == DType::BF16 ? kernels::WeightFormat::BF16 : kernels::WeightFormat::F32;
    auto format_of = [](kernels::cpu::QuantFormat q) {
        return q == kernels::cpu::QuantFormat::Q8 ? kernels::WeightFormat::Q8 : kernels::WeightFormat::Q4;
    };
    mo.weight_format = opts.quant ? format_of(*opts.quant) : plain;
    mo.table_format = plain;  // the embedding is never quantized (docs/QUANT.md)
    if (const auto head = precision.lm_head_quant()) mo.lm_head_format = format_of(*head);
    return std::make_unique<PhiModel>(cfg, plan, std::move(w), comm, kernels::cpu::make_cpu_backend(opts.isa, opts.quant_activations),
                                      make_host_collectives(comm), mo);
}

}  // namespace phi
