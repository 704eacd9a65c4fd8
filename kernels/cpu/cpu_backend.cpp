// Each operation is one call (or one loop of calls per sequence) of the CPU kernels, so results
// keep the kernels' fixed reduction orders: the same bits alone or batched, at any thread count.
// F32/BF16 weights are read where the caller holds them; Q8/Q4 weights are quantized at upload
// into a QuantTensor the backend owns (the caller then frees its host copy: one resident copy), in
// the Dot16 layout when the int8-activation kernel of the level reads that one.
#include "kernels/cpu/cpu_backend.h"

#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "common/aligned_buffer.h"
#include "common/error.h"
#include "common/hash.h"
#include "kernels/argmax_host.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant.h"
#include "kernels/moe_routing.h"

namespace phi::kernels::cpu {
namespace {

WeightView view(const Tensor& w) {
    PHI_CHECK(w.format == WeightFormat::F32 || w.format == WeightFormat::BF16,
              "a {} weight cannot be read as a plain matrix here (only linear layers take quantized weights)",
              weight_format_name(w.format));
    return WeightView{w.data, w.dtype, w.rows, w.cols};
}

// A Q8/Q4 weight's Tensor::data points at the QuantTensor that owns its blocks.
QuantWeightView quant_view(const Tensor& w) { return static_cast<const QuantTensor*>(w.data)->view(); }

QuantFormat quant_format(WeightFormat f) {
    switch (f) {
        case WeightFormat::Q8: return QuantFormat::Q8;
        case WeightFormat::Q4: return QuantFormat::Q4;
        case WeightFormat::F32:
        case WeightFormat::BF16: break;
    }
    PHI_FAIL("{} is not a quantized weight format", weight_format_name(f));
}

const float* f32_or_null(const Tensor& t) { return t.empty() ? nullptr : t.f32(); }

void check_f32(const Tensor& t, const char* what) {
    PHI_CHECK(t.dtype == DType::F32 && t.data != nullptr, "{} must be a fp32 buffer", what);
}

class CpuBackend final : public Backend {
public:
    CpuBackend(Isa isa, QuantActivations quant_acts) : isa_(isa), quant_acts_(quant_acts) {}

    std::string name() const override {
        return fmt::format("cpu ({}{})", isa_name(isa_),
                           quant_acts_ == QuantActivations::Int8 ? ", int8 activations" : "");
    }

    Buffer alloc(int64_t rows, int64_t cols) override {
        auto mem = std::make_shared<AlignedBuffer>(size_t(std::max<int64_t>(rows * cols, 1)) * 4);
        Tensor t{mem->data(), DType::F32, WeightFormat::F32, rows, cols};
        return Buffer(t, mem);
    }

    Buffer upload_weight(const HostTensor& host, WeightFormat format) override {
        if (format == WeightFormat::Q8 || format == WeightFormat::Q4) {
            PHI_CHECK(host.dtype == DType::F32 || host.dtype == DType::BF16,
                      "{} weights are quantized from F32 or BF16 values, not {}", weight_format_name(format),
                      dtype_name(host.dtype));
            auto q = std::make_shared<QuantTensor>(
                quantize(quant_format(format), WeightView{host.data, host.dtype, host.rows, host.cols}));
            // The int8-activation kernel of this level reads its own layout: repack, replacing the
            // row layout (one resident copy; the results are bitwise the same).
            if (quant_weight_layout(quant_acts_, isa_) == QuantLayout::Dot16) *q = pack_for_int8_dot(*q);
            Tensor t{q.get(), DType::F32, format, host.rows, host.cols};
            return Buffer(t, q);
        }
        const DType want = format == WeightFormat::BF16 ? DType::BF16 : DType::F32;
        PHI_CHECK(host.dtype == want, "the CPU backend reads {} weights as they were loaded ({}); convert at load time",
                  weight_format_name(format), dtype_name(host.dtype));
        // Read in place: the caller keeps the host tensor alive (one resident copy).
        Tensor t{const_cast<void*>(host.data), host.dtype, format, host.rows, host.cols};
        return Buffer(t, nullptr);
    }

