// Start-up agreement between the ranks of one cluster, before any weight is loaded: every rank
// runs the same binary build, every rank runs the same kernel ISA level (the best every rank's CPU
// supports, so replicated math such as MoE routing agrees bit for bit across different CPUs), and
// each rank's thread count follows its CPU affinity mask. Each check is one collective over the
// cluster's Communicator; the decisions are pure functions of the gathered data, tested without MPI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cluster/communicator.h"
#include "kernels/cpu/isa.h"

namespace phi::app {

// ---- same binary -------------------------------------------------------------------------------

/// A 64-bit id of this executable: its GNU build id (ld --build-id) when it has one, otherwise a
/// hash of the file's bytes.
uint64_t binary_build_id();

/// Throws naming the first rank whose id differs from rank 0's. `ids[r]` is rank r's.
void check_same_build(const std::vector<uint64_t>& ids);

/// Collective: gathers every rank's build id and checks them (every rank throws on a mismatch).
void agree_on_build(Communicator& comm);

// ---- kernel ISA --------------------------------------------------------------------------------

/// What one rank can run: its CPU's features, and the level it may use (its best, or lower when
/// PHI_CPU_ISA forces one).
struct RankIsa {
    uint64_t features = 0;
    kernels::cpu::Isa cap = kernels::cpu::Isa::Scalar;
};

struct IsaAgreement {
    kernels::cpu::Isa isa = kernels::cpu::Isa::Scalar;  // the level every rank runs
    uint64_t features = 0;  // the features every rank's CPU has (sub-features such as VNNI included)
    std::string summary;    // one line for the log: the level, the features, which ranks limit it
};

/// The highest level no rank's cap exceeds, and the features common to all ranks.
IsaAgreement agree_isa(const std::vector<RankIsa>& ranks);

/// Collective: this rank's features and cap (choose_isa, so a bad PHI_CPU_ISA fails here), gathered
/// from every rank, agreed with agree_isa.
IsaAgreement agree_on_isa(Communicator& comm);

// ---- threads -----------------------------------------------------------------------------------

struct ThreadPlan {
    int threads = 1;        // OpenMP threads of this rank
    int cpus = 1;           // CPUs in this rank's affinity mask
    int sharing_ranks = 1;  // ranks on this node whose masks overlap this one's, itself included
    std::string warning;    // non-empty when threads of different ranks would share cores
};

/// `threads_per_rank` when > 0; otherwise the CPUs of the affinity mask divided among the ranks
/// sharing it (at least 1). Warns when threads * sharing_ranks exceeds the CPUs.
ThreadPlan plan_threads(int threads_per_rank, int cpus, int sharing_ranks);

/// This process's CPU affinity mask (sched_getaffinity), as 64-bit words (CPU i is bit i % 64 of
/// word i / 64).
std::vector<uint64_t> affinity_mask();

/// Collective: gathers every rank's host and affinity mask, counts the ranks of this host whose
/// masks overlap this rank's, and plans the threads. With plain `mpirun -np 1` the rank is bound to
/// one core, so it gets one thread; scripts/mpirun.sh binds nothing, so ranks split the node.
ThreadPlan plan_threads_for_rank(Communicator& comm, int threads_per_rank);

// ---- all of them ------------------------------------------------------------------------------

struct LaunchAgreement {
    IsaAgreement isa;
    ThreadPlan threads;
};

/// Runs the three checks in order (build, ISA, threads), logs the agreed level (rank 0) and each
/// rank's threads, warns when ranks share cores, and sets OpenMP's thread count.
LaunchAgreement agree_at_launch(Communicator& comm, int threads_per_rank);

}  // namespace phi::app
