// Host side of the CUDA backend. Per step the host packs the token metadata (ids, positions,
// sequence of each token, RoPE table, cache slots, logit rows, block tables) into one pinned
// buffer and uploads it with one copy per region; every operation then reads it on the device.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"
#include "common/hash.h"
#include "common/log.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {
namespace {

std::shared_ptr<DeviceBuffer> device_bytes(size_t bytes) { return std::make_shared<DeviceBuffer>(bytes); }

const float* f32_or_null(const Tensor& t) { return t.empty() ? nullptr : t.f32(); }

class CudaBackendImpl final : public CudaBackend {
public:
    explicit CudaBackendImpl(const CudaBackendOptions& opts) : opts_(opts) {
        const int gpus = cuda_device_count();
        PHI_CHECK(opts.device >= 0 && opts.device < gpus, "GPU {} requested but {} visible{}", opts.device, gpus,
                  gpus == 0 ? ": " + cuda_unavailable_reason() : "");
        CUDA_CHECK(cudaSetDevice(opts.device));
        stream_ = std::make_unique<Stream>();
        blas_ = std::make_unique<CublasHandle>(stream_->get());
        max_t_ = opts.max_tokens;
        max_s_ = opts.max_seqs;
        max_b_ = opts.max_blocks_per_seq;
        meta_ints_ = size_t(6 * max_t_ + max_s_ * max_b_);
        meta_ = DeviceBuffer(meta_ints_ * 4);
        CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_meta_), meta_ints_ * 4));
    }

    ~CudaBackendImpl() override {
        drop_graphs();
        if (host_meta_) cudaFreeHost(host_meta_);
    }

    std::string name() const override { return "cuda (" + cuda_device_description(opts_.device) + ")"; }
    cudaStream_t stream() const override { return stream_->get(); }
    int64_t graph_replays() const override { return graph_replays_; }
    int64_t graphs_recorded() const override { return graphs_recorded_; }

    Buffer alloc(int64_t rows, int64_t cols) override {
        drop_graphs();  // recorded steps hold the addresses of the buffers they read
        auto mem = device_bytes(size_t(std::max<int64_t>(rows * cols, 1)) * 4);
        return Buffer(Tensor{mem->data(), DType::F32, WeightFormat::F32, rows, cols}, mem);
    }

    Buffer upload_weight(const HostTensor& host, WeightFormat format) override {
        // Quantized formats have no CUDA kernels yet: refuse rather than silently run bf16.
        PHI_CHECK(format != WeightFormat::Q8 && format != WeightFormat::Q4,
                  "the CUDA backend has no {} weights (use dtype: bf16 with backend: cuda)", weight_format_name(format));
        // Every linear weight is bf16 on the device, whatever the host format.
        const size_t n = size_t(host.rows * host.cols);
        auto mem = device_bytes(n * 2);
        if (host.dtype == DType::BF16) {
            mem->upload(host.data, n * 2);
        } else {
            PHI_CHECK(host.dtype == DType::F32, "GPU weights must come as F32 or BF16, got {}", dtype_name(host.dtype));
            const float* src = static_cast<const float*>(host.data);
            std::vector<uint16_t> h(n);
            for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]);
            mem->upload(h.data(), n * 2);
        }
        return Buffer(Tensor{mem->data(), DType::BF16, WeightFormat::BF16, host.rows, host.cols}, mem);
    }

    Buffer upload_f32(const float* host, int64_t rows, int64_t cols) override {
        if (host == nullptr) return {};
        auto mem = device_bytes(size_t(rows * cols) * 4);
        mem->upload(host, size_t(rows * cols) * 4);
        return Buffer(Tensor{mem->data(), DType::F32, WeightFormat::F32, rows, cols}, mem);
    }

    bool borrows_host_memory() const override { return false; }
    // Not yet run on a GPU: the F32 A/B linears and the accumulate epilogue are unverified here.
    bool supports_lora() const override { return false; }

    void read(const Tensor& t, float* host) override {
        CUDA_CHECK(cudaMemcpyAsync(host, t.data, size_t(t.numel()) * 4, cudaMemcpyDeviceToHost, stream()));
        stream_->synchronize();
    }

    uint64_t hash(const Tensor& t) override {
        std::vector<float> h(size_t(t.numel()));
        if (!h.empty()) read(t, h.data());
        return fnv1a(h.data(), h.size() * 4);
    }

    bool begin_step(const StepBatch& batch, bool recordable) override {
        CUDA_CHECK(cudaSetDevice(opts_.device));
        const int64_t T = batch.tokens(), R = batch.rows(), S = int64_t(batch.seqs.size());
        PHI_CHECK(T <= max_t_, "step of {} tokens exceeds the GPU backend's max_tokens {}", T, max_t_);
        PHI_CHECK(S <= max_s_, "step of {} sequences exceeds the GPU backend's max_seqs {}", S, max_s_);
        batch_ = &batch;
        upload_step(batch, T, R);
        capturing_ = false;
        const bool decode = batch.decode_only();
        if (!(opts_.use_graphs && recordable && decode)) return false;
        // A batch size's first decode step runs eagerly (cuBLAS picks and loads its kernels outside
        // any capture); the second is recorded, every later one replays the recording.
        if (warmed_.insert(S).second) return false;
        auto it = graphs_.find(S);
        if (it != graphs_.end()) {
            CUDA_CHECK(cudaGraphLaunch(it->second, stream()));
            ++graph_replays_;
            return true;
        }
        CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal));
        capturing_ = true;
        capture_size_ = S;
        return false;
    }

    void end_step() override {
        if (capturing_) {
            capturing_ = false;
            cudaGraph_t g = nullptr;
            CUDA_CHECK(cudaStreamEndCapture(stream(), &g));
            cudaGraphExec_t exec = nullptr;
            const cudaError_t rc = cudaGraphInstantiate(&exec, g, 0);
            cudaGraphDestroy(g);
            CUDA_CHECK(rc);
            graphs_.emplace(capture_size_, exec);
            ++graphs_recorded_;
            CUDA_CHECK(cudaGraphLaunch(exec, stream()));
            ++graph_replays_;
        }
        batch_ = nullptr;
    }

    void linear(const Tensor& y, const Tensor& x, const Tensor& w, const LinearEpilogue& ep) override {
        PHI_CHECK(x.cols == w.cols && y.cols == w.rows && y.rows == x.rows,
                  "linear shapes: x [{}, {}], W [{}, {}], y [{}, {}]", x.rows, x.cols, w.rows, w.cols, y.rows, y.cols);
        PHI_CHECK(w.dtype == DType::BF16, "GPU linear weights are bf16");
        const bf16* x16 = to_bf16(x);
        float* out = y.f32();
        if (ep.accumulate) {
            grow(acc_, size_t(y.numel()) * 4);
            out = acc_.as<float>();
        }
        kernels::cuda::linear(*blas_, out, DType::F32, x16, static_cast<const bf16*>(w.data), f32_or_null(ep.bias),
                              x.rows, w.rows, w.cols);
        switch (ep.act) {
            case Activation::None: break;
            case Activation::GeluNew: kernels::cuda::gelu_new(out, DType::F32, out, y.numel(), stream()); break;
        }
        if (ep.accumulate) add_inplace(y.f32(), out, y.numel(), stream());
    }

    void layer_norm(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
        kernels::cuda::layer_norm(y.data, DType::F32, x.f32(), w.f32(), f32_or_null(b), x.rows, x.cols, eps,
                                  stream());
    }

    void rms_norm(const Tensor& y, const Tensor& x, const Tensor& w, float eps) override {
        kernels::cuda::rms_norm(y.data, DType::F32, x.f32(), w.f32(), x.rows, x.cols, eps, stream());
    }

    void gelu_new(const Tensor& x) override {
        kernels::cuda::gelu_new(x.data, DType::F32, x.f32(), x.numel(), stream());
    }

    void silu_mul(const Tensor& out, const Tensor& in) override {
        PHI_CHECK(in.cols == 2 * out.cols && in.rows == out.rows, "silu_mul shapes");
        kernels::cuda::silu_mul(out.data, DType::F32, in.f32(), out.rows, out.cols, stream());
    }

    void add(const Tensor& y, const Tensor& x) override { add_inplace(y.f32(), x.f32(), y.numel(), stream()); }

    void add_bias_rows(const Tensor& y, const Tensor& b) override {
        if (!b.empty()) kernels::cuda::add_bias_rows(y.f32(), b.f32(), y.rows, y.cols, stream());
    }

    void copy_columns(const Tensor& dst, const Tensor& src, int64_t col0) override {
        PHI_CHECK(dst.rows == src.rows && col0 >= 0 && col0 + dst.cols <= src.cols, "copy_columns out of range");
        CUDA_CHECK(cudaMemcpy2DAsync(dst.data, size_t(dst.cols) * 4, src.f32() + col0, size_t(src.cols) * 4,
                                     size_t(dst.cols) * 4, size_t(dst.rows), cudaMemcpyDeviceToDevice, stream()));
    }

    void gather_logit_rows(const Tensor& dst, const Tensor& src) override {
        gather_rows(dst.f32(), src.f32(), dev(5), dst.rows, src.cols, stream());
    }

    void embedding(const Tensor& out, const Tensor& table, int64_t row_offset) override {
        kernels::cuda::embedding(out.f32(), static_cast<const bf16*>(table.data), table.rows, table.cols, dev(0),
                                 out.rows, row_offset, stream());
    }

    void rope(const Tensor& x, int64_t n_heads, int64_t head_dim, const RopeSpec& spec) override {
        if (inv_freq_.empty()) {
            std::vector<float> f = spec.inv_freq_short;
            f.insert(f.end(), spec.inv_freq_long.begin(), spec.inv_freq_long.end());
            inv_freq_ = to_device(f);
            rope_scale_ = to_device(std::vector<float>{spec.scale_short, spec.scale_long});
            rotary_dim_ = spec.rotary_dim;
        }
        PHI_CHECK(spec.rotary_dim == rotary_dim_, "one CUDA backend serves one model's RoPE tables");
        kernels::cuda::rope(x.f32(), x.cols, dev(1), dev(3), inv_freq_.as<float>(), rope_scale_.as<float>(), x.rows,
                            n_heads, head_dim, spec.rotary_dim, stream());
    }

    void create_kv_cache(const KvGeometry& g) override {
        PHI_CHECK(g.num_blocks > 0 && g.block_size > 0, "KV cache needs at least one block of one slot");
        PHI_CHECK(g.head_dim <= 256, "head_dim {} exceeds the GPU attention kernel's 256", g.head_dim);
        PHI_CHECK(g.dtype == DType::BF16, "the CUDA backend stores K and V in bf16 only, not {}", dtype_name(g.dtype));
        geom_ = g;
        layout_ = CacheLayout{g.num_blocks, g.block_size, g.n_kv_heads, g.head_dim};
        const size_t bytes = size_t(g.num_blocks * g.block_size * layout_.row()) * 2;
        k_.clear();
        v_.clear();
        for (int64_t l = 0; l < g.n_layers; ++l) {
            k_.emplace_back(bytes);
            v_.emplace_back(bytes);
            CUDA_CHECK(cudaMemset(k_.back().data(), 0, bytes));
            CUDA_CHECK(cudaMemset(v_.back().data(), 0, bytes));
        }
    }
    const KvGeometry& kv_geometry() const override { return geom_; }

    void kv_write(int64_t layer, const Tensor& k, const Tensor& v) override {
        kernels::cuda::kv_write(k_[size_t(layer)].as<bf16>(), v_[size_t(layer)].as<bf16>(), layout_, dev(4), k.f32(),
                                v.f32(), k.cols, k.rows, stream());
    }

    void attention(const Tensor& out, const Tensor& q, int64_t layer, int64_t n_heads,
                   std::span<const int32_t> q_to_kv, float scale, int64_t sliding_window) override {
        if (q_to_kv_.empty()) q_to_kv_ = to_device(std::vector<int32_t>(q_to_kv.begin(), q_to_kv.end()));
        const AttentionBatch ab{dev(2), dev(1), tables(), max_b_, q.rows};
        paged_attention(out.data, DType::F32, q.f32(), q.cols, k_[size_t(layer)].as<bf16>(),
                        v_[size_t(layer)].as<bf16>(), layout_, ab, n_heads, q_to_kv_.as<int32_t>(), scale,
                        sliding_window, stream());
    }

    void moe(const Tensor& out, const Tensor& h, const MoeWeights& w) override {
        std::vector<const bf16*> up, down;
        for (const Tensor& t : w.up) up.push_back(static_cast<const bf16*>(t.data));
        for (const Tensor& t : w.down) down.push_back(static_cast<const bf16*>(t.data));
        const int64_t f = w.down.empty() ? 0 : w.down.front().cols;
        moe_mlp(*blas_, out.f32(), h.f32(), to_bf16(h), w.router.f32(), up, down, h.rows, h.cols, f, w.router.rows,
                w.jitter_eps, moe_ws_);
    }

    std::vector<ArgmaxPair> argmax_rows(const Tensor& logits, std::span<const int32_t> row_index,
                                        std::span<const int32_t> limits, int64_t vocab_begin) override {
        // Reduced on the device: R (max, id) pairs come back instead of R x vocab_local floats.
        const int64_t R = int64_t(row_index.size());
        PHI_CHECK(int64_t(limits.size()) == R, "argmax_rows: {} rows but {} limits", R, limits.size());
        std::vector<ArgmaxPair> out(static_cast<size_t>(R));
        if (R == 0) return out;
        for (int64_t i = 0; i < R; ++i)
            PHI_CHECK(row_index[size_t(i)] >= 0 && row_index[size_t(i)] < logits.rows,
                      "argmax_rows: row {} of a [{}, {}] logits buffer", row_index[size_t(i)], logits.rows,
                      logits.cols);
        // [row_index | limits] in, [values | ids] out: one upload, one download.
        std::vector<int32_t> in(size_t(2 * R));
        std::copy(row_index.begin(), row_index.end(), in.begin());
        std::copy(limits.begin(), limits.end(), in.begin() + R);
        if (argmax_io_.bytes() < size_t(4 * R) * 4) argmax_io_ = DeviceBuffer(size_t(4 * R) * 4);
        int32_t* d_in = argmax_io_.as<int32_t>();
        float* d_val = reinterpret_cast<float*>(d_in + 2 * R);
        int32_t* d_id = d_in + 3 * R;
        CUDA_CHECK(cudaMemcpyAsync(d_in, in.data(), size_t(2 * R) * 4, cudaMemcpyHostToDevice, stream()));
        argmax_pairs(d_val, d_id, logits.f32(), logits.cols, logits.cols, d_in, d_in + R, R, vocab_begin, stream());
        std::vector<float> val(static_cast<size_t>(R));
        std::vector<int32_t> id(static_cast<size_t>(R));
        CUDA_CHECK(cudaMemcpyAsync(val.data(), d_val, size_t(R) * 4, cudaMemcpyDeviceToHost, stream()));
        CUDA_CHECK(cudaMemcpyAsync(id.data(), d_id, size_t(R) * 4, cudaMemcpyDeviceToHost, stream()));
        stream_->synchronize();
        for (int64_t i = 0; i < R; ++i) out[size_t(i)] = ArgmaxPair{val[size_t(i)], id[size_t(i)]};
        return out;
    }