    Buffer upload_f32(const float* host, int64_t rows, int64_t cols) override {
        if (host == nullptr) return {};
        Tensor t{const_cast<float*>(host), DType::F32, WeightFormat::F32, rows, cols};
        return Buffer(t, nullptr);
    }

    bool borrows_host_memory() const override { return true; }
    bool supports_lora() const override { return true; }

    void read(const Tensor& t, float* host) override {
        check_f32(t, "read");
        std::memcpy(host, t.data, size_t(t.numel()) * 4);
    }

    uint64_t hash(const Tensor& t) override { return fnv1a(t.data, size_t(t.numel()) * 4); }

    bool begin_step(const StepBatch& batch, bool) override {
        batch_ = &batch;
        return false;
    }
    void end_step() override { batch_ = nullptr; }

    void linear(const Tensor& y, const Tensor& x, const Tensor& w, const LinearEpilogue& ep) override {
        check_f32(x, "linear input");
        check_f32(y, "linear output");
        PHI_CHECK(x.cols == w.cols && y.cols == w.rows && y.rows == x.rows,
                  "linear shapes: x [{}, {}], W [{}, {}], y [{}, {}]", x.rows, x.cols, w.rows, w.cols, y.rows, y.cols);
        float* out = y.f32();
        if (ep.accumulate) {
            tmp_.resize(size_t(y.numel()));
            out = tmp_.data();
        }
        linear_any(out, x.f32(), x.rows, w, f32_or_null(ep.bias));
        switch (ep.act) {
            case Activation::None: break;
            case Activation::GeluNew: kernels::cpu::gelu_new(isa_, out, y.numel()); break;
        }
        if (ep.accumulate) add_inplace(isa_, y.f32(), out, y.numel());
    }

    void layer_norm(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
        kernels::cpu::layer_norm(isa_, y.f32(), x.f32(), w.f32(), f32_or_null(b), x.rows, x.cols, eps);
    }

    void rms_norm(const Tensor& y, const Tensor& x, const Tensor& w, float eps) override {
        kernels::cpu::rms_norm(isa_, y.f32(), x.f32(), w.f32(), x.rows, x.cols, eps);
    }

    void gelu_new(const Tensor& x) override { kernels::cpu::gelu_new(isa_, x.f32(), x.numel()); }

    void silu_mul(const Tensor& out, const Tensor& in) override {
        PHI_CHECK(in.cols == 2 * out.cols && in.rows == out.rows, "silu_mul: in [{}, {}], out [{}, {}]", in.rows,
                  in.cols, out.rows, out.cols);
        kernels::cpu::silu_mul(isa_, out.f32(), in.f32(), out.rows, out.cols);
    }

    void add(const Tensor& y, const Tensor& x) override {
        PHI_CHECK(y.numel() == x.numel(), "add: {} and {} elements", y.numel(), x.numel());
        add_inplace(isa_, y.f32(), x.f32(), y.numel());
    }

    void add_bias_rows(const Tensor& y, const Tensor& b) override {
        if (b.empty()) return;
        for (int64_t t = 0; t < y.rows; ++t) add_inplace(isa_, y.f32() + t * y.cols, b.f32(), y.cols);
    }

    void copy_columns(const Tensor& dst, const Tensor& src, int64_t col0) override {
        PHI_CHECK(dst.rows == src.rows && col0 >= 0 && col0 + dst.cols <= src.cols, "copy_columns out of range");
        for (int64_t t = 0; t < dst.rows; ++t)
            std::memcpy(dst.f32() + t * dst.cols, src.f32() + t * src.cols + col0, size_t(dst.cols) * 4);
    }

    void gather_logit_rows(const Tensor& dst, const Tensor& src) override {
        const StepBatch& b = batch();
        PHI_CHECK(dst.rows == b.rows() && dst.cols == src.cols, "gather_logit_rows shapes");
        for (int64_t r = 0; r < b.rows(); ++r)
            std::memcpy(dst.f32() + r * dst.cols, src.f32() + int64_t(b.logit_rows[size_t(r)]) * src.cols,
                        size_t(src.cols) * 4);
    }

