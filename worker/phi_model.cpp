// The forward. Order of operations follows HF transformers (reference section 3); the places where
// a collective sits are marked by `all_reduce` lines: one per layer for the parallel block
// (attention and MLP partial sums added locally first), two per layer otherwise, plus one for the
// vocab-parallel embedding. Every operation is the backend's; this file is the only layer loop.
#include "worker/phi_model.h"

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "worker/model_math.h"

namespace phi {

using kernels::Buffer;
using kernels::Tensor;

namespace {

kernels::HostTensor host_of(const OwnedTensor& t) {
    return kernels::HostTensor{t.bytes.data(), t.dtype, t.rows(), t.cols()};
}

}  // namespace

/// One layer's weights as the backend holds them.
struct PhiModel::Layer {
    Buffer attn_norm_w, attn_norm_b, ffn_norm_w, ffn_norm_b;  // [d]
    Buffer wqkv, bqkv;                                        // [(nq + 2 nkv) hd, d], [(nq + 2 nkv) hd]
    Buffer q_norm_w, q_norm_b, k_norm_w, k_norm_b;            // [hd]
    Buffer wo, bo;                                            // [d, nq hd], [d]
    Buffer w_up, b_up, w_down, b_down;                        // fc1/gate_up, fc2/down
    std::vector<Buffer> expert_up, expert_down;               // MoE
    Buffer router;                                            // [E, d]
    kernels::MoeWeights moe;                                  // views of the above
};

/// Activations of one step, on the backend, grown on demand.
struct PhiModel::Scratch {
    int64_t tokens = 0, rows = 0;
    Buffer x, h, qkv, q, k, v, attn, out, mlp, up, act, rows_in, logits;
    int64_t lora_tokens = 0, lora_rank = 0;
    Buffer lora;  // [lora_tokens, lora_rank]: a segment's x A^T (LoRA shrink)
};

/// One servable LoRA adapter: this rank's slice on the host (the backend may read it in place) and
/// the backend's buffers per layer and site.
struct PhiModel::Adapter {
    struct Pair {
        Buffer a, b;  // [r, in_local], [out_local, r] (scale folded into b)
    };
    LoraAdapterWeights host;
    std::vector<std::array<Pair, 4>> layers;  // [n_layers][LoraSite]
};

PhiModel::PhiModel(const ModelConfig& cfg, const ShardPlan& plan, ModelWeights weights, Communicator& comm,
                   std::unique_ptr<kernels::Backend> backend, std::unique_ptr<TensorCollectives> collectives,
                   const PhiModelOptions& opts)
    : cfg_(cfg),
      plan_(plan),
      host_(std::move(weights)),
      comm_(comm),
      be_(std::move(backend)),
      coll_(collectives ? std::move(collectives) : make_host_collectives(comm)),
      opts_(opts),
      s_(std::make_unique<Scratch>()) {
    PHI_CHECK(comm.size() == plan.world && comm.rank() == plan.rank,
              "communicator is rank {} of {} but the shard plan is for rank {} of {}", comm.rank(), comm.size(),
              plan.rank, plan.world);
    RopeTables rope = make_rope_tables(cfg);
    rope_ = kernels::RopeSpec{cfg.rotary_dim, std::move(rope.inv_freq_short), std::move(rope.inv_freq_long),
                              rope.scale_short, rope.scale_long};

    // One resident copy: a host tensor the backend does not point at (it copied or quantized it)
    // is freed right after its upload, so the peak is the host shard plus one converted tensor.
    auto upload = [&](OwnedTensor& t, kernels::WeightFormat f) {
        if (t.empty()) return Buffer();
        Buffer b = be_->upload_weight(host_of(t), f);
        if (!b.borrows_host()) t = {};
        return b;
    };
    auto weight = [&](OwnedTensor& t) { return upload(t, opts.weight_format); };
    auto table = [&](OwnedTensor& t) { return upload(t, opts.table_format.value_or(opts.weight_format)); };
    auto param = [&](const OwnedTensor& t) {
        if (t.empty()) return Buffer();
        PHI_CHECK(t.dtype == DType::F32, "norm weights, biases and the router are held in fp32, got {}",
                  dtype_name(t.dtype));
        return be_->upload_f32(t.f32(), t.rows(), t.cols());
    };
    for (LayerWeights& lw : host_.layers) {
        Layer l;
        l.attn_norm_w = param(lw.attn_norm_w);
        l.attn_norm_b = param(lw.attn_norm_b);
        l.ffn_norm_w = param(lw.ffn_norm_w);
        l.ffn_norm_b = param(lw.ffn_norm_b);
        l.wqkv = weight(lw.wqkv);
        l.bqkv = param(lw.bqkv);
        l.q_norm_w = param(lw.q_norm_w);
        l.q_norm_b = param(lw.q_norm_b);
        l.k_norm_w = param(lw.k_norm_w);
        l.k_norm_b = param(lw.k_norm_b);
        l.wo = weight(lw.wo);
        l.bo = param(lw.bo);
        l.w_up = weight(lw.w_up);
        l.b_up = param(lw.b_up);
        l.w_down = weight(lw.w_down);
        l.b_down = param(lw.b_down);
        l.router = param(lw.router);
        l.moe.router = l.router;
        l.moe.jitter_eps = cfg.router_jitter_noise;
        for (size_t e = 0; e < lw.expert_up.size(); ++e) {
            l.expert_up.push_back(weight(lw.expert_up[e]));
            l.expert_down.push_back(weight(lw.expert_down[e]));
            l.moe.up.push_back(l.expert_up.back());
            l.moe.down.push_back(l.expert_down.back());
        }
        layers_.push_back(std::move(l));
    }
    const bool tied = host_.lm_head.empty();
    embed_ = table(host_.embed);
    lm_head_ = tied ? embed_  // the embedding shard
                    : upload(host_.lm_head, opts.lm_head_format.value_or(opts.table_format.value_or(opts.weight_format)));
    lm_head_b_ = param(host_.lm_head_b);
    final_norm_w_ = param(host_.final_norm_w);
    final_norm_b_ = param(host_.final_norm_b);

    if (!be_->borrows_host_memory()) {
        // The backend copied every weight: keep one resident copy (the backend's).
        host_.embed = {};
        host_.lm_head = {};
        host_.layers.clear();
    }
    be_->create_kv_cache(kernels::KvGeometry{cfg.n_layers, opts.kv.num_blocks, opts.kv.block_size,
                                             plan.n_kv_heads_local, cfg.head_dim, opts.kv.dtype});
    if (opts.reserve_tokens > 0) reserve(opts.reserve_tokens, opts.reserve_tokens);
    dump_dir_ = opts.debug_dump_dir;
    if (!dump_dir_) {
        if (auto dir = env_string("PHI_DEBUG_DUMP")) dump_dir_ = *dir;
    }
    if (dump_dir_) std::filesystem::create_directories(*dump_dir_);
}

PhiModel::~PhiModel() = default;

void PhiModel::add_adapter(int32_t id, LoraAdapterWeights adapter) {
    PHI_CHECK(be_->supports_lora(),
              "LoRA adapter '{}': LoRA does not run on the {} backend yet (it has not been checked on that "
              "hardware); serve adapters with backend: cpu",
              adapter.name, be_->name());
    PHI_CHECK(id > 0, "LoRA adapter ids start at 1 (0 is the base model), got {}", id);
    PHI_CHECK(!adapters_.count(id), "LoRA adapter id {} is already in use", id);
    PHI_CHECK(int64_t(adapter.layers.size()) == cfg_.n_layers, "LoRA adapter '{}' has {} layers, the model {}",
              adapter.name, adapter.layers.size(), cfg_.n_layers);
    const int64_t d = cfg_.d_model, hd = cfg_.head_dim, f = plan_.d_ff_local;
    const int64_t up_w = cfg_.act == Activation::Silu ? 2 * f : f;
    // [out_local, in_local] of the base linear at each site: the slice must have been cut for this shard.
    const std::array<std::pair<int64_t, int64_t>, 4> shapes = {
        std::pair{(plan_.n_heads_local + 2 * plan_.n_kv_heads_local) * hd, d},
        std::pair{d, plan_.n_heads_local * hd}, std::pair{up_w, d}, std::pair{d, f}};
    auto a = std::make_unique<Adapter>();
    a->host = std::move(adapter);
    for (LoraLayerWeights& lw : a->host.layers) {
        std::array<Adapter::Pair, 4> bufs;
        const std::array<LoraPair*, 4> pairs = {&lw.qkv, &lw.out, &lw.up, &lw.down};
        for (size_t site = 0; site < 4; ++site) {
            LoraPair& p = *pairs[site];
            if (p.empty()) continue;
            PHI_CHECK(p.a.cols() == shapes[site].second && p.b.rows() == shapes[site].first && p.b.cols() == p.rank(),
                      "LoRA adapter '{}' was sliced for another shard: A [{}, {}], B [{}, {}], base [{}, {}]",
                      a->host.name, p.a.rows(), p.a.cols(), p.b.rows(), p.b.cols(), shapes[site].first,
                      shapes[site].second);
            bufs[site].a = be_->upload_weight(host_of(p.a), kernels::WeightFormat::F32);
            bufs[site].b = be_->upload_weight(host_of(p.b), kernels::WeightFormat::F32);
            if (!bufs[site].a.borrows_host()) p.a = {};
            if (!bufs[site].b.borrows_host()) p.b = {};
        }
        a->layers.push_back(bufs);
    }
    adapters_.emplace(id, std::move(a));
}

void PhiModel::remove_adapter(int32_t id) {
    PHI_CHECK(adapters_.erase(id) == 1, "LoRA adapter id {} is not loaded", id);
}

bool PhiModel::lora_adapts(LoraSite site, int64_t layer) const {
    for (const LoraSegment& seg : lora_segments_)
        if (!seg.adapter->layers[size_t(layer)][size_t(site)].a.empty()) return true;
    return false;
}

void PhiModel::lora(LoraSite site, int64_t layer, const Tensor& x, const Tensor& y) {
    for (const LoraSegment& seg : lora_segments_) {
        const Adapter::Pair& p = seg.adapter->layers[size_t(layer)][size_t(site)];
        if (p.a.empty()) continue;
        const Tensor& a = p.a;
        const Tensor t{Tensor(s_->lora).data, DType::F32, kernels::WeightFormat::F32, seg.n, a.rows};
        be_->linear(t, x.row_slice(seg.first, seg.n), a, {});                        // shrink: x A^T
        be_->linear(y.row_slice(seg.first, seg.n), t, p.b, {.bias = {}, .act = kernels::Activation::None, .accumulate = true});  // expand: += t (s B)^T
    }
}

void PhiModel::reserve(int64_t T, int64_t R) {
    Scratch& s = *s_;
    if (T <= s.tokens && R <= s.rows) return;
    T = std::max(T, s.tokens);
    R = std::max(R, s.rows);
    const int64_t d = cfg_.d_model, hd = cfg_.head_dim, f = plan_.d_ff_local;
    const int64_t nq = plan_.n_heads_local, nkv = plan_.n_kv_heads_local;
    const int64_t up_w = cfg_.act == Activation::Silu ? 2 * f : f;
    s.x = be_->alloc(T, d);
    s.h = be_->alloc(T, d);
    s.qkv = be_->alloc(T, (nq + 2 * nkv) * hd);
    s.q = be_->alloc(T, nq * hd);
    s.k = be_->alloc(T, nkv * hd);
    s.v = be_->alloc(T, nkv * hd);
    s.attn = be_->alloc(T, nq * hd);
    s.out = be_->alloc(T, d);
    s.mlp = be_->alloc(T, d);
    s.up = be_->alloc(T, up_w);
    s.act = be_->alloc(T, f);
    s.rows_in = be_->alloc(R, d);
    s.logits = be_->alloc(R, plan_.vocab_local);
    s.tokens = T;
    s.rows = R;
}

void PhiModel::reserve_lora() {
    int64_t tokens = 0, rank = 0;
    for (const LoraSegment& seg : lora_segments_) {
        tokens = std::max(tokens, seg.n);
        rank = std::max(rank, seg.adapter->host.max_rank);
    }
    Scratch& s = *s_;
    if (tokens <= s.lora_tokens && rank <= s.lora_rank) return;
    s.lora_tokens = std::max(tokens, s.lora_tokens);
    s.lora_rank = std::max(rank, s.lora_rank);
    s.lora = be_->alloc(s.lora_tokens, s.lora_rank);
}

void PhiModel::debug_dump(const Tensor& t, const char* name, int64_t layer) {
    if (!dump_dir_) return;
    std::vector<float> host(size_t(t.numel()));
    be_->read(t, host.data());
    const std::string layer_part = layer >= 0 ? fmt::format(".L{}", layer) : std::string();
    const auto path = *dump_dir_ / fmt::format("{}.s{}{}.r{}.f32", name, step_, layer_part, plan_.rank);
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(host.data()), std::streamsize(host.size() * 4));
}

