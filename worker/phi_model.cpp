// The forward. Order of operations follows HF transformers (reference section 3); the places where
// a collective sits are marked by `comm_.all_reduce_sum` lines: one per layer for the parallel
// block (attention and MLP partial sums added locally first), two per layer otherwise, plus one
// for the vocab-parallel embedding.
#include "worker/phi_model.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include <fmt/format.h>

#include "common/env.h"
#include "common/error.h"
#include "common/log.h"
#include "cluster/step_plan.h"
#include "worker/model_math.h"

namespace phi {

namespace kc = kernels::cpu;

namespace {

template <class T>
T* grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

}  // namespace

PhiModel::PhiModel(const ModelConfig& cfg, const ShardPlan& plan, ModelWeights weights, Communicator& comm,
                   const ModelOptions& opts)
    : cfg_(cfg),
      plan_(plan),
      w_(std::move(weights)),
      comm_(comm),
      opts_(opts),
      kv_(cfg.n_layers, kc::KvLayout{opts.kv.num_blocks, opts.kv.block_size, plan.n_kv_heads_local, cfg.head_dim}) {
    PHI_CHECK(comm.size() == plan.world && comm.rank() == plan.rank,
              "communicator is rank {} of {} but the shard plan is for rank {} of {}", comm.rank(), comm.size(),
              plan.rank, plan.world);
    RopeTables rope = make_rope_tables(cfg);
    inv_freq_short_ = std::move(rope.inv_freq_short);
    inv_freq_long_ = std::move(rope.inv_freq_long);
    rope_scale_short_ = rope.scale_short;
    rope_scale_long_ = rope.scale_long;
    if (auto dir = env_string("PHI_DEBUG_DUMP")) {
        dump_dir_ = *dir;
        std::filesystem::create_directories(*dump_dir_);
    }
}

void PhiModel::debug_dump(const float* x, int64_t count, const char* name, int64_t layer) const {
    if (!dump_dir_) return;
    const auto path = *dump_dir_ / fmt::format("{}.L{}.r{}.f32", name, layer, plan_.rank);
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(x), std::streamsize(count * 4));
}

void PhiModel::attention(int64_t layer, std::span<const SeqStep> seqs, float* h, float* out) {
    const LayerWeights& lw = w_.layers[size_t(layer)];
    const int64_t hd = cfg_.head_dim, nq = plan_.n_heads_local, nkv = plan_.n_kv_heads_local;
    const int64_t qkv_w = (nq + 2 * nkv) * hd;
    int64_t T = 0;
    for (const SeqStep& s : seqs) T += int64_t(s.tokens.size());

    float* qkv = grow(qkv_, size_t(T * qkv_w));
    kc::linear(opts_.isa, qkv, h, T, view_of(lw.wqkv), lw.bqkv.empty() ? nullptr : lw.bqkv.f32());
    // Split rows [q | k | v] into contiguous q, k, v (k and v follow q in t1_).
    float* q = grow(t1_, size_t(T * qkv_w));
    float* k = q + T * nq * hd;
    float* v = k + T * nkv * hd;
    for (int64_t t = 0; t < T; ++t) {
        const float* row = qkv + t * qkv_w;
        std::memcpy(q + t * nq * hd, row, size_t(nq * hd) * 4);
        std::memcpy(k + t * nkv * hd, row + nq * hd, size_t(nkv * hd) * 4);
        std::memcpy(v + t * nkv * hd, row + (nq + nkv) * hd, size_t(nkv * hd) * 4);
    }
    if (!lw.q_norm_w.empty()) {
        kc::layer_norm(opts_.isa, q, q, lw.q_norm_w.f32(), lw.q_norm_b.f32(), T * nq, hd, cfg_.norm_eps);
        kc::layer_norm(opts_.isa, k, k, lw.k_norm_w.f32(), lw.k_norm_b.f32(), T * nkv, hd, cfg_.norm_eps);
    }

    float* attn = grow(attn_, size_t(T * nq * hd));
    const kc::KvLayout& lay = kv_.layout();
    const float scale = 1.0f / std::sqrt(float(hd));
    int64_t t0 = 0;
    for (const SeqStep& s : seqs) {
        const int64_t n = int64_t(s.tokens.size());
        const std::vector<float>& inv_freq = s.long_rope ? inv_freq_long_ : inv_freq_short_;
        const float rs = s.long_rope ? rope_scale_long_ : rope_scale_short_;
        const int32_t* pos = pos_.data() + t0;
        kc::rope(opts_.isa, q + t0 * nq * hd, pos, n, nq, hd, cfg_.rotary_dim, inv_freq.data(), rs);
        kc::rope(opts_.isa, k + t0 * nkv * hd, pos, n, nkv, hd, cfg_.rotary_dim, inv_freq.data(), rs);
        kc::kv_write(kv_.k(layer), kv_.v(layer), lay, s.block_table.data(), s.start_pos, n, k + t0 * nkv * hd,
                     v + t0 * nkv * hd);
        kc::paged_attention(opts_.isa, attn + t0 * nq * hd, q + t0 * nq * hd, kv_.k(layer), kv_.v(layer), lay,
                            s.block_table.data(), s.start_pos, n, nq, plan_.q_to_kv.data(), scale,
                            cfg_.sliding_window);
        t0 += n;
    }
    debug_dump(attn, T * nq * hd, "attn_heads", layer);
    kc::linear(opts_.isa, out, attn, T, view_of(lw.wo), nullptr);  // row-parallel: partial sum
}

