// Entry point of the quantized linear: argument checks, the int8 activation pass of the opt-in mode
// (portable, shared by every level; the Dot16 path's vector version at avx512 is bitwise the same),
// then the level.
#include <omp.h>

#include <vector>

#include "common/error.h"
#include "kernels/cpu/impl.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant.h"

namespace phi::kernels::cpu {
namespace {

Dot16Activations zeroed_dot16(int64_t n, int64_t cols) {
    const int64_t nbp = quant_dot16_blocks(cols);
    Dot16Activations p;
    p.q.assign(size_t(n * nbp * k_quant_block), 0);
    p.d.assign(size_t(n * nbp), 0.0f);
    p.offset_sum.assign(size_t(n * nbp), 0);
    return p;
}

int32_t dot16_offset(QuantFormat format) {
    return format == QuantFormat::Q8 ? 128 : 8;
}

Dot16Activations pack_activations_dot16(const QuantizedActivations& a, int64_t n, int64_t cols,
                                        QuantFormat format) {
    const int64_t nb = cols / k_quant_block, nbp = quant_dot16_blocks(cols);
    const int32_t offset = dot16_offset(format);
    Dot16Activations p = zeroed_dot16(n, cols);
#pragma omp parallel for schedule(static) if (n * cols >= (1 << 16))
    for (int64_t t = 0; t < n; ++t) {
        for (int64_t b = 0; b < nb; ++b) {
            const int64_t g = b / 16, l = b % 16;
            const int8_t* src = a.q.data() + t * cols + b * k_quant_block;
            int8_t* group = p.q.data() + (t * nbp + g * 16) * k_quant_block;
            for (int64_t i = 0; i < k_quant_block / 4; ++i) {
                for (int64_t c = 0; c < 4; ++c) group[i * 64 + l * 4 + c] = src[4 * i + c];
            }
            p.d[size_t(t * nbp + b)] = a.d[size_t(t * nb + b)];
            p.offset_sum[size_t(t * nbp + b)] = a.sum[size_t(t * nb + b)] * offset;
        }
    }
    return p;
}

}  // namespace

Dot16Activations quantize_activations_dot16(Isa isa, const float* x, int64_t n, int64_t cols,
                                            QuantFormat weight_format) {
    PHI_CHECK(n >= 0 && cols >= 0 && cols % k_quant_block == 0,
              "quantize_activations_dot16: {} columns are not a multiple of the block size {}", cols,
              k_quant_block);
    if (isa != Isa::Avx512)
        return pack_activations_dot16(quantize_activations(x, n, cols), n, cols, weight_format);
    Dot16Activations p = zeroed_dot16(n, cols);
    avx512::quantize_activations_dot16(x, n, cols, dot16_offset(weight_format), p.q.data(), p.d.data(),
                                       p.offset_sum.data());
    return p;
}

bool quant_uses_vnni(Isa isa) {
    switch (isa) {
        case Isa::Scalar:
            return false;
        case Isa::Avx2:
            return (cpu_features() & k_feature_avxvnni) != 0;
        case Isa::Avx512:
            return (cpu_features() & k_feature_avx512vnni) != 0;
    }
    return false;
}

void linear_quant(Isa isa, float* y, const float* x, int64_t n, const QuantWeightView& w, const float* bias,
                  QuantActivations mode) {
    PHI_CHECK(n >= 0, "linear_quant: n = {} is negative", n);
    PHI_CHECK(w.rows >= 0 && w.cols >= 0 && w.cols % k_quant_block == 0,
              "linear_quant: a [{}, {}] quantized weight needs a multiple of {} columns", w.rows, w.cols,
              k_quant_block);
    PHI_CHECK((w.qs != nullptr && w.scales != nullptr) || w.rows * w.cols == 0,
              "linear_quant: weight data is null");
    if (n == 0 || w.rows == 0) return;
    if (mode == QuantActivations::F32) {
        PHI_CHECK(w.layout == QuantLayout::Rows,
                  "linear_quant: the weight-only mode reads Rows-layout weights; this one is packed for int8 "
                  "activations");
        switch (isa) {
            case Isa::Scalar:
                ref::linear_quant_f32(y, x, n, w, bias);
                return;
            case Isa::Avx2:
                avx2::linear_quant_f32(y, x, n, w, bias);
                return;
            case Isa::Avx512:
                avx512::linear_quant_f32(y, x, n, w, bias);
                return;
        }
        return;
    }
    if (w.layout == QuantLayout::Dot16) {
        PHI_CHECK(quant_packs_for_int8_dot(isa),
                  "linear_quant: a Dot16-packed weight is read only by the int8-activation kernel at avx512 with "
                  "AVX512-VNNI, not at {}",
                  isa_name(isa));
        const Dot16Activations p = quantize_activations_dot16(isa, x, n, w.cols, w.format);
        avx512::linear_quant_i8_dot16(y, QuantActs{p.q.data(), p.d.data(), p.offset_sum.data()}, n, w, bias);
        return;
    }
    const QuantizedActivations qa = quantize_activations(x, n, w.cols);
    const QuantActs a{qa.q.data(), qa.d.data(), qa.sum.data()};
    const bool vnni = quant_uses_vnni(isa);
    switch (isa) {
        case Isa::Scalar:
            ref::linear_quant_i8(y, a, n, w, bias, vnni);
            return;
        case Isa::Avx2:
            avx2::linear_quant_i8(y, a, n, w, bias, vnni);
            return;
        case Isa::Avx512:
            avx512::linear_quant_i8(y, a, n, w, bias, vnni);
            return;
    }
}

}  // namespace phi::kernels::cpu
