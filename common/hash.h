// FNV-1a over raw bytes: the cheap, deterministic hash behind the cross-rank state checks (step
// plans, activations) and the tests' logits pins. Not for anything an attacker controls.
#pragma once

#include <cstddef>
#include <cstdint>

namespace phi {

/// FNV-1a over raw bytes; `seed` chains calls.
uint64_t fnv1a(const void* data, size_t n, uint64_t seed = 1469598103934665603ull);

}  // namespace phi
