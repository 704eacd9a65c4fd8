// Backend: the operations one forward is written against (llama.cpp's "one graph, many backends").
// A backend owns its buffers (host memory for the CPU, device memory for CUDA) and implements each
// operation of the model; it never implements the model. The order of operations, the collectives
// and every model variant's choices live only in worker/ (worker/phi_model.cpp).
//
// Rules for implementations:
//  - One operation = one step of the forward (a GEMM, a norm, RoPE, a KV write, attention, ...).
//    Nothing spans a layer or a block. `linear` may fuse only the epilogues passed to it (bias,
//    activation, accumulate into the output).
//  - Operations that use the step's token layout (positions, block tables, sequences, logit rows)
//    read it from the StepBatch given to begin_step(); the same batch stays valid until end_step().
//  - Every buffer is row-major [rows, cols]; fp32 unless its dtype says otherwise. Weights may be
//    held in a backend-specific format (WeightFormat) chosen at upload.
//
// Extension points: StepSeq::adapter (a per-sequence LoRA adapter id; the model applies adapters with
// `linear` on fp32 A/B weights and refuses them on a backend whose supports_lora() is false), one Backend instance per model (a draft model
// beside the target on the same rank has its own), WeightFormat for quantized or packed layouts.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace phi::kernels {

/// How a weight is stored by a backend. Plain formats are the checkpoint's layout ([out, in]);
/// quantized and packed formats are documented with the kernels that read them: Q8 and Q4 are the
/// block formats of docs/QUANT.md (blocks of 32 along the input dimension, one fp16 scale each),
/// quantized by the backend from the F32 or BF16 host tensor given to upload_weight.
enum class WeightFormat { F32, BF16, Q8, Q4 };

const char* weight_format_name(WeightFormat f);

/// A view of a backend-owned buffer: row-major [rows, cols] of `dtype` (activations are F32;
/// weights carry their format). Views are cheap to copy and never own memory.
struct Tensor {
    void* data = nullptr;
    DType dtype = DType::F32;
    WeightFormat format = WeightFormat::F32;
    int64_t rows = 0;
    int64_t cols = 0;

    bool empty() const { return data == nullptr; }
    int64_t numel() const { return rows * cols; }
    float* f32() const { return static_cast<float*>(data); }
    /// The same memory as [rows, cols] (numel must match).
    Tensor reshaped(int64_t r, int64_t c) const;
    /// Rows [first, first + n) (F32 buffers).
    Tensor row_slice(int64_t first, int64_t n) const;
};

/// A buffer owned by a backend (freed by it when this goes away).
class Buffer {
public:
    Buffer() = default;
    Buffer(Tensor t, std::shared_ptr<void> owner) : t_(t), owner_(std::move(owner)) {}
    const Tensor& tensor() const { return t_; }
    operator const Tensor&() const { return t_; }
    bool empty() const { return t_.empty(); }
    /// True when the memory belongs to the caller (upload_weight read the host tensor in place):
    /// the caller must keep it; otherwise the backend holds its own copy and the host one can go.
    bool borrows_host() const { return owner_ == nullptr; }

private:
    Tensor t_;
    std::shared_ptr<void> owner_;  // null when the memory belongs to the caller (see upload_weight)
};

/// A host tensor handed to upload_weight: [rows, cols] of F32 or BF16.
struct HostTensor {
    const void* data = nullptr;
    DType dtype = DType::F32;
    int64_t rows = 0;
    int64_t cols = 0;
};

/// One sequence of a step, as the backend sees it.
struct StepSeq {
    int64_t first_token = 0;                // index of its first new token in the step
    int64_t n_tokens = 0;                   // new tokens
    int64_t start_pos = 0;                  // tokens already in its cache
    std::span<const int32_t> block_table;   // blocks covering [0, start_pos + n_tokens)
    bool long_rope = false;                 // LongRoPE long factors
    int32_t adapter = 0;                    // LoRA adapter id; 0 = the base model
};

