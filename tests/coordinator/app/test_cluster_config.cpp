// Cluster YAML: every shipped config parses; unknown keys, wrong types and impossible values are
// refused with the key's path.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/error.h"
#include "coordinator/app/cluster_config.h"
#include "coordinator/native/protocol.h"
#include "coordinator/app/model_setup.h"
#include "tests/support/fixtures.h"

namespace phi::app {
namespace {

std::string error_of(const std::string& yaml) {
    try {
        parse_cluster_config(yaml, "test.yaml", "/base");
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("<escaped: ") + e.what() + ">";  // e.g. yaml-cpp's own "bad conversion"
    }
    return "<accepted>";
}

TEST(ClusterConfig, EveryShippedConfigParses) {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(test::source_dir() / "configs")) {
        std::ifstream f(e.path());
        std::stringstream ss;
        ss << f.rdbuf();
        const ClusterConfig c = parse_cluster_config(ss.str(), e.path().string(), e.path().parent_path());
        EXPECT_GE(c.tp, 0) << e.path();
        ++n;
    }
    EXPECT_GE(n, 5);
}

TEST(ClusterConfig, DefaultsAndRelativeModelPath) {
    const ClusterConfig c = parse_cluster_config("model: ../m/phi\ntp: 2\n", "x.yaml", "/etc/phi");
    EXPECT_EQ(c.model, std::filesystem::path("/etc/phi/../m/phi"));
    EXPECT_EQ(c.model_name, "phi");
    EXPECT_EQ(c.tp, 2);
    EXPECT_TRUE(c.prefix_caching);
    EXPECT_EQ(c.http.port, 8000);
    EXPECT_EQ(parse_cluster_config("model: m\n", "x.yaml", "/").tp, 0);  // left out: the MPI world size
}

TEST(ClusterConfig, KvCacheDtype) {
    EXPECT_EQ(parse_cluster_config("model: m\n", "x.yaml", "/").kv_dtype, "");  // the backend's own
    EXPECT_EQ(parse_cluster_config("model: m\nkv_cache: {dtype: f32}\n", "x.yaml", "/").kv_dtype, "f32");
    EXPECT_EQ(parse_cluster_config("model: m\nkv_cache: {dtype: bf16}\n", "x.yaml", "/").kv_dtype, "bf16");
    EXPECT_NE(error_of("model: m\nkv_cache:\n  dtype: fp8\n").find("kv_cache.dtype: 'fp8' is not one of"),
              std::string::npos);
}

TEST(ClusterConfig, SpeculativeSection) {
    EXPECT_EQ(parse_cluster_config("model: m\n", "x.yaml", "/").spec_method, "off");
    const ClusterConfig c = parse_cluster_config(
        "model: m\nspeculative: {method: ngram, k: 5, ngram_min: 2, ngram_max: 4}\n", "x.yaml", "/");
    EXPECT_EQ(c.spec_method, "ngram");
    EXPECT_EQ(c.spec_k, 5);
    EXPECT_EQ(c.spec_ngram_min, 2);
    EXPECT_EQ(c.spec_ngram_max, 4);
    // A draft model is named, relative to the YAML's folder like `model:`.
    const ClusterConfig d = parse_cluster_config(
        "model: m\nspeculative: {method: draft, k: 4, draft_model: small, draft_layers: 2}\n", "x.yaml", "/cfg");
    EXPECT_EQ(d.spec_method, "draft");
    EXPECT_EQ(d.spec_draft_model, std::filesystem::path("/cfg/small"));
    EXPECT_EQ(d.spec_draft_layers, 2);
    EXPECT_TRUE(parse_cluster_config("model: m\nbatching: {max_num_seqs: 4, max_batched_tokens: 16}\n"
                                     "speculative: {method: draft, draft_model: s, rejection_sampling: true}\n",
                                     "x.yaml", "/")
                    .spec_rejection_sampling);
    EXPECT_NE(error_of("model: m\nbatching: {max_batched_tokens: 100}\n"
                       "speculative: {method: draft, draft_model: s, rejection_sampling: true}\n")
                  .find("needs batching.max_batched_tokens >= max_num_seqs x (1 + k) = 128"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\nspeculative: {method: draft}\n").find("needs speculative.draft_model"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\nspeculative: {method: ngram, draft_model: s}\n").find("are for speculative.method"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\nbackend: cuda\nspeculative: {method: draft, draft_model: s}\n")
                  .find("CPU backend only"),
              std::string::npos);
    EXPECT_THROW(parse_cluster_config("model: m\nspeculative: {k: 0}\n", "x.yaml", "/"), Error);
    EXPECT_THROW(parse_cluster_config("model: m\nspeculative: {ngram_min: 3, ngram_max: 2}\n", "x.yaml", "/"),
                 Error);
}

TEST(ClusterConfig, VocabLimitIsForTokenIdsOnlyMode) {
    EXPECT_EQ(parse_cluster_config("model: m\nskip_tokenizer_init: true\nvocab_limit: 357\n", "x.yaml", "/").vocab_limit,
              357);
    EXPECT_NE(error_of("model: m\nvocab_limit: 357\n").find("token-ids-only mode"), std::string::npos);
}

TEST(ClusterConfig, LoraSection) {
    const ClusterConfig c = parse_cluster_config(
        "model: m\nmodel_name: base\nlora:\n  adapters: {sql: a/sql, chat: /abs/chat}\n  max_loras: 2\n  max_lora_rank: 16\n",
        "x.yaml", "/cfg");
    ASSERT_EQ(c.lora_adapters.size(), 2u);
    EXPECT_EQ(c.lora_adapters[0].first, "sql");
    EXPECT_EQ(c.lora_adapters[0].second, std::filesystem::path("/cfg/a/sql"));
    EXPECT_EQ(c.lora_adapters[1].second, std::filesystem::path("/abs/chat"));
    EXPECT_EQ(c.max_loras, 2);
    EXPECT_EQ(c.max_lora_rank, 16);
    EXPECT_NE(error_of("model: m\nlora: {adapters: {a/b: x}}\n").find("without spaces or '/'"), std::string::npos);
    EXPECT_NE(error_of("model: m\nmodel_name: base\nlora: {adapters: {base: x}}\n").find("served model's own name"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\nlora: {adapters: [x]}\n").find("must be a map"), std::string::npos);
    EXPECT_NE(error_of("model: m\nlora: {max_gpu_loras: 3}\n").find("unknown key"), std::string::npos);
    EXPECT_NE(error_of("model: m\ndtype: int4\nlora: {adapters: {a: x}}\n").find("not verified yet"),
              std::string::npos);
    EXPECT_EQ(parse_cluster_config("model: m\nlora: {max_cpu_loras: 3, max_loras: 2}\n", "x.yaml", "/").max_cpu_loras, 3);
    EXPECT_NE(error_of("model: m\nlora: {max_cpu_loras: 1, max_loras: 2}\n").find("must be at least lora.max_loras"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\nbackend: cuda\nlora: {adapters: {a: x}}\n").find("CPU backend only"),
              std::string::npos);
}

// `mpirun -np N phi-worker --config configs/default.yaml` works for any N that divides the heads,
// and `phi-client "hi"` reaches it without --port.
TEST(ClusterConfig, DefaultConfigFollowsMpiAndPhiClient) {
    const auto path = test::source_dir() / "configs" / "default.yaml";
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    const ClusterConfig c = parse_cluster_config(ss.str(), path.string(), path.parent_path());
    EXPECT_EQ(c.tp, 0);
    EXPECT_EQ(c.tcp.port, native::k_default_port);
}

TEST(ClusterConfig, SkipTokenizerInit) {
    EXPECT_FALSE(parse_cluster_config("model: m\n", "x.yaml", "/b").skip_tokenizer_init);
    EXPECT_TRUE(parse_cluster_config("model: m\nskip_tokenizer_init: true\n", "x.yaml", "/b").skip_tokenizer_init);
    EXPECT_NE(error_of("model: m\nskip_tokenizer_init: maybe\n").find("skip_tokenizer_init"), std::string::npos);
}

// A bare checkpoint (the golden fixtures have no tokenizer) is refused naming the YAML keys that fix
// it, unless token-ids-only mode is on.
TEST(ClusterConfig, BareCheckpointErrorNamesTheYamlKeys) {
    const auto bare = test::fixture_dir("phi1");
    try {
        require_tokenizer_or_ids_only(bare, false);
        FAIL() << "accepted a folder without tokenizer.json";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("has no tokenizer.json"), std::string::npos) << what;
        EXPECT_NE(what.find("`tokenizer:`"), std::string::npos) << what;
        EXPECT_NE(what.find("`skip_tokenizer_init: true`"), std::string::npos) << what;
    }
    EXPECT_NO_THROW(require_tokenizer_or_ids_only(bare, true));
    EXPECT_NO_THROW(require_tokenizer_or_ids_only(test::fixture_dir("serving_tokenizer"), false));
}

TEST(ClusterConfig, QuantizedDtypesAndActivationMode) {
    auto parse = [](const std::string& y) { return parse_cluster_config(y, "test.yaml", "/base"); };
    EXPECT_EQ(parse("model: m\ndtype: int8\n").dtype, "int8");
    const ClusterConfig c = parse("model: m\ndtype: int4\nquant_activations: int8\n");
    EXPECT_EQ(c.dtype, "int4");
    EXPECT_EQ(c.quant_activations, "int8");
    EXPECT_EQ(parse("model: m\ndtype: int8\n").quant_activations, "f32");
    EXPECT_NE(error_of("model: m\nquant_activations: int8\n")
                  .find("quant_activations: int8 quantizes the inputs of int8/int4 linear weights, but dtype is bf16"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\ndtype: int8\nquant_activations: int4\n").find("quant_activations: 'int4' is not one of"),
              std::string::npos);
}

TEST(ClusterConfig, ErrorsNameTheKeyPath) {
    EXPECT_NE(error_of("model: m\nbatching:\n  max_num_seq: 3\n").find("batching.max_num_seq: unknown key"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\ntp: two\n").find("tp: 'two' is not an integer"), std::string::npos);
    EXPECT_NE(error_of("model: m\nadmission:\n  max_queued: 0\n").find("admission.max_queued: 0 is out of range"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\ndtype: fp8\n").find("dtype: 'fp8' is not one of"), std::string::npos);
    EXPECT_NE(error_of("model: m\nlisten:\n  http: localhost\n").find("listen.http"), std::string::npos);
    EXPECT_NE(error_of("model: m\nlisten:\n  http: localhost:99999\n").find("port"), std::string::npos);
    EXPECT_NE(error_of("tp: 1\n").find("'model'"), std::string::npos);
    EXPECT_NE(error_of("model: [1, 2\n").find("invalid YAML"), std::string::npos);
    EXPECT_NE(error_of("- a\n- b\n").find("mapping"), std::string::npos);
    EXPECT_NE(error_of("model: m\nlisten:\n  http: \"off\"\n  tcp: \"off\"\n").find("at least one"),
              std::string::npos);
    EXPECT_NE(error_of("model: m\nwatchdog:\n  heartbeat_ms: 5000\n  plan_wait_ms: 6000\n").find("plan_wait_ms"),
              std::string::npos);
}

// YAML keys may be any node; ours are plain names, and a list or mapping key is named by its path
// (the YAML fuzzer found these escaping as yaml-cpp's "bad conversion").
TEST(ClusterConfig, NonScalarKeysAreNamedByTheirPath) {
    EXPECT_NE(error_of("[a]: 1\n").find("config: a key must be a plain name, not a list"), std::string::npos)
        << error_of("[a]: 1\n");
    const std::string nested = error_of("model: m\nlisten:\n  ? tcp: x\n  : 1\n");
    EXPECT_NE(nested.find("listen: a key must be a plain name, not a mapping"), std::string::npos) << nested;
    const std::string deep = error_of("model: m\nkv_cache:\n  ? [1, 2]\n  : 3\n");
    EXPECT_NE(deep.find("kv_cache: a key must be a plain name"), std::string::npos) << deep;
    EXPECT_EQ(error_of("model: m\n? ~\n: 1\n").find("<escaped"), std::string::npos);
}

}  // namespace
}  // namespace phi::app
