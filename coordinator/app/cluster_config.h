// The cluster's YAML configuration (`phi-worker --config FILE.yaml`). Rank 0 reads the file and
// broadcasts its bytes and hash; every rank parses the same bytes. Unknown keys, wrong types and
// impossible values are refused with the key's path ("admission.max_queued: must be >= 1").
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/native/protocol.h"

namespace phi::app {

struct ListenAddress {
    std::string host;  // empty: this listener is off
    uint16_t port = 0;
    bool enabled() const { return !host.empty(); }
};

struct ClusterConfig {
    std::filesystem::path model;  // HF folder; relative paths are relative to the config file
    std::filesystem::path tokenizer;  // folder with tokenizer.json; default: the model folder
    bool skip_tokenizer_init = false;  // token-ids-only mode (vLLM's flag): no tokenizer is loaded
    // Token-ids-only mode: ids at or above this are never generated (the clients' tokenizer is
    // smaller than the model's padded vocabulary); 0: the model's vocab_size.
    int64_t vocab_limit = 0;
    std::string model_name;       // served name (/v1/models); default: the folder's name
    int tp = 0;                   // 0 (left out): the MPI world size; otherwise it must equal it
    std::string backend = "cpu";  // cpu | cuda
    std::string dtype = "bf16";   // f32 | bf16 | int8 | int4 (int8/int4: linear weights, docs/QUANT.md)
    std::string quant_activations = "f32";  // f32 | int8: int8/int4 linears' inputs (int8: opt-in mode)
    int threads_per_rank = 0;     // 0: cores / ranks on this node (at least 1)
    int64_t kv_blocks = 0;        // 0: derived from kv_bytes
    int64_t kv_bytes = int64_t(1) << 30;  // per rank, when kv_blocks is 0
    int64_t block_size = 16;
    double kv_gpu_memory_fraction = 0;  // backend cuda: > 0 sizes the KV cache from free GPU memory
    bool allow_shared_device = false;   // backend cuda: more ranks than GPUs on a node (testing)
    // f32 | bf16: how K and V are stored (attention widens bf16 to fp32); empty: the backend's own
    // (f32 on the CPU, bf16 on CUDA, which holds nothing else).
    std::string kv_dtype;
    int64_t max_num_seqs = 32;
    int64_t max_batched_tokens = 512;
    int64_t max_context = 0;      // 0: the model's max_position_embeddings
    bool prefix_caching = true;
    // speculative: {method: off|ngram|draft, k, ngram_min, ngram_max, draft_model, draft_layers}
    // (engine::SpeculativeConfig). draft_layers > 0 takes only the draft checkpoint's first layers
    // (it may then be the served model itself: an early-exit draft).
    std::string spec_method = "off";
    int spec_k = 3, spec_ngram_min = 1, spec_ngram_max = 3;
    std::filesystem::path spec_draft_model;
    int64_t spec_draft_layers = 0;
    bool spec_rejection_sampling = false;  // draft only: see SpeculativeConfig::rejection_sampling
    // lora: {adapters: {name: folder}, max_lora_rank, max_loras}: PEFT adapters loaded on every rank
    // at start; a request names one as its `model` (HTTP) or `adapter` (native).
    std::vector<std::pair<std::string, std::filesystem::path>> lora_adapters;
    int64_t max_lora_rank = 64;
    int64_t max_loras = 0;  // distinct adapters in the running batch; 0: no limit
    bool lora_runtime_loading = false;  // lora.allow_runtime_loading: /v1/load_lora_adapter and unload
    int64_t max_cpu_loras = 0;  // adapters kept in memory (LRU eviction, reloaded on demand); 0: all
    ListenAddress tcp{"127.0.0.1", native::k_default_port};
    ListenAddress http{"127.0.0.1", 8000};
    int64_t max_queued = 256;
    int64_t max_prompt_tokens = 0;
    int64_t max_body_bytes = 1 << 20;
    double request_deadline_s = 0;  // 0: none
    double shutdown_timeout_s = 30;
    std::string log_level = "info";
    // Stall detection within step_base + heartbeat while idle (the heartbeat is a round trip), and
    // within max(step_base, 3 x the step's measured time) while busy; see worker/step_executor.h.
    std::chrono::milliseconds watchdog_step_base{5000};
    std::chrono::milliseconds heartbeat{1000};
    std::chrono::milliseconds plan_wait{5000};
};

/// Parses YAML text; `origin` names the file in messages; relative paths resolve against `base_dir`.
ClusterConfig parse_cluster_config(const std::string& yaml_text, const std::string& origin,
                                   const std::filesystem::path& base_dir);

}  // namespace phi::app
