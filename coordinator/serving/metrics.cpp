#include "coordinator/serving/metrics.h"

#include <algorithm>

#include <cmath>
#include <fmt/format.h>
#include <limits>

namespace phi::serving {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
    std::lock_guard lock(mu_);
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
    std::lock_guard lock(mu_);
    std::string out = fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
        cum += counts_[i];
        out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cum);
    }
    cum += counts_.back();
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, cum, name, sum_, name, count_);
    return out;
}

double Histogram::quantile(double q) const {
    std::lock_guard lock(mu_);
    if (count_ == 0) return std::numeric_limits<double>::quiet_NaN();
    const double target = q * double(count_);
    uint64_t cum = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
        const uint64_t prev = cum;
        cum += counts_[i];
        if (double(cum) >= target) {
            const double lo = i == 0 ? 0.0 : bounds_[i - 1];
            const double hi = i < bounds_.size() ? bounds_[i] : lo * 2;
            const double frac = counts_[i] ? (target - double(prev)) / double(counts_[i]) : 0.0;
            return lo + (hi - lo) * frac;
        }
    }
    return bounds_.empty() ? 0.0 : bounds_.back();
}

namespace {
std::vector<double> latency_buckets() {
    return {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
            0.75,  1.0,    1.5,   2.0,  3.0,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
}
}  // namespace

Metrics::Metrics() : ttft(latency_buckets()), inter_token(latency_buckets()), e2e(latency_buckets()) {}

void Metrics::count_request(const std::string& outcome) {
    std::lock_guard lock(mu_);
    ++requests_[outcome];
}

std::string Metrics::render_requests() const {
    std::lock_guard lock(mu_);
    std::string out =
        "# HELP phi_requests_total Requests by outcome.\n# TYPE phi_requests_total counter\n";
    for (const auto& [k, v] : requests_) out += fmt::format("phi_requests_total{{outcome=\"{}\"}} {}\n", k, v);
    return out;
}

void Metrics::count_adapter_request(const std::string& model) {
    std::lock_guard lock(mu_);
    ++adapters_[model].first;
}

void Metrics::count_adapter_tokens(const std::string& model, int64_t tokens) {
    std::lock_guard lock(mu_);
    adapters_[model].second += uint64_t(std::max<int64_t>(tokens, 0));
}

void Metrics::count_lora_event(const std::string& event) {
    std::lock_guard lock(mu_);
    ++lora_events_[event];
}

std::string Metrics::render_adapters() const {
    std::lock_guard lock(mu_);
    std::string out;
    if (!lora_events_.empty()) {
        out += "# HELP phi_lora_adapter_events_total LoRA adapters loaded into memory and evicted from it.\n"
               "# TYPE phi_lora_adapter_events_total counter\n";
        for (const auto& [k, v] : lora_events_) out += fmt::format("phi_lora_adapter_events_total{{event=\"{}\"}} {}\n", k, v);
    }
    if (adapters_.empty()) return out;
    out += "# HELP phi_model_requests_total Requests per served model or LoRA adapter.\n"
                      "# TYPE phi_model_requests_total counter\n";
    for (const auto& [k, v] : adapters_) out += fmt::format("phi_model_requests_total{{model=\"{}\"}} {}\n", k, v.first);
    out += "# HELP phi_model_generated_tokens_total Tokens generated per served model or LoRA adapter.\n"
           "# TYPE phi_model_generated_tokens_total counter\n";
    for (const auto& [k, v] : adapters_)
        out += fmt::format("phi_model_generated_tokens_total{{model=\"{}\"}} {}\n", k, v.second);
    return out;
}

}  // namespace phi::serving