void PhiModel::all_reduce(const Tensor& t) { coll_->all_reduce_sum(t); }

void PhiModel::norm(const Tensor& y, const Tensor& x, const Buffer& w, const Buffer& b) {
    switch (cfg_.norm) {
        case NormKind::LayerNorm: be_->layer_norm(y, x, w, b, cfg_.norm_eps); return;
        case NormKind::RmsNorm: be_->rms_norm(y, x, w, cfg_.norm_eps); return;
    }
}

void PhiModel::attention(const Layer& lw, int64_t layer, const Tensor& h, const Tensor& out) {
    Scratch& s = *s_;
    const int64_t T = h.rows, hd = cfg_.head_dim, nq = plan_.n_heads_local, nkv = plan_.n_kv_heads_local;
    const Tensor qkv = Tensor(s.qkv).reshaped(s.tokens, (nq + 2 * nkv) * hd).row_slice(0, T);
    be_->linear(qkv, h, lw.wqkv, {.bias = lw.bqkv});
    lora(LoraSite::Qkv, layer, h, qkv);
    // Split rows [q | k | v] into contiguous q, k, v.
    const Tensor q = Tensor(s.q).row_slice(0, T), k = Tensor(s.k).row_slice(0, T), v = Tensor(s.v).row_slice(0, T);
    be_->copy_columns(q, qkv, 0);
    be_->copy_columns(k, qkv, nq * hd);
    be_->copy_columns(v, qkv, (nq + nkv) * hd);
    if (!lw.q_norm_w.empty()) {
        be_->layer_norm(q.reshaped(T * nq, hd), q.reshaped(T * nq, hd), lw.q_norm_w, lw.q_norm_b, cfg_.norm_eps);
        be_->layer_norm(k.reshaped(T * nkv, hd), k.reshaped(T * nkv, hd), lw.k_norm_w, lw.k_norm_b, cfg_.norm_eps);
    }
    be_->rope(q, nq, hd, rope_);
    be_->rope(k, nkv, hd, rope_);
    be_->kv_write(layer, k, v);
    const Tensor attn = Tensor(s.attn).row_slice(0, T);
    be_->attention(attn, q, layer, nq, plan_.q_to_kv, 1.0f / std::sqrt(float(hd)), cfg_.sliding_window);
    debug_dump(attn, "attn_heads", layer);
    be_->linear(out, attn, lw.wo, {});  // row-parallel: partial sum
    lora(LoraSite::Out, layer, attn, out);  // A split by columns like wo: a partial sum too
}

