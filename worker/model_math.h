// RoPE frequency tables of a model (short and LongRoPE long), computed once on the host for every
// backend (HF's formulas, fp32).
#pragma once

#include <cstdint>
#include <vector>

#include "sharding/model_config.h"

namespace phi {

/// Inverse frequencies and cos/sin scales for short and long sequences (LongRoPE), or the plain
/// RoPE table in both slots. HF: inv_freq = 1 / (ext * base ** (arange(0, dim, 2) / dim)), fp32.
struct RopeTables {
    std::vector<float> inv_freq_short;  // [rotary_dim / 2]
    std::vector<float> inv_freq_long;   // [rotary_dim / 2]
    float scale_short = 1.0f;
    float scale_long = 1.0f;
};
RopeTables make_rope_tables(const ModelConfig& cfg);

}  // namespace phi
