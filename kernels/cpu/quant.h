// Block-quantized weights (int8 "Q8" and int4 "Q4", blocks of 32 along each row's input dim with one
// fp16 scale) and the linear kernels that read them. The formats, rounding and reduction orders are
// specified in docs/QUANT.md; scripts/quant_reference.py is the reference the quantizer is checked
// against bitwise (tests/kernels/test_quant.cpp).
//
// Quantization is defined per row and per block of 32 columns, so it commutes with slicing: the
// blocks of any row range and any column range starting and ending on a multiple of 32 are bitwise
// the same whether the whole tensor or only that slice is quantized (quant_slice checks the bounds).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/kernels.h"

namespace phi::kernels::cpu {

/// Elements per quantization block (along a row's input dimension).
constexpr int64_t k_quant_block = 32;

enum class QuantFormat : uint8_t {
    Q8,  // int8 q in [-127, 127], w = d * q, d = fp16(amax / 127)
    Q4,  // int4 q in [-8, 7] stored as q + 8, w = d * q, d = fp16(m / -8) (m: the block's largest |w|,
         // signed)
};

std::string_view quant_format_name(QuantFormat f);

/// Bytes of quantized values per block: 32 (Q8) or 16 (Q4, two per byte).
constexpr int64_t quant_block_bytes(QuantFormat f) {
    return f == QuantFormat::Q8 ? k_quant_block : k_quant_block / 2;
}

/// Bytes of a quantized [rows, cols] weight (cols a multiple of 32): its values and fp16 scales.
constexpr int64_t quant_tensor_bytes(QuantFormat f, int64_t rows, int64_t cols) {
    return rows * (cols / k_quant_block) * (quant_block_bytes(f) + 2);
}

/// How a quantized linear treats its activations.
enum class QuantActivations : uint8_t {
    F32,   // weight-only: fp32 activations, exactly the fp32 kernel on the dequantized weights
    Int8,  // opt-in: activations quantized to int8 per block of 32 (fp32 scale), integer dot products
};

/// A quantized [rows, cols] weight (cols a multiple of 32). Row o, block b:
///   Q8: qs[o * cols + 32 b + i] (int8) for i < 32
///   Q4: qs[o * cols / 2 + 16 b + j] (uint8): low nibble = element j, high nibble = element j + 16,
///       each holding q + 8
///   scales[o * (cols / 32) + b]: fp16 bits of d.
struct QuantWeightView {
    QuantFormat format = QuantFormat::Q8;
    const uint8_t* qs = nullptr;
    const uint16_t* scales = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;
};

/// Owning storage of a quantized weight (the one resident copy).
struct QuantTensor {
    QuantFormat format = QuantFormat::Q8;
    int64_t rows = 0;
    int64_t cols = 0;
    std::vector<uint8_t> qs;
    std::vector<uint16_t> scales;

    QuantWeightView view() const { return {format, qs.data(), scales.data(), rows, cols}; }
};

/// Quantizes an F32 or BF16 [rows, cols] weight (cols a multiple of 32; every value finite and
/// small enough for an fp16 scale, |w| < 8.3e6 for Q8, < 5.2e5 for Q4: errors otherwise).
QuantTensor quantize(QuantFormat format, const WeightView& w);

/// Rows [row_lo, row_hi) and columns [col_lo, col_hi) of a quantized tensor; the column bounds must
/// be multiples of 32 (a block is never split). Bitwise equal to quantizing that slice of the source.
QuantTensor quant_slice(const QuantWeightView& w, int64_t row_lo, int64_t row_hi, int64_t col_lo,
                        int64_t col_hi);

/// out[o, k] = fp32(d) * q (exact in fp32): the values the weight-only mode multiplies by.
void dequantize(const QuantWeightView& w, float* out);

/// The int8 activations of one [n, cols] input (cols a multiple of 32), per token and block:
/// d = amax / 127 (fp32), q = clamp(round_half_away(x / d), -127, 127) (q = 0 when d == 0; d = NaN
/// and q = 0 when the block holds a non-finite value), sum = the block's sum of q.
struct QuantizedActivations {
    std::vector<int8_t> q;     // [n, cols]
    std::vector<float> d;      // [n, cols / 32]
    std::vector<int32_t> sum;  // [n, cols / 32]
};
QuantizedActivations quantize_activations(const float* x, int64_t n, int64_t cols);

/// y[t, o] = sum_i x[t, i] * W[o, i] (+ bias[o]) with W quantized; see QuantActivations for the two
/// modes and docs/QUANT.md for the exact arithmetic. Every output's reduction order is fixed (batch
/// and thread-count invariant). In the Int8 mode every level is bitwise equal to the scalar one; in
/// the F32 mode each level equals its own fp32 `linear` on dequantize(w), bitwise.
void linear_quant(Isa isa, float* y, const float* x, int64_t n, const QuantWeightView& w, const float* bias,
                  QuantActivations mode);

/// Whether the Int8 mode uses VNNI dot products at this level on this CPU (AVX-VNNI at avx2,
/// AVX512-VNNI at avx512). The results are the same either way (integer sums are exact).
bool quant_uses_vnni(Isa isa);

}  // namespace phi::kernels::cpu
