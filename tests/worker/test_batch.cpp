// Batch invariance: a sequence's logits are bitwise identical alone and inside a batch of 8 mixed
// sequences (prefills and decodes joining at different steps), with 1 and 2 threads, and with
// shuffled (non-contiguous) block tables; also with int8/int4 weights in both activation modes.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "cluster/communicator.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/load_model.h"

namespace phi {
namespace {

constexpr int k_seqs = 8;
constexpr int k_decode_steps = 3;
constexpr int k_blocks_per_seq = 8;
constexpr int k_block_size = 4;

struct Scenario {
    std::vector<std::vector<int32_t>> prompts;  // [seq]
    std::vector<std::vector<int32_t>> decode;   // [seq][step] fixed decode inputs
};

Scenario make_scenario(int64_t vocab) {
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
    Scenario s;
    for (int i = 0; i < k_seqs; ++i) {
        std::vector<int32_t> p(size_t(1 + (i * 5) % 17));
        for (auto& t : p) t = tok(rng);
        s.prompts.push_back(p);
        std::vector<int32_t> d(k_decode_steps);
        for (auto& t : d) t = tok(rng);
        s.decode.push_back(d);
    }
    return s;
}

// logits[seq][step] for each sequence, run with the given block tables; seq i joins at step i % 3
// when `batched`, else every sequence runs alone.
std::vector<std::vector<std::vector<float>>> run(PhiModel& model, const Scenario& sc,
                                                 const std::vector<std::vector<int32_t>>& tables, bool batched) {
    const int steps = 1 + k_decode_steps;
    std::vector<std::vector<std::vector<float>>> out(k_seqs);
    auto step_of = [&](int i, int k) {
        SeqStep s;
        s.block_table = tables[size_t(i)];
        if (k == 0) {
            s.tokens = sc.prompts[size_t(i)];
            s.start_pos = 0;
            s.all_logits = true;
        } else {
            s.tokens = std::span<const int32_t>(&sc.decode[size_t(i)][size_t(k - 1)], 1);
            s.start_pos = int64_t(sc.prompts[size_t(i)].size()) + k - 1;
        }
        return s;
    };
    const int64_t vp = model.plan().vocab_padded;
    std::vector<float> logits;
    if (!batched) {
        for (int i = 0; i < k_seqs; ++i)
            for (int k = 0; k < steps; ++k) {
                SeqStep s = step_of(i, k);
                const int64_t rows = model.forward(std::span<const SeqStep>(&s, 1), &logits);
                out[size_t(i)].emplace_back(logits.begin(), logits.begin() + rows * vp);
            }
        return out;
    }
    for (int global = 0; global < steps + 2; ++global) {
        std::vector<SeqStep> batch;
        std::vector<int> who;
        for (int i = 0; i < k_seqs; ++i) {
            const int k = global - i % 3;
            if (k >= 0 && k < steps) {
                batch.push_back(step_of(i, k));
                who.push_back(i);
            }
        }
        if (batch.empty()) continue;
        model.forward(batch, &logits);
        int64_t row = 0;
        for (size_t b = 0; b < batch.size(); ++b) {
            const int64_t rows = batch[b].all_logits ? int64_t(batch[b].tokens.size()) : 1;
            out[size_t(who[b])].emplace_back(logits.begin() + row * vp, logits.begin() + (row + rows) * vp);
            row += rows;
        }
    }
    return out;
}

std::vector<std::vector<int32_t>> contiguous_tables() {
    std::vector<std::vector<int32_t>> t(k_seqs, std::vector<int32_t>(k_blocks_per_seq));
    for (int i = 0; i < k_seqs; ++i) std::iota(t[size_t(i)].begin(), t[size_t(i)].end(), i * k_blocks_per_seq);
    return t;
}

std::vector<std::vector<int32_t>> shuffled_tables() {
    std::vector<int32_t> all(k_seqs * k_blocks_per_seq);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), std::mt19937(99));
    std::vector<std::vector<int32_t>> t(k_seqs);
    for (int i = 0; i < k_seqs; ++i)
        t[size_t(i)].assign(all.begin() + i * k_blocks_per_seq, all.begin() + (i + 1) * k_blocks_per_seq);
    return t;
}

class BatchInvariance : public ::testing::TestWithParam<std::string> {};

void expect_batch_invariant(const std::string& fixture, ModelOptions opts) {
    LocalCommunicator comm;
    opts.isa = kernels::cpu::choose_isa();
    opts.kv = KvCacheConfig{k_seqs * k_blocks_per_seq, k_block_size};
    auto model = load_model(test::fixture_dir(fixture), comm, opts);
    const Scenario sc = make_scenario(model->config().vocab_size);

    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const auto alone = run(*model, sc, contiguous_tables(), false);
    for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        EXPECT_EQ(run(*model, sc, contiguous_tables(), true), alone) << threads << " threads, batched";
        EXPECT_EQ(run(*model, sc, shuffled_tables(), true), alone) << threads << " threads, shuffled blocks";
    }
    omp_set_num_threads(2);
    EXPECT_EQ(run(*model, sc, shuffled_tables(), false), alone) << "2 threads, alone";
    omp_set_num_threads(saved);
}

TEST_P(BatchInvariance, AloneEqualsBatchedEqualsShuffledAcrossThreadCounts) {
    expect_batch_invariant(GetParam(), ModelOptions{});
}

// Int8/int4 weights in both modes: the int8 activation rounding depends only on each token's own
// values, so a sequence's logits are the same bits alone or batched here too.
TEST(QuantBatchInvariance, Int8AndInt4InBothModesAloneEqualsBatched) {
    for (auto q : {kernels::cpu::QuantFormat::Q8, kernels::cpu::QuantFormat::Q4})
        for (auto a : {kernels::cpu::QuantActivations::F32, kernels::cpu::QuantActivations::Int8}) {
            SCOPED_TRACE(fmt::format("{}, {} activations", kernels::cpu::quant_format_name(q),
                                     a == kernels::cpu::QuantActivations::Int8 ? "int8" : "fp32"));
            ModelOptions opts;
            opts.weight_dtype = DType::BF16;
            opts.quant = q;
            opts.quant_activations = a;
            expect_batch_invariant("phi3_mini_4k_swa", opts);
        }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BatchInvariance,
                         ::testing::Values("phi1", "phi2_qkln", "phi3_mini_4k_swa", "phi4_mini", "phimoe"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace phi
