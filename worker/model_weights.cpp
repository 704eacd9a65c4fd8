// Slicing a checkpoint into one rank's weights (Megatron-style column/row/vocab splits; fused
// qkv_proj and gate_up_proj are split into their sections first, then each section is sharded).
#include "worker/model_weights.h"

#include <cstring>

#include "common/error.h"
#include "sharding/weight_names.h"

namespace phi {
namespace {

struct Piece {
    const TensorInfo* t;
    Range rows;
};

class Loader {
public:
    Loader(const Checkpoint& ckpt, const WeightPrecision& precision, int world, ModelWeights& w,
           std::vector<HeldTensor>* dry_run)
        : ckpt_(ckpt),
          dtype_(precision.dtype),
          quant_(precision.quant),
          head_quant_(precision.lm_head_quant()),
          layout_(precision.layout),
          world_(world),
          w_(w),
          dry_run_(dry_run) {}

    const TensorInfo& tensor(const std::string& name, std::initializer_list<int64_t> shape) {
        const TensorInfo& t = ckpt_.get(name);
        expect_shape(t, shape);
        return t;
    }

    // A layer's linear weight: rows from several pieces, concatenated, in the run-time dtype; when
    // quantized, in the checkpoint's exact values (the backend quantizes them at upload).
    OwnedTensor linear(const std::vector<Piece>& pieces, Range cols) {
        if (!quant_) return concat(pieces, cols, dtype_);
        return exact(pieces, cols, *quant_);
    }

    // The embedding, or a 16-bit LM head: in the run-time dtype.
    OwnedTensor table(const std::vector<Piece>& pieces) { return concat(pieces, Range{}, dtype_); }

    // An untied LM head: like a linear (whole rows of the vocab split) when it is quantized.
    OwnedTensor head(const std::vector<Piece>& pieces) {
        if (!head_quant_) return table(pieces);
        return exact(pieces, Range{}, *head_quant_);
    }

    // Small fp32 tensor (norm, bias, router): rounded through bf16 when weights are bf16.
    OwnedTensor small(const std::vector<Piece>& pieces) {
        OwnedTensor t = concat(pieces, Range{}, DType::F32);
        if (dry_run_) return t;
        if (dtype_ == DType::BF16) {
            float* p = t.f32();
            const int64_t n = t.rows() * t.cols();
            for (int64_t i = 0; i < n; ++i) p[i] = bf16_to_f32(f32_to_bf16(p[i]));
        }
        return t;
    }

private:
    // A weight the backend quantizes to `format` at upload: the checkpoint's exact values.
    OwnedTensor exact(const std::vector<Piece>& pieces, Range cols, kernels::cpu::QuantFormat format) {
        bool all_bf16 = true;
        for (const Piece& p : pieces) {
            check_quant_columns(*p.t, cols);
            all_bf16 = all_bf16 && p.t->dtype == DType::BF16;
        }
        return concat(pieces, cols, all_bf16 ? DType::BF16 : DType::F32, format);
    }

    // Quantization is defined on the whole tensor (blocks of 32 along each row's input columns), so
    // a rank may hold only whole blocks: a slice of them is then bitwise the rank's part of the
    // whole tensor's quantization (quant_slice), and no scale comes from part of a block.
    void check_quant_columns(const TensorInfo& t, Range cols) const {
        const int64_t width = t.shape.at(1), blk = kernels::cpu::k_quant_block;
        const std::string_view q = kernels::cpu::quant_format_name(*quant_);
        PHI_CHECK(width % blk == 0,
                  "dtype {}: {} has {} input columns, not a multiple of the {}-column quantization blocks; "
                  "this model cannot run with {} weights (use dtype: bf16 or f32)",
                  q, t.name, width, blk, q);
        if (cols.size() == 0) return;
        PHI_CHECK(cols.begin % blk == 0 && cols.end % blk == 0,
                  "dtype {}: tp {} gives each rank {} of the {} input columns of {} (this rank [{}, {})), not whole "
                  "{}-column quantization blocks of the unsharded tensor; use a tp size that splits it into "
                  "multiples of {} columns, or dtype: bf16",
                  q, world_, cols.size(), width, t.name, cols.begin, cols.end, blk, blk);
    }

    OwnedTensor concat(const std::vector<Piece>& pieces, Range cols, DType dst,
                       std::optional<kernels::cpu::QuantFormat> quant = std::nullopt) {
        if (dry_run_) {
            record(pieces, cols, dst, quant);
            return OwnedTensor{};
        }
        std::vector<OwnedTensor> parts;
        int64_t rows = 0;
        for (const Piece& p : pieces) {
            parts.push_back(load_slice(*p.t, std::span<const Range>(&p.rows, 1), cols, dst));
            w_.checkpoint_bytes_read += slice_source_bytes(*p.t, std::span<const Range>(&p.rows, 1), cols);
            rows += parts.back().rows();
        }
        if (parts.size() == 1) {
            w_.resident_bytes += resident(parts[0], quant);
            return std::move(parts[0]);
        }
        OwnedTensor out;
        out.dtype = dst;
        const bool is_2d = parts[0].shape.size() == 2;
        out.shape = is_2d ? std::vector<int64_t>{rows, parts[0].cols()} : std::vector<int64_t>{rows};
        out.bytes = AlignedBuffer(size_t(rows) * size_t(out.cols()) * dtype_size(dst));
        size_t off = 0;
        for (const OwnedTensor& p : parts) {
            std::memcpy(out.bytes.data() + off, p.bytes.data(), p.bytes.size());
            off += p.bytes.size();
        }
        w_.resident_bytes += resident(out, quant);
        return out;
    }

