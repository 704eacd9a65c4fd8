// Writes an HF model folder (config.json + model.safetensors, bf16) with random weights in the
// shape of a real Phi model, for benchmarks: `make_random_checkpoint phi2|phi3-mini OUT_DIR`.
// Values are small uniform noise from a fixed-seed xorshift; the shapes and the bytes per token
// read are what matter.
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
};

uint16_t to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s phi2|phi3-mini OUT_DIR\n", argv[0]);
        return 2;
    }
    const std::string preset = argv[1];
    const std::filesystem::path out = argv[2];
    nlohmann::json cfg;
    std::vector<Tensor> ts;
    int64_t V = 0, H = 0, I = 0, L = 0;
    if (preset == "phi2") {
        V = 51200, H = 2560, I = 10240, L = 32;
        cfg = {{"architectures", {"PhiForCausalLM"}}, {"model_type", "phi"}, {"hidden_size", H},
               {"intermediate_size", I}, {"num_hidden_layers", L}, {"num_attention_heads", 32},
               {"num_key_value_heads", 32}, {"partial_rotary_factor", 0.4}, {"rope_theta", 10000.0},
               {"max_position_embeddings", 2048}, {"layer_norm_eps", 1e-5}, {"hidden_act", "gelu_new"},
               {"vocab_size", V}, {"tie_word_embeddings", false}, {"qk_layernorm", false},
               {"bos_token_id", 50256}, {"eos_token_id", 50256}, {"torch_dtype", "bfloat16"}};
        ts.push_back({"model.embed_tokens.weight", {V, H}});
        for (int64_t l = 0; l < L; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            for (const char* n : {"q_proj", "k_proj", "v_proj", "dense"}) {
                ts.push_back({p + "self_attn." + n + ".weight", {H, H}});
                ts.push_back({p + "self_attn." + n + ".bias", {H}});
            }
            ts.push_back({p + "mlp.fc1.weight", {I, H}});
            ts.push_back({p + "mlp.fc1.bias", {I}});
            ts.push_back({p + "mlp.fc2.weight", {H, I}});
            ts.push_back({p + "mlp.fc2.bias", {H}});
            ts.push_back({p + "input_layernorm.weight", {H}});
            ts.push_back({p + "input_layernorm.bias", {H}});
        }
        ts.push_back({"model.final_layernorm.weight", {H}});
        ts.push_back({"model.final_layernorm.bias", {H}});
        ts.push_back({"lm_head.weight", {V, H}});
        ts.push_back({"lm_head.bias", {V}});
    } else if (preset == "phi3-mini") {
        V = 32064, H = 3072, I = 8192, L = 32;
        cfg = {{"architectures", {"Phi3ForCausalLM"}}, {"model_type", "phi3"}, {"hidden_size", H},
               {"intermediate_size", I}, {"num_hidden_layers", L}, {"num_attention_heads", 32},
               {"num_key_value_heads", 32}, {"rope_theta", 10000.0}, {"max_position_embeddings", 4096},
               {"original_max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"},
               {"vocab_size", V}, {"tie_word_embeddings", false}, {"sliding_window", 2047},
               {"bos_token_id", 1}, {"eos_token_id", 32000}, {"torch_dtype", "bfloat16"}};
        ts.push_back({"model.embed_tokens.weight", {V, H}});
        for (int64_t l = 0; l < L; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            ts.push_back({p + "self_attn.qkv_proj.weight", {3 * H, H}});
            ts.push_back({p + "self_attn.o_proj.weight", {H, H}});
            ts.push_back({p + "mlp.gate_up_proj.weight", {2 * I, H}});
            ts.push_back({p + "mlp.down_proj.weight", {H, I}});
            ts.push_back({p + "input_layernorm.weight", {H}});
            ts.push_back({p + "post_attention_layernorm.weight", {H}});
        }
        ts.push_back({"model.norm.weight", {H}});
        ts.push_back({"lm_head.weight", {V, H}});
    } else {
        std::fprintf(stderr, "unknown preset '%s' (phi2, phi3-mini)\n", preset.c_str());
        return 2;
    }
    std::filesystem::create_directories(out);
    std::ofstream(out / "config.json") << cfg.dump(2) << "\n";

    nlohmann::json header = nlohmann::json::object();
    uint64_t off = 0;
    for (const Tensor& t : ts) {
        uint64_t n = 1;
        for (int64_t d : t.shape) n *= uint64_t(d);
        header[t.name] = {{"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {off, off + 2 * n}}};
        off += 2 * n;
    }
    std::string h = header.dump();
    while ((h.size() + 8) % 8) h += ' ';
    std::ofstream f(out / "model.safetensors", std::ios::binary);
    const uint64_t hl = h.size();
    f.write(reinterpret_cast<const char*>(&hl), 8);
    f.write(h.data(), std::streamsize(h.size()));
    uint64_t s = 0x9E3779B97F4A7C15ull;
    std::vector<uint16_t> buf;
    for (const Tensor& t : ts) {
        uint64_t n = 1;
        for (int64_t d : t.shape) n *= uint64_t(d);
        const bool is_norm_w = t.name.find("layernorm.weight") != std::string::npos ||
                               t.name.find("norm.weight") != std::string::npos;
        buf.resize(n);
        for (uint64_t i = 0; i < n; ++i) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            const float u = float(s >> 40) / float(1 << 24) - 0.5f;  // [-0.5, 0.5)
            buf[i] = to_bf16(is_norm_w ? 1.0f + 0.1f * u : 0.04f * u);
        }
        f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(n * 2));
    }
    std::printf("wrote %s: %zu tensors, %.2f GB\n", out.c_str(), ts.size(), double(off) / 1e9);
    return 0;
}
