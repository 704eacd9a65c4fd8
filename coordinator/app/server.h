// Server mode of phi-worker: every rank loads its shard; rank 0 runs the engine on the main thread
// and the native TCP and HTTP servers on an io_context; ranks > 0 follow rank 0's plans.
#pragma once

#include "cluster/mpi_communicator.h"
#include "coordinator/app/cluster_config.h"

namespace phi::app {

/// Runs until shut down; returns the process exit code.
///  - SIGTERM, SIGINT or SIGUSR1 (scripts/mpirun.sh turns the operator's SIGTERM into SIGUSR1,
///    which mpirun forwards to every rank without killing any): stop accepting, /health 503, let
///    in-flight requests finish within shutdown_timeout_s, end the rest with an error, release the
///    followers, exit 0. A second signal exits at once.
///  - a lost or stalled rank (a collective past its deadline): every in-flight client gets a final
///    error, then the process exits non-zero and mpirun ends the job.
int serve(MpiCommunicator& comm, const ClusterConfig& cfg);

}  // namespace phi::app