void PhiModel::dense_mlp(const Layer& lw, int64_t layer, const Tensor& h, const Tensor& out) {
    Scratch& s = *s_;
    const int64_t T = h.rows;
    switch (cfg_.act) {
        case Activation::GeluNew: {
            const Tensor a = Tensor(s.up).row_slice(0, T);
            if (lora_adapts(LoraSite::Up, layer)) {
                // fc1's LoRA adds before the activation. The separate gelu_new gives the fused
                // epilogue's bits (the CPU epilogue is the same call), so base rows are unchanged.
                be_->linear(a, h, lw.w_up, {.bias = lw.b_up});
                lora(LoraSite::Up, layer, h, a);
                be_->gelu_new(a);
            } else {
                be_->linear(a, h, lw.w_up, {.bias = lw.b_up, .act = kernels::Activation::GeluNew});
            }
            be_->linear(out, a, lw.w_down, {});
            lora(LoraSite::Down, layer, a, out);
            return;
        }
        case Activation::Silu: {
            const Tensor gu = Tensor(s.up).row_slice(0, T);
            const Tensor a = Tensor(s.act).row_slice(0, T);
            be_->linear(gu, h, lw.w_up, {});
            lora(LoraSite::Up, layer, h, gu);  // B cut into local gate | up like w_up
            be_->silu_mul(a, gu);
            be_->linear(out, a, lw.w_down, {});
            lora(LoraSite::Down, layer, a, out);
            return;
        }
    }
}