private:
    int32_t* dev(int i) { return meta_.as<int32_t>() + i * max_t_; }
    int32_t* tables() { return meta_.as<int32_t>() + 6 * max_t_; }

    void grow(DeviceBuffer& b, size_t bytes) {
        if (b.bytes() >= bytes) return;
        drop_graphs();  // recorded steps hold the old address
        b = DeviceBuffer(bytes);
    }

    const bf16* to_bf16(const Tensor& x) {
        grow(x16_, size_t(x.numel()) * 2);
        convert_to_bf16(x16_.as<bf16>(), x.f32(), x.numel(), stream());
        return x16_.as<bf16>();
    }

    void drop_graphs() {
        for (auto& [n, g] : graphs_) cudaGraphExecDestroy(g);
        graphs_.clear();
        warmed_.clear();
    }

    void upload_step(const StepBatch& b, int64_t T, int64_t R) {
        int32_t* ids = host_meta_;
        int32_t* pos = host_meta_ + max_t_;
        int32_t* tok_seq = host_meta_ + 2 * max_t_;
        int32_t* table = host_meta_ + 3 * max_t_;
        int32_t* slots = host_meta_ + 4 * max_t_;
        int32_t* rows = host_meta_ + 5 * max_t_;
        int32_t* tabs = host_meta_ + 6 * max_t_;
        const int64_t bs = geom_.block_size;
        PHI_CHECK(bs > 0, "the KV cache was not created");
        for (size_t i = 0; i < b.seqs.size(); ++i) {
            const StepSeq& s = b.seqs[i];
            PHI_CHECK(int64_t(s.block_table.size()) <= max_b_,
                      "block table of {} blocks exceeds the GPU backend's max_blocks_per_seq {}", s.block_table.size(),
                      max_b_);
            for (int64_t j = 0; j < s.n_tokens; ++j) {
                const int64_t t = s.first_token + j, p = s.start_pos + j;
                ids[t] = b.ids[size_t(t)];
                pos[t] = b.pos[size_t(t)];
                tok_seq[t] = int32_t(i);
                table[t] = s.long_rope ? 1 : 0;
                slots[t] = int32_t(s.block_table[size_t(p / bs)] * bs + p % bs);
            }
            std::memcpy(tabs + int64_t(i) * max_b_, s.block_table.data(), s.block_table.size() * 4);
        }
        for (int64_t r = 0; r < R; ++r) rows[r] = b.logit_rows[size_t(r)];
        // Only the used part of each region; recorded steps read the same addresses every time.
        for (int i = 0; i < 6; ++i)
            CUDA_CHECK(cudaMemcpyAsync(dev(i), host_meta_ + i * max_t_, size_t(i == 5 ? R : T) * 4,
                                       cudaMemcpyHostToDevice, stream()));
        CUDA_CHECK(cudaMemcpyAsync(tables(), tabs, size_t(int64_t(b.seqs.size()) * max_b_) * 4,
                                   cudaMemcpyHostToDevice, stream()));
    }

    CudaBackendOptions opts_;
    std::unique_ptr<Stream> stream_;
    std::unique_ptr<CublasHandle> blas_;
    int64_t max_t_ = 0, max_s_ = 0, max_b_ = 0;
    size_t meta_ints_ = 0;
    DeviceBuffer meta_;           // ids, pos, tok_seq, table, slots, rows [max_t each]; tables [max_s, max_b]
    int32_t* host_meta_ = nullptr;  // pinned staging of meta_
    const StepBatch* batch_ = nullptr;

    KvGeometry geom_;
    CacheLayout layout_;
    std::vector<DeviceBuffer> k_, v_;
    DeviceBuffer inv_freq_, rope_scale_, q_to_kv_;  // [2, rotary/2], [2], [n_heads]
    int64_t rotary_dim_ = 0;
    DeviceBuffer x16_, acc_;  // bf16 GEMM input, accumulate epilogue scratch
    DeviceBuffer argmax_io_;  // argmax_rows: [row_index | limits | values | ids]
    MoeWorkspace moe_ws_;

    std::set<int64_t> warmed_;                   // decode batch sizes run once eagerly
    std::map<int64_t, cudaGraphExec_t> graphs_;  // decode batch size -> recording
    bool capturing_ = false;
    int64_t capture_size_ = 0;
    int64_t graph_replays_ = 0, graphs_recorded_ = 0;
};

}  // namespace

std::unique_ptr<CudaBackend> make_cuda_backend(const CudaBackendOptions& opts) {
    return std::make_unique<CudaBackendImpl>(opts);
}

}  // namespace phi::kernels::cuda
