// See quant_reference_model.h. The int8-activation reference is a Backend decorator so that the
// model code stays the one forward: only linears with Q8/Q4 weights (the LM head's Q8 included) are
// computed differently; every other operation passes through to the CPU backend untouched.
#include "tests/worker/quant_reference_model.h"

#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "sharding/safetensors.h"
#include "worker/model_weights.h"

namespace phi::test {
namespace {

using kernels::Backend;
using kernels::Buffer;
using kernels::Tensor;

/// t (F32 or BF16 [rows, cols]) quantized as a whole tensor, then dequantized to fp32.
OwnedTensor dequantized(const OwnedTensor& t, kernels::cpu::QuantFormat format) {
    if (t.empty()) return {};
    const kernels::cpu::QuantTensor q = kernels::cpu::quantize(format, view_of(t));
    OwnedTensor out;
    out.dtype = DType::F32;
    out.shape = t.shape;
    out.bytes = AlignedBuffer(size_t(t.rows() * t.cols()) * 4);
    kernels::cpu::dequantize(q.view(), out.f32());
    return out;
}

/// Computes every linear with Q8/Q4 weights by the scalar reference implementation of the int8
/// activation mode (quant_reference.cpp: the input rounded per token and block of 32, exact integer
/// block sums, the documented fixed fp32 order) on blocks it quantizes itself from the whole
/// tensor; every other operation is the inner backend's.
class Int8ReferenceBackend final : public Backend {
public:
    explicit Int8ReferenceBackend(std::unique_ptr<Backend> inner) : in_(std::move(inner)) {}

    std::string name() const override { return in_->name() + " + scalar int8-activation linears"; }
    Buffer alloc(int64_t rows, int64_t cols) override { return in_->alloc(rows, cols); }
    Buffer upload_weight(const kernels::HostTensor& host, kernels::WeightFormat format) override {
        if (format != kernels::WeightFormat::Q8 && format != kernels::WeightFormat::Q4)
            return in_->upload_weight(host, format);
        const auto q = std::make_shared<kernels::cpu::QuantTensor>(kernels::cpu::quantize(
            format == kernels::WeightFormat::Q8 ? kernels::cpu::QuantFormat::Q8 : kernels::cpu::QuantFormat::Q4,
            kernels::cpu::WeightView{host.data, host.dtype, host.rows, host.cols}));
        return Buffer(Tensor{q.get(), DType::F32, format, host.rows, host.cols}, q);
    }
    Buffer upload_f32(const float* host, int64_t rows, int64_t cols) override {
        return in_->upload_f32(host, rows, cols);
    }
    bool borrows_host_memory() const override { return in_->borrows_host_memory(); }
    bool supports_lora() const override { return false; }
    void read(const Tensor& t, float* host) override { in_->read(t, host); }
    uint64_t hash(const Tensor& t) override { return in_->hash(t); }
    bool begin_step(const kernels::StepBatch& batch, bool recordable) override {
        return in_->begin_step(batch, recordable);
    }
    void end_step() override { in_->end_step(); }

    void linear(const Tensor& y, const Tensor& x, const Tensor& w, const kernels::LinearEpilogue& ep) override {
        if (w.format != kernels::WeightFormat::Q8 && w.format != kernels::WeightFormat::Q4) {
            in_->linear(y, x, w, ep);
            return;
        }
        PHI_CHECK(!ep.accumulate, "the int8-activation reference does not accumulate into its output");
        const auto* q = static_cast<const kernels::cpu::QuantTensor*>(w.data);
        kernels::cpu::linear_quant(kernels::cpu::Isa::Scalar, y.f32(), x.f32(), x.rows, q->view(),
                                   ep.bias.empty() ? nullptr : ep.bias.f32(), kernels::cpu::QuantActivations::Int8);
        switch (ep.act) {
            case kernels::Activation::None: break;
            case kernels::Activation::GeluNew: in_->gelu_new(y); break;
        }
    }