void PhiModel::run_layers(int64_t T, int64_t R) {
    Scratch& s = *s_;
    const Tensor x = Tensor(s.x).row_slice(0, T), h = Tensor(s.h).row_slice(0, T);
    const Tensor out = Tensor(s.out).row_slice(0, T), mlp = Tensor(s.mlp).row_slice(0, T);
    be_->embedding(x, embed_, plan_.vocab.begin);
    if (plan_.world > 1) all_reduce(x);  // vocab-parallel embedding
    debug_dump(x, "embed", -1);

    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
        const Layer& lw = layers_[size_t(l)];
        norm(h, x, lw.attn_norm_w, lw.attn_norm_b);
        debug_dump(h, "attn_norm", l);
        attention(lw, l, h, out);
        if (cfg_.parallel_residual) {
            dense_mlp(lw, l, h, mlp);
            be_->add(out, mlp);
            all_reduce(out);  // attention + MLP partial sums, once per layer
            be_->add_bias_rows(out, lw.bo);
            be_->add_bias_rows(out, lw.b_down);
            be_->add(x, out);
        } else {
            all_reduce(out);  // attention output projection
            be_->add_bias_rows(out, lw.bo);
            be_->add(x, out);
            norm(h, x, lw.ffn_norm_w, lw.ffn_norm_b);
            debug_dump(h, "ffn_norm", l);
            if (cfg_.arch == Arch::PhiMoE) {
                be_->moe(out, h, lw.moe);
            } else {
                dense_mlp(lw, l, h, out);
            }
            all_reduce(out);  // MLP down projection
            be_->add(x, out);
        }
        debug_dump(x, "residual", l);
    }

    // Final norm and LM head only on the rows whose logits are wanted.
    const Tensor rows_in = Tensor(s.rows_in).row_slice(0, R);
    be_->gather_logit_rows(rows_in, x);
    norm(rows_in, rows_in, final_norm_w_, final_norm_b_);
    debug_dump(rows_in, "final_norm", -1);
    const Tensor logits = Tensor(s.logits).row_slice(0, R);
    be_->linear(logits, rows_in, lm_head_, {.bias = lm_head_b_});
    debug_dump(logits, "logits", -1);  // this rank's vocabulary shard, before any gather
}

