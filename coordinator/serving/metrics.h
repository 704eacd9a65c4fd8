// Server-side metrics kept by the Service and rendered with the engine's counters in Prometheus text
// format: requests by outcome, time to first token and inter-token latency histograms.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace phi::serving {

/// A Prometheus histogram with fixed bucket bounds (seconds).
class Histogram {
public:
    explicit Histogram(std::vector<double> bounds);
    void observe(double v);
    /// `name_bucket{le=...}`, `name_sum`, `name_count` lines.
    std::string render(const std::string& name, const std::string& help) const;
    /// The q-quantile estimated from the buckets (for reports), NaN when empty.
    double quantile(double q) const;

private:
    mutable std::mutex mu_;
    std::vector<double> bounds_;
    std::vector<uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
    double sum_ = 0;
    uint64_t count_ = 0;
};

class Metrics {
public:
    Metrics();
    Histogram ttft;             // submit -> first token (s)
    Histogram inter_token;      // between consecutive tokens of one choice (s)
    Histogram e2e;              // submit -> done (s)
    void count_request(const std::string& outcome);  // "stop", "length", "cancelled", "error", "rejected_4xx", ...
    std::string render_requests() const;
    /// Per LoRA adapter (the served model's own name for the base model): requests submitted and
    /// tokens generated.
    void count_adapter_request(const std::string& model);
    void count_adapter_tokens(const std::string& model, int64_t tokens);
    std::string render_adapters() const;
    /// LoRA adapters loaded into memory and evicted from it (lora.max_cpu_loras).
    void count_lora_event(const std::string& event);

private:
    mutable std::mutex mu_;
    std::map<std::string, uint64_t> requests_;
    std::map<std::string, std::pair<uint64_t, uint64_t>> adapters_;  // requests, tokens
    std::map<std::string, uint64_t> lora_events_;
};

}  // namespace phi::serving
