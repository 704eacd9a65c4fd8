// phi-worker built without nvcc or NCCL: `backend: cuda` is refused at start-up on every rank.
#include "coordinator/app/gpu_rank.h"

#include "common/error.h"

namespace phi::app {
namespace {
[[noreturn]] void no_cuda() {
    PHI_FAIL("backend: cuda, but this phi-worker was built without the CUDA backend (nvcc or NCCL was not found "
             "when it was configured): rebuild on a machine with the CUDA toolkit and NCCL, or use backend: cpu");
}
}  // namespace

bool cuda_backend_built() { return false; }
GpuPlacement choose_gpu(const MpiCommunicator&, bool) { no_cuda(); }
int64_t gpu_free_bytes(int) { no_cuda(); }
std::unique_ptr<GpuRank> start_gpu_rank(MpiCommunicator&, const std::filesystem::path&, const GpuPlacement&,
                                        const GpuModelOptions&) {
    no_cuda();
}

}  // namespace phi::app