    void layer_norm(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
        in_->layer_norm(y, x, w, b, eps);
    }
    void rms_norm(const Tensor& y, const Tensor& x, const Tensor& w, float eps) override { in_->rms_norm(y, x, w, eps); }
    void gelu_new(const Tensor& x) override { in_->gelu_new(x); }
    void silu_mul(const Tensor& out, const Tensor& in) override { in_->silu_mul(out, in); }
    void add(const Tensor& y, const Tensor& x) override { in_->add(y, x); }
    void add_bias_rows(const Tensor& y, const Tensor& b) override { in_->add_bias_rows(y, b); }
    void copy_columns(const Tensor& dst, const Tensor& src, int64_t col0) override {
        in_->copy_columns(dst, src, col0);
    }
    void gather_logit_rows(const Tensor& dst, const Tensor& src) override { in_->gather_logit_rows(dst, src); }
    void embedding(const Tensor& out, const Tensor& table, int64_t row_offset) override {
        in_->embedding(out, table, row_offset);
    }
    void rope(const Tensor& x, int64_t n_heads, int64_t head_dim, const kernels::RopeSpec& spec) override {
        in_->rope(x, n_heads, head_dim, spec);
    }
    void create_kv_cache(const kernels::KvGeometry& g) override { in_->create_kv_cache(g); }
    const kernels::KvGeometry& kv_geometry() const override { return in_->kv_geometry(); }
    void kv_write(int64_t layer, const Tensor& k, const Tensor& v) override { in_->kv_write(layer, k, v); }
    void attention(const Tensor& out, const Tensor& q, int64_t layer, int64_t n_heads,
                   std::span<const int32_t> q_to_kv, float scale, int64_t sliding_window) override {
        in_->attention(out, q, layer, n_heads, q_to_kv, scale, sliding_window);
    }
    void moe(const Tensor&, const Tensor&, const kernels::MoeWeights&) override {
        // No MoE fixture fits int8/int4 (its d_ff of 48 is refused), so this reference has no
        // expert path; fail loudly rather than compute experts some other way.
        PHI_FAIL("the int8-activation reference has no MoE path");
    }
    std::vector<kernels::ArgmaxPair> argmax_rows(const Tensor& logits, std::span<const int32_t> row_index,
                                                 std::span<const int32_t> limits, int64_t vocab_begin) override {
        return in_->argmax_rows(logits, row_index, limits, vocab_begin);
    }

private:
    std::unique_ptr<Backend> in_;
};

}  // namespace

std::unique_ptr<PhiModel> dequantized_reference_model(const std::filesystem::path& model_dir, Communicator& comm,
                                                      kernels::cpu::QuantFormat format,
                                                      kernels::cpu::QuantActivations acts, kernels::cpu::Isa isa,
                                                      const KvCacheConfig& kv) {
    const ModelConfig cfg = load_model_config(model_dir / "config.json");
    const ShardPlan plan = make_shard_plan(cfg, 1, 0);
    Checkpoint ckpt(model_dir);
    // The quantized model's precision: exact source values for the linears and an untied LM head,
    // bf16 elsewhere.
    const WeightPrecision precision(DType::BF16, format);
    ModelWeights w = load_model_weights(ckpt, cfg, plan, precision);
    PhiModelOptions mo;
    mo.kv = kv;
    mo.table_format = kernels::WeightFormat::BF16;
    const auto head = precision.lm_head_quant();
    std::unique_ptr<Backend> be = kernels::cpu::make_cpu_backend(isa);
    switch (acts) {
        case kernels::cpu::QuantActivations::F32:
            for (LayerWeights& l : w.layers) {
                l.wqkv = dequantized(l.wqkv, format);
                l.wo = dequantized(l.wo, format);
                l.w_up = dequantized(l.w_up, format);
                l.w_down = dequantized(l.w_down, format);
                for (OwnedTensor& e : l.expert_up) e = dequantized(e, format);
                for (OwnedTensor& e : l.expert_down) e = dequantized(e, format);
            }
            if (head && !w.lm_head.empty()) w.lm_head = dequantized(w.lm_head, *head);
            mo.weight_format = kernels::WeightFormat::F32;
            if (head) mo.lm_head_format = kernels::WeightFormat::F32;
            break;
        case kernels::cpu::QuantActivations::Int8:
            mo.weight_format =
                format == kernels::cpu::QuantFormat::Q8 ? kernels::WeightFormat::Q8 : kernels::WeightFormat::Q4;
            if (head) mo.lm_head_format = kernels::WeightFormat::Q8;
            be = std::make_unique<Int8ReferenceBackend>(std::move(be));
            break;
    }
    return std::make_unique<PhiModel>(cfg, plan, std::move(w), comm, std::move(be), nullptr, mo);
}

}  // namespace phi::test
