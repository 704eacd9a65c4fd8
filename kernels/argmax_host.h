// (max, id) of logits rows held on the host: the reduction every backend's argmax_rows ends with
// when its rows are in host memory (the CPU's always; the CUDA backend's after a copy).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/backend.h"

namespace phi::kernels {

/// Row row_index[i] of `logits` ([*, vocab_local], row-major): the largest value among global ids
/// below limits[i] (the shard starts at vocab_begin), lowest id on ties; id -1 when none is below.
std::vector<ArgmaxPair> argmax_rows_host(const float* logits, int64_t vocab_local,
                                         std::span<const int32_t> row_index, std::span<const int32_t> limits,
                                         int64_t vocab_begin);

}  // namespace phi::kernels
