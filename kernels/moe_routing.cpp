#include "kernels/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace phi::kernels {

void sparsemixer_top2(const float* s, int64_t E, float jitter_eps, int32_t* idx, float* weight) {
    constexpr float k_neg_inf = -std::numeric_limits<float>::infinity();
    std::vector<float> s2(s, s + E), g(static_cast<size_t>(E));
    for (int k = 0; k < 2; ++k) {
        const float* scores = k == 0 ? s : s2.data();
        int64_t i = 0;
        for (int64_t j = 1; j < E; ++j)
            if (scores[j] > scores[i]) i = j;  // first max, as torch.max
        const float m = scores[i];
        // softmax over scores masked where (m - s_j) / max(|s_j|, m) > 2 eps (numerator uses s).
        float mx = k_neg_inf;
        for (int64_t j = 0; j < E; ++j) {
            const float factor = std::max(std::fabs(s[j]), m);
            const bool masked = ((m - s[j]) / factor) > 2.0f * jitter_eps;
            g[size_t(j)] = masked ? k_neg_inf : scores[j];
            mx = std::max(mx, g[size_t(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < E; ++j) {
            g[size_t(j)] = std::exp(g[size_t(j)] - mx);
            sum += g[size_t(j)];
        }
        idx[k] = int32_t(i);
        weight[k] = g[size_t(i)] / sum;
        s2[size_t(i)] = k_neg_inf;
    }
}

}  // namespace phi::kernels
