// The MoE MLP on the GPU: route, dispatch, one GEMM pair per expert with tokens, combine. The
// expert row counts come back to the host once per call (to size each expert's GEMM); a grouped
// GEMM with device-side sizes would remove that synchronisation (needed for CUDA-graph decode).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernels.h"

namespace phi::kernels::cuda {

void moe_mlp(const CublasHandle& h, float* out, const float* h32, const bf16* h16, const float* router,
             const std::vector<const bf16*>& expert_up, const std::vector<const bf16*>& expert_down,
             int64_t n, int64_t d, int64_t f, int64_t E, float jitter_eps, MoeWorkspace& ws) {
    PHI_CUDA_REQUIRE(int64_t(expert_up.size()) == E && int64_t(expert_down.size()) == E,
                     "moe_mlp: %zu up and %zu down expert weights for %lld experts", expert_up.size(),
                     expert_down.size(), (long long)E);
    if (n == 0) return;
    const cudaStream_t s = h.stream();
    ws.scores.reserve(size_t(n * E) * 4);
    ws.idx.reserve(size_t(2 * n) * 4);
    ws.w.reserve(size_t(2 * n) * 4);
    ws.offsets.reserve(size_t(E + 1) * 4);
    ws.rows.reserve(size_t(2 * n) * 4);
    ws.inv.reserve(size_t(2 * n) * 4);
    ws.xs.reserve(size_t(2 * n * d) * 2);
    ws.gu.reserve(size_t(2 * n * 2 * f) * 4);
    ws.act.reserve(size_t(2 * n * f) * 2);
    ws.y.reserve(size_t(2 * n * d) * 4);

    linear_f32(h, ws.scores.as<float>(), h32, router, n, E, d);
    moe_route(ws.idx.as<int32_t>(), ws.w.as<float>(), ws.scores.as<float>(), n, E, jitter_eps, s);
    moe_build_lists(ws.offsets.as<int32_t>(), ws.rows.as<int32_t>(), ws.inv.as<int32_t>(),
                    ws.idx.as<int32_t>(), n, E, s);
    ws.host_offsets.resize(size_t(E + 1));
    CUDA_CHECK(cudaMemcpyAsync(ws.host_offsets.data(), ws.offsets.data(), size_t(E + 1) * 4,
                               cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    gather_rows(ws.xs.as<bf16>(), h16, ws.rows.as<int32_t>(), 2 * n, d, s);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t b = ws.host_offsets[size_t(e)], ne = ws.host_offsets[size_t(e + 1)] - b;
        if (ne == 0) continue;
        linear(h, ws.gu.as<float>() + b * 2 * f, DType::F32, ws.xs.as<bf16>() + b * d, expert_up[size_t(e)],
               nullptr, ne, 2 * f, d);
    }
    silu_mul(ws.act.as<bf16>(), DType::BF16, ws.gu.as<float>(), 2 * n, f, s);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t b = ws.host_offsets[size_t(e)], ne = ws.host_offsets[size_t(e + 1)] - b;
        if (ne == 0) continue;
        linear(h, ws.y.as<float>() + b * d, DType::F32, ws.act.as<bf16>() + b * f, expert_down[size_t(e)],
               nullptr, ne, d, f);
    }
    moe_combine(out, ws.y.as<float>(), ws.inv.as<int32_t>(), ws.idx.as<int32_t>(), ws.w.as<float>(), n, d, s);
}

}  // namespace phi::kernels::cuda
