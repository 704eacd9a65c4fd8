// Copying one rank's part of a checkpoint tensor out of the memory map, converting the dtype on
// the way. Only the bytes of the requested rows/columns are read, so each rank touches only the
// pages of its own shard.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "common/aligned_buffer.h"
#include "common/dtype.h"
#include "sharding/safetensors.h"
#include "sharding/shard_plan.h"

namespace phi {

/// A tensor owned in memory (weights of one rank).
struct OwnedTensor {
    DType dtype = DType::F32;
    std::vector<int64_t> shape;  // [rows] or [rows, cols]
    AlignedBuffer bytes;

    int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
    int64_t cols() const { return shape.size() < 2 ? 1 : shape[1]; }
    const float* f32() const { return bytes.as<float>(); }
    float* f32() { return bytes.as<float>(); }
    bool empty() const { return shape.empty(); }
};

/// Throws a phi::Error naming the tensor, its file and both shapes when `t` is not `expected`.
void expect_shape(const TensorInfo& t, std::initializer_list<int64_t> expected);

/// Copies the rows in `row_ranges` (concatenated in order) and, for 2-D tensors, the columns in
/// `cols` (whole width when cols.size() == 0) of `t`, converted to `dst`. For 1-D tensors only
/// the row ranges apply. Rows beyond the tensor (vocabulary padding) are zero-filled.
OwnedTensor load_slice(const TensorInfo& t, std::span<const Range> row_ranges, Range cols, DType dst);

/// The whole tensor converted to `dst`.
OwnedTensor load_full(const TensorInfo& t, DType dst);

/// Bytes a load_slice with these arguments reads from the checkpoint (for the loading test and
/// --print-plan).
size_t slice_source_bytes(const TensorInfo& t, std::span<const Range> row_ranges, Range cols);

}  // namespace phi
