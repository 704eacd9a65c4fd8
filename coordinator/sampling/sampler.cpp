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

// Better in the descending order top-p walks: higher logit, then lower id.
bool better(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
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
    auto check_id = [n](int32_t id) {
        PHI_CHECK(id >= 0 && id < n, "token id {} in the sequence is outside the vocabulary [0, {})", id, n);
    };
    if (params.repetition_penalty != 1.0f) {
        const float penalty = params.repetition_penalty;
        touched_.clear();
        for (std::span<const int32_t> ids : {history.prompt, history.generated}) {
            for (int32_t id : ids) {
                check_id(id);
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
    if (params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f) {
        touched_.clear();
        for (int32_t id : history.generated) {
            check_id(id);
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
    values_.clear();
    for (float v : x)
        if (v != k_neg_inf) values_.push_back(v);
    if (static_cast<size_t>(top_k) >= values_.size()) return;
    std::nth_element(values_.begin(), values_.begin() + (top_k - 1), values_.end(), std::greater<float>());
    const float kth = values_[top_k - 1];
    for (float& v : x)
        if (v < kth) v = k_neg_inf;
}

void Sampler::apply_top_p(std::span<float> x, float top_p) {
    candidates_.clear();
    for (size_t i = 0; i < x.size(); ++i)
        if (x[i] != k_neg_inf) candidates_.emplace_back(x[i], static_cast<int32_t>(i));
    const double m = finite_max(x);
    double total = 0.0;
    for (size_t i = 0; i < x.size(); ++i)
        if (x[i] != k_neg_inf) total += std::exp(static_cast<double>(x[i]) - m);
    const double cut = static_cast<double>(top_p) * total;

    // Sort only as much of the descending order as the cut needs: the best 64, then 4x more each time.
    const size_t count = candidates_.size();
    size_t sorted = 0;
    size_t end = std::min<size_t>(64, count);
    size_t keep = count;
    double before = 0.0;  // mass of the tokens ahead of the current one
    for (;;) {
        std::partial_sort(candidates_.begin() + sorted, candidates_.begin() + end, candidates_.end(), better);
        for (size_t i = sorted; i < end && keep == count; ++i) {
            if (before >= cut) keep = i;
            before += std::exp(static_cast<double>(candidates_[i].first) - m);
        }
        if (keep != count || end == count) break;
        sorted = end;
        end = std::min(count, end * 4);
    }
    for (size_t i = keep; i < count; ++i) x[candidates_[i].second] = k_neg_inf;
}

void Sampler::process(std::span<float> logits, int64_t limit, TokenHistory history, const SamplingParams& params) {
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
    if (params.top_k > 0) apply_top_k(x, params.top_k);  // step 4
    if (params.top_p < 1.0f) apply_top_p(x, params.top_p);  // step 5
    if (params.min_p > 0.0f) {                             // step 6
        const double m = finite_max(x);
        const double min_p = params.min_p;
        for (float& v : x)
            if (v != k_neg_inf && std::exp(static_cast<double>(v) - m) < min_p) v = k_neg_inf;
    }
}

void Sampler::raw_logprobs(std::span<const float> logits, int64_t limit, int32_t n_top, SampleResult& out) const {
    const double m = finite_max(logits.first(limit));
    double sum = 0.0;
    for (int64_t i = 0; i < limit; ++i)
        if (logits[i] != k_neg_inf) sum += std::exp(static_cast<double>(logits[i]) - m);
    const double lse = m + std::log(sum);
    out.logprob = static_cast<float>(static_cast<double>(logits[out.id]) - lse);

    // Insertion into a best-first list of at most n_top: a later id replaces an equal logit never, so ties
    // keep the lower id first.
    std::vector<TokenLogprob>& top = out.top_logprobs;
    top.clear();
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
        top[j] = {static_cast<int32_t>(i), v};  // raw logit for now, logprob below
    }
    for (TokenLogprob& t : top) t.logprob = static_cast<float>(static_cast<double>(t.logprob) - lse);
}

void Sampler::sample(std::span<const float> logits, int64_t limit, TokenHistory history, const SamplingParams& params,
                     RngStream rng, SampleResult& out) {
    processed_.assign(logits.begin(), logits.end());
    process(processed_, limit, history, params);
    const std::span<const float> x = std::span<const float>(processed_).first(limit);

    if (params.greedy()) {
        int32_t best = -1;
        for (int64_t i = 0; i < limit; ++i)
            if (x[i] != k_neg_inf && (best < 0 || x[i] > x[best])) best = static_cast<int32_t>(i);
        out.id = best;
    } else {
        const double m = finite_max(x);
        double total = 0.0;
        for (float v : x)
            if (v != k_neg_inf) total += std::exp(static_cast<double>(v) - m);
        const double target = philox_uniform(rng.seed, rng.stream, history.generated.size()) * total;
        double cum = 0.0;
        int32_t chosen = -1;
        for (int64_t i = 0; i < limit; ++i) {
            if (x[i] == k_neg_inf) continue;
            const double w = std::exp(static_cast<double>(x[i]) - m);
            if (w <= 0.0) continue;  // underflowed: probability 0, never drawn
            chosen = static_cast<int32_t>(i);
            cum += w;
            if (cum > target) break;
        }
        out.id = chosen;  // rounding can leave cum <= target at the end: the last id with mass then
    }
    raw_logprobs(logits, limit, params.logprobs, out);
}

}  // namespace phi::sampling