void PhiModel::dense_mlp(const LayerWeights& lw, const float* h, float* out, int64_t T) {
    const int64_t f = plan_.d_ff_local;
    switch (cfg_.act) {
        case Activation::GeluNew: {
            float* a = grow(t2_, size_t(T * f));
            kc::linear(opts_.isa, a, h, T, view_of(lw.w_up), lw.b_up.empty() ? nullptr : lw.b_up.f32());
            kc::gelu_new(opts_.isa, a, T * f);
            kc::linear(opts_.isa, out, a, T, view_of(lw.w_down), nullptr);
            return;
        }
        case Activation::Silu: {
            float* gu = grow(t2_, size_t(T * 2 * f));
            float* a = grow(t3_, size_t(T * f));
            kc::linear(opts_.isa, gu, h, T, view_of(lw.w_up), nullptr);
            kc::silu_mul(opts_.isa, a, gu, T, f);
            kc::linear(opts_.isa, out, a, T, view_of(lw.w_down), nullptr);
            return;
        }
    }
}

void PhiModel::moe_mlp(const LayerWeights& lw, const float* h, float* out, int64_t T) {
    const int64_t d = cfg_.d_model, E = cfg_.n_experts, f = plan_.d_ff_local;
    // The router is replicated and its input is bit-identical on every rank (fixed-order
    // all-reduce), so every rank picks the same experts.
    std::vector<float> scores(size_t(T * E));
    kc::linear(opts_.isa, scores.data(), h, T, view_of(lw.router), nullptr);
    std::vector<int32_t> idx(size_t(T * 2));
    std::vector<float> wt(size_t(T * 2));
    for (int64_t t = 0; t < T; ++t)
        sparsemixer_top2(scores.data() + t * E, E, cfg_.router_jitter_noise, idx.data() + 2 * t, wt.data() + 2 * t);

    std::memset(out, 0, size_t(T * d) * 4);
    std::vector<int64_t> rows;
    std::vector<float> xs, gu, a, y;
    for (int64_t e = 0; e < E; ++e) {
        rows.clear();
        for (int64_t t = 0; t < T; ++t)
            if (idx[size_t(2 * t)] == e || idx[size_t(2 * t + 1)] == e) rows.push_back(t);
        if (rows.empty()) continue;
        const int64_t n = int64_t(rows.size());
        xs.resize(size_t(n * d));
        for (int64_t i = 0; i < n; ++i) std::memcpy(&xs[size_t(i * d)], h + rows[size_t(i)] * d, size_t(d) * 4);
        gu.resize(size_t(n * 2 * f));
        a.resize(size_t(n * f));
        y.resize(size_t(n * d));
        kc::linear(opts_.isa, gu.data(), xs.data(), n, view_of(lw.expert_up[size_t(e)]), nullptr);
        kc::silu_mul(opts_.isa, a.data(), gu.data(), n, f);
        kc::linear(opts_.isa, y.data(), a.data(), n, view_of(lw.expert_down[size_t(e)]), nullptr);
        for (int64_t i = 0; i < n; ++i) {
            const int64_t t = rows[size_t(i)];
            const float w = idx[size_t(2 * t)] == e ? wt[size_t(2 * t)] : wt[size_t(2 * t + 1)];
            float* o = out + t * d;
            const float* yi = &y[size_t(i * d)];
            for (int64_t j = 0; j < d; ++j) o[j] += yi[j] * w;
        }
    }
}

