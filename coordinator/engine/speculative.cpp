#include "coordinator/engine/speculative.h"

#include <algorithm>

#include "common/error.h"
#include "coordinator/sampling/philox.h"

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

double spec_uniform(sampling::RngStream rng, SpecDraw what, uint64_t token_index) {
    // The sampler draws with (seed, stream, index); these streams differ in the top byte, which no
    // choice index reaches.
    return sampling::philox_uniform(rng.seed, rng.stream ^ (uint64_t(what) << 56), token_index);
}

int32_t draw_inverse_cdf(std::span<const double> probs, double u) {
    double cum = 0.0;
    int32_t chosen = -1;
    for (size_t i = 0; i < probs.size(); ++i) {
        if (probs[i] <= 0.0) continue;
        chosen = int32_t(i);
        cum += probs[i];
        if (cum > u) break;
    }
    PHI_CHECK(chosen >= 0, "speculative sampling: a distribution with no mass");
    return chosen;
}

void verify_rejection(sampling::Sampler& sampler, std::span<const float> rows, int64_t row_width, int64_t limit,
                      std::span<const int32_t> prompt, std::span<const int32_t> generated,
                      std::span<const int32_t> proposals, std::span<const double> draft_probs,
                      const sampling::SamplingParams& params, sampling::RngStream rng,
                      std::vector<sampling::SampleResult>& out, AcceptRule rule) {
    const size_t n = proposals.size();
    PHI_CHECK(int64_t(rows.size()) == int64_t(n + 1) * row_width,
              "verification needs {} logits rows, got {} values", n + 1, rows.size());
    PHI_CHECK(draft_probs.size() == n * size_t(limit), "rejection sampling needs {} draft distributions of {}", n,
              limit);
    std::vector<int32_t> gen(generated.begin(), generated.end());
    std::vector<double> p;
    for (size_t j = 0; j < n; ++j) {
        const std::span<const float> row = rows.subspan(j * size_t(row_width), size_t(row_width));
        const std::span<const double> q = draft_probs.subspan(j * size_t(limit), size_t(limit));
        sampler.distribution(row, limit, sampling::TokenHistory{prompt, gen}, params, p);
        const int32_t x = proposals[j];
        const uint64_t index = gen.size();
        sampling::SampleResult r;
        if (spec_uniform(rng, SpecDraw::Accept, index) < rule(p[size_t(x)], q[size_t(x)])) {
            r.id = x;
        } else {
            // The residual max(0, p - q): where the target wants more than the draft offered.
            double total = 0.0;
            for (int64_t i = 0; i < limit; ++i) {
                p[size_t(i)] = std::max(0.0, p[size_t(i)] - q[size_t(i)]);
                total += p[size_t(i)];
            }
            r.id = total > 0.0 ? draw_inverse_cdf(p, spec_uniform(rng, SpecDraw::Residual, index) * total) : x;
        }
        sampler.raw_logprobs(row, limit, params.logprobs, r);
        const bool accepted = r.id == x;
        out.push_back(std::move(r));
        if (!accepted) return;
        gen.push_back(x);
    }
    sampling::SampleResult r;
    sampler.sample(rows.subspan(n * size_t(row_width), size_t(row_width)), limit,
                   sampling::TokenHistory{prompt, gen}, params, rng, r);
    out.push_back(std::move(r));
}

}  // namespace phi::engine
