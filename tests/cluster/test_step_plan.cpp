// StepPlan frames round-trip, and malformed frames give errors, never out-of-bounds reads.
#include <gtest/gtest.h>

#include "cluster/step_plan.h"
#include "common/error.h"

namespace phi {
namespace {

StepPlan sample() {
    StepPlan p;
    p.step = 42;
    SeqPlan a;
    a.seq_id = 7;
    a.start_pos = 3;
    a.long_rope = true;
    a.tokens = {1, 2, 3};
    a.block_table = {5, 9};
    SeqPlan b;
    b.seq_id = 8;
    b.all_logits = true;
    b.tokens = {4};
    b.block_table = {1};
    p.seqs = {a, b};
    p.released = {3, 4};
    return p;
}

TEST(StepPlan, RoundTrips) {
    const StepPlan p = sample();
    const StepPlan q = decode_step_plan(encode_step_plan(p));
    EXPECT_EQ(q.step, 42u);
    ASSERT_EQ(q.seqs.size(), 2u);
    EXPECT_EQ(q.seqs[0].tokens, p.seqs[0].tokens);
    EXPECT_EQ(q.seqs[0].block_table, p.seqs[0].block_table);
    EXPECT_TRUE(q.seqs[0].long_rope);
    EXPECT_TRUE(q.seqs[1].all_logits);
    EXPECT_EQ(q.released, p.released);
    EXPECT_EQ(step_state_hash(q), step_state_hash(p));
    EXPECT_EQ(q.model, StepModel::Target);
}

TEST(StepPlan, CarriesTheModelItRuns) {
    StepPlan p = sample();
    p.model = StepModel::Draft;
    const auto bytes = encode_step_plan(p);
    EXPECT_EQ(decode_step_plan(bytes).model, StepModel::Draft);
    auto bad = bytes;
    bad[4 + 2 + 8 + 1] = 2;  // the model byte
    EXPECT_THROW(decode_step_plan(bad), Error);
    // A draft step and a target step of the same shape are different states.
    EXPECT_NE(step_state_hash(p), step_state_hash(sample()));
}

TEST(StepPlan, CarriesAnAdapterLoad) {
    StepPlan p;
    p.kind = StepKind::LoadAdapter;
    p.adapter_id = 7;
    p.adapter_path = "/models/adapters/sql";
    const auto bytes = encode_step_plan(p);
    const StepPlan q = decode_step_plan(bytes);
    EXPECT_EQ(q.kind, StepKind::LoadAdapter);
    EXPECT_EQ(q.adapter_id, 7);
    EXPECT_EQ(q.adapter_path, "/models/adapters/sql");
    for (size_t n = 0; n < bytes.size(); ++n)
        EXPECT_THROW(decode_step_plan(std::span<const uint8_t>(bytes.data(), n)), Error) << n;
}

TEST(StepPlan, EveryTruncationIsAnError) {
    const auto bytes = encode_step_plan(sample());
    for (size_t n = 0; n < bytes.size(); ++n)
        EXPECT_THROW(decode_step_plan(std::span<const uint8_t>(bytes.data(), n)), Error) << n;
}

TEST(StepPlan, CorruptCountsAndTrailingBytesAreErrors) {
    auto bytes = encode_step_plan(sample());
    auto bad = bytes;
    bad[0] ^= 1;
    EXPECT_THROW(decode_step_plan(bad), Error);
    bad = bytes;
    bad.push_back(0);
    EXPECT_THROW(decode_step_plan(bad), Error);
    bad = bytes;
    bad[4 + 2 + 8 + 1 + 1] = 0xff;  // sequence count
    EXPECT_THROW(decode_step_plan(bad), Error);
}

TEST(StepPlan, HashSeesBlockTablesAndLengths) {
    StepPlan p = sample();
    const uint64_t h = step_state_hash(p);
    p.seqs[0].block_table[1] = 10;
    EXPECT_NE(step_state_hash(p), h);
    p = sample();
    p.seqs[1].tokens.push_back(3);
    EXPECT_NE(step_state_hash(p), h);
}

}  // namespace
}  // namespace phi