    // Bytes the model keeps of `t`: a quantized weight's host copy goes once the backend has its blocks.
    size_t resident(const OwnedTensor& t, std::optional<kernels::cpu::QuantFormat> quant) const {
        return quant ? size_t(kernels::cpu::quant_tensor_bytes(*quant, t.rows(), t.cols(), layout_))
                     : t.bytes.size();
    }

    void record(const std::vector<Piece>& pieces, Range cols, DType dst,
                std::optional<kernels::cpu::QuantFormat> quant) {
        HeldTensor h;
        int64_t rows = 0;
        for (const Piece& p : pieces) {
            if (!h.source.empty() && h.source.find(p.t->name) == std::string::npos) h.source += "+";
            if (h.source.find(p.t->name) == std::string::npos) h.source += p.t->name;
            rows += p.rows.size();
        }
        const TensorInfo& t0 = *pieces[0].t;
        h.shape = {rows};
        int64_t width = 1;
        if (t0.shape.size() == 2) {
            width = cols.size() == 0 ? t0.shape[1] : cols.size();
            h.shape.push_back(width);
        }
        h.dtype = dst;
        h.quant = quant;
        h.bytes = quant ? size_t(kernels::cpu::quant_tensor_bytes(*quant, rows, width, layout_))
                        : size_t(rows) * size_t(width) * dtype_size(dst);
        dry_run_->push_back(std::move(h));
    }

