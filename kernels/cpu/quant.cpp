// The Q8/Q4 weight formats and the int8 activation format (docs/QUANT.md): quantize, slice,
// dequantize. Portable code; scripts/quant_reference.py computes the same bits in numpy.
#include "kernels/cpu/quant.h"

#include <omp.h>

#include <cmath>

#include "common/error.h"
#include "common/dtype.h"

namespace phi::kernels::cpu {
namespace {

/// Round half away from zero (std::round is exact: no intermediate x + 0.5). An inline
/// truncate-and-step version measured 20 % slower for 16-token decode with int8 activations (it
/// kept the quantization loop from being vectorised), so this stays.
float round_half_away(float v) {
    return std::round(v);
}

float clampf(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

float source_at(const WeightView& w, int64_t i) {
    return w.dtype == DType::BF16 ? bf16_to_f32(static_cast<const uint16_t*>(w.data)[i])
                                  : static_cast<const float*>(w.data)[i];
}

/// Quantizes one block of 32 values into `qs` (32 or 16 bytes) and returns its fp16 scale.
uint16_t quantize_block(QuantFormat format, const float* v, uint8_t* qs, int64_t row, int64_t block) {
    // The block's scale source: amax for Q8; for Q4 the signed value of largest magnitude (the
    // first one among equal magnitudes), so that value maps to -8 and uses the longer side.
    float amax = 0.0f, m = 0.0f;
    for (int64_t i = 0; i < k_quant_block; ++i) {
        PHI_CHECK(std::isfinite(v[i]),
                  "quantize: weight row {} column {} is {}; only finite weights can be quantized", row,
                  block * k_quant_block + i, v[i]);
        const float a = std::fabs(v[i]);
        if (a > amax) {
            amax = a;
            m = v[i];
        }
    }
    const uint16_t d16 = format == QuantFormat::Q8 ? f32_to_f16(amax / 127.0f) : f32_to_f16(m / -8.0f);
    const float d = f16_to_f32(d16);
    PHI_CHECK(std::isfinite(d),
              "quantize: row {} block {} has |w| up to {}, too large for an fp16 {} scale; keep this "
              "weight in bf16/fp32",
              row, block, amax, quant_format_name(format));
    if (format == QuantFormat::Q8) {
        for (int64_t i = 0; i < k_quant_block; ++i) {
            const float q = d == 0.0f ? 0.0f : clampf(round_half_away(v[i] / d), -127.0f, 127.0f);
            qs[i] = uint8_t(int8_t(q));
        }
    } else {
        uint8_t nib[k_quant_block];
        for (int64_t i = 0; i < k_quant_block; ++i) {
            const float q = d == 0.0f ? 0.0f : clampf(round_half_away(v[i] / d), -8.0f, 7.0f);
            nib[i] = uint8_t(int(q) + 8);
        }
        for (int64_t j = 0; j < k_quant_block / 2; ++j)
            qs[j] = uint8_t(nib[j] | (nib[j + k_quant_block / 2] << 4));
    }
    return d16;
}

}  // namespace

std::string_view quant_format_name(QuantFormat f) {
    return f == QuantFormat::Q8 ? "int8" : "int4";
}

QuantTensor quantize(QuantFormat format, const WeightView& w) {
    PHI_CHECK(w.dtype == DType::F32 || w.dtype == DType::BF16,
              "quantize: source weights must be F32 or BF16, got {}", dtype_name(w.dtype));
    PHI_CHECK(w.rows >= 0 && w.cols >= 0 && w.cols % k_quant_block == 0,
              "quantize: a [{}, {}] weight cannot be quantized in blocks of {} along its {} input columns; "
              "keep it in bf16/fp32",
              w.rows, w.cols, k_quant_block, w.cols);
    PHI_CHECK(w.data != nullptr || w.rows * w.cols == 0, "quantize: weight data is null");
    QuantTensor out;
    out.format = format;
    out.rows = w.rows;
    out.cols = w.cols;
    const int64_t nb = w.cols / k_quant_block;
    const int64_t bb = quant_block_bytes(format);
    out.qs.resize(size_t(w.rows * nb * bb));
    out.scales.resize(size_t(w.rows * nb));
    // Rows are independent; errors thrown inside the parallel region are collected per row.
    std::vector<std::string> errors(size_t(w.rows));
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < w.rows; ++o) {
        try {
            float v[k_quant_block];
            for (int64_t b = 0; b < nb; ++b) {
                for (int64_t i = 0; i < k_quant_block; ++i)
                    v[i] = source_at(w, o * w.cols + b * k_quant_block + i);
                out.scales[size_t(o * nb + b)] =
                    quantize_block(format, v, &out.qs[size_t((o * nb + b) * bb)], o, b);
            }
        } catch (const Error& e) {
            errors[size_t(o)] = e.what();
        }
    }
    for (const std::string& e : errors) PHI_CHECK(e.empty(), "{}", e);
    return out;
}

QuantTensor quant_slice(const QuantWeightView& w, int64_t row_lo, int64_t row_hi, int64_t col_lo,
                        int64_t col_hi) {
    PHI_CHECK(w.layout == QuantLayout::Rows, "quant_slice: only a Rows-layout weight can be sliced");
    PHI_CHECK(0 <= row_lo && row_lo <= row_hi && row_hi <= w.rows && 0 <= col_lo && col_lo <= col_hi &&
                  col_hi <= w.cols,
              "quant_slice: rows [{}, {}) x columns [{}, {}) are outside the [{}, {}] weight", row_lo, row_hi,
              col_lo, col_hi, w.rows, w.cols);
    PHI_CHECK(col_lo % k_quant_block == 0 && col_hi % k_quant_block == 0,
              "quant_slice: columns [{}, {}) split a block of {}; a split of a quantized weight's input "
              "dimension must fall on a multiple of {}",
              col_lo, col_hi, k_quant_block, k_quant_block);
    QuantTensor out;
    out.format = w.format;
    out.rows = row_hi - row_lo;
    out.cols = col_hi - col_lo;
    const int64_t nb = w.cols / k_quant_block, b_lo = col_lo / k_quant_block, snb = out.cols / k_quant_block;
    const int64_t bb = quant_block_bytes(w.format);
    out.qs.reserve(size_t(out.rows * snb * bb));
    out.scales.reserve(size_t(out.rows * snb));
    for (int64_t o = row_lo; o < row_hi; ++o) {
        const uint8_t* q = w.qs + (o * nb + b_lo) * bb;
        out.qs.insert(out.qs.end(), q, q + snb * bb);
        const uint16_t* s = w.scales + o * nb + b_lo;
        out.scales.insert(out.scales.end(), s, s + snb);
    }
    return out;
}

void dequantize(const QuantWeightView& w, float* out) {
    PHI_CHECK(w.layout == QuantLayout::Rows, "dequantize: only a Rows-layout weight can be read back");
    const int64_t nb = w.cols / k_quant_block;
    for (int64_t o = 0; o < w.rows; ++o) {
        for (int64_t b = 0; b < nb; ++b) {
            const float d = f16_to_f32(w.scales[o * nb + b]);
            float* dst = out + o * w.cols + b * k_quant_block;
            if (w.format == QuantFormat::Q8) {
                const int8_t* q = reinterpret_cast<const int8_t*>(w.qs) + (o * nb + b) * k_quant_block;
                for (int64_t i = 0; i < k_quant_block; ++i) dst[i] = d * float(q[i]);
            } else {
                const uint8_t* q = w.qs + (o * nb + b) * (k_quant_block / 2);
                for (int64_t j = 0; j < k_quant_block / 2; ++j) {
                    dst[j] = d * float(int(q[j] & 0x0f) - 8);
                    dst[j + k_quant_block / 2] = d * float(int(q[j] >> 4) - 8);
                }
            }
        }
    }
}

QuantTensor pack_for_int8_dot(const QuantTensor& t) {
    PHI_CHECK(t.layout == QuantLayout::Rows, "pack_for_int8_dot: the weight is packed already");
    const int64_t nb = t.cols / k_quant_block, nbp = quant_dot16_blocks(t.cols), bb = quant_block_bytes(t.format);
    const bool q8 = t.format == QuantFormat::Q8;
    const uint8_t pad = q8 ? 128 : 0x88;  // q = 0 in both formats
    QuantTensor out;
    out.format = t.format;
    out.rows = t.rows;
    out.cols = t.cols;
    out.layout = QuantLayout::Dot16;
    out.qs.assign(size_t(t.rows * nbp * bb), pad);
    out.scales.assign(size_t(t.rows * nbp), 0);
    for (int64_t o = 0; o < t.rows; ++o) {
        for (int64_t b = 0; b < nb; ++b) {
            const int64_t g = b / 16, l = b % 16;
            const uint8_t* src = t.qs.data() + (o * nb + b) * bb;
            uint8_t* group = out.qs.data() + (o * nbp + g * 16) * bb;
            for (int64_t i = 0; i < bb / 4; ++i) {
                for (int64_t c = 0; c < 4; ++c) {
                    const uint8_t v = src[4 * i + c];
                    group[i * 64 + l * 4 + c] = q8 ? uint8_t(int(int8_t(v)) + 128) : v;
                }
            }
            out.scales[size_t(o * nbp + b)] = t.scales[size_t(o * nb + b)];
        }
    }
    return out;
}

bool quant_packs_for_int8_dot(Isa isa) {
    return isa == Isa::Avx512 && (cpu_features() & k_feature_avx512vnni) != 0;
}

QuantLayout quant_weight_layout(QuantActivations acts, Isa isa) {
    return acts == QuantActivations::Int8 && quant_packs_for_int8_dot(isa) ? QuantLayout::Dot16 : QuantLayout::Rows;
}

QuantizedActivations quantize_activations(const float* x, int64_t n, int64_t cols) {
    PHI_CHECK(n >= 0 && cols >= 0 && cols % k_quant_block == 0,
              "quantize_activations: {} columns are not a multiple of the block size {}", cols,
              k_quant_block);
    const int64_t nb = cols / k_quant_block;
    QuantizedActivations a;
    a.q.resize(size_t(n * cols));
    a.d.resize(size_t(n * nb));
    a.sum.resize(size_t(n * nb));
#pragma omp parallel for schedule(static) if (n * cols >= (1 << 16))
    for (int64_t t = 0; t < n; ++t) {
        for (int64_t b = 0; b < nb; ++b) {
            const float* v = x + t * cols + b * k_quant_block;
            int8_t* q = a.q.data() + t * cols + b * k_quant_block;
            float amax = 0.0f;
            bool finite = true;
            for (int64_t i = 0; i < k_quant_block; ++i) {
                finite = finite && std::isfinite(v[i]);
                amax = std::fmax(amax, std::fabs(v[i]));
            }
            // A non-finite input makes the block's scale NaN, so the outputs it feeds are NaN (as
            // they would be in fp32) rather than silently finite.
            const float d = finite ? amax / 127.0f : NAN;
            int32_t s = 0;
            for (int64_t i = 0; i < k_quant_block; ++i) {
                const float r =
                    (!finite || d == 0.0f) ? 0.0f : clampf(round_half_away(v[i] / d), -127.0f, 127.0f);
                q[i] = int8_t(r);
                s += q[i];
            }
            a.d[size_t(t * nb + b)] = d;
            a.sum[size_t(t * nb + b)] = s;
        }
    }
    return a;
}

}  // namespace phi::kernels::cpu
