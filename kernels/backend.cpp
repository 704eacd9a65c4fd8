#include "kernels/backend.h"

#include "common/error.h"

namespace phi::kernels {

const char* weight_format_name(WeightFormat f) {
    switch (f) {
        case WeightFormat::F32: return "f32";
        case WeightFormat::BF16: return "bf16";
    }
    return "?";
}

Tensor Tensor::reshaped(int64_t r, int64_t c) const {
    PHI_CHECK(r * c == rows * cols, "cannot view a [{}, {}] buffer as [{}, {}]", rows, cols, r, c);
    Tensor t = *this;
    t.rows = r;
    t.cols = c;
    return t;
}

Tensor Tensor::row_slice(int64_t first, int64_t n) const {
    PHI_CHECK(first >= 0 && n >= 0 && first + n <= rows, "rows [{}, {}) of a buffer of {} rows", first, first + n,
              rows);
    PHI_CHECK(dtype == DType::F32, "row slices are for fp32 buffers");
    Tensor t = *this;
    t.data = f32() + first * cols;
    t.rows = n;
    return t;
}

bool StepBatch::decode_only() const {
    if (seqs.empty()) return false;
    for (const StepSeq& s : seqs)
        if (s.n_tokens != 1) return false;
    return true;
}

}  // namespace phi::kernels
