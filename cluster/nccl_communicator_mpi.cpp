// MPI bootstrap of the NCCL communicator: the only NCCL code that needs MPI (its own library, so
// the GPU machine, which lacks MPI, builds everything else).
#include "cluster/mpi_communicator.h"
#include "cluster/nccl_communicator.h"

namespace phi {

std::unique_ptr<NcclCommunicator> make_nccl_communicator_mpi(MpiCommunicator& mpi) {
    ncclUniqueId id{};
    if (mpi.rank() == 0) id = NcclCommunicator::make_unique_id();
    mpi.broadcast(&id, sizeof(id), 0);
    return std::make_unique<NcclCommunicator>(id, mpi.rank(), mpi.size(), mpi.local_rank(), mpi.timeout());
}

}  // namespace phi
