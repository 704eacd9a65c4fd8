// StepPlan: what every rank computes in one step, decided by rank 0 alone and broadcast to all
// ranks. Encoded as a small versioned binary frame; decoding validates every length, so a corrupt
// frame is an error, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/hash.h"

namespace phi {

enum class StepKind : uint8_t {
    Forward = 1,    // run the sequences below
    Heartbeat = 2,  // nothing to run; proves rank 0 is alive while idle
    Shutdown = 3,   // leave the worker loop and exit cleanly
    LoadAdapter = 4,    // every rank loads its slices of the LoRA adapter at adapter_path as adapter_id
    UnloadAdapter = 5,  // every rank drops adapter adapter_id
};

struct SeqPlan {
    int64_t seq_id = 0;
    int64_t start_pos = 0;  // tokens already in this sequence's cache
    bool long_rope = false;
    bool all_logits = false;
    /// > 0: rank 0 needs only the argmax over ids below this (greedy without logprobs or
    /// penalties), so ranks send (max, id) pairs instead of their vocabulary shards; with
    /// all_logits, one pair per row (speculative verification).
    int32_t argmax_limit = 0;
    /// LoRA adapter id of the sequence (0 = the base model); every rank holds the adapter under this id.
    int32_t adapter = 0;
    std::vector<int32_t> tokens;       // new tokens
    std::vector<int32_t> block_table;  // blocks covering [0, start_pos + tokens.size())
};

/// Which of a rank's models a Forward step runs: the served model, or the draft model of
/// speculative decoding (its own weights and KV cache on the same ranks).
enum class StepModel : uint8_t { Target = 0, Draft = 1 };

struct StepPlan {
    uint64_t step = 0;
    StepKind kind = StepKind::Forward;
    StepModel model = StepModel::Target;
    std::vector<SeqPlan> seqs;
    std::vector<int64_t> released;  // sequences finished or cancelled since the last step
    // LoadAdapter / UnloadAdapter
    int32_t adapter_id = 0;
    std::string adapter_path;
};

std::vector<uint8_t> encode_step_plan(const StepPlan& plan);
/// Throws phi::Error describing what is malformed.
StepPlan decode_step_plan(std::span<const uint8_t> bytes);

/// Hash of the state a rank applied in this step (step number, sequence ids, lengths, block
/// tables, rope modes): equal on every rank when all ranks follow the same plan.
uint64_t step_state_hash(const StepPlan& plan);

}  // namespace phi
