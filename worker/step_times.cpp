#include "worker/step_times.h"

#include <algorithm>
#include <bit>

namespace phi {

int StepTimes::group(int64_t tokens) {
    // Group g holds (2^(g-1), 2^g] tokens; steps without tokens (heartbeats) are group 0.
    const uint64_t n = uint64_t(std::max<int64_t>(tokens, 1));
    return std::min(k_groups - 1, int(std::bit_width(n - 1)));
}

void StepTimes::record(StepKind kind, int64_t tokens, double seconds) {
    const int g = group(tokens);
    // Scaled to the group's largest size, so a group's time bounds every step in it.
    const double scaled = seconds * double(int64_t(1) << g) / double(std::max<int64_t>(tokens, 1));
    auto [it, fresh] = seconds_.try_emplace(kind);
    if (fresh) it->second.fill(0.0);
    double& v = it->second[size_t(g)];
    v = std::max(scaled, v * decay_);
}

std::optional<double> StepTimes::expected(StepKind kind, int64_t tokens) const {
    auto it = seconds_.find(kind);
    if (it == seconds_.end()) return std::nullopt;
    const auto& t = it->second;
    const int g = group(tokens);
    for (int j = g; j < k_groups; ++j)
        if (t[size_t(j)] > 0) return t[size_t(j)];
    for (int j = g - 1; j >= 0; --j)
        if (t[size_t(j)] > 0) return t[size_t(j)] * double(std::max<int64_t>(tokens, 1)) / double(int64_t(1) << j);
    return std::nullopt;
}

}  // namespace phi
