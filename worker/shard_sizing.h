// What one rank holds, in bytes, computed from the model's shape alone (no checkpoint): the
// start-up sizing check and the config test use it where no weights are present. It follows the
// loader (worker/model_weights.cpp) tensor by tensor; tests/worker/test_shard_loading.cpp checks
// the two agree on every fixture.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "sharding/model_config.h"
#include "sharding/shard_plan.h"

namespace phi {

/// Bytes of plan.rank's weights: linear weights in `weight_dtype` (F32 or BF16), norms, biases
/// and the MoE router in fp32.
int64_t shard_weight_bytes(const ModelConfig& cfg, const ShardPlan& plan, DType weight_dtype);

/// Bytes one token's K and V take on plan.rank, all layers together.
int64_t kv_bytes_per_token(const ModelConfig& cfg, const ShardPlan& plan, DType kv_dtype);

}  // namespace phi
