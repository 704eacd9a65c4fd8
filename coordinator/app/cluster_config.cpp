// yaml-cpp walks the document; every key is checked against the schema below so a typo is an
// error naming its path, not a silently ignored setting.
#include "coordinator/app/cluster_config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <map>

#include "common/error.h"
#include "common/user_message.h"

namespace phi::app {
namespace {

using Handler = std::function<void(const YAML::Node&, const std::string& path)>;

template <class T>
T scalar(const YAML::Node& n, const std::string& path, const char* what) {
    PHI_CHECK(n.IsScalar(), "{}: must be {}", path, what);
    try {
        return n.as<T>();
    } catch (const YAML::Exception&) {
        PHI_FAIL("{}: '{}' is not {}", path, n.Scalar(), what);
    }
}

int64_t integer(const YAML::Node& n, const std::string& path, int64_t lo, int64_t hi) {
    const int64_t v = scalar<int64_t>(n, path, "an integer");
    PHI_CHECK(v >= lo && v <= hi, "{}: {} is out of range [{}, {}]", path, v, lo, hi);
    return v;
}

double real(const YAML::Node& n, const std::string& path, double lo, double hi) {
    const double v = scalar<double>(n, path, "a number");
    PHI_CHECK(v >= lo && v <= hi, "{}: {} is out of range [{}, {}]", path, v, lo, hi);
    return v;
}

bool boolean(const YAML::Node& n, const std::string& path) { return scalar<bool>(n, path, "true or false"); }

std::string choice(const YAML::Node& n, const std::string& path, std::initializer_list<const char*> allowed) {
    const std::string v = scalar<std::string>(n, path, "a string");
    std::string list;
    for (const char* a : allowed) {
        if (v == a) return v;
        list += list.empty() ? a : std::string(", ") + a;
    }
    PHI_FAIL("{}: '{}' is not one of {}", path, v, list);
}

ListenAddress address(const YAML::Node& n, const std::string& path) {
    const std::string v = scalar<std::string>(n, path, "\"host:port\" or \"off\"");
    if (v == "off" || v.empty()) return {};
    const auto colon = v.rfind(':');
    PHI_CHECK(colon != std::string::npos && colon > 0, "{}: '{}' is not host:port", path, v);
    ListenAddress a;
    a.host = v.substr(0, colon);
    if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']') a.host = a.host.substr(1, a.host.size() - 2);
    int64_t port = -1;
    try {
        size_t used = 0;
        port = std::stoll(v.substr(colon + 1), &used);
        if (used != v.size() - colon - 1) port = -1;
    } catch (const std::exception&) {
    }
    PHI_CHECK(port >= 0 && port <= 65535, "{}: port in '{}' must be 0-65535", path, v);
    a.port = uint16_t(port);
    return a;
}

void walk(const YAML::Node& node, const std::string& prefix, const std::map<std::string, Handler>& schema) {
    PHI_CHECK(node.IsMap(), "{}: must be a mapping of keys to values", prefix.empty() ? "config" : prefix);
    for (const auto& kv : node) {
        // YAML allows any node as a key ("[a]: 1", "? {tcp: x}"); ours are plain names.
        PHI_CHECK(kv.first.IsScalar(), "{}: a key must be a plain name, not a {} ({})",
                  prefix.empty() ? "config" : prefix, kv.first.IsSequence() ? "list" : kv.first.IsMap() ? "mapping" : "null",
                  YAML::Dump(kv.first));
        const std::string key = kv.first.Scalar();
        const std::string path = prefix.empty() ? key : prefix + "." + key;
        auto it = schema.find(key);
        if (it == schema.end()) {
            std::string known;
            for (const auto& [k, _] : schema) known += known.empty() ? k : ", " + k;
            PHI_FAIL("{}: unknown key (known keys here: {})", path, known);
        }
        it->second(kv.second, path);
    }
}

}  // namespace