void PhiModel::gather_logits(std::span<const SeqStep> seqs, const std::vector<float>& local, int64_t R,
                             std::vector<float>* logits) {
    const int64_t vl = plan_.vocab_local, vp = plan_.vocab_padded, N = plan_.world;
    // Rows that need only an argmax travel as (max, id) pairs; the others as whole shards.
    std::vector<int64_t> full_rows, arg_rows;
    std::vector<int32_t> arg_limit;
    {
        int64_t r = 0;
        for (const SeqStep& s : seqs) {
            const int64_t rows = s.all_logits ? int64_t(s.tokens.size()) : 1;
            for (int64_t i = 0; i < rows; ++i, ++r) {
                if (!s.all_logits && s.argmax_limit > 0) {
                    arg_rows.push_back(r);
                    arg_limit.push_back(s.argmax_limit);
                } else {
                    full_rows.push_back(r);
                }
            }
        }
    }
    const int64_t F = int64_t(full_rows.size()), A = int64_t(arg_rows.size());
    if (plan_.rank == 0 && logits) logits->assign(size_t(R * vp), -std::numeric_limits<float>::infinity());
    if (F > 0) {
        std::vector<float> send(size_t(F * vl));
        for (int64_t i = 0; i < F; ++i)
            std::memcpy(&send[size_t(i * vl)], &local[size_t(full_rows[size_t(i)] * vl)], size_t(vl) * 4);
        std::vector<float> all(plan_.rank == 0 ? size_t(N * F * vl) : 0);
        comm_.gather(send.data(), F * vl, all.data(), 0);
        if (plan_.rank == 0 && logits)
            for (int64_t r = 0; r < N; ++r)
                for (int64_t i = 0; i < F; ++i)
                    std::memcpy(logits->data() + full_rows[size_t(i)] * vp + r * vl, &all[size_t((r * F + i) * vl)],
                                size_t(vl) * 4);
    }
    if (A > 0) {
        // [value, id] per row; the id travels bit-cast in a float slot.
        std::vector<float> send(size_t(2 * A));
        for (int64_t i = 0; i < A; ++i) {
            const float* row = &local[size_t(arg_rows[size_t(i)] * vl)];
            const int64_t end = std::min<int64_t>(vl, std::max<int64_t>(0, arg_limit[size_t(i)] - plan_.vocab.begin));
            float best = -std::numeric_limits<float>::infinity();
            int32_t best_id = -1;
            for (int64_t j = 0; j < end; ++j)
                if (row[j] > best || best_id < 0) {
                    best = row[j];
                    best_id = int32_t(plan_.vocab.begin + j);
                }
            send[size_t(2 * i)] = best;
            std::memcpy(&send[size_t(2 * i + 1)], &best_id, 4);
        }
        std::vector<float> all(plan_.rank == 0 ? size_t(N * 2 * A) : 0);
        comm_.gather(send.data(), 2 * A, all.data(), 0);
        if (plan_.rank == 0 && logits) {
            for (int64_t i = 0; i < A; ++i) {
                // Ranks hold increasing ids, so a strict > keeps the lowest id on ties (torch.argmax).
                float best = 0.0f;
                int32_t best_id = -1;
                for (int64_t r = 0; r < N; ++r) {
                    int32_t id;
                    std::memcpy(&id, &all[size_t(r * 2 * A + 2 * i + 1)], 4);
                    const float v = all[size_t(r * 2 * A + 2 * i)];
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

int64_t PhiModel::forward(std::span<const SeqStep> seqs, std::vector<float>* logits) {
    const int64_t d = cfg_.d_model;
    int64_t T = 0, R = 0;
    for (const SeqStep& s : seqs) {
        const int64_t n = int64_t(s.tokens.size());
        PHI_CHECK(n > 0, "a sequence in the step has no new tokens");
        PHI_CHECK(s.start_pos >= 0, "negative start position {}", s.start_pos);
        const int64_t need_blocks = (s.start_pos + n + block_size() - 1) / block_size();
        PHI_CHECK(int64_t(s.block_table.size()) >= need_blocks,
                  "block table of {} blocks cannot hold {} tokens with block size {}", s.block_table.size(),
                  s.start_pos + n, block_size());
        T += n;
        R += s.all_logits ? n : 1;
    }
    if (T == 0) return 0;

    // Token ids and absolute positions of every row.
    std::vector<int32_t> ids(static_cast<size_t>(T));
    grow(pos_, size_t(T));
    {
        int64_t t = 0;
        for (const SeqStep& s : seqs) {
            for (size_t i = 0; i < s.tokens.size(); ++i, ++t) {
                PHI_CHECK(s.tokens[i] >= 0 && s.tokens[i] < cfg_.vocab_size, "token id {} is outside the vocabulary of {}",
                          s.tokens[i], cfg_.vocab_size);
                ids[size_t(t)] = s.tokens[i];
                pos_[size_t(t)] = int32_t(s.start_pos + int64_t(i));
            }
        }
    }

    float* x = grow(x_, size_t(T * d));
    float* h = grow(h_, size_t(T * d));
    std::vector<float> out(size_t(T * d)), mlp_out;
    kc::embedding(x, view_of(w_.embed), ids.data(), T, plan_.vocab.begin);
    if (plan_.world > 1) comm_.all_reduce_sum(x, T * d);  // vocab-parallel embedding
    debug_dump(x, T * d, "embed", 0);

    auto norm = [&](float* y, const float* in, const OwnedTensor& w, const OwnedTensor& b, int64_t rows) {
        switch (cfg_.norm) {
            case NormKind::LayerNorm:
                kc::layer_norm(opts_.isa, y, in, w.f32(), b.empty() ? nullptr : b.f32(), rows, d, cfg_.norm_eps);
                return;
            case NormKind::RmsNorm: kc::rms_norm(opts_.isa, y, in, w.f32(), rows, d, cfg_.norm_eps); return;
        }
    };
    auto add_bias_rows = [&](float* y, const OwnedTensor& b) {
        if (b.empty()) return;
        for (int64_t t = 0; t < T; ++t) kc::add_inplace(opts_.isa, y + t * d, b.f32(), d);
    };

    for (int64_t l = 0; l < cfg_.n_layers; ++l) {
        const LayerWeights& lw = w_.layers[size_t(l)];
        norm(h, x, lw.attn_norm_w, lw.attn_norm_b, T);
        debug_dump(h, T * d, "attn_norm", l);
        attention(l, seqs, h, out.data());
        if (cfg_.parallel_residual) {
            mlp_out.resize(size_t(T * d));
            dense_mlp(lw, h, mlp_out.data(), T);
            kc::add_inplace(opts_.isa, out.data(), mlp_out.data(), T * d);
            comm_.all_reduce_sum(out.data(), T * d);  // attention + MLP partial sums, once per layer
            add_bias_rows(out.data(), lw.bo);
            add_bias_rows(out.data(), lw.b_down);
            kc::add_inplace(opts_.isa, x, out.data(), T * d);
        } else {
            comm_.all_reduce_sum(out.data(), T * d);  // attention output projection
            add_bias_rows(out.data(), lw.bo);
            kc::add_inplace(opts_.isa, x, out.data(), T * d);
            norm(h, x, lw.ffn_norm_w, lw.ffn_norm_b, T);
            debug_dump(h, T * d, "ffn_norm", l);
            if (cfg_.arch == Arch::PhiMoE) {
                moe_mlp(lw, h, out.data(), T);
            } else {
                dense_mlp(lw, h, out.data(), T);
            }
            comm_.all_reduce_sum(out.data(), T * d);  // MLP down projection
            kc::add_inplace(opts_.isa, x, out.data(), T * d);
        }
        debug_dump(x, T * d, "residual", l);
    }
    tokens_computed_ += T;
    activation_hash_ = fnv1a(x, size_t(T * d) * sizeof(float));

    // Final norm and LM head only on the rows whose logits are wanted.
    std::vector<float> rows_in(size_t(R * d));
    {
        int64_t t = 0, r = 0;
        for (const SeqStep& s : seqs) {
            const int64_t n = int64_t(s.tokens.size());
            const int64_t first = s.all_logits ? 0 : n - 1;
            for (int64_t i = first; i < n; ++i, ++r)
                std::memcpy(&rows_in[size_t(r * d)], x + (t + i) * d, size_t(d) * 4);
            t += n;
        }
    }
    norm(rows_in.data(), rows_in.data(), w_.final_norm_w, w_.final_norm_b, R);
    const int64_t vl = plan_.vocab_local;
    std::vector<float> local(size_t(R * vl));
    kc::linear(opts_.isa, local.data(), rows_in.data(), R, w_.lm_head_view(),
               w_.lm_head_b.empty() ? nullptr : w_.lm_head_b.f32());

    const int64_t vp = plan_.vocab_padded;
    if (plan_.world == 1) {
        if (logits) *logits = std::move(local);
    } else {
        gather_logits(seqs, local, R, logits);
    }
    if (logits && plan_.rank == 0) {
        for (int64_t i = 0; i < R; ++i)
            for (int64_t j = cfg_.vocab_size; j < vp; ++j) (*logits)[size_t(i * vp + j)] = -std::numeric_limits<float>::infinity();
    }
    return R;
}

}  // namespace phi
