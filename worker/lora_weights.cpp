// Reading one rank's slice of a PEFT adapter: which modules of this architecture can be adapted,
// how each is cut (the base weight's LinearShards), and the checks that refuse everything else.
#include "worker/lora_weights.h"

#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"
#include "sharding/safetensors.h"

namespace phi {
namespace {

enum class Group { Qkv, Out, Up, Down };

/// One adaptable module of a layer and how this rank cuts its A and B.
struct ModuleSpec {
    std::string suffix;       // after "model.layers.N.", e.g. "self_attn.q_proj"
    Group group;
    int64_t out = 0, in = 0;  // the base weight's global [out, in]
    std::vector<Range> b_rows;  // column-parallel: B's rows held (A whole); empty: all rows
    Range a_cols;               // row-parallel: A's columns held (B whole); empty: all columns
    int64_t offset = 0;         // first row of its output within the group's local output
};

std::vector<ModuleSpec> adaptable_modules(const ModelConfig& cfg, const ShardPlan& plan) {
    const LinearShards sh = linear_shards(cfg, plan);
    const int64_t d = cfg.d_model, hd = cfg.head_dim, nh = cfg.n_heads, nkv = cfg.n_kv_heads, dff = cfg.d_ff;
    const int64_t q_local = plan.n_heads_local * hd, kv_local = plan.n_kv_heads_local * hd;
    const ModuleSpec q{"self_attn.q_proj", Group::Qkv, nh * hd, d, {sh.q_rows}, {}, 0};
    const ModuleSpec k{"self_attn.k_proj", Group::Qkv, nkv * hd, d, {sh.kv_rows}, {}, q_local};
    const ModuleSpec v{"self_attn.v_proj", Group::Qkv, nkv * hd, d, {sh.kv_rows}, {}, q_local + kv_local};
    switch (cfg.arch) {
        case Arch::Phi:
            return {q, k, v,
                    {"self_attn.dense", Group::Out, d, nh * hd, {}, sh.o_cols, 0},
                    {"mlp.fc1", Group::Up, dff, d, sh.up_rows, {}, 0},
                    {"mlp.fc2", Group::Down, d, dff, {}, sh.down_cols, 0}};
        case Arch::Phi3:
            return {{"self_attn.qkv_proj", Group::Qkv, (nh + 2 * nkv) * hd, d, sh.qkv_rows, {}, 0},
                    {"self_attn.o_proj", Group::Out, d, nh * hd, {}, sh.o_cols, 0},
                    {"mlp.gate_up_proj", Group::Up, 2 * dff, d, sh.up_rows, {}, 0},
                    {"mlp.down_proj", Group::Down, d, dff, {}, sh.down_cols, 0}};
        case Arch::PhiMoE:
            return {q, k, v, {"self_attn.o_proj", Group::Out, d, nh * hd, {}, sh.o_cols, 0}};
    }
    return {};
}

std::string layer_key(int64_t layer, const std::string& suffix) {
    return fmt::format("model.layers.{}.{}", layer, suffix);
}

/// Linear modules of the model that LoRA could name but phi-cluster does not adapt, and why.
std::vector<std::pair<std::string, std::string>> unsupported_modules(const ModelConfig& cfg) {
    std::vector<std::pair<std::string, std::string>> out = {
        {"lm_head", "LoRA on the LM head is not supported"},
        {"model.embed_tokens", "LoRA on the embedding is not supported"}};
    if (cfg.arch == Arch::PhiMoE) {
        for (int64_t l = 0; l < cfg.n_layers; ++l) {
            out.emplace_back(layer_key(l, "block_sparse_moe.gate"), "LoRA on the PhiMoE router is not supported");
            for (int64_t e = 0; e < cfg.n_experts; ++e)
                for (const char* w : {"w1", "w2", "w3"})
                    out.emplace_back(layer_key(l, fmt::format("block_sparse_moe.experts.{}.{}", e, w)),
                                     "LoRA on PhiMoE experts is not supported (only attention projections)");
        }
    }
    return out;
}

bool entry_names(const std::string& entry, const std::string& key) {
    return key == entry ||
           (key.size() > entry.size() && key.ends_with(entry) && key[key.size() - entry.size() - 1] == '.');
}

/// Refuses target_modules that name something this architecture cannot adapt here.
void check_targets(const LoraConfig& c, const ModelConfig& cfg, const std::vector<ModuleSpec>& mods) {
    std::vector<std::string> supported_keys, supported_names;
    for (const ModuleSpec& m : mods) supported_names.push_back(m.suffix.substr(m.suffix.find('.') + 1));
    for (int64_t l = 0; l < cfg.n_layers; ++l)
        for (const ModuleSpec& m : mods) supported_keys.push_back(layer_key(l, m.suffix));
    const auto unsupported = unsupported_modules(cfg);
    if (c.target_regex) {
        for (const auto& [key, why] : unsupported)
            PHI_CHECK(!lora_targets(c, key), "{}: 'target_modules' regex \"{}\" matches {}: {}", c.origin,
                      *c.target_regex, key, why);
        return;
    }
    for (const std::string& e : c.target_list) {
        bool ok = false;
        for (const std::string& key : supported_keys) ok = ok || entry_names(e, key);
        if (ok) continue;
        for (const auto& [key, why] : unsupported)
            PHI_CHECK(!entry_names(e, key), "{}: 'target_modules' entry \"{}\" names {}: {}", c.origin, e, key, why);
        PHI_FAIL("{}: 'target_modules' entry \"{}\" names no module of {} that can be adapted (supported: {})",
                 c.origin, e, cfg.architecture, fmt::join(supported_names, ", "));
    }
}

std::string read_text(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    PHI_CHECK(in.good(), "cannot open {}", path.string());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// One adapted module's A and B on this rank, with its place in the group.
struct ModulePart {
    const ModuleSpec* spec;
    OwnedTensor a;  // [r, in_local]
    OwnedTensor b;  // [out_local, r]
    float scale;
};

/// Stacks the group's A's and places each scale * B block-diagonally (rows at the module's offset,
/// columns at its rank's offset), so x A^T B^T of the group is the sum of the modules' updates.
LoraPair assemble(const std::vector<ModulePart>& parts, int64_t out_local, int64_t in_local) {
    if (parts.empty()) return {};
    int64_t r_sum = 0;
    for (const ModulePart& p : parts) r_sum += p.a.rows();
    LoraPair pair;
    pair.a.dtype = pair.b.dtype = DType::F32;
    pair.a.shape = {r_sum, in_local};
    pair.b.shape = {out_local, r_sum};
    pair.a.bytes = AlignedBuffer(size_t(r_sum * in_local) * 4);
    pair.b.bytes = AlignedBuffer(size_t(out_local * r_sum) * 4);  // zero: off-diagonal blocks
    int64_t r0 = 0;
    for (const ModulePart& p : parts) {
        const int64_t r = p.a.rows();
        PHI_CHECK(p.a.cols() == in_local, "LoRA A holds {} input columns, the base shard {}", p.a.cols(), in_local);
        std::memcpy(pair.a.f32() + r0 * in_local, p.a.f32(), size_t(r * in_local) * 4);
        for (int64_t i = 0; i < p.b.rows(); ++i)
            for (int64_t j = 0; j < r; ++j)
                pair.b.f32()[(p.spec->offset + i) * r_sum + r0 + j] = p.scale * p.b.f32()[i * r + j];
        r0 += r;
    }
    return pair;
}

}  // namespace

LoraAdapterWeights load_lora_adapter(const std::filesystem::path& dir, const ModelConfig& cfg, const ShardPlan& plan,
                                     const LoraLoadOptions& opts) {
    const std::filesystem::path cfg_path = dir / "adapter_config.json";
    const std::filesystem::path st_path = dir / "adapter_model.safetensors";
    PHI_CHECK(std::filesystem::is_regular_file(cfg_path), "LoRA adapter {}: no adapter_config.json (a PEFT adapter "
                                                          "folder holds adapter_config.json and adapter_model.safetensors)",
              dir.string());
    if (!std::filesystem::is_regular_file(st_path)) {
        PHI_CHECK(!std::filesystem::exists(dir / "adapter_model.bin"),
                  "LoRA adapter {}: adapter_model.bin (a pickle) is not read, since loading it could run code; save "
                  "the adapter as safetensors (PEFT: save_pretrained(dir, safe_serialization=True))",
                  dir.string());
        PHI_FAIL("LoRA adapter {}: no adapter_model.safetensors", dir.string());
    }
    PHI_CHECK(cfg.layout == WeightLayout::HfNative,
              "LoRA adapter {}: the base model uses the legacy phi-msft tensor layout; adapters are supported on the "
              "transformers layout (convert the checkpoint with transformers' convert_phi_weights_to_hf.py)",
              dir.string());

    LoraAdapterWeights w;
    w.name = dir.filename().string();
    if (w.name.empty()) w.name = dir.parent_path().filename().string();
    w.config = parse_lora_config(read_text(cfg_path), cfg_path.string());
    const LoraConfig& c = w.config;
    check_lora_base_model(c, cfg);
    const std::vector<ModuleSpec> mods = adaptable_modules(cfg, plan);
    check_targets(c, cfg, mods);

    const SafetensorsFile file(st_path);
    const std::string prefix = "base_model.model.";
    std::set<std::string> used;
    auto tensor = [&](const std::string& key, const char* which) -> const TensorInfo& {
        const std::string name = prefix + key + "." + which + ".weight";
        auto it = file.tensors().find(name);
        PHI_CHECK(it != file.tensors().end(), "LoRA adapter {}: tensor '{}' is missing from {} (the config targets {})",
                  dir.string(), name, st_path.string(), key);
        used.insert(name);
        return it->second;
    };

    const int64_t hd = cfg.head_dim, d = cfg.d_model;
    const int64_t qkv_local = (plan.n_heads_local + 2 * plan.n_kv_heads_local) * hd;
    const LinearShards sh = linear_shards(cfg, plan);
    int64_t up_local = 0;
    for (const Range& r : sh.up_rows) up_local += r.size();
    bool any = false;
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        std::vector<ModulePart> qkv, out, up, down;
        for (const ModuleSpec& m : mods) {
            const std::string key = layer_key(l, m.suffix);
            if (!lora_targets(c, key)) continue;
            any = true;
            const int64_t r = lora_rank(c, key);
            PHI_CHECK(r <= opts.max_lora_rank,
                      "LoRA adapter {}: {} has rank {} ('r' or 'rank_pattern'), above max_lora_rank {}; raise "
                      "max_lora_rank or use an adapter of lower rank",
                      dir.string(), key, r, opts.max_lora_rank);
            const TensorInfo& a = tensor(key, "lora_A");
            const TensorInfo& b = tensor(key, "lora_B");
            PHI_CHECK(a.shape == std::vector<int64_t>({r, m.in}) && b.shape == std::vector<int64_t>({m.out, r}),
                      "LoRA adapter {}: {} has lora_A [{}] and lora_B [{}], but the base model's {} is [{}, {}] with "
                      "rank {}: expected lora_A [{}, {}] and lora_B [{}, {}] (an adapter for another model size?)",
                      dir.string(), key, fmt::join(a.shape, ", "), fmt::join(b.shape, ", "), m.suffix, m.out, m.in, r,
                      r, m.in, m.out, r);
            const Range all_r{0, r};
            const std::vector<Range> b_rows = m.b_rows.empty() ? std::vector<Range>{Range{0, m.out}} : m.b_rows;
            ModulePart p{&m, load_slice(a, std::span<const Range>(&all_r, 1), m.a_cols, DType::F32),
                         load_slice(b, b_rows, Range{}, DType::F32), float(lora_scale(c, key))};
            w.bytes_read += slice_source_bytes(a, std::span<const Range>(&all_r, 1), m.a_cols) +
                            slice_source_bytes(b, b_rows, Range{});
            switch (m.group) {
                case Group::Qkv: qkv.push_back(std::move(p)); break;
                case Group::Out: out.push_back(std::move(p)); break;
                case Group::Up: up.push_back(std::move(p)); break;
                case Group::Down: down.push_back(std::move(p)); break;
            }
        }
        LoraLayerWeights lw;
        lw.qkv = assemble(qkv, qkv_local, d);
        lw.out = assemble(out, d, plan.n_heads_local * hd);
        lw.up = assemble(up, up_local, d);
        lw.down = assemble(down, d, plan.d_ff_local);
        for (const LoraPair* p : {&lw.qkv, &lw.out, &lw.up, &lw.down}) w.max_rank = std::max(w.max_rank, p->rank());
        w.layers.push_back(std::move(lw));
    }
    PHI_CHECK(any, "{}: 'target_modules' matches no module of this {} model", c.origin, cfg.architecture);
    for (const auto& [name, t] : file.tensors())
        PHI_CHECK(used.count(name), "LoRA adapter {}: tensor '{}' in {} is not the lora_A/lora_B weight of a module "
                                    "the config targets; it would be ignored, so the adapter is refused",
                  dir.string(), name, st_path.string());
    return w;
}

}  // namespace phi
