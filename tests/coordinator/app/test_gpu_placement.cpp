// backend: cuda start-up decisions on any machine: the YAML keys, the options the CUDA path refuses
// by name, the GPU each local rank takes, the shared-device refusal, and the KV budget from
// kv_cache.gpu_memory_fraction.
#include <gtest/gtest.h>

#include "common/error.h"
#include "coordinator/app/gpu_placement.h"

namespace phi::app {
namespace {

template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "<accepted>";
}

ClusterConfig parse(const std::string& yaml) { return parse_cluster_config(yaml, "t.yaml", "/base"); }

TEST(GpuConfig, CudaKeysParse) {
    const ClusterConfig c = parse(
        "model: m\nbackend: cuda\nallow_shared_device: true\nkv_cache:\n  gpu_memory_fraction: 0.8\n");
    EXPECT_EQ(c.backend, "cuda");
    EXPECT_TRUE(c.allow_shared_device);
    EXPECT_DOUBLE_EQ(c.kv_gpu_memory_fraction, 0.8);
}

TEST(GpuConfig, CudaKeysAreRefusedWithCpuAndConflictsNamed) {
    EXPECT_NE(error_of([] { parse("model: m\nallow_shared_device: true\n"); }).find("backend: cuda"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse("model: m\nkv_cache:\n  gpu_memory_fraction: 0.5\n"); }).find("backend: cuda"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse("model: m\nbackend: cuda\nkv_cache:\n  gpu_memory_fraction: 0.5\n  blocks: 8\n"); })
                  .find("not both"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse("model: m\nbackend: cuda\nkv_cache:\n  gpu_memory_fraction: 1.5\n"); })
                  .find("kv_cache.gpu_memory_fraction"),
              std::string::npos);
}

TEST(GpuConfig, UnsupportedOptionsAreRefusedByName) {
    ClusterConfig c = parse("model: m\nbackend: cuda\n");
    EXPECT_TRUE(cuda_unsupported_options(c).empty());
    EXPECT_EQ(error_of([&] { check_cuda_options(c, "t.yaml"); }), "<accepted>");
    c = parse("model: m\nbackend: cuda\ndtype: f32\nthreads_per_rank: 4\n");
    const auto bad = cuda_unsupported_options(c);
    ASSERT_EQ(bad.size(), 2u);
    const std::string e = error_of([&] { check_cuda_options(c, "t.yaml"); });
    EXPECT_NE(e.find("dtype: f32"), std::string::npos) << e;
    EXPECT_NE(e.find("threads_per_rank: 4"), std::string::npos) << e;
    EXPECT_NE(e.find("backend: cpu"), std::string::npos) << e;
}

TEST(GpuConfig, Int8AndInt4WeightsAreRefusedWithBackendCuda) {
    for (const std::string q : {"int8", "int4"}) {
        const ClusterConfig c = parse("model: m\nbackend: cuda\ndtype: " + q + "\nquant_activations: int8\n");
        const std::string e = error_of([&] { check_cuda_options(c, "t.yaml"); });
        EXPECT_NE(e.find("t.yaml: backend: cuda does not implement these options"), std::string::npos) << e;
        EXPECT_NE(e.find("dtype: " + q + " (int8/int4 weights run on the CPU backend only"), std::string::npos) << e;
        EXPECT_NE(e.find("quant_activations: int8"), std::string::npos) << e;
    }
    // The same YAML with backend: cpu is accepted.
    EXPECT_TRUE(cuda_unsupported_options(parse("model: m\nbackend: cuda\ndtype: bf16\n")).empty());
}

TEST(GpuConfig, Fp32KvCacheIsRefusedWithBackendCuda) {
    const std::string e =
        error_of([&] { check_cuda_options(parse("model: m\nbackend: cuda\nkv_cache: {dtype: f32}\n"), "t.yaml"); });
    EXPECT_NE(e.find("kv_cache.dtype: f32 (the CUDA backend's KV cache is bf16 only"), std::string::npos) << e;
    EXPECT_TRUE(cuda_unsupported_options(parse("model: m\nbackend: cuda\nkv_cache: {dtype: bf16}\n")).empty());
    EXPECT_TRUE(cuda_unsupported_options(parse("model: m\nbackend: cuda\n")).empty());
}

