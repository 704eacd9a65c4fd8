#include "kernels/backend.h"

#include <algorithm>
#include <limits>

#include "common/error.h"
#include "kernels/argmax_host.h"

namespace phi::kernels {

const char* weight_format_name(WeightFormat f) {
    switch (f) {
        case WeightFormat::F32: return "f32";
        case WeightFormat::BF16: return "bf16";
        case WeightFormat::Q8: return "int8";
        case WeightFormat::Q4: return "int4";
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

std::vector<ArgmaxPair> argmax_rows_host(const float* logits, int64_t vl, std::span<const int32_t> row_index,
                                         std::span<const int32_t> limits, int64_t vocab_begin) {
    std::vector<ArgmaxPair> out(row_index.size());
    for (size_t i = 0; i < row_index.size(); ++i) {
        const float* row = logits + int64_t(row_index[i]) * vl;
        const int64_t end = std::min<int64_t>(vl, std::max<int64_t>(0, limits[i] - vocab_begin));
        ArgmaxPair best{-std::numeric_limits<float>::infinity(), -1};
        for (int64_t j = 0; j < end; ++j)
            if (row[j] > best.value || best.id < 0) best = {row[j], int32_t(vocab_begin + j)};
        out[i] = best;
    }
    return out;
}

}  // namespace phi::kernels