int64_t PhiModel::forward(std::span<const SeqStep> seqs, std::vector<float>* logits) {
    const int64_t bs = block_size();
    kernels::StepBatch& b = batch_;
    b.seqs.clear();
    b.ids.clear();
    b.pos.clear();
    b.logit_rows.clear();
    lora_segments_.clear();
    // Tokens are laid out grouped by adapter (base first, stable), so each adapter's LoRA runs as one
    // shrink and one expand GEMM over a contiguous segment (punica's SGMV grouping). Every kernel's
    // result for a row is independent of the rows around it, so the grouping changes no bits; the
    // logits rows stay in the caller's sequence order.
    std::vector<size_t> order(seqs.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t i, size_t j) { return seqs[i].adapter < seqs[j].adapter; });
    std::vector<int64_t> first_of(seqs.size());
    for (size_t idx : order) {
        const SeqStep& s = seqs[idx];
        const int64_t n = int64_t(s.tokens.size());
        PHI_CHECK(n > 0, "a sequence in the step has no new tokens");
        PHI_CHECK(s.start_pos >= 0, "negative start position {}", s.start_pos);
        const int64_t need_blocks = (s.start_pos + n + bs - 1) / bs;
        PHI_CHECK(int64_t(s.block_table.size()) >= need_blocks,
                  "block table of {} blocks cannot hold {} tokens with block size {}", s.block_table.size(),
                  s.start_pos + n, bs);
        for (int64_t i = 0; i < need_blocks; ++i)
            PHI_CHECK(s.block_table[size_t(i)] >= 0 && s.block_table[size_t(i)] < opts_.kv.num_blocks,
                      "block_table[{}] = {} is outside the cache's {} blocks", i, s.block_table[size_t(i)],
                      opts_.kv.num_blocks);
        const int64_t first = b.tokens();
        if (s.adapter != 0) {
            const auto it = adapters_.find(s.adapter);
            PHI_CHECK(it != adapters_.end(), "sequence names LoRA adapter {}, which is not loaded on rank {}",
                      s.adapter, plan_.rank);
            if (!lora_segments_.empty() && lora_segments_.back().adapter == it->second.get()) {
                lora_segments_.back().n += n;
            } else {
                lora_segments_.push_back(LoraSegment{it->second.get(), first, n});
            }
        }
        first_of[idx] = first;
        b.seqs.push_back(kernels::StepSeq{first, n, s.start_pos, s.block_table, s.long_rope, s.adapter});
        for (int64_t i = 0; i < n; ++i) {
            const int32_t id = s.tokens[size_t(i)];
            PHI_CHECK(id >= 0 && id < cfg_.vocab_size, "token id {} is outside the vocabulary of {}", id,
                      cfg_.vocab_size);
            b.ids.push_back(id);
            b.pos.push_back(int32_t(s.start_pos + i));
        }
    }
    for (size_t idx = 0; idx < seqs.size(); ++idx) {
        const int64_t n = int64_t(seqs[idx].tokens.size());
        for (int64_t i = 0; i < n; ++i)
            if (seqs[idx].all_logits || i == n - 1) b.logit_rows.push_back(int32_t(first_of[idx] + i));
    }
    reserve_lora();
    const int64_t T = b.tokens(), R = b.rows();
    if (T == 0) return 0;
    reserve(T, R);

    const bool replayed = be_->begin_step(b, coll_->recordable() && !dump_dir_);
    if (!replayed) run_layers(T, R);
    be_->end_step();
    ++step_;
    tokens_computed_ += T;
    last_T_ = T;
    collect_logits(seqs, R, logits);
    return R;
}

