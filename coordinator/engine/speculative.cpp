#include "coordinator/engine/speculative.h"

#include <algorithm>

#include "common/error.h"

namespace phi::engine {

void SpeculativeConfig::validate() const {
    PHI_CHECK(k >= 1 && k <= 16, "speculative.k must be in [1, 16], got {}", k);
    if (method != Method::Ngram) return;
    PHI_CHECK(ngram_min >= 1, "speculative.ngram_min must be >= 1, got {}", ngram_min);
    PHI_CHECK(ngram_max >= ngram_min && ngram_max <= 64,
              "speculative.ngram_max must be in [ngram_min, 64] (ngram_min is {}), got {}", ngram_min, ngram_max);
}

const char* speculative_method_name(SpeculativeConfig::Method m) {
    switch (m) {
        case SpeculativeConfig::Method::Off: return "off";
        case SpeculativeConfig::Method::Ngram: return "ngram";
        case SpeculativeConfig::Method::Draft: return "draft";
    }
    return "off";
}

std::vector<int32_t> ngram_propose(std::span<const int32_t> history, int32_t ngram_min, int32_t ngram_max,
                                   int64_t max_k) {
    std::vector<int32_t> out;
    const int64_t L = int64_t(history.size());
    if (max_k <= 0) return out;
    for (int64_t n = std::min<int64_t>(ngram_max, L - 1); n >= ngram_min; --n) {
        const int32_t* suffix = history.data() + (L - n);
        // Most recent earlier occurrence first: start positions L - n - 1 down to 0.
        for (int64_t start = L - n - 1; start >= 0; --start) {
            if (!std::equal(suffix, suffix + n, history.data() + start)) continue;
            const int64_t from = start + n;  // < L: the occurrence ends before the suffix does
            const int64_t take = std::min<int64_t>(max_k, L - from);
            out.assign(history.begin() + from, history.begin() + from + take);
            return out;
        }
    }
    return out;
}

void verify_proposals(sampling::Sampler& sampler, std::span<const float> rows, int64_t row_width, int64_t limit,
                      std::span<const int32_t> prompt, std::span<const int32_t> generated,
                      std::span<const int32_t> proposals, const sampling::SamplingParams& params,
                      sampling::RngStream rng, std::vector<sampling::SampleResult>& out) {
    PHI_CHECK(int64_t(rows.size()) == int64_t(proposals.size() + 1) * row_width,
              "verification needs {} logits rows, got {} values", proposals.size() + 1, rows.size());
    // The generated history grows by the proposals already accepted.
    std::vector<int32_t> gen(generated.begin(), generated.end());
    for (size_t j = 0; j <= proposals.size(); ++j) {
        sampling::SampleResult r;
        sampler.sample(rows.subspan(j * size_t(row_width), size_t(row_width)), limit,
                       sampling::TokenHistory{prompt, gen}, params, rng, r);
        const bool agrees = j < proposals.size() && r.id == proposals[j];
        out.push_back(std::move(r));
        if (!agrees) return;
        gen.push_back(proposals[j]);
    }
}

}  // namespace phi::engine
