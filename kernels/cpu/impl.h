// Internal: the per-level implementations behind kernels.h. kernels.cpp checks shapes and
// dispatches; ref:: is portable C++ (also the only implementation of ops without a reduction),
// avx2:: and avx512:: live in files compiled with their own -m flags.
//
// Rule for the SIMD files: they must not instantiate templates or inline functions shared with
// other translation units (std::vector, fmt, PHI_CHECK, dtype.h's inline helpers...): the linker
// may keep the AVX-512 copy of a COMDAT symbol and run it on a CPU without AVX-512. They use only
// intrinsics, plain loops, OpenMP and functions of their own (internal linkage).
#pragma once

#include <cstdint>

#include "kernels/cpu/kernels.h"
#include "kernels/cpu/quant.h"

namespace phi::kernels::cpu {

/// rope precomputes cos/sin of one position on the stack: rotary_dim / 2 must not exceed this.
constexpr int64_t k_rope_max_half = 512;

/// Arguments of paged_attention after validation, plus per-thread scratch for the scores. T is the
/// cache's element: float, or uint16_t for a bf16 cache (widened to fp32 exactly on load).
template <typename T>
struct AttentionArgsT {
    float* out;        // [n, n_heads, head_dim]
    const float* q;    // [n, n_heads, head_dim]
    const T* k_cache;  // [num_blocks, block_size, n_kv_heads, head_dim]
    const T* v_cache;  // [num_blocks, block_size, n_kv_heads, head_dim]
    KvLayout layout;
    const int32_t* block_table;  // [ceil((start_pos + n) / block_size)]
    int64_t start_pos;
    int64_t n;
    int64_t n_heads;
    const int32_t* q_to_kv;  // [n_heads]
    float scale;
    int64_t sliding_window;
    // Work item of the SIMD levels: a block of consecutive queries x a run of consecutive heads (the
    // last ones may be smaller). Blocking only shares K/V loads; it never changes a result.
    int64_t queries_per_item;
    int64_t heads_per_item;
    float* scratch;          // [max_threads, queries_per_item, heads_per_item, scratch_stride]
    int64_t scratch_stride;  // >= the most keys one query sees: min(start_pos + n, window)
};
using AttentionArgs = AttentionArgsT<float>;
using AttentionArgsBf16 = AttentionArgsT<uint16_t>;

/// Int8 activations of a quantized linear (quantize_activations' buffers): q [n, cols],
/// d [n, cols / 32], sum [n, cols / 32].
struct QuantActs {
    const int8_t* q;
    const float* d;
    const int32_t* sum;
};

#define PHI_KERNELS_LEVEL_DECLS                                                                              \
    void linear(float* y, const float* x, int64_t n, const WeightView& w, const float* bias);                \
    void layer_norm(float* y, const float* x, const float* w, const float* b, int64_t n, int64_t d,          \
                    float eps);                                                                              \
    void rms_norm(float* y, const float* x, const float* w, int64_t n, int64_t d, float eps);                \
    void gelu_new(float* x, int64_t count);                                                                  \
    void silu_mul(float* out, const float* in, int64_t n, int64_t d);                                        \
    void paged_attention(const AttentionArgs& a);                                                            \
    void paged_attention(const AttentionArgsBf16& a);                                                        \
    void linear_quant_f32(float* y, const float* x, int64_t n, const QuantWeightView& w, const float* bias); \
    void linear_quant_i8(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w,                  \
                         const float* bias, bool vnni);

namespace ref {
PHI_KERNELS_LEVEL_DECLS
// Ops without a reduction: one portable implementation serves every level (bitwise equal).
void add_inplace(float* y, const float* x, int64_t count);
void rope(float* x, const int32_t* pos, int64_t n, int64_t n_heads, int64_t head_dim, int64_t rotary_dim,
          const float* inv_freq, float attn_scale);
void kv_write(float* k_cache, float* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v);
void kv_write(uint16_t* k_cache, uint16_t* v_cache, const KvLayout& layout, const int32_t* block_table,
              int64_t start_pos, int64_t n, const float* k, const float* v);
void embedding(float* out, const WeightView& emb, const int32_t* ids, int64_t n, int64_t row_offset);
}  // namespace ref

namespace avx2 {
PHI_KERNELS_LEVEL_DECLS
}  // namespace avx2

namespace avx512 {
PHI_KERNELS_LEVEL_DECLS
/// The Int8 mode on a Dot16-packed weight (pack_for_int8_dot); `a` in the same layout, its sum
/// holding the offset sums. Needs AVX512-VNNI.
void linear_quant_i8_dot16(float* y, const QuantActs& a, int64_t n, const QuantWeightView& w, const float* bias);
/// quantize_activations_dot16's buffers (sized and zeroed by the caller: padding stays 0) filled
/// with the Isa::Scalar result's bits.
void quantize_activations_dot16(const float* x, int64_t n, int64_t cols, int32_t offset, int8_t* q, float* d,
                                int32_t* offset_sum);
}  // namespace avx512

#undef PHI_KERNELS_LEVEL_DECLS

}  // namespace phi::kernels::cpu
