// The GPU forward. Mirrors worker/phi_model.cpp line for line (the same collectives at the same
// places, marked by all_reduce lines); the kernels are kernels/cuda's. Per step the host packs the
// token metadata (ids, positions, sequence of each token, RoPE table, cache slots, block tables,
// logit rows) into one pinned buffer and uploads it with one copy; everything else stays on the
// GPU until the logits come back.
#include "worker/cuda/cuda_model.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "cluster/step_plan.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/cuda/cuda_check.h"
#include "worker/model_math.h"

namespace phi {

namespace kcu = kernels::cuda;
using kcu::bf16;
using kcu::DeviceBuffer;

namespace {

/// Linear weights and embeddings: bf16 on the device whatever the host dtype.
DeviceBuffer upload_bf16(const OwnedTensor& t) {
    if (t.empty()) return {};
    const size_t n = size_t(t.rows() * t.cols());
    if (t.dtype == DType::BF16) {
        DeviceBuffer b(n * 2);
        b.upload(t.bytes.data(), n * 2);
        return b;
    }
    PHI_CHECK(t.dtype == DType::F32, "GPU weights must come as F32 or BF16, got {}", dtype_name(t.dtype));
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = f32_to_bf16(t.f32()[i]);
    return kcu::to_device(h);
}

/// Norm weights, biases, the router: fp32.
DeviceBuffer upload_f32(const OwnedTensor& t) {
    if (t.empty()) return {};
    PHI_CHECK(t.dtype == DType::F32, "expected an F32 tensor, got {}", dtype_name(t.dtype));
    const size_t n = size_t(t.rows() * t.cols());
    DeviceBuffer b(n * 4);
    b.upload(t.f32(), n * 4);
    return b;
}

const float* f32_or_null(const DeviceBuffer& b) {
    return b.empty() ? nullptr : b.as<float>();
}

}  // namespace

void StagedDeviceCommunicator::all_reduce_sum_device(float* data, int64_t count, cudaStream_t stream) {
    if (comm_.size() == 1) return;
    host_.resize(size_t(count));
    CUDA_CHECK(cudaMemcpyAsync(host_.data(), data, size_t(count) * 4, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    comm_.all_reduce_sum(host_.data(), count);
    CUDA_CHECK(cudaMemcpyAsync(data, host_.data(), size_t(count) * 4, cudaMemcpyHostToDevice, stream));
}

struct CudaModel::Layer {
    DeviceBuffer attn_norm_w, attn_norm_b, ffn_norm_w, ffn_norm_b;  // [d] fp32
    DeviceBuffer wqkv, bqkv;                                        // bf16 [(nq+2nkv) hd, d], fp32
    DeviceBuffer q_norm_w, q_norm_b, k_norm_w, k_norm_b;            // [hd] fp32
    DeviceBuffer wo, bo;                                            // bf16 [d, nq hd], fp32 [d]
    DeviceBuffer w_up, b_up, w_down, b_down;
    DeviceBuffer router;  // fp32 [E, d]
    std::vector<DeviceBuffer> expert_up, expert_down;
    std::vector<const bf16*> expert_up_ptr, expert_down_ptr;
};

/// Device scratch sized once for max_tokens (graphs capture these addresses) and the pinned
/// staging of the step metadata.
struct CudaModel::Scratch {
    int64_t max_t = 0, max_s = 0, max_b = 0;
    // Metadata, int32: ids, pos, tok_seq, table, slots, rows [max_t each]; block tables [max_s, max_b].
    DeviceBuffer meta;
    int32_t* host = nullptr;
    size_t meta_ints = 0;
    DeviceBuffer x, h32, h16, qkv, q, k, v, attn16, out, mlp_out, up, act16, rows32, rows16, logits;
    ~Scratch() {
        if (host) cudaFreeHost(host);
    }
    int32_t* dev(int i) { return meta.as<int32_t>() + i * max_t; }
    int32_t* tables() { return meta.as<int32_t>() + 6 * max_t; }
};

CudaModel::CudaModel(const ModelConfig& cfg, const ShardPlan& plan, const ModelWeights& w, Communicator& comm,
                     DeviceCommunicator* dcomm, const CudaModelOptions& opts)
    : cfg_(cfg), plan_(plan), comm_(comm), dcomm_(dcomm), opts_(opts) {
    PHI_CHECK(comm.size() == plan.world && comm.rank() == plan.rank,
              "communicator is rank {} of {} but the shard plan is for rank {} of {}", comm.rank(),
              comm.size(), plan.rank, plan.world);
    const int gpus = kcu::cuda_device_count();
    PHI_CHECK(opts.device >= 0 && opts.device < gpus, "GPU {} requested but {} visible{}", opts.device, gpus,
              gpus == 0 ? ": " + kcu::cuda_unavailable_reason() : "");
    PHI_CHECK(cfg.head_dim <= 256, "head_dim {} exceeds the GPU attention kernel's 256", cfg.head_dim);
    CUDA_CHECK(cudaSetDevice(opts.device));
    if (dcomm_ == nullptr) {
        staged_ = std::make_unique<StagedDeviceCommunicator>(comm);
        dcomm_ = staged_.get();
    }
    capturable_ = opts.use_graphs && cfg.arch != Arch::PhiMoE && (plan.world == 1 || staged_ == nullptr);
    stream_ = std::make_unique<kcu::Stream>();
    blas_ = std::make_unique<kcu::CublasHandle>(stream_->get());

    for (const LayerWeights& lw : w.layers) {
        Layer l;
        l.attn_norm_w = upload_f32(lw.attn_norm_w);
        l.attn_norm_b = upload_f32(lw.attn_norm_b);
        l.ffn_norm_w = upload_f32(lw.ffn_norm_w);
        l.ffn_norm_b = upload_f32(lw.ffn_norm_b);
        l.wqkv = upload_bf16(lw.wqkv);
        l.bqkv = upload_f32(lw.bqkv);
        l.q_norm_w = upload_f32(lw.q_norm_w);
        l.q_norm_b = upload_f32(lw.q_norm_b);
        l.k_norm_w = upload_f32(lw.k_norm_w);
        l.k_norm_b = upload_f32(lw.k_norm_b);
        l.wo = upload_bf16(lw.wo);
        l.bo = upload_f32(lw.bo);
        l.w_up = upload_bf16(lw.w_up);
        l.b_up = upload_f32(lw.b_up);
        l.w_down = upload_bf16(lw.w_down);
        l.b_down = upload_f32(lw.b_down);
        l.router = upload_f32(lw.router);
        for (size_t e = 0; e < lw.expert_up.size(); ++e) {
            l.expert_up.push_back(upload_bf16(lw.expert_up[e]));
            l.expert_down.push_back(upload_bf16(lw.expert_down[e]));
            l.expert_up_ptr.push_back(l.expert_up.back().as<bf16>());
            l.expert_down_ptr.push_back(l.expert_down.back().as<bf16>());
        }
        layers_.push_back(std::move(l));
    }
    embed_ = upload_bf16(w.embed);
    lm_head_ = upload_bf16(w.lm_head);  // empty when tied
    lm_head_b_ = upload_f32(w.lm_head_b);
    final_norm_w_ = upload_f32(w.final_norm_w);
    final_norm_b_ = upload_f32(w.final_norm_b);

    // RoPE tables: row 0 short (or the only one), row 1 long; scales likewise (PhiModel's rules).
    RopeTables rope = make_rope_tables(cfg);
    std::vector<float> short_f = std::move(rope.inv_freq_short), long_f = std::move(rope.inv_freq_long);
    const float short_s = rope.scale_short, long_s = rope.scale_long;
    short_f.insert(short_f.end(), long_f.begin(), long_f.end());
    inv_freq_ = kcu::to_device(short_f);
    rope_scale_ = kcu::to_device(std::vector<float>{short_s, long_s});
    q_to_kv_ = kcu::to_device(plan.q_to_kv);

    layout_ = kcu::CacheLayout{opts.kv_blocks, opts.block_size, plan.n_kv_heads_local, cfg.head_dim};
    const size_t cache_bytes = size_t(layout_.num_blocks * layout_.block_size * layout_.row()) * 2;
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        k_cache_.emplace_back(cache_bytes);
        v_cache_.emplace_back(cache_bytes);
        CUDA_CHECK(cudaMemset(k_cache_.back().data(), 0, cache_bytes));
        CUDA_CHECK(cudaMemset(v_cache_.back().data(), 0, cache_bytes));
    }

    s_ = std::make_unique<Scratch>();
    Scratch& s = *s_;
    const int64_t T = opts.max_tokens, d = cfg.d_model, hd = cfg.head_dim;
    const int64_t nq = plan.n_heads_local, nkv = plan.n_kv_heads_local, f = plan.d_ff_local;
    s.max_t = T;
    s.max_s = opts.max_seqs;
    s.max_b = opts.max_blocks_per_seq;
    s.meta_ints = size_t(6 * T + s.max_s * s.max_b);
    s.meta = DeviceBuffer(s.meta_ints * 4);
    CUDA_CHECK(cudaMallocHost(&s.host, s.meta_ints * 4));
    auto f32s = [](int64_t n) { return DeviceBuffer(size_t(n) * 4); };
    auto bf16s = [](int64_t n) { return DeviceBuffer(size_t(n) * 2); };
    s.x = f32s(T * d);
    s.h32 = f32s(T * d);
    s.h16 = bf16s(T * d);
    s.qkv = f32s(T * (nq + 2 * nkv) * hd);
    s.q = f32s(T * nq * hd);
    s.k = f32s(T * nkv * hd);
    s.v = f32s(T * nkv * hd);
    s.attn16 = bf16s(T * nq * hd);
    s.out = f32s(T * d);
    s.mlp_out = f32s(T * d);
    s.up = f32s(T * 2 * f);
    s.act16 = bf16s(T * f);
    s.rows32 = f32s(T * d);
    s.rows16 = bf16s(T * d);
    s.logits = f32s(T * plan.vocab_local);
    log().debug("GPU model on {}: {} layers, {} KV blocks of {} tokens, graphs {}",
                kcu::cuda_device_description(opts.device), cfg.n_layers, opts.kv_blocks, opts.block_size,
                capturable_ ? "on" : "off");
}

CudaModel::~CudaModel() {
    for (auto& [n, g] : graphs_) cudaGraphExecDestroy(g);
}

void CudaModel::all_reduce(float* data, int64_t count) {
    if (plan_.world == 1) return;
    dcomm_->all_reduce_sum_device(data, count, stream_->get());
}

void CudaModel::norm(void* y, DType y_dtype, const float* x, const DeviceBuffer& w, const DeviceBuffer& b,
                     int64_t rows) {
    switch (cfg_.norm) {
        case NormKind::LayerNorm:
            kcu::layer_norm(y, y_dtype, x, w.as<float>(), f32_or_null(b), rows, cfg_.d_model, cfg_.norm_eps,
                            *stream_);
            return;
        case NormKind::RmsNorm:
            kcu::rms_norm(y, y_dtype, x, w.as<float>(), rows, cfg_.d_model, cfg_.norm_eps, *stream_);
            return;
    }
}

void CudaModel::upload_step(std::span<const SeqStep> seqs, int64_t T, int64_t R) {
    Scratch& s = *s_;
    int32_t* ids = s.host;
    int32_t* pos = s.host + s.max_t;
    int32_t* tok_seq = s.host + 2 * s.max_t;
    int32_t* table = s.host + 3 * s.max_t;
    int32_t* slots = s.host + 4 * s.max_t;
    int32_t* rows = s.host + 5 * s.max_t;
    int32_t* tables = s.host + 6 * s.max_t;
    const int64_t bs = opts_.block_size;
    int64_t t = 0, r = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
        const SeqStep& q = seqs[i];
        const int64_t n = int64_t(q.tokens.size());
        for (int64_t j = 0; j < n; ++j, ++t) {
            const int64_t p = q.start_pos + j;
            ids[t] = q.tokens[size_t(j)];
            pos[t] = int32_t(p);
            tok_seq[t] = int32_t(i);
            table[t] = q.long_rope ? 1 : 0;
            slots[t] = int32_t(q.block_table[size_t(p / bs)] * bs + p % bs);
            if (q.all_logits || j == n - 1) rows[r++] = int32_t(t);
        }
        std::memcpy(tables + int64_t(i) * s.max_b, q.block_table.data(), q.block_table.size() * 4);
    }
    PHI_CHECK(t == T && r == R, "internal: step of {} tokens / {} rows packed as {} / {}", T, R, t, r);
    // Only the used part of each region; the graph reads the same addresses every step.
    const cudaStream_t st = stream_->get();
    for (int i = 0; i < 6; ++i)
        CUDA_CHECK(
            cudaMemcpyAsync(s.dev(i), s.host + i * s.max_t, size_t(T) * 4, cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaMemcpyAsync(s.tables(), tables, size_t(int64_t(seqs.size()) * s.max_b) * 4,
                               cudaMemcpyHostToDevice, st));
}

void CudaModel::attention(const Layer& lw, int64_t layer, int64_t T, int64_t S, float* out) {
    Scratch& s = *s_;
    const cudaStream_t st = stream_->get();
    const int64_t hd = cfg_.head_dim, nq = plan_.n_heads_local, nkv = plan_.n_kv_heads_local;
    const int64_t qkv_w = (nq + 2 * nkv) * hd;
    kcu::linear(*blas_, s.qkv.data(), DType::F32, s.h16.as<bf16>(), lw.wqkv.as<bf16>(), f32_or_null(lw.bqkv),
                T, qkv_w, cfg_.d_model);
    // Split rows [q | k | v] into contiguous q, k, v.
    const float* qkv = s.qkv.as<float>();
    CUDA_CHECK(cudaMemcpy2DAsync(s.q.data(), size_t(nq * hd) * 4, qkv, size_t(qkv_w) * 4, size_t(nq * hd) * 4,
                                 size_t(T), cudaMemcpyDeviceToDevice, st));
    CUDA_CHECK(cudaMemcpy2DAsync(s.k.data(), size_t(nkv * hd) * 4, qkv + nq * hd, size_t(qkv_w) * 4,
                                 size_t(nkv * hd) * 4, size_t(T), cudaMemcpyDeviceToDevice, st));
    CUDA_CHECK(cudaMemcpy2DAsync(s.v.data(), size_t(nkv * hd) * 4, qkv + (nq + nkv) * hd, size_t(qkv_w) * 4,
                                 size_t(nkv * hd) * 4, size_t(T), cudaMemcpyDeviceToDevice, st));
    float* q = s.q.as<float>();
    float* k = s.k.as<float>();
    if (!lw.q_norm_w.empty()) {
        kcu::layer_norm(q, DType::F32, q, lw.q_norm_w.as<float>(), f32_or_null(lw.q_norm_b), T * nq, hd,
                        cfg_.norm_eps, st);
        kcu::layer_norm(k, DType::F32, k, lw.k_norm_w.as<float>(), f32_or_null(lw.k_norm_b), T * nkv, hd,
                        cfg_.norm_eps, st);
    }
    const int32_t* pos = s.dev(1);
    const int32_t* table = s.dev(3);
    kcu::rope(q, nq * hd, pos, table, inv_freq_.as<float>(), rope_scale_.as<float>(), T, nq, hd,
              cfg_.rotary_dim, st);
    kcu::rope(k, nkv * hd, pos, table, inv_freq_.as<float>(), rope_scale_.as<float>(), T, nkv, hd,
              cfg_.rotary_dim, st);
    bf16* kc = k_cache_[size_t(layer)].as<bf16>();
    bf16* vc = v_cache_[size_t(layer)].as<bf16>();
    kcu::kv_write(kc, vc, layout_, s.dev(4), k, s.v.as<float>(), nkv * hd, T, st);
    const kcu::AttentionBatch batch{s.dev(2), pos, s.tables(), s.max_b, T};
    kcu::paged_attention(s.attn16.data(), DType::BF16, q, nq * hd, kc, vc, layout_, batch, nq,
                         q_to_kv_.as<int32_t>(), 1.0f / std::sqrt(float(hd)), cfg_.sliding_window, st);
    (void)S;
    kcu::linear(*blas_, out, DType::F32, s.attn16.as<bf16>(), lw.wo.as<bf16>(), nullptr, T, cfg_.d_model,
                nq * hd);
}

void CudaModel::dense_mlp(const Layer& lw, const bf16* h16, float* out, int64_t T) {
    Scratch& s = *s_;
    const cudaStream_t st = stream_->get();
    const int64_t d = cfg_.d_model, f = plan_.d_ff_local;
    switch (cfg_.act) {
        case Activation::GeluNew:
            kcu::linear(*blas_, s.up.data(), DType::F32, h16, lw.w_up.as<bf16>(), f32_or_null(lw.b_up), T, f,
                        d);
            kcu::gelu_new(s.act16.data(), DType::BF16, s.up.as<float>(), T * f, st);
            break;
        case Activation::Silu:
            kcu::linear(*blas_, s.up.data(), DType::F32, h16, lw.w_up.as<bf16>(), nullptr, T, 2 * f, d);
            kcu::silu_mul(s.act16.data(), DType::BF16, s.up.as<float>(), T, f, st);
            break;
    }
    kcu::linear(*blas_, out, DType::F32, s.act16.as<bf16>(), lw.w_down.as<bf16>(), nullptr, T, d, f);
}

void CudaModel::run_layers(int64_t T, int64_t R, int64_t S) {
    Scratch& s = *s_;
    const cudaStream_t st = stream_->get();
    const int64_t d = cfg_.d_model;
    float* x = s.x.as<float>();
    float* out = s.out.as<float>();
    kcu::embedding(x, embed_.as<bf16>(), plan_.vocab_local, d, s.dev(0), T, plan_.vocab.begin, st);
    if (plan_.world > 1) all_reduce(x, T * d);  // vocab-parallel embedding

    auto add_bias = [&](const DeviceBuffer& b) {
        if (!b.empty()) kcu::add_bias_rows(out, b.as<float>(), T, d, st);
    };
    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
        const Layer& lw = layers_[size_t(l)];
        norm(s.h16.data(), DType::BF16, x, lw.attn_norm_w, lw.attn_norm_b, T);
        attention(lw, l, T, S, out);
        if (cfg_.parallel_residual) {
            dense_mlp(lw, s.h16.as<bf16>(), s.mlp_out.as<float>(), T);
            kcu::add_inplace(out, s.mlp_out.as<float>(), T * d, st);
            all_reduce(out, T * d);  // attention + MLP partial sums, once per layer
            add_bias(lw.bo);
            add_bias(lw.b_down);
            kcu::add_inplace(x, out, T * d, st);
        } else {
            all_reduce(out, T * d);  // attention output projection
            add_bias(lw.bo);
            kcu::add_inplace(x, out, T * d, st);
            if (cfg_.arch == Arch::PhiMoE) {
                norm(s.h32.data(), DType::F32, x, lw.ffn_norm_w, lw.ffn_norm_b, T);  // the router reads fp32
                kcu::convert_to_bf16(s.h16.as<bf16>(), s.h32.as<float>(), T * d, st);
                kcu::moe_mlp(*blas_, out, s.h32.as<float>(), s.h16.as<bf16>(), lw.router.as<float>(),
                             lw.expert_up_ptr, lw.expert_down_ptr, T, d, plan_.d_ff_local, cfg_.n_experts,
                             cfg_.router_jitter_noise, moe_ws_);
            } else {
                norm(s.h16.data(), DType::BF16, x, lw.ffn_norm_w, lw.ffn_norm_b, T);
                dense_mlp(lw, s.h16.as<bf16>(), out, T);
            }
            all_reduce(out, T * d);  // MLP down projection
            kcu::add_inplace(x, out, T * d, st);
        }
    }
    // Final norm and LM head on the rows whose logits are wanted.
    kcu::gather_rows(s.rows32.as<float>(), x, s.dev(5), R, d, st);
    norm(s.rows16.data(), DType::BF16, s.rows32.as<float>(), final_norm_w_, final_norm_b_, R);
    const DeviceBuffer& head = lm_head_.empty() ? embed_ : lm_head_;
    kcu::linear(*blas_, s.logits.data(), DType::F32, s.rows16.as<bf16>(), head.as<bf16>(),
                f32_or_null(lm_head_b_), R, plan_.vocab_local, d);
}

int64_t CudaModel::forward(std::span<const SeqStep> seqs, std::vector<float>* logits) {
    const int64_t bs = opts_.block_size;
    int64_t T = 0, R = 0;
    bool decode = !seqs.empty();
    for (const SeqStep& q : seqs) {
        const int64_t n = int64_t(q.tokens.size());
        PHI_CHECK(n > 0, "a sequence in the step has no new tokens");
        PHI_CHECK(q.start_pos >= 0, "negative start position {}", q.start_pos);
        const int64_t need = (q.start_pos + n + bs - 1) / bs;
        PHI_CHECK(int64_t(q.block_table.size()) >= need,
                  "block table of {} blocks cannot hold {} tokens with block size {}", q.block_table.size(),
                  q.start_pos + n, bs);
        PHI_CHECK(int64_t(q.block_table.size()) <= opts_.max_blocks_per_seq,
                  "block table of {} blocks exceeds the GPU model's max_blocks_per_seq {}",
                  q.block_table.size(), opts_.max_blocks_per_seq);
        for (int64_t b = 0; b < need; ++b)
            PHI_CHECK(q.block_table[size_t(b)] >= 0 && q.block_table[size_t(b)] < opts_.kv_blocks,
                      "block_table[{}] = {} is outside the cache's {} blocks", b, q.block_table[size_t(b)],
                      opts_.kv_blocks);
        for (int32_t id : q.tokens)
            PHI_CHECK(id >= 0 && id < cfg_.vocab_size, "token id {} is outside the vocabulary of {}", id,
                      cfg_.vocab_size);
        T += n;
        R += q.all_logits ? n : 1;
        decode = decode && n == 1;
    }
    if (T == 0) return 0;
    PHI_CHECK(T <= opts_.max_tokens, "step of {} tokens exceeds the GPU model's max_tokens {}", T,
              opts_.max_tokens);
    PHI_CHECK(int64_t(seqs.size()) <= opts_.max_seqs, "step of {} sequences exceeds max_seqs {}", seqs.size(),
              opts_.max_seqs);
    CUDA_CHECK(cudaSetDevice(opts_.device));
    const int64_t S = int64_t(seqs.size());
    upload_step(seqs, T, R);
    const cudaStream_t st = stream_->get();
    // A batch size's first decode step runs eagerly: cuBLAS picks and loads its kernels for the
    // shape outside of any capture; the second captures the graph, every later one replays it.
    const bool warm = capturable_ && decode && !warmed_.insert(S).second;
    if (warm) {
        auto it = graphs_.find(S);
        if (it == graphs_.end()) {
            cudaGraph_t g = nullptr;
            CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
            try {
                run_layers(T, R, S);
            } catch (...) {
                cudaStreamEndCapture(st, &g);
                if (g) cudaGraphDestroy(g);
                throw;
            }
            CUDA_CHECK(cudaStreamEndCapture(st, &g));
            cudaGraphExec_t exec = nullptr;
            const cudaError_t rc = cudaGraphInstantiate(&exec, g, 0);
            cudaGraphDestroy(g);
            CUDA_CHECK(rc);
            it = graphs_.emplace(S, exec).first;
        }
        CUDA_CHECK(cudaGraphLaunch(it->second, st));
        ++graph_replays_;
    } else {
        run_layers(T, R, S);
    }
    last_T_ = T;

    const int64_t vl = plan_.vocab_local, vp = plan_.vocab_padded;
    std::vector<float> local(size_t(R * vl));
    CUDA_CHECK(
        cudaMemcpyAsync(local.data(), s_->logits.data(), local.size() * 4, cudaMemcpyDeviceToHost, st));
    stream_->synchronize();
    if (plan_.world == 1) {
        if (logits) *logits = std::move(local);
    } else {
        std::vector<float> all(plan_.rank == 0 ? size_t(plan_.world * R * vl) : 0);
        comm_.gather(local.data(), R * vl, all.data(), 0);
        if (plan_.rank == 0 && logits) {
            logits->resize(size_t(R * vp));
            for (int r = 0; r < plan_.world; ++r)
                for (int64_t i = 0; i < R; ++i)
                    std::memcpy(logits->data() + i * vp + r * vl, &all[size_t((r * R + i) * vl)],
                                size_t(vl) * 4);
        }
    }
    if (logits && plan_.rank == 0) {
        for (int64_t i = 0; i < R; ++i)
            for (int64_t j = cfg_.vocab_size; j < vp; ++j)
                (*logits)[size_t(i * vp + j)] = -std::numeric_limits<float>::infinity();
    }
    return R;
}

uint64_t CudaModel::activation_hash() {
    std::vector<float> x(size_t(last_T_ * cfg_.d_model));
    if (!x.empty()) s_->x.download(x.data(), x.size() * 4);
    return fnv1a(x.data(), x.size() * sizeof(float));
}

}  // namespace phi
