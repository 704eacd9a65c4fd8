// Writes a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors, bf16) with random
// A and B for a Phi-2-shaped base checkpoint, for benchmarks:
//   make_random_adapter BASE_DIR OUT_DIR [--rank 16] [--alpha 32] [--seed 1]
// Every layer, all six Phi-2 target modules (q_proj, k_proj, v_proj, dense, fc1, fc2), shapes read
// from BASE_DIR/config.json. A and B are small uniform noise from a xorshift seeded by --seed, so
// adapters with different seeds differ; B is not zero (PEFT's initial B would change nothing).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    float amplitude;  // values are uniform in [-amplitude/2, amplitude/2)
};

uint16_t to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

int usage(const char* argv0) {
    std::fprintf(stderr, "usage: %s BASE_DIR OUT_DIR [--rank R] [--alpha A] [--seed S]\n", argv0);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) return usage(argv[0]);
    const std::filesystem::path base = argv[1], out = argv[2];
    int64_t rank = 16;
    double alpha = 32;
    uint64_t seed = 1;
    for (int i = 3; i < argc; i += 2) {
        if (i + 1 >= argc) return usage(argv[0]);
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--rank")
            rank = std::stoll(v);
        else if (k == "--alpha")
            alpha = std::stod(v);
        else if (k == "--seed")
            seed = std::stoull(v);
        else
            return usage(argv[0]);
    }
    if (rank <= 0 || seed == 0) {
        std::fprintf(stderr, "--rank and --seed must be positive\n");
        return 2;
    }
    std::ifstream cf(base / "config.json");
    if (!cf) {
        std::fprintf(stderr, "cannot open %s\n", (base / "config.json").c_str());
        return 2;
    }
    const nlohmann::json cfg = nlohmann::json::parse(cf);
    if (cfg.value("model_type", "") != "phi") {
        std::fprintf(stderr, "%s: model_type is '%s'; this writer knows Phi-1/1.5/2 (model_type phi) only\n",
                     base.c_str(), cfg.value("model_type", "").c_str());
        return 2;
    }
    const int64_t H = cfg.at("hidden_size"), I = cfg.at("intermediate_size"), L = cfg.at("num_hidden_layers");
    const int64_t n_heads = cfg.at("num_attention_heads");
    const int64_t n_kv = cfg.value("num_key_value_heads", n_heads);
    const int64_t kv_out = H / n_heads * n_kv;

    // [out, in] of each target module's base weight.
    const std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> modules = {
        {"self_attn.q_proj", {H, H}},
        {"self_attn.k_proj", {kv_out, H}},
        {"self_attn.v_proj", {kv_out, H}},
        {"self_attn.dense", {H, H}},
        {"mlp.fc1", {I, H}},
        {"mlp.fc2", {H, I}}};
    std::vector<Tensor> ts;
    for (int64_t l = 0; l < L; ++l)
        for (const auto& [m, shape] : modules) {
            const std::string p = "base_model.model.model.layers." + std::to_string(l) + "." + m;
            // A like kaiming-uniform at this fan-in (PEFT's init), B small: the update is a few percent
            // of the base linear's output, as a trained adapter's is.
            ts.push_back(
                {p + ".lora_A.weight", {rank, shape.second}, 2.0f / float(std::sqrt(double(shape.second)))});
            ts.push_back({p + ".lora_B.weight", {shape.first, rank}, 0.02f});
        }

    const nlohmann::json acfg = {{"peft_type", "LORA"},
                                 {"base_model_name_or_path", std::filesystem::absolute(base).string()},
                                 {"r", rank},
                                 {"lora_alpha", alpha},
                                 {"lora_dropout", 0.0},
                                 {"target_modules", {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"}},
                                 {"bias", "none"},
                                 {"fan_in_fan_out", false},
                                 {"use_rslora", false},
                                 {"use_dora", false},
                                 {"modules_to_save", nullptr},
                                 {"rank_pattern", nlohmann::json::object()},
                                 {"alpha_pattern", nlohmann::json::object()},
                                 {"layers_to_transform", nullptr},
                                 {"inference_mode", true},
                                 {"task_type", "CAUSAL_LM"}};
    std::filesystem::create_directories(out);
    std::ofstream(out / "adapter_config.json") << acfg.dump(2) << "\n";

    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t off = 0;
    for (const Tensor& t : ts) {
        const uint64_t n = uint64_t(t.shape[0] * t.shape[1]);
        header[t.name] = {{"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {off, off + 2 * n}}};
        off += 2 * n;
    }
    std::string h = header.dump();
    while (h.size() % 8) h += ' ';
    std::ofstream f(out / "adapter_model.safetensors", std::ios::binary);
    const uint64_t hl = h.size();
    f.write(reinterpret_cast<const char*>(&hl), 8);
    f.write(h.data(), std::streamsize(h.size()));
    uint64_t s = 0x9E3779B97F4A7C15ull * seed;
    std::vector<uint16_t> buf;
    for (const Tensor& t : ts) {
        const uint64_t n = uint64_t(t.shape[0] * t.shape[1]);
        buf.resize(n);
        for (uint64_t i = 0; i < n; ++i) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            const float u = float(s >> 40) / float(1 << 24) - 0.5f;  // [-0.5, 0.5)
            buf[i] = to_bf16(t.amplitude * u);
        }
        f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(n * 2));
    }
    if (!f) {
        std::fprintf(stderr, "writing %s failed\n", (out / "adapter_model.safetensors").c_str());
        return 1;
    }
    std::printf("wrote %s: rank %lld, alpha %g, seed %llu, %zu tensors, %.1f MB\n", out.c_str(),
                (long long)rank, alpha, (unsigned long long)seed, ts.size(), double(off) / 1e6);
    return 0;
}
