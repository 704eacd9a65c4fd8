// The sampler: logit processing in HF's order, the Philox draw and raw logprobs (see sampler.h for the
// order of operations and why).
#include "coordinator/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "common/error.h"
#include "coordinator/sampling/philox.h"

namespace phi::sampling {

namespace {

constexpr float k_neg_inf = -std::numeric_limits<float>::infinity();
// Top-p bins: 1/16 nat wide, the last one holding everything more than 32 nats below the max.
constexpr size_t k_top_p_bins = 512;
constexpr float k_top_p_bins_per_nat = 16.0f;

// The largest finite logit below `limit`; checks that none is NaN or +inf and that one is finite.
float checked_max(std::span<const float> x, int64_t limit) {
    float m = k_neg_inf;
    bool any_finite = false;
    for (int64_t i = 0; i < limit; ++i) {
        const float v = x[i];
        PHI_CHECK(!std::isnan(v) && v != std::numeric_limits<float>::infinity(),
                  "logit of id {} is {}: the model produced invalid values", i, v);
        if (v != k_neg_inf) {
            any_finite = true;
            m = std::max(m, v);
        }
    }
    PHI_CHECK(any_finite, "every logit below the tokenizer size {} is -inf: nothing can be sampled", limit);
    return m;
}

// Largest finite value of x (x holds one at least).
float finite_max(std::span<const float> x) {
    float m = k_neg_inf;
    for (float v : x) m = std::max(m, v);
    return m;
}

// Exp in float (the sum and the walk run in double): the draw needs ~1e-7 relative precision, not more.
float weight(float logit, float max_logit) {
    return std::exp(logit - max_logit);
}

}  // namespace

uint64_t random_seed() {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

void Sampler::apply_penalties(std::span<float> x, int64_t limit, TokenHistory history,
                              const SamplingParams& params) {
    const auto n = static_cast<int64_t>(x.size());
    if (static_cast<int64_t>(seen_.size()) < n) {
        seen_.resize(n, 0);
        counts_.resize(n, 0);
    }
    const bool repetition = params.repetition_penalty != 1.0f;
    const bool openai = params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f;
    if (!repetition && !openai) return;
    // Check every id before marking any, so a bad one leaves seen_/counts_ clean for the next call.
    for (std::span<const int32_t> ids : {history.prompt, history.generated})
        for (int32_t id : ids)
            PHI_CHECK(id >= 0 && id < n, "token id {} in the sequence is outside the vocabulary [0, {})", id,
                      n);
    if (repetition) {
        const float penalty = params.repetition_penalty;
        touched_.clear();
        for (std::span<const int32_t> ids : {history.prompt, history.generated}) {
            for (int32_t id : ids) {
                if (!seen_[id]) {
                    seen_[id] = 1;
                    touched_.push_back(id);
                }
            }
        }
        for (int32_t id : touched_) {
            seen_[id] = 0;
            if (id >= limit) continue;  // already -inf
            x[id] = x[id] < 0.0f ? x[id] * penalty : x[id] / penalty;
        }
    }
    if (openai) {
        touched_.clear();
        for (int32_t id : history.generated) {
            if (counts_[id]++ == 0) touched_.push_back(id);
        }
        for (int32_t id : touched_) {
            const int32_t count = counts_[id];
            counts_[id] = 0;
            if (id >= limit) continue;
            x[id] = x[id] - params.frequency_penalty * static_cast<float>(count);
            x[id] = x[id] - params.presence_penalty;
        }
    }
}

void Sampler::apply_top_k(std::span<float> x, int32_t top_k) {
    // The k-th largest logit: a min-heap of the k largest seen (one comparison for most logits when k is
    // small), or a selection over all finite logits when k is large.
    values_.clear();
    const auto k = static_cast<size_t>(top_k);
    if (k <= 1024) {
        for (float v : x) {
            if (v == k_neg_inf) continue;
            if (values_.size() < k) {
                values_.push_back(v);
                std::push_heap(values_.begin(), values_.end(), std::greater<float>());
            } else if (v > values_.front()) {
                std::pop_heap(values_.begin(), values_.end(), std::greater<float>());
                values_.back() = v;
                std::push_heap(values_.begin(), values_.end(), std::greater<float>());
            }
        }
        if (values_.size() < k) return;  // k or fewer finite logits: nothing to drop
    } else {
        for (float v : x)
            if (v != k_neg_inf) values_.push_back(v);
        if (values_.size() <= k) return;
        std::nth_element(values_.begin(), values_.begin() + (k - 1), values_.end(), std::greater<float>());
        values_[0] = values_[k - 1];
    }
    const float kth = values_.front();
    for (float& v : x)
        if (v < kth) v = k_neg_inf;
}

void Sampler::apply_top_p(std::span<float> x, float top_p) {
    // Keep the first K tokens of the descending order (higher logit, then lower id), K the smallest index
    // whose predecessors' mass reaches top_p (all when none does). Instead of sorting the vocabulary, bin
    // the logits by distance below the max (a monotone map, so bins follow the descending order), find
    // the bin where the mass crosses the cut, and sort only that bin.
    const float m = finite_max(x);
    const size_t n = x.size();
    weights_.resize(n);
    bins_.resize(n);
    bin_mass_.assign(k_top_p_bins, 0.0);
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) {
        if (x[i] == k_neg_inf) continue;
        const float w = weight(x[i], m);
        const float dist = (m - x[i]) * k_top_p_bins_per_nat;
        const auto bin = static_cast<uint16_t>(std::min(dist, static_cast<float>(k_top_p_bins - 1)));
        weights_[i] = w;
        bins_[i] = bin;
        bin_mass_[bin] += w;
        total += w;
    }
    const double cut = static_cast<double>(top_p) * total;
    double before = 0.0;
    size_t cross = 0;  // the bin holding the K-th token
    while (cross + 1 < k_top_p_bins && before + bin_mass_[cross] < cut) before += bin_mass_[cross++];

    candidates_.clear();
    for (size_t i = 0; i < n; ++i)
        if (x[i] != k_neg_inf && bins_[i] == cross)
            candidates_.push_back({x[i], static_cast<int32_t>(i), weights_[i]});
    std::sort(candidates_.begin(), candidates_.end(), [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    });
    size_t keep = candidates_.size();
    for (size_t k = 0; k < candidates_.size(); ++k) {
        if (before >= cut) {
            keep = k;
            break;
        }
        before += candidates_[k].weight;
    }
    for (size_t k = keep; k < candidates_.size(); ++k) x[candidates_[k].id] = k_neg_inf;
    for (size_t i = 0; i < n; ++i)
        if (x[i] != k_neg_inf && bins_[i] > cross) x[i] = k_neg_inf;
}

void Sampler::process(std::span<float> logits, int64_t limit, TokenHistory history,
                      const SamplingParams& params) {
    PHI_CHECK(limit >= 1 && limit <= static_cast<int64_t>(logits.size()),
              "token limit {} must be in [1, {}] (the logits' size)", limit, logits.size());
    checked_max(logits, limit);
    std::fill(logits.begin() + limit, logits.end(), k_neg_inf);  // step 0
    apply_penalties(logits, limit, history, params);             // steps 1-2
    if (params.greedy()) return;

    const std::span<float> x = logits.first(limit);
    if (params.temperature != 1.0f) {  // step 3
        const float t = params.temperature;
        for (float& v : x) v = v / t;
    }
    if (params.top_k > 0) apply_top_k(x, params.top_k);     // step 4
    if (params.top_p < 1.0f) apply_top_p(x, params.top_p);  // step 5
    if (params.min_p > 0.0f) {                              // step 6: p / p_max < min_p, in log space
        const double m = finite_max(x);
        const double log_min_p = std::log(static_cast<double>(params.min_p));
        for (float& v : x)
            if (static_cast<double>(v) - m < log_min_p) v = k_neg_inf;
    }
}

void Sampler::raw_logprobs(std::span<const float> logits, int64_t limit, int32_t n_top,
                           SampleResult& out) const {
    const float m = finite_max(logits.first(limit));
    double sum = 0.0;
    for (int64_t i = 0; i < limit; ++i)
        if (logits[i] != k_neg_inf) sum += weight(logits[i], m);
    const double lse = static_cast<double>(m) + std::log(sum);
    out.logprob = static_cast<float>(static_cast<double>(logits[out.id]) - lse);

    // Insertion into a best-first list of at most n_top: a later id never displaces an equal logit, so
    // ties keep the lower id first.
    std::vector<TokenLogprob>& top = out.top_logprobs;
    if (n_top <= 0) return;
    for (int64_t i = 0; i < limit; ++i) {
        const float v = logits[i];
        if (v == k_neg_inf) continue;
        if (static_cast<int32_t>(top.size()) == n_top && !(v > top.back().logprob)) continue;
        if (static_cast<int32_t>(top.size()) < n_top) top.push_back({});
        size_t j = top.size() - 1;
        while (j > 0 && v > top[j - 1].logprob) {
            top[j] = top[j - 1];
            --j;
        }
        top[j] = {static_cast<int32_t>(i), v};  // the raw logit until the loop ends
    }
    for (TokenLogprob& t : top) t.logprob = static_cast<float>(static_cast<double>(t.logprob) - lse);
}

void Sampler::distribution(std::span<const float> logits, int64_t limit, TokenHistory history,
                           const SamplingParams& params, std::vector<double>& probs) {
    processed_.assign(logits.begin(), logits.end());
    SamplingParams sampled = params;
    if (sampled.greedy()) sampled.temperature = 1.0f;  // the distribution, not its argmax
    process(processed_, limit, history, sampled);
    const std::span<const float> x = std::span<const float>(processed_).first(limit);
    const float m = finite_max(x);
    probs.assign(size_t(limit), 0.0);
    double total = 0.0;
    for (int64_t i = 0; i < limit; ++i) {
        probs[size_t(i)] = x[i] == k_neg_inf ? 0.0 : double(weight(x[i], m));
        total += probs[size_t(i)];
    }
    for (double& v : probs) v /= total;
}

void Sampler::sample(std::span<const float> logits, int64_t limit, TokenHistory history,
                     const SamplingParams& params, RngStream rng, SampleResult& out) {
    processed_.assign(logits.begin(), logits.end());
    process(processed_, limit, history, params);
    const std::span<const float> x = std::span<const float>(processed_).first(limit);

    if (params.greedy()) {
        int32_t best = -1;
        for (int64_t i = 0; i < limit; ++i)
            if (x[i] != k_neg_inf && (best < 0 || x[i] > x[best])) best = static_cast<int32_t>(i);
        out.id = best;
    } else {
        const float m = finite_max(x);
        weights_.resize(limit);
        double total = 0.0;
        for (int64_t i = 0; i < limit; ++i) {
            weights_[i] = x[i] == k_neg_inf ? 0.0f : weight(x[i], m);
            total += weights_[i];
        }
        const double target = philox_uniform(rng.seed, rng.stream, history.generated.size()) * total;
        double cum = 0.0;
        int32_t chosen = -1;
        for (int64_t i = 0; i < limit; ++i) {
            if (weights_[i] <= 0.0f) continue;  // filtered or underflowed: probability 0, never drawn
            chosen = static_cast<int32_t>(i);
            cum += weights_[i];
            if (cum > target) break;
        }
        out.id = chosen;  // rounding can leave cum <= target at the end: the last id with mass then
    }
    out.top_logprobs.clear();
    raw_logprobs(logits, limit, params.logprobs, out);
}

}  // namespace phi::sampling
