// One rank's weights, sliced from the checkpoint by the ShardPlan. Linear weights are kept in the
// configured dtype (F32 or BF16); norms, biases and the MoE router are fp32 (rounded through bf16
// when the weights are bf16, as a bf16 checkpoint would hold them). With int8/int4 weights the
// layers' linear weights are held with the checkpoint's exact values (BF16 when it stores bf16,
// otherwise F32) until the backend quantizes them, and so is an untied LM head (quantized to int8:
// WeightPrecision::lm_head_quant); the embedding stays in `dtype`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant.h"
#include "sharding/model_config.h"
#include "sharding/safetensors.h"
#include "sharding/shard_plan.h"
#include "sharding/tensor_slice.h"

namespace phi {

/// How a rank holds its weights. `dtype` (F32 or BF16): the embedding (and a 16-bit LM head), and
/// the rounding of norms and biases (fp32 values rounded through bf16 when BF16). `quant`, when
/// set: every layer's linear weights (QKV, output, MLP and expert projections) are quantized to it;
/// they are then defined on the unsharded tensor, so each rank's input columns must start and end
/// on a multiple of 32 (refused otherwise, naming the tensor and the tp size; docs/QUANT.md).
struct WeightPrecision {
    DType dtype = DType::F32;
    std::optional<kernels::cpu::QuantFormat> quant;
    /// How the backend keeps quantized weights (kernels::cpu::quant_weight_layout): Dot16 pads each
    /// row's blocks to a multiple of 16, and the resident bytes count that padding.
    kernels::cpu::QuantLayout layout = kernels::cpu::QuantLayout::Rows;

    WeightPrecision() = default;
    WeightPrecision(DType d) : dtype(d) {}  // NOLINT(google-explicit-constructor): F32/BF16 only
    WeightPrecision(DType d, std::optional<kernels::cpu::QuantFormat> q) : dtype(d), quant(q) {}
    /// "f32", "bf16", "int8" or "int4" (the YAML dtype: word).
    std::string name() const;
    /// How an untied LM head is held: int8 (Q8) blocks whenever the layers are quantized, for int4
    /// models too (a Q4 head failed the quality gate, a Q8 one passes it: docs/QUANT.md); unset: 16-bit
    /// in `dtype`. A head tied to the embedding stays 16-bit (the embedding lookup reads its rows).
    std::optional<kernels::cpu::QuantFormat> lm_head_quant() const {
        return quant ? std::optional(kernels::cpu::QuantFormat::Q8) : std::nullopt;
    }
};

struct LayerWeights {
    OwnedTensor attn_norm_w, attn_norm_b;  // [d_model]
    OwnedTensor ffn_norm_w, ffn_norm_b;    // [d_model] (sequential blocks)
    OwnedTensor wqkv;                      // [(nq_l + 2 nkv_l) * head_dim, d_model]: local Q | K | V
    OwnedTensor bqkv;                      // [(nq_l + 2 nkv_l) * head_dim] or empty
    OwnedTensor q_norm_w, q_norm_b;        // [head_dim] (qk_layernorm)
    OwnedTensor k_norm_w, k_norm_b;        // [head_dim]
    OwnedTensor wo;                        // [d_model, nq_l * head_dim] (row-parallel)
    OwnedTensor bo;                        // [d_model] added once, after the all-reduce
    OwnedTensor w_up;                      // fc1 [dff_l, d] or gate_up [2 dff_l, d] (local gate | up)
    OwnedTensor b_up;                      // [dff_l] or empty
    OwnedTensor w_down;                    // [d_model, dff_l] (row-parallel)
    OwnedTensor b_down;                    // [d_model] added once, after the all-reduce
    OwnedTensor router;                    // [n_experts, d_model] replicated (MoE)
    std::vector<OwnedTensor> expert_up;    // per expert [2 dff_l, d]: local w1 | w3
    std::vector<OwnedTensor> expert_down;  // per expert [d, dff_l]
};

struct ModelWeights {
    OwnedTensor embed;                   // [vocab_local, d_model] rows plan.vocab of the padded vocab
    std::vector<LayerWeights> layers;
    OwnedTensor final_norm_w, final_norm_b;  // [d_model]
    OwnedTensor lm_head;                 // [vocab_local, d_model]; empty when tied to embed
    OwnedTensor lm_head_b;               // [vocab_local] or empty
    size_t checkpoint_bytes_read = 0;    // bytes copied out of the checkpoint by this rank
    size_t resident_bytes = 0;           // bytes held by this rank once the model is built
                                         // (quantized linear weights counted as their blocks)

    kernels::cpu::WeightView lm_head_view() const;
};

/// One tensor a rank holds, for --print-plan.
struct HeldTensor {
    std::string source;  // checkpoint tensor name(s), '+' joined for fused pieces
    std::vector<int64_t> shape;
    DType dtype = DType::F32;
    std::optional<kernels::cpu::QuantFormat> quant;  // set: held as these blocks (dtype: the source's)
    size_t bytes = 0;
};

/// What rank plan.rank would hold, without copying any weight bytes.
std::vector<HeldTensor> plan_model_weights(const Checkpoint& ckpt, const ModelConfig& cfg, const ShardPlan& plan,
                                           const WeightPrecision& precision);

/// Loads rank plan.rank's shard in `precision`. Every tensor is checked against its expected global
/// shape; a missing or mis-shaped one is a clear error, and so is a quantized weight whose input
/// columns (or this rank's part of them) are not whole blocks of 32.
ModelWeights load_model_weights(const Checkpoint& ckpt, const ModelConfig& cfg, const ShardPlan& plan,
                                const WeightPrecision& precision);

inline kernels::cpu::WeightView view_of(const OwnedTensor& t) {
    return kernels::cpu::WeightView{t.bytes.data(), t.dtype, t.rows(), t.cols()};
}

}  // namespace phi
