// How the forward's all-reduces reach a backend's buffers: host buffers go straight to the
// Communicator (MPI, threads); device buffers go through a device communicator (NCCL) or host
// staging (worker/cuda). The forward calls one line, `all_reduce(out)`, whatever the backend.
#pragma once

#include <memory>

#include "cluster/communicator.h"
#include "kernels/backend.h"

namespace phi {

class TensorCollectives {
public:
    virtual ~TensorCollectives() = default;
    /// Sums `t` (fp32) over every rank in a fixed order: every rank ends with the same bits.
    virtual void all_reduce_sum(const kernels::Tensor& t) = 0;
    /// Whether the all-reduce can be recorded into a backend's step recording (CUDA graphs).
    virtual bool recordable() const = 0;
};

/// All-reduces of host buffers through a Communicator.
std::unique_ptr<TensorCollectives> make_host_collectives(Communicator& comm);

}  // namespace phi