/// The token layout of one step (valid from begin_step to end_step).
struct StepBatch {
    std::vector<StepSeq> seqs;
    std::vector<int32_t> ids;        // [T] token ids
    std::vector<int32_t> pos;        // [T] absolute positions
    std::vector<int32_t> logit_rows; // [R] token index of each row whose logits are wanted
    int64_t tokens() const { return int64_t(ids.size()); }
    int64_t rows() const { return int64_t(logit_rows.size()); }
    bool decode_only() const;        // every sequence adds exactly one token
};

/// Geometry of the paged KV cache of one rank: per layer, K and V of
/// [num_blocks, block_size, n_kv_heads, head_dim].
struct KvGeometry {
    int64_t n_layers = 0;
    int64_t num_blocks = 0;
    int64_t block_size = 0;
    int64_t n_kv_heads = 0;
    int64_t head_dim = 0;
    /// How K and V are stored: F32, or BF16 (rounded to nearest even on write, widened exactly on
    /// read: `kv_cache.dtype: bf16`). A backend refuses a dtype it does not hold.
    DType dtype = DType::F32;
};

/// RoPE frequency tables: short (or only) and long (LongRoPE), each [rotary_dim / 2], with the
/// factor that multiplies cos and sin.
struct RopeSpec {
    int64_t rotary_dim = 0;
    std::vector<float> inv_freq_short, inv_freq_long;
    float scale_short = 1.0f, scale_long = 1.0f;
};

/// Epilogue of a linear: y = act(x W^T + bias), then y_out = y (or y_out += y when accumulate).
enum class Activation { None, GeluNew };
struct LinearEpilogue {
    Tensor bias;                          // [W.rows] fp32 or empty
    Activation act = Activation::None;
    bool accumulate = false;              // add into the output instead of overwriting it
};

/// The PhiMoE sparse MLP of one rank (one operation): router on h (fp32, replicated),
/// sparsemixer top-2, per-expert gate_up GEMM, SiLU-and-mul, down GEMM, weighted combine in
/// ascending expert order. out: [T, d] partial sums (the caller all-reduces).
struct MoeWeights {
    Tensor router;                   // [E, d] fp32
    std::vector<Tensor> up;          // per expert [2 f, d]: w1 | w3
    std::vector<Tensor> down;        // per expert [d, f]
    float jitter_eps = 0.0f;
};

/// (max, id) of one logits row over ids [0, limit) of this rank's vocabulary shard.
struct ArgmaxPair {
    float value = 0.0f;
    int32_t id = -1;  // global id; -1 when the shard holds no id below the limit
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string name() const = 0;

    // ---- buffers -----------------------------------------------------------------------------
    /// A fp32 scratch buffer [rows, cols] (contents unspecified).
    virtual Buffer alloc(int64_t rows, int64_t cols) = 0;
    /// A weight in `format`. The backend may keep pointing at `host` when it can read it as it is
    /// (the CPU with the checkpoint's format): the caller keeps `host` alive while the buffer lives
    /// (Buffer::borrows_host says which). A backend refuses a format it does not implement.
    virtual Buffer upload_weight(const HostTensor& host, WeightFormat format) = 0;
    /// fp32 parameters (norm weights, biases, the router): always copied or referenced as fp32.
    virtual Buffer upload_f32(const float* host, int64_t rows, int64_t cols) = 0;
    /// Whether buffers from upload_weight/upload_f32 may point into the caller's host memory (then
    /// the caller keeps it); otherwise the host copy can be freed after upload.
    virtual bool borrows_host_memory() const = 0;
    /// Whether LoRA adapters may run on this backend: the model applies them as `linear`s on F32
    /// A/B weights with `accumulate`, over row slices of the step's activations. A backend says yes
    /// only once that path has been checked on it against the CPU reference.
    virtual bool supports_lora() const = 0;
    /// Copies a fp32 buffer to the host.
    virtual void read(const Tensor& t, float* host) = 0;
    /// FNV-1a of a fp32 buffer's bytes (cross-rank state checks).
    virtual uint64_t hash(const Tensor& t) = 0;