TEST(GpuPlacement, EachLocalRankTakesItsGpu) {
    for (int r = 0; r < 8; ++r) {
        const GpuPlacement p = place_on_gpu(r, 8, 8, false, "", "");
        EXPECT_EQ(p.device, r);
        EXPECT_EQ(p.ranks_per_gpu, 1);
        EXPECT_FALSE(p.shared());
    }
    // Fewer ranks than GPUs: the first ones.
    EXPECT_EQ(place_on_gpu(1, 2, 4, false, "", "").device, 1);
}

TEST(GpuPlacement, MoreRanksThanGpusIsRefusedUnlessShared) {
    const std::string e = error_of([] { place_on_gpu(1, 2, 1, false, "", "3"); });
    EXPECT_NE(e.find("2 ranks on this node but 1 visible GPU"), std::string::npos) << e;
    EXPECT_NE(e.find("CUDA_VISIBLE_DEVICES=3"), std::string::npos) << e;
    EXPECT_NE(e.find("allow_shared_device: true"), std::string::npos) << e;
    // Shared: round robin, and how many ranks each GPU holds.
    const GpuPlacement a = place_on_gpu(0, 2, 1, true, "", ""), b = place_on_gpu(1, 2, 1, true, "", "");
    EXPECT_EQ(a.device, 0);
    EXPECT_EQ(b.device, 0);
    EXPECT_EQ(a.ranks_per_gpu, 2);
    EXPECT_TRUE(b.shared());
    // 5 ranks on 2 GPUs: GPU 0 holds ranks 0, 2, 4; GPU 1 holds 1, 3.
    EXPECT_EQ(place_on_gpu(4, 5, 2, true, "", "").ranks_per_gpu, 3);
    EXPECT_EQ(place_on_gpu(3, 5, 2, true, "", "").ranks_per_gpu, 2);
    EXPECT_EQ(place_on_gpu(3, 5, 2, true, "", "").device, 1);
}

TEST(GpuPlacement, NoGpuNamesTheDriversReason) {
    const std::string e = error_of([] {
        place_on_gpu(0, 1, 0, true, "no usable GPU: cudaGetDeviceCount failed: no CUDA-capable device is detected (100)",
                     "");
    });
    EXPECT_NE(e.find("cudaGetDeviceCount failed: no CUDA-capable device is detected"), std::string::npos) << e;
    EXPECT_NE(e.find("CUDA_VISIBLE_DEVICES is unset"), std::string::npos) << e;
    EXPECT_NE(e.find("backend: cpu"), std::string::npos) << e;
}

TEST(GpuKvBytes, FractionOfTheRanksShareMinusWeightsAndActivations) {
    const int64_t gib = int64_t(1) << 30;
    EXPECT_EQ(gpu_kv_bytes(0.5, 80 * gib, 1, 10 * gib, gib), 29 * gib);
    EXPECT_EQ(gpu_kv_bytes(0.5, 80 * gib, 2, 10 * gib, gib), 9 * gib);  // two ranks share the GPU
    const std::string e = error_of([&] { gpu_kv_bytes(0.1, 80 * gib, 1, 10 * gib, gib); });
    EXPECT_NE(e.find("leaves nothing for the KV cache"), std::string::npos) << e;
}

TEST(GpuKvBytes, ActivationReserveGrowsWithTheStep) {
    ModelConfig mc;
    mc.d_model = 2560;
    mc.d_ff = 10240;
    mc.n_heads = 32;
    mc.n_kv_heads = 32;
    mc.head_dim = 80;
    mc.vocab_size = 51200;
    const int64_t small = gpu_activation_reserve(mc, 1), big = gpu_activation_reserve(mc, 512);
    EXPECT_GE(small, int64_t(512) << 20);
    EXPECT_GT(big, small + 512 * mc.vocab_size * 4);
}

}  // namespace
}  // namespace phi::app
