// Row/column slicing with dtype conversion. Conversions go through fp32; BF16 from F32 rounds to
// nearest even like torch's .to(torch.bfloat16).
#include "sharding/tensor_slice.h"

#include <fmt/ranges.h>

#include "common/error.h"

namespace phi {
namespace {

float load_elem(const uint8_t* p, DType t) {
    switch (t) {
        case DType::F32: {
            float f;
            std::memcpy(&f, p, 4);
            return f;
        }
        case DType::F16: {
            uint16_t h;
            std::memcpy(&h, p, 2);
            return f16_to_f32(h);
        }
        case DType::BF16: {
            uint16_t h;
            std::memcpy(&h, p, 2);
            return bf16_to_f32(h);
        }
    }
    return 0.0f;
}

void store_elem(std::byte* p, DType t, float v) {
    switch (t) {
        case DType::F32: std::memcpy(p, &v, 4); return;
        case DType::F16: {
            uint16_t h = f32_to_f16(v);
            std::memcpy(p, &h, 2);
            return;
        }
        case DType::BF16: {
            uint16_t h = f32_to_bf16(v);
            std::memcpy(p, &h, 2);
            return;
        }
    }
}

// Copies `n` contiguous elements, converting only when the dtypes differ.
void copy_run(std::byte* dst, DType dt, const uint8_t* src, DType st, int64_t n) {
    if (dt == st) {
        std::memcpy(dst, src, size_t(n) * dtype_size(st));
        return;
    }
    const size_t ss = dtype_size(st), ds = dtype_size(dt);
    for (int64_t i = 0; i < n; ++i) store_elem(dst + i * ds, dt, load_elem(src + i * ss, st));
}

}  // namespace

void expect_shape(const TensorInfo& t, std::initializer_list<int64_t> expected) {
    std::vector<int64_t> want(expected);
    PHI_CHECK(t.shape == want, "tensor '{}' in {} has shape [{}], expected [{}]", t.name, t.file,
              fmt::join(t.shape, ", "), fmt::join(want, ", "));
}

OwnedTensor load_slice(const TensorInfo& t, std::span<const Range> row_ranges, Range cols, DType dst) {
    PHI_CHECK(t.shape.size() == 1 || t.shape.size() == 2, "tensor '{}' in {} has {} dimensions, expected 1 or 2",
              t.name, t.file, t.shape.size());
    const int64_t src_rows = t.shape[0];
    const int64_t src_cols = t.shape.size() == 2 ? t.shape[1] : 1;
    if (cols.size() == 0) cols = Range{0, src_cols};
    PHI_CHECK(cols.begin >= 0 && cols.end <= src_cols, "column slice [{}, {}) outside tensor '{}' of width {}",
              cols.begin, cols.end, t.name, src_cols);
    int64_t out_rows = 0;
    for (const Range& r : row_ranges) {
        PHI_CHECK(r.begin >= 0 && r.begin <= r.end, "bad row slice [{}, {}) of tensor '{}'", r.begin, r.end,
                  t.name);
        out_rows += r.size();
    }
    OwnedTensor out;
    out.dtype = dst;
    out.shape = t.shape.size() == 2 ? std::vector<int64_t>{out_rows, cols.size()} : std::vector<int64_t>{out_rows};
    out.bytes = AlignedBuffer(size_t(out_rows) * size_t(cols.size()) * dtype_size(dst));
    const size_t ss = dtype_size(t.dtype), ds = dtype_size(dst);
    int64_t o = 0;
    for (const Range& r : row_ranges) {
        for (int64_t row = r.begin; row < r.end; ++row, ++o) {
            if (row >= src_rows) continue;  // vocabulary padding stays zero
            const uint8_t* src = t.data + (size_t(row) * size_t(src_cols) + size_t(cols.begin)) * ss;
            copy_run(out.bytes.data() + size_t(o) * size_t(cols.size()) * ds, dst, src, t.dtype, cols.size());
        }
    }
    return out;
}

OwnedTensor load_full(const TensorInfo& t, DType dst) {
    Range all{0, t.shape.empty() ? 0 : t.shape[0]};
    return load_slice(t, std::span<const Range>(&all, 1), Range{}, dst);
}

size_t slice_source_bytes(const TensorInfo& t, std::span<const Range> row_ranges, Range cols) {
    const int64_t src_rows = t.shape[0];
    const int64_t src_cols = t.shape.size() == 2 ? t.shape[1] : 1;
    const int64_t width = cols.size() == 0 ? src_cols : cols.size();
    size_t n = 0;
    for (const Range& r : row_ranges) {
        const int64_t real = std::max<int64_t>(0, std::min(r.end, src_rows) - r.begin);
        n += size_t(real) * size_t(width) * dtype_size(t.dtype);
    }
    return n;
}

}  // namespace phi
