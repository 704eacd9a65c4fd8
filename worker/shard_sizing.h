// What one rank holds, in bytes, computed from the model's shape alone (no checkpoint): the
// start-up sizing check and the config test use it where no weights are present. It follows the
// loader (worker/model_weights.cpp) tensor by tensor; tests/worker/test_shard_loading.cpp checks
// the two agree on every fixture.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "sharding/model_config.h"
#include "sharding/shard_plan.h"
#include "worker/model_weights.h"

namespace phi {

/// Bytes of plan.rank's weights once the model is built: linear weights in `precision` (F32, BF16,
/// or int8/int4 blocks with their fp16 scales in precision.layout, padding included; the embedding
/// and a 16-bit LM head then in precision.dtype),
/// norms, biases and the MoE router in fp32. A quantized dtype whose blocks a rank's input columns
/// would cut is refused, naming the tensor and the tp size (as the loader refuses it).
int64_t shard_weight_bytes(const ModelConfig& cfg, const ShardPlan& plan, const WeightPrecision& precision);

/// Bytes one token's K and V take on plan.rank, all layers together.
int64_t kv_bytes_per_token(const ModelConfig& cfg, const ShardPlan& plan, DType kv_dtype);

}  // namespace phi
