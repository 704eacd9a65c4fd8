// Scalar level of the quantized linear (docs/QUANT.md): the reference the SIMD levels are tested
// against and the fallback on CPUs without AVX2. Plain mul + add (the build uses -ffp-contract=off).
//
// F32 mode: exactly ref::linear on the dequantized weights (8 interleaved partial sums, element i
// to lane i % 8, the same fixed tree), since fp32(d) * q is exact.
// Int8 mode: each block's integer dot product is exact (int32); block b's term
// (fp32(d_w) * d_x) * float(isum) goes to partial sum b % 8, and the 8 partial sums are reduced by
// the same fixed tree. The SIMD levels keep exactly this order, so they are bitwise equal to it.
#include <omp.h>

#include "kernels/cpu/impl.h"

namespace phi::kernels::cpu::ref {
namespace {

constexpr int64_t k_lanes = 8;

float reduce_lanes(float (&s)[k_lanes]) {
    for (int j = 0; j < 4; ++j) s[j] += s[j + 4];
    s[0] += s[2];
    s[1] += s[3];
    return s[0] + s[1];
}

/// The 32 values q of block b of row o (Q8 or Q4), as ints.
void block_values(const QuantWeightView& w, int64_t o, int64_t b, int (&q)[k_quant_block]) {
    const int64_t nb = w.cols / k_quant_block;
    if (w.format == QuantFormat::Q8) {
        const int8_t* p = reinterpret_cast<const int8_t*>(w.qs) + (o * nb + b) * k_quant_block;
        for (int64_t i = 0; i < k_quant_block; ++i) q[i] = p[i];
    } else {
        const uint8_t* p = w.qs + (o * nb + b) * (k_quant_block / 2);
        for (int64_t j = 0; j < k_quant_block / 2; ++j) {
            q[j] = int(p[j] & 0x0f) - 8;
            q[j + k_quant_block / 2] = int(p[j] >> 4) - 8;
        }
    }
}

}  // namespace

void linear_quant_f32(float* y, const float* x, int64_t n, const QuantWeightView& w, const float* bias) {
    const int64_t nb = w.cols / k_quant_block;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < w.rows; ++o) {
        for (int64_t t = 0; t < n; ++t) {
            const float* xt = x + t * w.cols;
            float s[k_lanes] = {};
            for (int64_t b = 0; b < nb; ++b) {
                int q[k_quant_block];
                block_values(w, o, b, q);
                const float d = f16_to_f32(w.scales[o * nb + b]);
                for (int64_t i = 0; i < k_quant_block; ++i) {
                    s[i % k_lanes] += xt[b * k_quant_block + i] * (d * float(q[i]));
                }
            }
            float r = reduce_lanes(s);
            if (bias != nullptr) r += bias[o];
            y[t * w.rows + o] = r;
        }
    }
}

void linear_quant_i8(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias,
                     bool /*vnni*/) {
    const int64_t nb = w.cols / k_quant_block;
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < w.rows; ++o) {
        for (int64_t t = 0; t < n; ++t) {
            float s[k_lanes] = {};
            for (int64_t b = 0; b < nb; ++b) {
                int q[k_quant_block];
                block_values(w, o, b, q);
                const int8_t* xq = a.q + t * w.cols + b * k_quant_block;
                int32_t isum = 0;
                for (int64_t i = 0; i < k_quant_block; ++i) isum += q[i] * int32_t(xq[i]);
                const float scale = f16_to_f32(w.scales[o * nb + b]) * a.d[t * nb + b];
                s[b % k_lanes] += scale * float(isum);
            }
            float r = reduce_lanes(s);
            if (bias != nullptr) r += bias[o];
            y[t * w.rows + o] = r;
        }
    }
}

}  // namespace phi::kernels::cpu::ref