uint64_t PhiModel::activation_hash() { return be_->hash(Tensor(s_->x).row_slice(0, last_T_)); }

void PhiModel::collect_logits(std::span<const SeqStep> seqs, int64_t R, std::vector<float>* logits) {
    const int64_t vl = plan_.vocab_local, vp = plan_.vocab_padded, N = plan_.world;
    const Tensor local = Tensor(s_->logits).row_slice(0, R);
    constexpr float k_neg_inf = -std::numeric_limits<float>::infinity();
    if (N == 1) {
        if (logits) {
            logits->resize(size_t(R * vp));
            be_->read(local, logits->data());
        }
    } else {
        // Rows that need only an argmax travel as (max, id) pairs; the others as whole shards.
        std::vector<int32_t> full_rows, arg_rows, arg_limit;
        int32_t r = 0;
        for (const SeqStep& s : seqs) {
            const int64_t rows = s.all_logits ? int64_t(s.tokens.size()) : 1;
            for (int64_t i = 0; i < rows; ++i, ++r) {
                if (s.argmax_limit > 0) {
                    arg_rows.push_back(r);
                    arg_limit.push_back(s.argmax_limit);
                } else {
                    full_rows.push_back(r);
                }
            }
        }
        const int64_t F = int64_t(full_rows.size()), A = int64_t(arg_rows.size());
        if (plan_.rank == 0 && logits) logits->assign(size_t(R * vp), k_neg_inf);
        if (F > 0) {
            std::vector<float> all_local(size_t(R * vl));
            be_->read(local, all_local.data());
            std::vector<float> send(size_t(F * vl));
            for (int64_t i = 0; i < F; ++i)
                std::memcpy(&send[size_t(i * vl)], &all_local[size_t(full_rows[size_t(i)] * vl)], size_t(vl) * 4);
            std::vector<float> all(plan_.rank == 0 ? size_t(N * F * vl) : 0);
            comm_.gather(send.data(), F * vl, all.data(), 0);
            if (plan_.rank == 0 && logits)
                for (int64_t rk = 0; rk < N; ++rk)
                    for (int64_t i = 0; i < F; ++i)
                        std::memcpy(logits->data() + full_rows[size_t(i)] * vp + rk * vl,
                                    &all[size_t((rk * F + i) * vl)], size_t(vl) * 4);
        }
        if (A > 0) {
            const std::vector<kernels::ArgmaxPair> pairs = be_->argmax_rows(local, arg_rows, arg_limit, plan_.vocab.begin);
            // [value, id] per row; the id travels bit-cast in a float slot.
            std::vector<float> send(size_t(2 * A));
            for (int64_t i = 0; i < A; ++i) {
                send[size_t(2 * i)] = pairs[size_t(i)].value;
                std::memcpy(&send[size_t(2 * i + 1)], &pairs[size_t(i)].id, 4);
            }
            std::vector<float> all(plan_.rank == 0 ? size_t(N * 2 * A) : 0);
            comm_.gather(send.data(), 2 * A, all.data(), 0);
            if (plan_.rank == 0 && logits) {
                for (int64_t i = 0; i < A; ++i) {
                    // Ranks hold increasing ids, so a strict > keeps the lowest id on ties (torch.argmax).
                    float best = 0.0f;
                    int32_t best_id = -1;
                    for (int64_t rk = 0; rk < N; ++rk) {
                        int32_t id;
                        std::memcpy(&id, &all[size_t(rk * 2 * A + 2 * i + 1)], 4);
                        const float v = all[size_t(rk * 2 * A + 2 * i)];
                        if (id >= 0 && (best_id < 0 || v > best)) {
                            best = v;
                            best_id = id;
                        }
                    }
                    if (best_id >= 0) (*logits)[size_t(arg_rows[size_t(i)] * vp + best_id)] = 0.0f;
                }
            }
        }
    }
    if (logits && plan_.rank == 0) {
        for (int64_t i = 0; i < R; ++i)
            for (int64_t j = cfg_.vocab_size; j < vp; ++j) (*logits)[size_t(i * vp + j)] = k_neg_inf;
    }
}

}  // namespace phi
