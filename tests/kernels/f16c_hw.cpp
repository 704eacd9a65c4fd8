// The F16C hardware conversions, compiled with -mf16c and called only after a CPU check: the oracle
// for the portable f16 conversions in kernels/dtype.cpp.
#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/isa.h"

namespace phi::kernels::cpu::test {

bool have_f16c() { return (cpu_features() & k_feature_f16c) != 0; }

uint16_t hw_f32_to_f16(float f) {
    return uint16_t(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}

float hw_f16_to_f32(uint16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

}  // namespace phi::kernels::cpu::test