    // ---- steps -------------------------------------------------------------------------------
    /// Starts a step over `batch`. Returns true when the backend replayed a recording of this
    /// step's shape (CUDA graphs): the caller then skips straight to end_step(). `recordable`
    /// says the caller's collectives can be recorded with the step.
    virtual bool begin_step(const StepBatch& batch, bool recordable) = 0;
    virtual void end_step() = 0;

    // ---- operations --------------------------------------------------------------------------
    /// y[t, o] = epilogue(sum_i x[t, i] W[o, i]) for t < x.rows.
    virtual void linear(const Tensor& y, const Tensor& x, const Tensor& w, const LinearEpilogue& ep) = 0;
    /// LayerNorm over cols (biased variance); b may be empty. y may alias x.
    virtual void layer_norm(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b, float eps) = 0;
    /// RMSNorm over cols. y may alias x.
    virtual void rms_norm(const Tensor& y, const Tensor& x, const Tensor& w, float eps) = 0;
    /// In place: x = gelu_new(x).
    virtual void gelu_new(const Tensor& x) = 0;
    /// out[t, j] = silu(in[t, j]) in[t, f + j]; in: [T, 2 f], out: [T, f].
    virtual void silu_mul(const Tensor& out, const Tensor& in) = 0;
    /// y += x (same shape).
    virtual void add(const Tensor& y, const Tensor& x) = 0;
    /// y[t, :] += b for every row (row-parallel biases, added once after the all-reduce).
    virtual void add_bias_rows(const Tensor& y, const Tensor& b) = 0;
    /// dst[t, :] = src[t, col0 : col0 + dst.cols] (splitting fused projections).
    virtual void copy_columns(const Tensor& dst, const Tensor& src, int64_t col0) = 0;
    /// dst[r, :] = src[batch.logit_rows[r], :] (the rows whose logits are wanted).
    virtual void gather_logit_rows(const Tensor& dst, const Tensor& src) = 0;
    /// out[t, :] = table[ids[t] - row_offset] (zero for ids outside the shard's rows).
    virtual void embedding(const Tensor& out, const Tensor& table, int64_t row_offset) = 0;
    /// RoPE in place on x [T, n_heads * head_dim], each sequence with its table (long or short).
    virtual void rope(const Tensor& x, int64_t n_heads, int64_t head_dim, const RopeSpec& spec) = 0;

    /// The paged KV cache of this model (allocated once; replaced on a second call).
    virtual void create_kv_cache(const KvGeometry& g) = 0;
    virtual const KvGeometry& kv_geometry() const = 0;
    /// Writes the step's new K and V ([T, n_kv_heads * head_dim]) of `layer` into the cache.
    virtual void kv_write(int64_t layer, const Tensor& k, const Tensor& v) = 0;
    /// Causal attention of every sequence's new queries q [T, n_heads * head_dim] over `layer`'s
    /// cache (already holding the new tokens); q_to_kv [n_heads] maps query to local KV heads.
    virtual void attention(const Tensor& out, const Tensor& q, int64_t layer, int64_t n_heads,
                           std::span<const int32_t> q_to_kv, float scale, int64_t sliding_window) = 0;

    /// PhiMoE MLP (see MoeWeights).
    virtual void moe(const Tensor& out, const Tensor& h, const MoeWeights& w) = 0;

    /// Per logits row r of `logits` [R, vocab_local]: the largest value among ids below
    /// limits[r] (global ids; the shard starts at `vocab_begin`), lowest id on ties.
    virtual std::vector<ArgmaxPair> argmax_rows(const Tensor& logits, std::span<const int32_t> row_index,
                                                std::span<const int32_t> limits, int64_t vocab_begin) = 0;
};

}  // namespace phi::kernels
