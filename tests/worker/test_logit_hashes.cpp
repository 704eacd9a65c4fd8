// Pins the CPU forward's exact output: a hash of every fixture's logits (prompt rows with fp32 and
// bf16 weights, the long prompt, and every greedy step) at each ISA level, recorded before the
// forward moved onto the backend interface (issue 12). A refactor of the forward must not change
// one bit of them; a deliberate numerical change regenerates tests/fixtures/logit_hashes.json with
// PHI_WRITE_LOGIT_HASHES=1 and says why in its commit. Levels are pinned where they were
// recorded (scalar and AVX2 on the recording machine); a CPU with a level that was not recorded
// still checks every recorded level it can run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "cluster/communicator.h"
#include "cluster/step_plan.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/generate.h"
#include "worker/load_model.h"

namespace phi {
namespace {

namespace kc = kernels::cpu;

std::string hex(uint64_t h) { return fmt::format("{:016x}", h); }

/// Hash of the logits rows' first `vocab` values (padded ids are -inf by contract and excluded).
uint64_t hash_rows(const std::vector<float>& logits, int64_t rows, int64_t stride, int64_t vocab) {
    uint64_t h = 1469598103934665603ull;
    for (int64_t r = 0; r < rows; ++r) h = fnv1a(logits.data() + r * stride, size_t(vocab) * sizeof(float), h);
    return h;
}

std::map<std::string, std::string> compute(const std::string& fixture, kc::Isa isa) {
    std::map<std::string, std::string> out;
    const test::Golden g = test::load_golden(fixture);
    LocalCommunicator comm;
    for (DType dtype : {DType::F32, DType::BF16}) {
        ModelOptions opts;
        opts.isa = isa;
        opts.weight_dtype = dtype;
        opts.kv = KvCacheConfig{64, 4};
        const std::string tag = dtype == DType::F32 ? "f32" : "bf16";
        auto prompt_hash = [&](const std::vector<int32_t>& prompt) {
            auto model = load_model(test::fixture_dir(fixture), comm, opts);
            SeqStep s;
            s.tokens = prompt;
            std::vector<int32_t> table(64);
            for (int i = 0; i < 64; ++i) table[size_t(i)] = i;
            s.block_table = table;
            s.all_logits = true;
            s.long_rope = uses_long_rope(model->config(), int64_t(prompt.size()));
            std::vector<float> logits;
            const int64_t rows = model->forward(std::span<const SeqStep>(&s, 1), &logits);
            return hash_rows(logits, rows, model->plan().vocab_padded, model->config().vocab_size);
        };
        out["prompt_" + tag] = hex(prompt_hash(g.prompt));
        if (!g.long_prompt.empty()) out["long_prompt_" + tag] = hex(prompt_hash(g.long_prompt));
        auto model = load_model(test::fixture_dir(fixture), comm, opts);
        const GreedyResult res = generate_greedy(*model, g.prompt, int64_t(g.greedy.size()), g.tokenizer_size);
        uint64_t h = 1469598103934665603ull;
        for (const auto& row : res.step_logits)
            h = fnv1a(row.data(), size_t(model->config().vocab_size) * sizeof(float), h);
        out["greedy_" + tag] = hex(h);
    }
    return out;
}

std::filesystem::path hashes_path() { return test::source_dir() / "tests" / "fixtures" / "logit_hashes.json"; }

TEST(LogitHashes, EveryFixtureAtEveryIsaLevelIsUnchanged) {
    const bool write = std::getenv("PHI_WRITE_LOGIT_HASHES") != nullptr;
    nlohmann::json expected = nlohmann::json::object();
    if (!write) {
        std::ifstream f(hashes_path());
        ASSERT_TRUE(f.good()) << "cannot open " << hashes_path();
        expected = nlohmann::json::parse(f);
    }
    nlohmann::json got = nlohmann::json::object();
    int compared = 0;
    // Compare mode pins the fixtures recorded; fixtures added later get their own tests.
    std::vector<std::string> fixtures;
    if (write) {
        fixtures = test::golden_fixture_names();
    } else {
        for (const auto& [name, levels] : expected.items()) fixtures.push_back(name);
    }
    for (const std::string& fixture : fixtures) {
        ASSERT_TRUE(write || expected[fixture].contains("scalar")) << fixture << " has no scalar hashes";
        for (kc::Isa isa : kc::supported_isas()) {
            const std::string level(kc::isa_name(isa));
            if (!write && !expected[fixture].contains(level)) {
                std::printf("%s: no hashes recorded at %s (not pinned at this level)\n", fixture.c_str(),
                            level.c_str());
                continue;
            }
            const auto hashes = compute(fixture, isa);
            for (const auto& [what, h] : hashes) {
                got[fixture][level][what] = h;
                if (write) continue;
                ASSERT_TRUE(expected[fixture][level].contains(what))
                    << "no recorded hash for " << fixture << " " << level << " " << what;
                EXPECT_EQ(h, expected[fixture][level][what].get<std::string>())
                    << fixture << " at " << level << ": " << what << " logits changed";
                ++compared;
            }
        }
    }
    if (write) {
        std::ofstream f(hashes_path());
        f << got.dump(2) << "\n";
        GTEST_SKIP() << "wrote " << hashes_path();
    }
    EXPECT_GT(compared, 0);
    std::printf("compared %d logit hashes\n", compared);
}

}  // namespace
}  // namespace phi
