// A prompt prefilled in chunks (any split) gives bitwise the same logits as one prefill.
#include <gtest/gtest.h>

#include <numeric>

#include "cluster/communicator.h"
#include "kernels/cpu/isa.h"
#include "tests/support/fixtures.h"
#include "worker/load_model.h"

namespace phi {
namespace {

TEST(ChunkedPrefill, SameLogitsAsOnePrefill) {
    for (const char* fixture : {"phi2_qkln", "phi3_mini_4k_swa", "phimoe"}) {
        LocalCommunicator comm;
        ModelOptions opts;
        opts.isa = kernels::cpu::choose_isa();
        opts.kv = KvCacheConfig{32, 4};
        auto model = load_model(test::fixture_dir(fixture), comm, opts);
        const test::Golden g = test::load_golden(fixture);
        std::vector<int32_t> table(16);
        std::iota(table.begin(), table.end(), 0);
        const int64_t P = int64_t(g.prompt.size()), vp = model->plan().vocab_padded;

        SeqStep whole;
        whole.tokens = g.prompt;
        whole.block_table = table;
        whole.all_logits = true;
        std::vector<float> ref;
        model->forward(std::span<const SeqStep>(&whole, 1), &ref);

        for (int64_t chunk : {1, 3, 5}) {
            std::vector<int32_t> other(16);
            std::iota(other.begin(), other.end(), 16);
            std::vector<float> got, part;
            for (int64_t s = 0; s < P; s += chunk) {
                SeqStep st;
                st.tokens = std::span<const int32_t>(g.prompt.data() + s, size_t(std::min(chunk, P - s)));
                st.start_pos = s;
                st.block_table = other;
                st.all_logits = true;
                model->forward(std::span<const SeqStep>(&st, 1), &part);
                got.insert(got.end(), part.begin(), part.end());
            }
            ASSERT_EQ(got.size(), size_t(P * vp));
            EXPECT_EQ(got, ref) << fixture << " chunk " << chunk;
        }
    }
}

}  // namespace
}  // namespace phi
