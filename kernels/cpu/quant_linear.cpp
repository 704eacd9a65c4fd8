// Entry point of the quantized linear: argument checks, the int8 activation pass of the opt-in mode
// (portable and shared by every level, so its rounding is the same at each), then the level.
#include <omp.h>

#include "common/error.h"
#include "kernels/cpu/impl.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/quant.h"

namespace phi::kernels::cpu {

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
