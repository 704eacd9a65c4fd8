#include "coordinator/app/gpu_placement.h"

#include <fmt/format.h>

#include "common/error.h"

namespace phi::app {

std::vector<std::string> cuda_unsupported_options(const ClusterConfig& cfg) {
    std::vector<std::string> out;
    // The CUDA backend uploads every linear weight as bf16 (kernels/cuda/cuda_backend.cpp): an f32
    // request would silently run bf16.
    if (cfg.dtype == "int8" || cfg.dtype == "int4")
        out.push_back(fmt::format("dtype: {} (int8/int4 weights run on the CPU backend only: the CUDA backend has "
                                  "no quantized kernels yet; use dtype: bf16 with backend: cuda)",
                                  cfg.dtype));
    else if (cfg.dtype != "bf16")
        out.push_back(fmt::format("dtype: {} (the CUDA backend holds weights in bf16 only)", cfg.dtype));
    if (cfg.quant_activations != "f32")
        out.push_back(fmt::format("quant_activations: {} (the int8-activation mode of the CPU backend's int8/int4 "
                                  "linears)",
                                  cfg.quant_activations));
    if (cfg.kv_dtype == "f32")
        out.push_back("kv_cache.dtype: f32 (the CUDA backend's KV cache is bf16 only; leave kv_cache.dtype out or "
                      "set bf16)");
    if (cfg.threads_per_rank > 0)
        out.push_back(fmt::format("threads_per_rank: {} (CPU threads; the CUDA backend runs on the GPU)",
                                  cfg.threads_per_rank));
    return out;
}

void check_cuda_options(const ClusterConfig& cfg, const std::string& origin) {
    const std::vector<std::string> bad = cuda_unsupported_options(cfg);
    if (bad.empty()) return;
    std::string list;
    for (const std::string& b : bad) list += "\n  " + b;
    PHI_FAIL("{}: backend: cuda does not implement these options; remove them or use backend: cpu:{}", origin,
             list);
}

GpuPlacement place_on_gpu(int local_rank, int local_size, int visible, bool allow_shared,
                          const std::string& no_gpu_reason, const std::string& cuda_visible_devices) {
    PHI_CHECK(local_rank >= 0 && local_rank < local_size, "local rank {} of {}", local_rank, local_size);
    const std::string cvd = cuda_visible_devices.empty()
                                ? std::string("CUDA_VISIBLE_DEVICES is unset")
                                : fmt::format("CUDA_VISIBLE_DEVICES={}", cuda_visible_devices);
    PHI_CHECK(visible > 0, "backend: cuda, but this node has {} ({}): use backend: cpu, or run on a node with a GPU",
              no_gpu_reason.empty() ? "no usable GPU" : no_gpu_reason, cvd);
    GpuPlacement p;
    p.visible = visible;
    p.device = local_rank % visible;
    if (local_size > visible) {
        PHI_CHECK(allow_shared,
                  "{} ranks on this node but {} visible GPU(s) ({}): start at most {} rank(s) per node (one per "
                  "GPU), or set allow_shared_device: true to put several ranks on one GPU (testing only: the "
                  "all-reduce is then staged through the host)",
                  local_size, visible, cvd, visible);
        // Ranks on GPU d: those with local_rank % visible == d.
        p.ranks_per_gpu = local_size / visible + (p.device < local_size % visible ? 1 : 0);
    }
    return p;
}

int64_t gpu_kv_bytes(double fraction, int64_t free_bytes, int ranks_per_gpu, int64_t weight_bytes,
                     int64_t reserve_bytes) {
    PHI_CHECK(fraction > 0 && fraction <= 1, "kv_cache.gpu_memory_fraction {} is not in (0, 1]", fraction);
    PHI_CHECK(ranks_per_gpu >= 1, "ranks_per_gpu {}", ranks_per_gpu);
    const double share = fraction * double(free_bytes) / double(ranks_per_gpu);
    const int64_t kv = int64_t(share) - weight_bytes - reserve_bytes;
    PHI_CHECK(kv > 0,
              "kv_cache.gpu_memory_fraction {}: {:.2f} GiB of the GPU's {:.2f} GiB free{} leaves nothing for the KV "
              "cache after {:.2f} GiB of weights and {:.2f} GiB of activations per rank: raise the fraction, use more "
              "GPUs (tp), or set kv_cache.bytes",
              fraction, share / double(1 << 30), double(free_bytes) / double(1 << 30),
              ranks_per_gpu > 1 ? fmt::format(" (shared by {} ranks)", ranks_per_gpu) : std::string(),
              double(weight_bytes) / double(1 << 30), double(reserve_bytes) / double(1 << 30));
    return kv;
}

int64_t gpu_activation_reserve(const ModelConfig& mc, int64_t max_tokens) {
    const int64_t hd = mc.head_dim, d = mc.d_model, f = mc.d_ff;
    const int64_t qkv = (mc.n_heads + 2 * mc.n_kv_heads) * hd;
    // x, h, out, mlp [d]; qkv; q, k, v, attn (<= qkv + q); up (2 f) and act (f): see PhiModel::reserve.
    const int64_t per_token = 4 * d + 2 * qkv + mc.n_heads * hd + 3 * f;
    const int64_t scratch = max_tokens * (per_token * 4 + d * 2 /* bf16 GEMM input */);
    const int64_t logits = max_tokens * mc.vocab_size * 4;
    return scratch + logits + (int64_t(512) << 20);
}

}  // namespace phi::app
