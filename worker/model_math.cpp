#include "worker/model_math.h"

#include <cmath>

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

}  // namespace phi