    void embedding(const Tensor& out, const Tensor& table, int64_t row_offset) override {
        const StepBatch& b = batch();
        kernels::cpu::embedding(out.f32(), view(table), b.ids.data(), b.tokens(), row_offset);
    }

    void rope(const Tensor& x, int64_t n_heads, int64_t head_dim, const RopeSpec& spec) override {
        const StepBatch& b = batch();
        for (const StepSeq& s : b.seqs) {
            const std::vector<float>& inv_freq = s.long_rope ? spec.inv_freq_long : spec.inv_freq_short;
            const float scale = s.long_rope ? spec.scale_long : spec.scale_short;
            kernels::cpu::rope(isa_, x.f32() + s.first_token * x.cols, b.pos.data() + s.first_token, s.n_tokens,
                               n_heads, head_dim, spec.rotary_dim, inv_freq.data(), scale);
        }
    }

    void create_kv_cache(const KvGeometry& g) override {
        PHI_CHECK(g.num_blocks > 0 && g.block_size > 0, "KV cache needs at least one block of one slot");
        PHI_CHECK(g.dtype == DType::F32 || g.dtype == DType::BF16,
                  "the CPU backend stores K and V as fp32 or bf16, not {}", dtype_name(g.dtype));
        geom_ = g;
        const size_t bytes = size_t(g.num_blocks) * size_t(g.block_size) * size_t(g.n_kv_heads * g.head_dim) *
                             dtype_size(g.dtype);
        k_.clear();
        v_.clear();
        for (int64_t l = 0; l < g.n_layers; ++l) {
            k_.emplace_back(bytes);
            v_.emplace_back(bytes);
        }
    }
    const KvGeometry& kv_geometry() const override { return geom_; }

    void kv_write(int64_t layer, const Tensor& k, const Tensor& v) override {
        const StepBatch& b = batch();
        const KvLayout lay = layout();
        const int64_t row = geom_.n_kv_heads * geom_.head_dim;
        AlignedBuffer& kc = k_[size_t(layer)];
        AlignedBuffer& vc = v_[size_t(layer)];
        for (const StepSeq& s : b.seqs) {
            const float* ks = k.f32() + s.first_token * row;
            const float* vs = v.f32() + s.first_token * row;
            if (geom_.dtype == DType::BF16) {
                kernels::cpu::kv_write(kc.as<uint16_t>(), vc.as<uint16_t>(), lay, s.block_table.data(), s.start_pos,
                                       s.n_tokens, ks, vs);
            } else {
                kernels::cpu::kv_write(kc.as<float>(), vc.as<float>(), lay, s.block_table.data(), s.start_pos,
                                       s.n_tokens, ks, vs);
            }
        }
    }

    void attention(const Tensor& out, const Tensor& q, int64_t layer, int64_t n_heads,
                   std::span<const int32_t> q_to_kv, float scale, int64_t sliding_window) override {
        const StepBatch& b = batch();
        const KvLayout lay = layout();
        const int64_t row = n_heads * geom_.head_dim;
        const AlignedBuffer& kc = k_[size_t(layer)];
        const AlignedBuffer& vc = v_[size_t(layer)];
        for (const StepSeq& s : b.seqs) {
            float* o = out.f32() + s.first_token * row;
            const float* qs = q.f32() + s.first_token * row;
            if (geom_.dtype == DType::BF16) {
                paged_attention(isa_, o, qs, kc.as<uint16_t>(), vc.as<uint16_t>(), lay, s.block_table.data(),
                                s.start_pos, s.n_tokens, n_heads, q_to_kv.data(), scale, sliding_window);
            } else {
                paged_attention(isa_, o, qs, kc.as<float>(), vc.as<float>(), lay, s.block_table.data(), s.start_pos,
                                s.n_tokens, n_heads, q_to_kv.data(), scale, sliding_window);
            }
        }
    }