ClusterConfig parse_cluster_config(const std::string& text, const std::string& origin,
                                   const std::filesystem::path& base_dir) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        PHI_FAIL("{}: invalid YAML: {}", origin, e.what());
    }
    ClusterConfig c;
    bool have_model = false;
    auto ms = [](int64_t v) { return std::chrono::milliseconds(v); };
    const std::map<std::string, Handler> kv_schema = {
        {"blocks", [&](auto& n, auto& p) { c.kv_blocks = integer(n, p, 1, int64_t(1) << 30); }},
        {"bytes", [&](auto& n, auto& p) { c.kv_bytes = integer(n, p, 1 << 16, int64_t(1) << 50); }},
        {"block_size", [&](auto& n, auto& p) { c.block_size = integer(n, p, 1, 1024); }},
        {"gpu_memory_fraction", [&](auto& n, auto& p) { c.kv_gpu_memory_fraction = real(n, p, 0.01, 1.0); }},
        {"dtype", [&](auto& n, auto& p) { c.kv_dtype = choice(n, p, {"f32", "bf16"}); }},
    };
    const std::map<std::string, Handler> batching_schema = {
        {"max_num_seqs", [&](auto& n, auto& p) { c.max_num_seqs = integer(n, p, 1, 65536); }},
        {"max_batched_tokens", [&](auto& n, auto& p) { c.max_batched_tokens = integer(n, p, 1, 1 << 20); }},
        {"max_context", [&](auto& n, auto& p) { c.max_context = integer(n, p, 0, 1 << 24); }},
    };
    const std::map<std::string, Handler> lora_schema = {
        {"adapters",
         [&](auto& n, auto& p) {
             PHI_CHECK(n.IsMap(), "{}: must be a map of adapter names to PEFT adapter folders", p);
             for (const auto& kv : n) {
                 const std::string name = scalar<std::string>(kv.first, p, "an adapter name");
                 const std::string where = p + "." + name;
                 PHI_CHECK(!name.empty() && name.find_first_of(" \t\n/") == std::string::npos,
                           "{}: an adapter name must be non-empty, without spaces or '/'", where);
                 for (const auto& [other, dir] : c.lora_adapters)
                     PHI_CHECK(other != name, "{}: adapter named twice", where);
                 const std::filesystem::path dir = scalar<std::string>(kv.second, where, "a folder path");
                 c.lora_adapters.emplace_back(name, dir.is_absolute() ? dir : base_dir / dir);
             }
         }},
        {"max_lora_rank", [&](auto& n, auto& p) { c.max_lora_rank = integer(n, p, 1, 1024); }},
        {"max_loras", [&](auto& n, auto& p) { c.max_loras = integer(n, p, 0, 1 << 16); }},
        {"allow_runtime_loading", [&](auto& n, auto& p) { c.lora_runtime_loading = boolean(n, p); }},
        {"max_cpu_loras", [&](auto& n, auto& p) { c.max_cpu_loras = integer(n, p, 0, 1 << 16); }},
    };
    const std::map<std::string, Handler> speculative_schema = {
        {"method", [&](auto& n, auto& p) { c.spec_method = choice(n, p, {"off", "ngram", "draft"}); }},
        {"draft_model",
         [&](auto& n, auto& p) {
             const std::filesystem::path m = scalar<std::string>(n, p, "a folder path");
             c.spec_draft_model = m.is_absolute() ? m : base_dir / m;
         }},
        {"draft_layers", [&](auto& n, auto& p) { c.spec_draft_layers = integer(n, p, 1, 1024); }},
        {"rejection_sampling", [&](auto& n, auto& p) { c.spec_rejection_sampling = boolean(n, p); }},
        {"k", [&](auto& n, auto& p) { c.spec_k = int(integer(n, p, 1, 16)); }},
        {"ngram_min", [&](auto& n, auto& p) { c.spec_ngram_min = int(integer(n, p, 1, 64)); }},
        {"ngram_max", [&](auto& n, auto& p) { c.spec_ngram_max = int(integer(n, p, 1, 64)); }},
    };
    const std::map<std::string, Handler> listen_schema = {
        {"tcp", [&](auto& n, auto& p) { c.tcp = address(n, p); }},
        {"http", [&](auto& n, auto& p) { c.http = address(n, p); }},
    };
    const std::map<std::string, Handler> admission_schema = {
        {"max_queued", [&](auto& n, auto& p) { c.max_queued = integer(n, p, 1, 1 << 24); }},
        {"max_prompt_tokens", [&](auto& n, auto& p) { c.max_prompt_tokens = integer(n, p, 0, 1 << 24); }},
        {"max_body_bytes", [&](auto& n, auto& p) { c.max_body_bytes = integer(n, p, 1024, int64_t(1) << 30); }},
        {"request_deadline_s", [&](auto& n, auto& p) { c.request_deadline_s = real(n, p, 0, 86400 * 7); }},
    };
    const std::map<std::string, Handler> watchdog_schema = {
        {"step_base_ms", [&](auto& n, auto& p) { c.watchdog_step_base = ms(integer(n, p, 100, 86400000)); }},
        {"heartbeat_ms", [&](auto& n, auto& p) { c.heartbeat = ms(integer(n, p, 10, 3600000)); }},
        {"plan_wait_ms", [&](auto& n, auto& p) { c.plan_wait = ms(integer(n, p, 100, 86400000)); }},
    };
    const std::map<std::string, Handler> schema = {
        {"model",
         [&](auto& n, auto& p) {
             const std::filesystem::path m = scalar<std::string>(n, p, "a folder path");
             c.model = m.is_absolute() ? m : base_dir / m;
             have_model = true;
         }},
        {"tokenizer",
         [&](auto& n, auto& p) {
             const std::filesystem::path t = scalar<std::string>(n, p, "a folder path");
             c.tokenizer = t.is_absolute() ? t : base_dir / t;
         }},
        {"skip_tokenizer_init", [&](auto& n, auto& p) { c.skip_tokenizer_init = boolean(n, p); }},
        {"vocab_limit", [&](auto& n, auto& p) { c.vocab_limit = integer(n, p, 1, int64_t(1) << 31); }},
        {"model_name", [&](auto& n, auto& p) { c.model_name = scalar<std::string>(n, p, "a string"); }},
        {"tp", [&](auto& n, auto& p) { c.tp = int(integer(n, p, 1, 4096)); }},
        {"backend", [&](auto& n, auto& p) { c.backend = choice(n, p, {"cpu", "cuda"}); }},
        {"dtype", [&](auto& n, auto& p) { c.dtype = choice(n, p, {"f32", "bf16", "int8", "int4"}); }},
        {"quant_activations", [&](auto& n, auto& p) { c.quant_activations = choice(n, p, {"f32", "int8"}); }},
        {"allow_shared_device", [&](auto& n, auto& p) { c.allow_shared_device = boolean(n, p); }},
        {"threads_per_rank", [&](auto& n, auto& p) { c.threads_per_rank = int(integer(n, p, 0, 1024)); }},
        {"kv_cache", [&](auto& n, auto& p) { walk(n, p, kv_schema); }},
        {"batching", [&](auto& n, auto& p) { walk(n, p, batching_schema); }},
        {"prefix_caching", [&](auto& n, auto& p) { c.prefix_caching = boolean(n, p); }},
        {"speculative", [&](auto& n, auto& p) { walk(n, p, speculative_schema); }},
        {"lora", [&](auto& n, auto& p) { walk(n, p, lora_schema); }},
        {"listen", [&](auto& n, auto& p) { walk(n, p, listen_schema); }},
        {"admission", [&](auto& n, auto& p) { walk(n, p, admission_schema); }},
        {"shutdown_timeout_s", [&](auto& n, auto& p) { c.shutdown_timeout_s = real(n, p, 0, 86400); }},
        {"log_level",
         [&](auto& n, auto& p) {
             c.log_level = choice(n, p, {"trace", "debug", "info", "warn", "error", "critical", "off"});
         }},
        {"watchdog", [&](auto& n, auto& p) { walk(n, p, watchdog_schema); }},
    };
    try {
        walk(root, "", schema);
    } catch (const Error& e) {
        PHI_FAIL("{}: {}", origin, user_message(e));
    } catch (const YAML::Exception& e) {  // none is expected: every node is checked before it is read
        PHI_FAIL("{}: {}", origin, e.what());
    }
    PHI_CHECK(have_model, "{}: 'model' (the model folder) is required", origin);
    PHI_CHECK(c.quant_activations == "f32" || c.dtype == "int8" || c.dtype == "int4",
              "{}: quant_activations: {} quantizes the inputs of int8/int4 linear weights, but dtype is {}; set "
              "dtype: int8 or int4, or leave quant_activations out",
              origin, c.quant_activations, c.dtype);
    if (c.tokenizer.empty()) c.tokenizer = c.model;
    if (c.model_name.empty()) c.model_name = std::filesystem::path(c.model).lexically_normal().filename().string();
    if (c.model_name.empty()) c.model_name = "phi";
    PHI_CHECK(c.tcp.enabled() || c.http.enabled(), "{}: listen: at least one of tcp and http must be on", origin);
    PHI_CHECK(c.spec_ngram_max >= c.spec_ngram_min, "{}: speculative.ngram_max ({}) must be >= speculative.ngram_min ({})",
              origin, c.spec_ngram_max, c.spec_ngram_min);
    PHI_CHECK(c.spec_method != "draft" || !c.spec_draft_model.empty(),
              "{}: speculative.method: draft needs speculative.draft_model (a Phi checkpoint folder with the served "
              "model's tokenizer; with speculative.draft_layers it may be the served model itself)",
              origin);
    PHI_CHECK(c.spec_method == "draft" || (c.spec_draft_model.empty() && c.spec_draft_layers == 0 &&
                                            !c.spec_rejection_sampling),
              "{}: speculative.draft_model, draft_layers and rejection_sampling are for speculative.method: draft",
              origin);
    PHI_CHECK(!c.spec_rejection_sampling || c.max_batched_tokens >= c.max_num_seqs * (1 + c.spec_k),
              "{}: speculative.rejection_sampling with k {} needs batching.max_batched_tokens >= max_num_seqs x (1 + "
              "k) = {} (it is {}): a step never cuts a request's proposals for the load",
              origin, c.spec_k, c.max_num_seqs * (1 + c.spec_k), c.max_batched_tokens);
    PHI_CHECK(c.spec_method != "draft" || c.backend != "cuda",
              "{}: speculative.method: draft runs on the CPU backend only for now (backend: cuda loads no draft "
              "model); use method: ngram",
              origin);
    PHI_CHECK(c.vocab_limit == 0 || c.skip_tokenizer_init,
              "{}: vocab_limit is for token-ids-only mode (skip_tokenizer_init: true); with a tokenizer its size "
              "is the limit",
              origin);
    PHI_CHECK((c.lora_adapters.empty() && !c.lora_runtime_loading) || (c.dtype != "int8" && c.dtype != "int4"),
              "{}: LoRA adapters run on f32 and bf16 weights (each checked against HF + PEFT); with dtype: {} they are "
              "not verified yet: use dtype: bf16",
              origin, c.dtype);
    PHI_CHECK(c.max_cpu_loras == 0 || c.max_cpu_loras >= std::max<int64_t>(c.max_loras, 1),
              "{}: lora.max_cpu_loras ({}) must be at least lora.max_loras ({}): the adapters of one batch stay in "
              "memory",
              origin, c.max_cpu_loras, c.max_loras);
    for (const auto& [name, dir] : c.lora_adapters)
        PHI_CHECK(name != c.model_name, "{}: lora.adapters.{} has the served model's own name", origin, name);
    PHI_CHECK((c.lora_adapters.empty() && !c.lora_runtime_loading) || c.backend != "cuda",
              "{}: lora adapters run on the CPU backend only for now (backend: cuda has not run them on a GPU)",
              origin);
    PHI_CHECK(c.backend == "cuda" || (c.kv_gpu_memory_fraction == 0 && !c.allow_shared_device),
              "{}: kv_cache.gpu_memory_fraction and allow_shared_device are for backend: cuda", origin);
    PHI_CHECK(c.kv_gpu_memory_fraction == 0 || c.kv_blocks == 0,
              "{}: give kv_cache.blocks or kv_cache.gpu_memory_fraction, not both", origin);
    PHI_CHECK(c.max_batched_tokens >= 1, "{}: batching.max_batched_tokens must be >= 1", origin);
    PHI_CHECK(c.plan_wait > c.heartbeat * 2,
              "{}: watchdog.plan_wait_ms ({}) must exceed twice watchdog.heartbeat_ms ({}), or idle ranks time out",
              origin, c.plan_wait.count(), c.heartbeat.count());
    return c;
}

}  // namespace phi::app
