// Block-quantized weights (int8 "Q8" and int4 "Q4", blocks of 32 along each row's input dim with one
// fp16 scale) and the linear kernels that read them. The formats, rounding and reduction orders are
// specified in docs/QUANT.md; scripts/quant_reference.py is the reference the quantizer is checked
// against bitwise (tests/kernels/test_quant.cpp).
//
// Quantization is defined per row and per block of 32 columns, so it commutes with slicing: the
// blocks of any row range and any column range starting and ending on a multiple of 32 are bitwise
// the same whether the whole tensor or only that slice is quantized (quant_slice checks the bounds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
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

/// How a quantized linear treats its activations.
enum class QuantActivations : uint8_t {
    F32,   // weight-only: fp32 activations, exactly the fp32 kernel on the dequantized weights
    Int8,  // opt-in: activations quantized to int8 per block of 32 (fp32 scale), integer dot products
};

/// How a quantized weight's bytes are laid out.
enum class QuantLayout : uint8_t {
    Rows,   // the row-major blocks below: what quantize() and quant_slice() produce
    Dot16,  // pack_for_int8_dot(): the int8-activation kernel's layout at avx512 with VNNI
};

/// Blocks per row of a Dot16 tensor: the row's blocks rounded up to a multiple of 16.
constexpr int64_t quant_dot16_blocks(int64_t cols) {
    return (cols / k_quant_block + 15) / 16 * 16;
}

/// Bytes of a quantized [rows, cols] weight (cols a multiple of 32) in `layout`: its values and
/// fp16 scales, the Dot16 layout's zero blocks of padding included.
constexpr int64_t quant_tensor_bytes(QuantFormat f, int64_t rows, int64_t cols,
                                     QuantLayout layout = QuantLayout::Rows) {
    const int64_t blocks = layout == QuantLayout::Dot16 ? quant_dot16_blocks(cols) : cols / k_quant_block;
    return rows * blocks * (quant_block_bytes(f) + 2);
}

/// A quantized [rows, cols] weight (cols a multiple of 32). Row o, block b (QuantLayout::Rows):
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
    QuantLayout layout = QuantLayout::Rows;
};

/// Allocates on 64-byte boundaries: the Dot16 kernel reads whole cache lines, and a load that
/// straddles two lines (malloc's large blocks sit 16 bytes past a page) costs it a third of the
/// batch-1 bandwidth.
template <class T>
struct CacheLineAllocator {
    using value_type = T;
    CacheLineAllocator() = default;
    template <class U>
    CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
    T* allocate(size_t count) { return static_cast<T*>(::operator new(count * sizeof(T), std::align_val_t{64})); }
    void deallocate(T* p, size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
    template <class U>
    bool operator==(const CacheLineAllocator<U>&) const noexcept {
        return true;
    }
};
template <class T>
using CacheLineVector = std::vector<T, CacheLineAllocator<T>>;

/// Owning storage of a quantized weight (the one resident copy).
struct QuantTensor {
    QuantFormat format = QuantFormat::Q8;
    int64_t rows = 0;
    int64_t cols = 0;
    CacheLineVector<uint8_t> qs;
    std::vector<uint16_t> scales;
    QuantLayout layout = QuantLayout::Rows;

    QuantWeightView view() const { return {format, qs.data(), scales.data(), rows, cols, layout}; }
};

/// Quantizes an F32 or BF16 [rows, cols] weight (cols a multiple of 32; every value finite and
/// small enough for an fp16 scale, |w| < 8.3e6 for Q8, < 5.2e5 for Q4: errors otherwise).
QuantTensor quantize(QuantFormat format, const WeightView& w);

/// Rows [row_lo, row_hi) and columns [col_lo, col_hi) of a quantized tensor; the column bounds must
/// be multiples of 32 (a block is never split). Bitwise equal to quantizing that slice of the source.
QuantTensor quant_slice(const QuantWeightView& w, int64_t row_lo, int64_t row_hi, int64_t col_lo,
                        int64_t col_hi);

/// The same weight in the Dot16 layout (docs/QUANT.md, "Packed layout"): each row's blocks, padded
/// with zero blocks (q = 0, scale 0) to a multiple of 16, go in groups of 16 stored as runs of 64
/// bytes, run i holding bytes 4i .. 4i+3 of each of the group's 16 blocks in turn (Q8: 8 runs of
/// q + 128 as unsigned bytes; Q4: 4 runs of the block's packed bytes, whose high nibbles pair with
/// run i + 4 of the activations). One VPDPBUSD of a run with the same run of the activations then
/// adds to lane l a part of block 16g + l's dot product, so a group's 16 block sums need no
/// horizontal reduction. Scales: [rows, quant_dot16_blocks(cols)]. Results are bitwise those of the
/// Rows layout (integer sums are exact); only the Int8 mode at avx512 with AVX512-VNNI reads it.
QuantTensor pack_for_int8_dot(const QuantTensor& rows_layout);

/// Whether the Int8 mode at this level on this CPU reads weights in the Dot16 layout (avx512 with
/// AVX512-VNNI), so a backend should pack its weights with pack_for_int8_dot.
bool quant_packs_for_int8_dot(Isa isa);

/// The layout a CPU backend keeps its quantized weights in for this activation mode and level
/// (Dot16 where the Int8 mode reads it, Rows otherwise): what the backend packs and what the
/// start-up sizing counts.
QuantLayout quant_weight_layout(QuantActivations acts, Isa isa);

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

/// The int8 activations in the Dot16 layout of pack_for_int8_dot, what the Dot16 kernel reads: per
/// token, the row's blocks padded to quant_dot16_blocks(cols) (zero blocks), each group of 16 as 8
/// runs of 64 bytes (run i: bytes 4i .. 4i+3 of each block); d padded with 0; offset_sum = the
/// block's sum of q times the weight format's offset (128 for Q8's unsigned q + 128, 8 for Q4's
/// q + 8), subtracted from the integer dot product to undo it.
struct Dot16Activations {
    CacheLineVector<int8_t> q;            // [n, quant_dot16_blocks(cols) * 32]
    CacheLineVector<float> d;             // [n, quant_dot16_blocks(cols)]
    CacheLineVector<int32_t> offset_sum;  // [n, quant_dot16_blocks(cols)]
};
/// quantize_activations, then that layout. Isa::Scalar and Avx2 run the portable quantizer and move
/// the bytes (the reference); Avx512 computes the same bits in vectors in one pass (the batch-1
/// decode step quantizes ~18k values per layer on one thread, between parallel regions).
Dot16Activations quantize_activations_dot16(Isa isa, const float* x, int64_t n, int64_t cols,
                                            QuantFormat weight_format);

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