    void moe(const Tensor& out, const Tensor& h, const MoeWeights& w) override {
        const int64_t T = h.rows, d = h.cols, E = w.router.rows;
        // The router's input is bit-identical on every rank (fixed-order all-reduce), so every rank
        // picks the same experts.
        std::vector<float> scores(size_t(T * E));
        kernels::cpu::linear(isa_, scores.data(), h.f32(), T, view(w.router), nullptr);
        std::vector<int32_t> idx(size_t(T * 2));
        std::vector<float> wt(size_t(T * 2));
        for (int64_t t = 0; t < T; ++t)
            sparsemixer_top2(scores.data() + t * E, E, w.jitter_eps, idx.data() + 2 * t, wt.data() + 2 * t);

        std::memset(out.data, 0, size_t(T * d) * 4);
        std::vector<int64_t> rows;
        std::vector<float> xs, gu, a, y;
        for (int64_t e = 0; e < E; ++e) {
            rows.clear();
            for (int64_t t = 0; t < T; ++t)
                if (idx[size_t(2 * t)] == e || idx[size_t(2 * t + 1)] == e) rows.push_back(t);
            if (rows.empty()) continue;
            const Tensor& up = w.up[size_t(e)];
            const Tensor& down = w.down[size_t(e)];
            const int64_t n = int64_t(rows.size()), f = down.cols;
            xs.resize(size_t(n * d));
            for (int64_t i = 0; i < n; ++i)
                std::memcpy(&xs[size_t(i * d)], h.f32() + rows[size_t(i)] * d, size_t(d) * 4);
            gu.resize(size_t(n * 2 * f));
            a.resize(size_t(n * f));
            y.resize(size_t(n * d));
            linear_any(gu.data(), xs.data(), n, up, nullptr);
            kernels::cpu::silu_mul(isa_, a.data(), gu.data(), n, f);
            linear_any(y.data(), a.data(), n, down, nullptr);
            for (int64_t i = 0; i < n; ++i) {
                const int64_t t = rows[size_t(i)];
                const float wgt = idx[size_t(2 * t)] == e ? wt[size_t(2 * t)] : wt[size_t(2 * t + 1)];
                float* o = out.f32() + t * d;
                const float* yi = &y[size_t(i * d)];
                for (int64_t j = 0; j < d; ++j) o[j] += yi[j] * wgt;
            }
        }
    }

    std::vector<ArgmaxPair> argmax_rows(const Tensor& logits, std::span<const int32_t> row_index,
                                        std::span<const int32_t> limits, int64_t vocab_begin) override {
        return argmax_rows_host(logits.f32(), logits.cols, row_index, limits, vocab_begin);
    }

private:
    /// y = x W^T (+ bias) for any weight format this backend holds.
    void linear_any(float* y, const float* x, int64_t n, const Tensor& w, const float* bias) {
        switch (w.format) {
            case WeightFormat::F32:
            case WeightFormat::BF16: kernels::cpu::linear(isa_, y, x, n, view(w), bias); return;
            case WeightFormat::Q8:
            case WeightFormat::Q4: linear_quant(isa_, y, x, n, quant_view(w), bias, quant_acts_); return;
        }
    }

    const StepBatch& batch() const {
        PHI_CHECK(batch_ != nullptr, "a step operation ran outside begin_step/end_step");
        return *batch_;
    }
    KvLayout layout() const {
        PHI_CHECK(!k_.empty(), "the KV cache was not created");
        return KvLayout{geom_.num_blocks, geom_.block_size, geom_.n_kv_heads, geom_.head_dim};
    }

    Isa isa_;
    QuantActivations quant_acts_;  // how linears with Q8/Q4 weights treat their inputs
    const StepBatch* batch_ = nullptr;
    KvGeometry geom_;
    std::vector<AlignedBuffer> k_, v_;  // per layer [num_blocks, block_size, n_kv_heads, head_dim]
    std::vector<float> tmp_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(Isa isa, QuantActivations quant_acts) {
    return std::make_unique<CpuBackend>(isa, quant_acts);
}

}  // namespace phi::kernels::cpu
