#include "worker/model_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace phi {
namespace {

std::vector<float> make_inv_freq(float base, int64_t dim, const std::vector<float>* ext) {
    std::vector<float> f(static_cast<size_t>(dim / 2));
    for (int64_t i = 0; i < dim / 2; ++i) {
        const float e = float(2 * i) / float(dim);
        const float p = std::pow(base, e);
        f[size_t(i)] = 1.0f / (ext ? (*ext)[size_t(i)] * p : p);
    }
    return f;
}

}  // namespace

RopeTables make_rope_tables(const ModelConfig& cfg) {
    RopeTables t;
    if (cfg.rope_scaling == RopeScaling::LongRope) {
        t.inv_freq_short = make_inv_freq(cfg.rope_theta, cfg.rotary_dim, &cfg.rope_short_factor);
        // Pinned HF (5.24) PhiMoE keeps the short factors at every length and switches only the
        // mscale (docs/GOLDENS.md); Phi3 switches the factors.
        t.inv_freq_long = cfg.arch == Arch::PhiMoE ? t.inv_freq_short
                                                   : make_inv_freq(cfg.rope_theta, cfg.rotary_dim, &cfg.rope_long_factor);
        t.scale_short = cfg.rope_short_mscale.value_or(cfg.rope_attention_factor);
        t.scale_long = cfg.rope_long_mscale.value_or(cfg.rope_attention_factor);
    } else {
        t.inv_freq_short = make_inv_freq(cfg.rope_theta, cfg.rotary_dim, nullptr);
        t.inv_freq_long = t.inv_freq_short;
    }
    return t;
}

void sparsemixer_top2(const float* s, int64_t E, float jitter_eps, int32_t* idx, float* weight) {
    constexpr float k_neg_inf = -std::numeric_limits<float>::infinity();
    std::vector<float> s2(s, s + E), g(static_cast<size_t>(E));
    for (int k = 0; k < 2; ++k) {
        const float* scores = k == 0 ? s : s2.data();
        int64_t i = 0;
        for (int64_t j = 1; j < E; ++j)
            if (scores[j] > scores[i]) i = j;  // first max, as torch.max
        const float m = scores[i];
        // softmax over scores masked where (m - s_j) / max(|s_j|, m) > 2 eps (numerator uses s).
        float mx = k_neg_inf;
        for (int64_t j = 0; j < E; ++j) {
            const float factor = std::max(std::fabs(s[j]), m);
            const bool masked = ((m - s[j]) / factor) > 2.0f * jitter_eps;
            g[size_t(j)] = masked ? k_neg_inf : scores[j];
            mx = std::max(mx, g[size_t(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < E; ++j) {
            g[size_t(j)] = std::exp(g[size_t(j)] - mx);
            sum += g[size_t(j)];
        }
        idx[k] = int32_t(i);
        weight[k] = g[size_t(i)] / sum;
        s2[size_t(i)] = k_neg_inf;
    }
}

}  // namespace phi
