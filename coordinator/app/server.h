// Server mode of phi-worker: every rank loads its shard; rank 0 runs the engine on the main thread
// and the native TCP and HTTP servers on an io_context; ranks > 0 follow rank 0's plans.
#pragma once

#include "cluster/mpi_communicator.h"
#include "coordinator/app/cluster_config.h"

namespace phi::app {

/// Runs until shut down; returns the process exit code. Signals (coordinator/app/signals.h):
///  - SIGUSR1 (scripts/mpirun.sh turns the operator's SIGTERM into it; mpirun forwards it to every
///    rank without killing any): drain. Stop accepting, /health 503, let in-flight requests finish
///    within shutdown_timeout_s, end the rest with an error, release the followers, exit 0.
///  - SIGTERM or SIGINT at any rank (mpirun's teardown when a rank died, or the operator's raw
///    signal): teardown. Rank 0 fails every in-flight client at once from the io threads (SSE error
///    event + [DONE], native error done frame), /health answers 503, and it exits 1; other ranks
///    exit 1 at once.
///  - a lost or stalled rank (a collective past its deadline): the same teardown, exit 2.
int serve(MpiCommunicator& comm, const ClusterConfig& cfg);

}  // namespace phi::app