    const Checkpoint& ckpt_;
    DType dtype_;
    std::optional<kernels::cpu::QuantFormat> quant_;
    std::optional<kernels::cpu::QuantFormat> head_quant_;
    kernels::cpu::QuantLayout layout_;
    int world_;
    ModelWeights& w_;
    std::vector<HeldTensor>* dry_run_;
};


}  // namespace

kernels::cpu::WeightView ModelWeights::lm_head_view() const { return view_of(lm_head.empty() ? embed : lm_head); }

std::string WeightPrecision::name() const {
    if (quant) return std::string(kernels::cpu::quant_format_name(*quant));
    return dtype == DType::BF16 ? "bf16" : "f32";
}

namespace {
ModelWeights load_or_plan(const Checkpoint& ckpt, const ModelConfig& cfg, const ShardPlan& plan,
                          const WeightPrecision& precision, std::vector<HeldTensor>* dry_run);
}

ModelWeights load_model_weights(const Checkpoint& ckpt, const ModelConfig& cfg, const ShardPlan& plan,
                                const WeightPrecision& precision) {
    return load_or_plan(ckpt, cfg, plan, precision, nullptr);
}

std::vector<HeldTensor> plan_model_weights(const Checkpoint& ckpt, const ModelConfig& cfg, const ShardPlan& plan,
                                           const WeightPrecision& precision) {
    std::vector<HeldTensor> held;
    load_or_plan(ckpt, cfg, plan, precision, &held);
    return held;
}

namespace {
ModelWeights load_or_plan(const Checkpoint& ckpt, const ModelConfig& cfg, const ShardPlan& plan,
                          const WeightPrecision& precision, std::vector<HeldTensor>* dry_run) {
    const DType dtype = precision.dtype;
    PHI_CHECK(dtype == DType::F32 || dtype == DType::BF16, "CPU weights must be F32 or BF16, not {}",
              dtype_name(dtype));
    PHI_CHECK(!(cfg.arch == Arch::Phi3 && cfg.attention_bias),
              "{} with attention_bias=true is not a released Phi-3 layout and is not supported",
              cfg.architecture);
    ModelWeights w;
    Loader ld(ckpt, precision, plan.world, w, dry_run);
    const int64_t d = cfg.d_model, hd = cfg.head_dim, nh = cfg.n_heads, nkv = cfg.n_kv_heads, dff = cfg.d_ff;
    const LinearShards sh = linear_shards(cfg, plan);
    const Range q_rows = sh.q_rows, kv_rows = sh.kv_rows;
    const Range all_d{0, d};

    const ModelTensorNames mn = model_tensor_names(cfg);
    const TensorInfo& embed = ld.tensor(mn.embed, {cfg.vocab_size, d});
    w.embed = ld.table({{&embed, plan.vocab}});
    w.final_norm_w = ld.small({{&ld.tensor(mn.final_norm_w, {d}), all_d}});
    if (!mn.final_norm_b.empty()) w.final_norm_b = ld.small({{&ld.tensor(mn.final_norm_b, {d}), all_d}});

    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const LayerTensorNames n = layer_tensor_names(cfg, l);
        LayerWeights lw;
        lw.attn_norm_w = ld.small({{&ld.tensor(n.attn_norm_w, {d}), all_d}});
        if (!n.attn_norm_b.empty()) lw.attn_norm_b = ld.small({{&ld.tensor(n.attn_norm_b, {d}), all_d}});
        if (!n.ffn_norm_w.empty()) lw.ffn_norm_w = ld.small({{&ld.tensor(n.ffn_norm_w, {d}), all_d}});
        if (!n.ffn_norm_b.empty()) lw.ffn_norm_b = ld.small({{&ld.tensor(n.ffn_norm_b, {d}), all_d}});

        if (!n.qkv_w.empty()) {
            const TensorInfo& qkv = ld.tensor(n.qkv_w, {(nh + 2 * nkv) * hd, d});
            lw.wqkv = ld.linear({{&qkv, sh.qkv_rows[0]}, {&qkv, sh.qkv_rows[1]}, {&qkv, sh.qkv_rows[2]}}, Range{});
        } else {
            lw.wqkv = ld.linear({{&ld.tensor(n.q_w, {nh * hd, d}), q_rows},
                                 {&ld.tensor(n.k_w, {nkv * hd, d}), kv_rows},
                                 {&ld.tensor(n.v_w, {nkv * hd, d}), kv_rows}},
                                Range{});
        }
        if (!n.qkv_b.empty()) {
            const TensorInfo& b = ld.tensor(n.qkv_b, {(nh + 2 * nkv) * hd});
            lw.bqkv = ld.small({{&b, sh.qkv_rows[0]}, {&b, sh.qkv_rows[1]}, {&b, sh.qkv_rows[2]}});
        } else if (!n.q_b.empty()) {
            lw.bqkv = ld.small({{&ld.tensor(n.q_b, {nh * hd}), q_rows},
                                {&ld.tensor(n.k_b, {nkv * hd}), kv_rows},
                                {&ld.tensor(n.v_b, {nkv * hd}), kv_rows}});
        }
        if (!n.q_norm_w.empty()) {
            const Range all_hd{0, hd};
            lw.q_norm_w = ld.small({{&ld.tensor(n.q_norm_w, {hd}), all_hd}});
            lw.q_norm_b = ld.small({{&ld.tensor(n.q_norm_b, {hd}), all_hd}});
            lw.k_norm_w = ld.small({{&ld.tensor(n.k_norm_w, {hd}), all_hd}});
            lw.k_norm_b = ld.small({{&ld.tensor(n.k_norm_b, {hd}), all_hd}});
        }
        lw.wo = ld.linear({{&ld.tensor(n.o_w, {d, nh * hd}), all_d}}, sh.o_cols);
        if (!n.o_b.empty()) lw.bo = ld.small({{&ld.tensor(n.o_b, {d}), all_d}});

        if (cfg.arch == Arch::PhiMoE) {
            lw.router = ld.small({{&ld.tensor(n.router_w, {cfg.n_experts, d}), Range{0, cfg.n_experts}}});
            for (int64_t e = 0; e < cfg.n_experts; ++e) {
                const std::string ep = n.expert_prefix + std::to_string(e) + ".";
                const TensorInfo& w1 = ld.tensor(ep + "w1.weight", {dff, d});
                const TensorInfo& w3 = ld.tensor(ep + "w3.weight", {dff, d});
                const TensorInfo& w2 = ld.tensor(ep + "w2.weight", {d, dff});
                lw.expert_up.push_back(ld.linear({{&w1, plan.ff}, {&w3, plan.ff}}, Range{}));
                lw.expert_down.push_back(ld.linear({{&w2, all_d}}, plan.ff));
            }
        } else if (cfg.arch == Arch::Phi3) {
            const TensorInfo& gu = ld.tensor(n.up_w, {2 * dff, d});
            lw.w_up = ld.linear({{&gu, sh.up_rows[0]}, {&gu, sh.up_rows[1]}}, Range{});
            lw.w_down = ld.linear({{&ld.tensor(n.down_w, {d, dff}), all_d}}, sh.down_cols);
        } else {
            lw.w_up = ld.linear({{&ld.tensor(n.up_w, {dff, d}), sh.up_rows[0]}}, Range{});
            lw.b_up = ld.small({{&ld.tensor(n.up_b, {dff}), sh.up_rows[0]}});
            lw.w_down = ld.linear({{&ld.tensor(n.down_w, {d, dff}), all_d}}, sh.down_cols);
            lw.b_down = ld.small({{&ld.tensor(n.down_b, {d}), all_d}});
        }
        w.layers.push_back(std::move(lw));
    }
    // After the layers: a width that int8/int4 cannot split is then named by a layer's linear.
    if (!cfg.tie_word_embeddings)
        w.lm_head = ld.head({{&ld.tensor(mn.lm_head_w, {cfg.vocab_size, d}), plan.vocab}});
    if (!mn.lm_head_b.empty()) w.lm_head_b = ld.small({{&ld.tensor(mn.lm_head_b, {cfg.vocab_size}), plan.vocab}});
    return w;
}
}  // namespace

}  // namespace phi
