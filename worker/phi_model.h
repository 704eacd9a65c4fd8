// PhiModel: ONE forward for every Phi variant, driven by ModelConfig (parallel or sequential block,
// LayerNorm or RMSNorm, GeLU or SwiGLU, dense or MoE MLP, qk_layernorm, tied head, LongRoPE per
// sequence), written once against the Backend operations (kernels/backend.h), with the collectives
// as visible lines. A backend (CPU, CUDA) implements operations, never the model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cluster/communicator.h"
#include "kernels/backend.h"
#include "sharding/model_config.h"
#include "sharding/shard_plan.h"
#include "worker/lora_weights.h"
#include "worker/model_runner.h"
#include "worker/model_weights.h"
#include "worker/tensor_collectives.h"

namespace phi {

struct PhiModelOptions {
    KvCacheConfig kv;
    /// The layers' linear weights (QKV, output, MLP, experts).
    kernels::WeightFormat weight_format = kernels::WeightFormat::F32;
    /// The embedding and the LM head; unset: weight_format. (Quantized models keep the embedding 16-bit.)
    std::optional<kernels::WeightFormat> table_format;
    /// An untied LM head; unset: table_format (int8/int4 models hold it as Q8 blocks).
    std::optional<kernels::WeightFormat> lm_head_format;
    /// Scratch is sized for this many tokens per step up front (backends that record steps need
    /// stable addresses); larger steps grow it.
    int64_t reserve_tokens = 0;
    /// Named intermediates of every forward go here (debug_dump); unset: $PHI_DEBUG_DUMP, if set.
    std::optional<std::filesystem::path> debug_dump_dir;
};

class PhiModel final : public ModelRunner {
public:
    /// `weights` are this rank's shard on the host; the backend reads or copies them (the model
    /// keeps those the backend points at and frees the others, e.g. weights it quantized). `collectives` carries the all-reduces of
    /// the backend's buffers; `comm` the host-side gathers of logits.
    PhiModel(const ModelConfig& cfg, const ShardPlan& plan, ModelWeights weights, Communicator& comm,
             std::unique_ptr<kernels::Backend> backend, std::unique_ptr<TensorCollectives> collectives,
             const PhiModelOptions& opts);
    ~PhiModel() override;

    int64_t forward(std::span<const SeqStep> seqs, std::vector<float>* logits) override;
    uint64_t activation_hash() override;
    const ModelConfig& config() const override { return cfg_; }
    int world() const override { return plan_.world; }
    int64_t vocab_padded() const override { return plan_.vocab_padded; }
    int64_t kv_blocks() const override { return opts_.kv.num_blocks; }
    int64_t block_size() const override { return opts_.kv.block_size; }

    /// Serves `adapter` (this rank's slice, from load_lora_adapter with this model's config and plan)
    /// to sequences whose SeqStep::adapter is `id` (> 0; every rank uses the same id). Throws when the
    /// id is taken, the slice was cut for another shape, or the backend does not run LoRA.
    void add_adapter(int32_t id, LoraAdapterWeights adapter);
    /// Stops serving adapter `id` (a step that names it afterwards is refused).
    void remove_adapter(int32_t id);
    bool has_adapter(int32_t id) const { return adapters_.count(id) != 0; }

    const ShardPlan& plan() const { return plan_; }
    const ModelWeights& weights() const { return host_; }
    kernels::Backend& backend() { return *be_; }
    /// Tokens whose K/V were computed since construction (decode must add exactly one per step).
    int64_t tokens_computed() const { return tokens_computed_; }

private:
    struct Layer;
    struct Scratch;
    struct Adapter;
    /// The base linear a LoRA pair adds to.
    enum class LoraSite { Qkv, Out, Up, Down };
    /// Consecutive tokens of the step that use one adapter (sequences are laid out grouped by adapter).
    struct LoraSegment {
        const Adapter* adapter;
        int64_t first, n;
    };
    /// y[rows of each segment] += (x A^T) B^T with that segment's adapter's pair at `site` of `layer`.
    void lora(LoraSite site, int64_t layer, const kernels::Tensor& x, const kernels::Tensor& y);
    bool lora_adapts(LoraSite site, int64_t layer) const;
    void run_layers(int64_t T, int64_t R);
    void attention(const Layer& lw, int64_t layer, const kernels::Tensor& h, const kernels::Tensor& out);
    void dense_mlp(const Layer& lw, int64_t layer, const kernels::Tensor& h, const kernels::Tensor& out);
    void norm(const kernels::Tensor& y, const kernels::Tensor& x, const kernels::Buffer& w,
              const kernels::Buffer& b);
    void all_reduce(const kernels::Tensor& t);
    /// `{name}.s{step}.L{layer}.r{rank}.f32` (layer < 0: no `.L` part), raw row-major floats.
    void debug_dump(const kernels::Tensor& t, const char* name, int64_t layer);
    void collect_logits(std::span<const SeqStep> seqs, int64_t R, std::vector<float>* logits);
    void reserve(int64_t T, int64_t R);
    void reserve_lora();  // the shrink scratch for this step's segments

    ModelConfig cfg_;
    ShardPlan plan_;
    ModelWeights host_;
    Communicator& comm_;
    std::unique_ptr<kernels::Backend> be_;
    std::unique_ptr<TensorCollectives> coll_;
    PhiModelOptions opts_;
    kernels::RopeSpec rope_;

    std::vector<Layer> layers_;
    kernels::Buffer embed_, lm_head_, lm_head_b_, final_norm_w_, final_norm_b_;
    std::unique_ptr<Scratch> s_;
    std::map<int32_t, std::unique_ptr<Adapter>> adapters_;  // id -> adapter (id 0 is the base model)
    std::vector<LoraSegment> lora_segments_;                // this step's, in token order
    kernels::StepBatch batch_;
    std::optional<std::filesystem::path> dump_dir_;
    int64_t tokens_computed_ = 0;
    int64_t step_ = 0;  // forwards run so far: the dump files' step number
    int64_t last_T_ = 0;
};

}  // namespace phi
