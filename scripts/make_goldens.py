#!/usr/bin/env python3
"""Build tiny random-weight Phi checkpoints and record HF transformers' outputs as golden fixtures.

Every fixture lands in tests/fixtures/<name>/:
  config.json             spelled as the Hugging Face hub checkpoints spell it (one fixture uses HF v5's
                          `rope_parameters` spelling, written by the pinned transformers itself)
  generation_config.json  hub-style; every eos id lies in the padded vocab range (>= tokenizer_size) so
                          greedy generation never stops early
  model.safetensors       fp32, hub tensor names and layout (PhiMoE: per-expert w1/w2/w3, `block_sparse_moe.gate`)
  golden.json             HF logits / greedy tokens (see docs/GOLDENS.md for the schema and HF semantics)

Reference = HF transformers (versions pinned in scripts/requirements-goldens.txt), attn_implementation="eager",
fp32 on CPU, one thread. Every fixture is loaded back from the folder it was written to with from_pretrained;
weights must round-trip bit-exactly, and a set of semantic assertions about the pinned HF version (LongRoPE
switching and the generate() re-prefill, attention_factor / mscale, sliding-window mask rule, routing) must hold,
otherwise the script fails loudly. Deterministic: fixed seeds per fixture.

Usage:  python scripts/make_goldens.py [--only NAME ...] [--out DIR]
"""

import argparse
import copy
import json
import math
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    Phi3ForCausalLM,
    PhiForCausalLM,
    PhimoeForCausalLM,
)
from transformers.activations import ACT2FN, NewGELUActivation  # noqa: E402
from transformers.masking_utils import create_sliding_window_causal_mask  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures"
N_NEW = 32
MIN_MARGIN = 1e-3
MAX_SEED_TRIES = 200


class GoldenError(RuntimeError):
    pass


def check(cond, msg):
    if not cond:
        raise GoldenError(msg)


def f32(x):
    """A float32 value as a plain python float (exact)."""
    return float(np.float32(x))


def factor_list(values):
    """LongRoPE factors written like the hub does: float32 values printed as doubles."""
    return [f32(v) for v in values]


# ---------------------------------------------------------------------------------------------------------------
# Fixture specifications. Configs are written as on the hub (key spelling, extra keys); sizes are tiny.
# vocab sizes are not multiples of 8; tokenizer_size < vocab_size; all eos ids lie in [tokenizer_size, vocab).
# ---------------------------------------------------------------------------------------------------------------


def spec_phi1():
    V, T = 251, 240
    return dict(
        name="phi1", cls=PhiForCausalLM, vocab=V, T=T, prompt_len=12, init_scale=1.2,
        config={
            "_name_or_path": "microsoft/phi-1",
            "architectures": ["PhiForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": None,
            "embd_pdrop": 0.0,
            "eos_token_id": None,
            "hidden_act": "gelu_new",
            "hidden_size": 64,
            "initializer_range": 0.15,
            "intermediate_size": 128,
            "layer_norm_eps": 1e-05,
            "max_position_embeddings": 2048,
            "model_type": "phi",
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "num_key_value_heads": None,
            "partial_rotary_factor": 0.5,
            "qk_layernorm": False,
            "resid_pdrop": 0.0,
            "rope_scaling": None,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.37.0",
            "use_cache": True,
            "vocab_size": V,
        },
        generation_config={"_from_model_config": True, "transformers_version": "4.37.0"},
    )


def spec_phi2_qkln():
    V, T = 331, 301
    return dict(
        name="phi2_qkln", cls=PhiForCausalLM, vocab=V, T=T, prompt_len=13, init_scale=1.2,
        config={
            "_name_or_path": "microsoft/phi-2",
            "architectures": ["PhiForCausalLM"],
            "attention_dropout": 0.0,
            "bos_token_id": 330,
            "embd_pdrop": 0.0,
            "eos_token_id": 330,
            "hidden_act": "gelu_new",
            "hidden_size": 80,
            "initializer_range": 0.134,
            "intermediate_size": 160,
            "layer_norm_eps": 1e-05,
            "max_position_embeddings": 2048,
            "model_type": "phi",
            "num_attention_heads": 4,
            "num_hidden_layers": 3,
            "num_key_value_heads": 4,
            "partial_rotary_factor": 0.4,
            "qk_layernorm": True,
            "resid_pdrop": 0.1,
            "rope_scaling": None,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.37.0",
            "use_cache": True,
            "vocab_size": V,
        },
        generation_config={"_from_model_config": True, "bos_token_id": 330, "eos_token_id": 330,
                           "transformers_version": "4.37.0"},
    )


def spec_phi3_mini_4k_swa():
    V, T = 397, 357
    return dict(
        name="phi3_mini_4k_swa", cls=Phi3ForCausalLM, vocab=V, T=T, prompt_len=12, init_scale=1.2,
        config={
            "_name_or_path": "Phi-3-mini-4k-instruct",
            "architectures": ["Phi3ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "embd_pdrop": 0.0,
            "eos_token_id": 380,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.15,
            "intermediate_size": 128,
            "max_position_embeddings": 4096,
            "model_type": "phi3",
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "num_key_value_heads": 4,
            "original_max_position_embeddings": 4096,
            "pad_token_id": 380,
            "resid_pdrop": 0.0,
            "rms_norm_eps": 1e-05,
            "rope_scaling": None,
            "rope_theta": 10000.0,
            "sliding_window": 7,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.40.2",
            "use_cache": True,
            "vocab_size": V,
        },
        generation_config={"_from_model_config": True, "bos_token_id": 1, "eos_token_id": [380, 381, 387],
                           "pad_token_id": 380, "transformers_version": "4.40.2"},
    )


def spec_phi3_128k_longrope():
    V, T = 347, 320
    n = 8  # rotary_dim / 2 = 16 / 2
    return dict(
        name="phi3_128k_longrope", cls=Phi3ForCausalLM, vocab=V, T=T, prompt_len=10, long_prompt_len=20,
        init_scale=1.2,
        config={
            "_name_or_path": "Phi-3-mini-128k-instruct",
            "architectures": ["Phi3ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "embd_pdrop": 0.0,
            "eos_token_id": 340,
            "hidden_act": "silu",
            "hidden_size": 64,
            "initializer_range": 0.15,
            "intermediate_size": 128,
            "max_position_embeddings": 64,
            "model_type": "phi3",
            "num_attention_heads": 4,
            "num_hidden_layers": 3,
            "num_key_value_heads": 4,
            "original_max_position_embeddings": 16,
            "pad_token_id": 340,
            "resid_pdrop": 0.0,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {
                "long_factor": factor_list([1.08 * (9.0 ** (i / (n - 1))) for i in range(n)]),
                "short_factor": factor_list([1.0 + 0.07 * i * i / (n - 1) for i in range(n)]),
                "type": "longrope",
            },
            "rope_theta": 10000.0,
            "sliding_window": 262144,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.41.0",
            "use_cache": True,
            "vocab_size": V,
        },
        generation_config={"_from_model_config": True, "bos_token_id": 1, "eos_token_id": [340, 341, 347 - 1],
                           "pad_token_id": 340, "transformers_version": "4.41.0"},
    )


def spec_phi3_rope_params():
    """Written by the pinned transformers' own save_pretrained (HF v5 `rope_parameters` spelling)."""
    V, T = 293, 280
    n = 4  # head_dim 16, partial_rotary_factor 0.5 -> rotary_dim 8 -> 4 factors
    legacy = {
        "architectures": ["Phi3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 285,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.15,
        "intermediate_size": 112,
        "max_position_embeddings": 128,
        "model_type": "phi3",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "original_max_position_embeddings": 16,
        "pad_token_id": 285,
        "partial_rotary_factor": 0.5,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "long_factor": factor_list([1.5, 4.25, 11.0, 23.5]),
            "short_factor": factor_list([1.0, 1.05, 1.2, 1.6]),
            "type": "longrope",
        },
        "rope_theta": 5000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": V,
    }
    assert len(legacy["rope_scaling"]["long_factor"]) == n
    return dict(
        name="phi3_rope_params", cls=Phi3ForCausalLM, vocab=V, T=T, prompt_len=9, long_prompt_len=24,
        init_scale=1.2, config=legacy, write_config_with_hf=True,
        generation_config={"bos_token_id": 1, "eos_token_id": [285, 286], "pad_token_id": 285},
    )


def spec_phi4_mini():
    V, T = 269, 240
    n = 6  # head_dim 16 * 0.75 = 12 -> 6 factors
    return dict(
        name="phi4_mini", cls=Phi3ForCausalLM, vocab=V, T=T, prompt_len=12, long_prompt_len=70, init_scale=1.2,
        config={
            "architectures": ["Phi3ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 260,
            "embd_pdrop": 0.0,
            "eos_token_id": 260,
            "full_attn_mod": 1,
            "hidden_act": "silu",
            "hidden_size": 96,
            "initializer_range": 0.1225,
            "intermediate_size": 160,
            "interpolate_factor": 1,
            "lm_head_bias": False,
            "max_position_embeddings": 2048,
            "mlp_bias": False,
            "model_type": "phi3",
            "num_attention_heads": 6,
            "num_hidden_layers": 2,
            "num_key_value_heads": 2,
            "original_max_position_embeddings": 64,
            "pad_token_id": 260,
            "partial_rotary_factor": 0.75,
            "resid_pdrop": 0.0,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {
                "long_factor": factor_list([1.0, 1.118320672, 1.8, 4.6, 12.0, 30.5]),
                "short_factor": factor_list([1.0] * n),
                "type": "longrope",
            },
            "rope_theta": 10000.0,
            "sliding_window": 262144,
            "tie_word_embeddings": True,
            "torch_dtype": "float32",
            "transformers_version": "4.45.0",
            "use_cache": True,
            "vocab_size": V,
        },
        generation_config={"_from_model_config": True, "bos_token_id": 260, "eos_token_id": [262, 260],
                           "pad_token_id": 260, "transformers_version": "4.45.0"},
    )


def spec_phi_40q10kv():
    V, T = 211, 200
    return dict(
        name="phi_40q10kv", cls=Phi3ForCausalLM, vocab=V, T=T, prompt_len=11, init_scale=1.2,
        config={
            "architectures": ["Phi3ForCausalLM"],
            "attention_bias": False,
            "attention_dropout": 0.0,
            "bos_token_id": 205,
            "embd_pdrop": 0.0,
            "eos_token_id": 205,
            "hidden_act": "silu",
            "hidden_size": 160,
            "initializer_range": 0.0949,
            "intermediate_size": 64,
            "max_position_embeddings": 16384,
            "model_type": "phi3",
            "num_attention_heads": 40,
            "num_hidden_layers": 2,
            "num_key_value_heads": 10,
            "original_max_position_embeddings": 16384,
            "pad_token_id": 205,
            "resid_pdrop": 0.0,
            "rms_norm_eps": 1e-05,
            "rope_scaling": None,
            "rope_theta": 250000,
            "sliding_window": None,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.47.0",
            "use_cache": True,
            "vocab_size": V,
        },
        generation_config={"_from_model_config": True, "bos_token_id": 205, "eos_token_id": [205, 207],
                           "pad_token_id": 205, "transformers_version": "4.47.0"},
    )


def spec_phimoe():
    V, T = 307, 290
    n = 8  # head_dim 16 -> 8 factors
    return dict(
        name="phimoe", cls=PhimoeForCausalLM, vocab=V, T=T, prompt_len=10, long_prompt_len=20, init_scale=1.2,
        config={
            "_name_or_path": "Phi-3.5-MoE-instruct",
            "architectures": ["PhiMoEForCausalLM"],
            "attention_bias": True,
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 300,
            "hidden_act": "silu",
            "hidden_dropout": 0.0,
            "hidden_size": 64,
            "initializer_range": 0.15,
            "input_jitter_noise": 0.01,
            "intermediate_size": 48,
            "lm_head_bias": True,
            "max_position_embeddings": 64,
            "model_type": "phimoe",
            "num_attention_heads": 4,
            "num_experts_per_tok": 2,
            "num_hidden_layers": 2,
            "num_key_value_heads": 2,
            "num_local_experts": 4,
            "original_max_position_embeddings": 16,
            "output_router_logits": False,
            "rms_norm_eps": 1e-05,
            "rope_scaling": {
                "long_factor": factor_list([1.0 + 1.9 * i for i in range(n)]),
                "long_mscale": 1.243163121016122,
                "original_max_position_embeddings": 16,
                "short_factor": factor_list([1.0 + 0.05 * i for i in range(n)]),
                "short_mscale": 1.1,
                "type": "longrope",
            },
            "rope_theta": 10000.0,
            "router_aux_loss_coef": 0.0,
            "router_jitter_noise": 0.01,
            "sliding_window": 131072,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.43.3",
            "use_cache": True,
            "vocab_size": V,
        },
        generation_config={"_from_model_config": True, "bos_token_id": 1, "eos_token_id": [300, 301, 306],
                           "transformers_version": "4.43.3"},
    )


SPECS = [spec_phi1, spec_phi2_qkln, spec_phi3_mini_4k_swa, spec_phi3_128k_longrope, spec_phi3_rope_params,
         spec_phi4_mini, spec_phi_40q10kv, spec_phimoe]


# ---------------------------------------------------------------------------------------------------------------
# Weights: random init, hub-layout conversion, writing, loading back.
# ---------------------------------------------------------------------------------------------------------------


def load_kwargs(spec):
    kw = dict(attn_implementation="eager", dtype=torch.float32)
    if spec["cls"] is PhimoeForCausalLM:
        kw["experts_implementation"] = "eager"
    return kw


def config_from_dict(spec, cfg_dict):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.json").write_text(json.dumps(cfg_dict, indent=2))
        return AutoConfig.from_pretrained(d)


def init_weights(model, spec, gen):
    """Deterministic random init, scaled so logits are far from flat."""
    cfg = model.config
    H = cfg.hidden_size
    std = spec["init_scale"] / math.sqrt(H)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        shape = tuple(p.shape)

        def rn(*s):
            return torch.randn(*s, generator=gen, dtype=torch.float32)

        leaf = name.split(".")[-2]
        if "norm" in leaf and name.endswith("weight"):
            val = 1.0 + 0.1 * rn(*shape)
        elif "norm" in leaf and name.endswith("bias"):
            val = 0.05 * rn(*shape)
        elif name.endswith("bias"):
            val = 0.1 * rn(*shape)
        elif "embed_tokens" in name:
            # tied models: a unit-variance embedding would dominate the residual and the tied lm_head would just
            # echo the input token; keep it at the linear-layer scale there
            val = rn(*shape) * (std if cfg.tie_word_embeddings else 1.0)
        elif name.endswith("router.weight"):
            # A shared direction plus a small per-expert perturbation: router logits are close to each other
            # relative to their size, so sparsemixer's relative-threshold mask keeps several experts for some
            # tokens (non-trivial softmax weights) and masks them for others.
            common = rn(1, shape[1]) * (2.0 / math.sqrt(H))
            val = common + rn(*shape) * (0.25 / math.sqrt(H))
        elif name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            fan_in = shape[-1]
            val = rn(*shape) * (spec["init_scale"] / math.sqrt(fan_in))
        else:
            fan_in = shape[-1]
            val = rn(*shape) * (spec["init_scale"] / math.sqrt(fan_in))
        with torch.no_grad():
            p.copy_(val)
    return std


def hf_to_hub_state_dict(model, spec):
    """HF module state dict -> hub tensor names/layout."""
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        check(torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"]), "tied lm_head differs")
        del sd["lm_head.weight"]
    if spec["cls"] is PhimoeForCausalLM:
        out = {}
        I = model.config.intermediate_size
        for k, v in sd.items():
            if ".mlp.router.weight" in k:
                out[k.replace(".mlp.router.weight", ".block_sparse_moe.gate.weight")] = v
            elif k.endswith(".mlp.experts.gate_up_proj"):
                base = k[: -len(".mlp.experts.gate_up_proj")] + ".block_sparse_moe.experts"
                check(v.shape[1] == 2 * I, f"unexpected gate_up_proj shape {tuple(v.shape)}")
                for e in range(v.shape[0]):
                    out[f"{base}.{e}.w1.weight"] = v[e, :I, :].contiguous()  # gate
                    out[f"{base}.{e}.w3.weight"] = v[e, I:, :].contiguous()  # up
            elif k.endswith(".mlp.experts.down_proj"):
                base = k[: -len(".mlp.experts.down_proj")] + ".block_sparse_moe.experts"
                for e in range(v.shape[0]):
                    out[f"{base}.{e}.w2.weight"] = v[e].contiguous()
            else:
                check(".mlp." not in k, f"unhandled PhiMoE key {k}")
                out[k] = v
        sd = out
    return sd


def expected_hub_names(spec, cfg):
    """Tensor names the hub checkpoints use (reference/phi-models.md section 2)."""
    L = cfg["num_hidden_layers"]
    names = {"model.embed_tokens.weight"}
    arch = cfg["architectures"][0]
    for i in range(L):
        p = f"model.layers.{i}."
        if arch == "PhiForCausalLM":
            for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense", "mlp.fc1",
                      "mlp.fc2", "input_layernorm"):
                names |= {p + m + ".weight", p + m + ".bias"}
            if cfg.get("qk_layernorm"):
                for m in ("self_attn.q_layernorm", "self_attn.k_layernorm"):
                    names |= {p + m + ".weight", p + m + ".bias"}
        elif arch == "Phi3ForCausalLM":
            for m in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj",
                      "input_layernorm", "post_attention_layernorm"):
                names.add(p + m + ".weight")
        elif arch == "PhiMoEForCausalLM":
            for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                      "input_layernorm", "post_attention_layernorm"):
                names |= {p + m + ".weight", p + m + ".bias"}
            names.add(p + "block_sparse_moe.gate.weight")
            for e in range(cfg["num_local_experts"]):
                for w in ("w1", "w2", "w3"):
                    names.add(f"{p}block_sparse_moe.experts.{e}.{w}.weight")
    if arch == "PhiForCausalLM":
        names |= {"model.final_layernorm.weight", "model.final_layernorm.bias", "lm_head.weight", "lm_head.bias"}
    elif arch == "Phi3ForCausalLM":
        names.add("model.norm.weight")
        if not cfg.get("tie_word_embeddings"):
            names.add("lm_head.weight")
    else:
        names |= {"model.norm.weight", "model.norm.bias", "lm_head.weight", "lm_head.bias"}
    return names


def write_fixture_files(folder, spec, cfg_dict, model):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg_dict, indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps(spec["generation_config"], indent=2) + "\n")
    sd = hf_to_hub_state_dict(model, spec)
    check(set(sd) == expected_hub_names(spec, cfg_dict),
          f"{spec['name']}: hub names mismatch: extra={sorted(set(sd) - expected_hub_names(spec, cfg_dict))} "
          f"missing={sorted(expected_hub_names(spec, cfg_dict) - set(sd))}")
    for k, v in sd.items():
        check(v.dtype == torch.float32, f"{k} not fp32")
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return sd


def load_back(folder, spec, ref_model, hub_sd):
    """from_pretrained on the written folder; weights must round-trip bit-exactly."""
    model, info = spec["cls"].from_pretrained(str(folder), output_loading_info=True, **load_kwargs(spec))
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        check(not info.get(key), f"{spec['name']}: from_pretrained reported {key}: {info.get(key)}")
    model.eval()
    ref = ref_model.state_dict()
    got = model.state_dict()
    check(set(ref) == set(got), f"{spec['name']}: state dict keys differ after reload")
    for k in ref:
        check(torch.equal(ref[k], got[k]), f"{spec['name']}: weight {k} does not round-trip")
    # and the file itself holds what we meant to write
    disk = load_file(str(folder / "model.safetensors"))
    check(set(disk) == set(hub_sd), "safetensors keys changed on disk")
    for k in disk:
        check(torch.equal(disk[k], hub_sd[k]), f"safetensors tensor {k} changed on disk")
    if model.config.tie_word_embeddings:
        check(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
              "tied lm_head is not shared with embed_tokens after loading")
    check(model.config._attn_implementation == "eager", "attention implementation is not eager")
    return model


def hf_save_layout(model):
    """What the pinned transformers' own save_pretrained writes, for the record."""
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        tensors = {}
        for f in sorted(Path(d).glob("*.safetensors")):
            tensors.update(load_file(str(f)))
        cfg = json.loads((Path(d) / "config.json").read_text())
    return tensors, cfg


# ---------------------------------------------------------------------------------------------------------------
# Running HF.
# ---------------------------------------------------------------------------------------------------------------


class MaskPadded(LogitsProcessor):
    """ids >= tokenizer_size can never be chosen."""

    def __init__(self, T):
        self.T = T

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.T:] = -float("inf")
        return scores


def margin(logits_row, T):
    top = torch.topk(logits_row[:T].double(), 2).values
    return float(top[0] - top[1])


def run_generate(model, prompt, T, record_calls=False, record_router=False):
    calls, router = [], []
    hooks = []
    if record_calls:
        def pre_hook(mod, args, kwargs):
            ids = kwargs.get("input_ids")
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            pos = kwargs.get("position_ids")
            calls.append({
                "input_len": int(ids.shape[1]),
                "cache_len_before": int(cache.get_seq_length()) if cache is not None else None,
                "first_position": int(pos[0, 0]) if pos is not None else None,
                "last_position": int(pos[0, -1]) if pos is not None else None,
            })
        hooks.append(model.register_forward_pre_hook(pre_hook, with_kwargs=True))
    if record_router:
        for name, mod in model.named_modules():
            if type(mod).__name__ == "PhimoeTopKRouter":
                def fwd_hook(mod, args, out, name=name):
                    router.append((name, out[0].detach().clone(), out[1].detach().clone(), out[2].detach().clone()))
                hooks.append(mod.register_forward_hook(fwd_hook))
    try:
        with torch.no_grad():
            ids = torch.tensor([prompt], dtype=torch.long)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=N_NEW,
                output_logits=True,
                return_dict_in_generate=True,
                logits_processor=LogitsProcessorList([MaskPadded(T)]),
            )
    finally:
        for h in hooks:
            h.remove()
    greedy = out.sequences[0, len(prompt):].tolist()
    logits = torch.stack([l[0] for l in out.logits]).float()
    check(len(greedy) == N_NEW and logits.shape[0] == N_NEW, f"generate produced {len(greedy)} tokens")
    return greedy, logits, calls, router


def forward_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].float()


def router_logits_of_forward(model, ids):
    records, hooks = [], []
    for name, mod in model.named_modules():
        if type(mod).__name__ == "PhimoeTopKRouter":
            def fwd_hook(mod, args, out, name=name):
                records.append((name, out[0].detach().clone(), out[1].detach().clone(), out[2].detach().clone()))
            hooks.append(mod.register_forward_hook(fwd_hook))
    try:
        forward_logits(model, ids)
    finally:
        for h in hooks:
            h.remove()
    return records


def bf16_rounded(model):
    m = copy.deepcopy(model)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return m


def routing_ok(router_records, eps, tol=2e-5):
    """sparsemixer decisions must not sit on a knife edge (relative tolerance), so an fp32 reimplementation
    with a different summation order routes identically. Records are (module name, logits, weights, experts)."""
    for _, logits, _, _ in router_records:
        s = logits.double()
        for row in s:
            srt = torch.sort(row, descending=True).values
            scale = float(srt.abs().max())
            if float(srt[0] - srt[1]) <= tol * scale or float(srt[1] - srt[2]) <= tol * scale:
                return False
            m1 = srt[0]
            r1 = (m1 - row) / row.abs().clamp(min=float(m1))
            m2 = srt[1]
            r2 = (m2 - row) / row.abs().clamp(min=float(m2))
            if float((r1 - 2 * eps).abs().min()) <= tol or float((r2 - 2 * eps).abs().min()) <= tol:
                return False
    return True


def routing_stats(router_records):
    w = torch.cat([r[2] for r in router_records]) if router_records else torch.zeros(0, 2)
    n = int(w.shape[0])
    return {
        "router_evaluations": int(w.shape[0]),
        "top1_weight_lt_1": int((w[:, 0] < 1).sum()),
        "top2_weight_lt_1": int((w[:, 1] < 1).sum()),
        "min_top1_weight": f32(w[:, 0].min()) if n else None,
        "min_top2_weight": f32(w[:, 1].min()) if n else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# Semantic assertions about the pinned HF version.
# ---------------------------------------------------------------------------------------------------------------


def rope_reference(inv_freq, positions, scale):
    freqs = positions[:, None].float() * inv_freq[None, :].float()
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * scale, emb.sin() * scale


def inv_freq_from(factors, base, dim):
    ext = torch.tensor(factors, dtype=torch.float32)
    return 1.0 / (ext * base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def rope_facts(model):
    """Which factors / scale does the rotary module use for a sequence ending at orig, and at orig+1?"""
    cfg = model.config
    rp = cfg.rope_parameters
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    dim = int(head_dim * rp.get("partial_rotary_factor", 1.0)) if model.config.model_type != "phimoe" else head_dim
    orig = rp["original_max_position_embeddings"]
    base = rp["rope_theta"]
    rot = model.model.rotary_emb
    facts = {"rotary_dim": dim, "original_max_position_embeddings": orig}
    scales = {"attention_factor": float(rot.attention_scaling)}
    if "short_mscale" in rp:
        scales["short_mscale"] = float(rp["short_mscale"])
        scales["long_mscale"] = float(rp["long_mscale"])
    x = torch.zeros(1, 1, 1, dtype=torch.float32)
    for label, L in (("len_eq_orig", orig), ("len_orig_plus_1", orig + 1)):
        pos = torch.arange(L)[None, :]
        with torch.no_grad():
            cos, sin = rot(x, position_ids=pos)
        found = None
        for fname in ("short_factor", "long_factor"):
            inv = inv_freq_from(rp[fname], base, dim)
            for sname, sval in scales.items():
                rc, rs = rope_reference(inv, pos[0], sval)
                if torch.allclose(cos[0], rc, atol=1e-6, rtol=0) and torch.allclose(sin[0], rs, atol=1e-6, rtol=0):
                    found = (fname, sname, sval)
                    break
            if found:
                break
        check(found is not None, f"could not identify the RoPE table HF uses at {label}")
        facts[label] = {"factors": found[0], "scale": found[1], "scale_value": found[2]}
    # leave the module in its short state (the decorator updates inv_freq in place)
    with torch.no_grad():
        rot(x, position_ids=torch.arange(1)[None, :])
    return facts


def longrope_attention_factor_formula(cfg):
    rp = cfg.rope_parameters
    orig = rp["original_max_position_embeddings"]
    factor = rp.get("factor") or cfg.max_position_embeddings / orig
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))


def sliding_window_rule(model, L):
    cfg = model.config
    W = cfg.sliding_window
    emb = torch.zeros(1, L, cfg.hidden_size)
    mask = create_sliding_window_causal_mask(config=cfg, inputs_embeds=emb, attention_mask=torch.ones(1, L, dtype=torch.long),
                                             cache=None, position_ids=torch.arange(L)[None, :])
    check(mask is not None, "eager sliding-window mask not materialized")
    allowed = mask[0, 0] == 0
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    expect = (j <= i) & (j > i - W)
    check(torch.equal(allowed, expect), "sliding-window mask is not {i-W < j <= i}")
    return W


# ---------------------------------------------------------------------------------------------------------------
# JSON output: float32 values with the shortest decimal text that round-trips both as float32 and via double.
# ---------------------------------------------------------------------------------------------------------------


def fmt_f32(v):
    v = np.float32(v)
    check(bool(np.isfinite(v)), "non-finite value in golden data")
    s = str(v)
    if np.float32(float(s)) != v:
        s = repr(float(v))
    return s


def dump_json(obj, indent=0):
    pad = "  " * indent
    if isinstance(obj, dict):
        items = [f'{pad}  {json.dumps(k)}: {dump_json(v, indent + 1).lstrip()}' for k, v in obj.items()]
        return pad + "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, np.ndarray) and obj.dtype == np.float32:
        if obj.ndim == 1:
            return pad + "[" + ", ".join(fmt_f32(x) for x in obj) + "]"
        return pad + "[\n" + ",\n".join(dump_json(r, indent + 1) for r in obj) + "\n" + pad + "]"
    if isinstance(obj, list):
        if all(isinstance(x, (int, float, str, bool)) or x is None for x in obj):
            return pad + json.dumps(obj)
        return pad + "[\n" + ",\n".join(dump_json(x, indent + 1) for x in obj) + "\n" + pad + "]"
    return pad + json.dumps(obj)


def as_f32(t):
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Notes (HF semantics relied on), assembled per fixture.
# ---------------------------------------------------------------------------------------------------------------

COMMON_NOTES = (
    "Reference: transformers {tv} / torch {pv}, attn_implementation=eager, fp32 weights and activations on CPU, "
    "1 thread. prompt_logits/long_prompt_logits: one forward over the whole sequence without cache "
    "(logits at every position). prompt_logits_bf16: same forward after rounding EVERY parameter to bf16 and back "
    "(round-to-nearest-even; model still runs in fp32). greedy: generate(do_sample=False, max_new_tokens=32, "
    "output_logits=True, return_dict_in_generate=True) with a logits processor setting ids >= tokenizer_size to "
    "-inf; greedy_logits are the RAW logits (output_logits, before that processor); greedy_margins are "
    "top1-top2 over ids < tokenizer_size. All eos ids in generation_config.json are >= tokenizer_size, so "
    "generation always runs the full 32 steps. Every greedy step's logits were checked against a fresh "
    "no-cache forward over the same prefix (max abs diff <= 1e-4), so KV-cache handling in HF is consistent with "
    "the whole-sequence semantics described here."
)

PHI_NOTES = (
    "PhiForCausalLM: x = embed(ids); per layer h = LayerNorm(x; w, b, eps=layer_norm_eps); "
    "x = (dense(attn(h)) + fc2(gelu_new(fc1(h)))) + x (attention output + MLP output first, then + residual; "
    "dropouts are no-ops); logits = lm_head(final_layernorm(x)) + lm_head.bias. q/k/v/dense/fc1/fc2 all have biases. "
    "gelu_new = NewGELUActivation: 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))), evaluated as (0.5*x) * "
    "(1 + tanh(sqrt(2/pi) * (x + 0.044715*pow(x,3)))). Attention: the pinned version does NOT upcast q/k to fp32 "
    "(the pre-4.48 'upcast to fp32 for Phi-2' code is gone): eager_attention_forward computes "
    "matmul(q, k^T) * head_dim**-0.5 in the model dtype, adds the additive causal mask (dtype min), softmax with "
    "dtype=float32 then casts back to q's dtype, then @ v; irrelevant for these fp32 goldens. Scale uses head_dim, "
    "not the rotary dim. Partial rotary: only the first rotary_ndims = int(head_dim*partial_rotary_factor) dims of "
    "each q/k head are rotated (NeoX rotate_half: pairs (i, i+rot/2), inv_freq = 1/theta^(arange(0,rot,2)/rot), "
    "cos/sin of position*inv_freq duplicated to rot dims); the rest pass through. Plain causal mask (no sliding "
    "window). num_key_value_heads null means = num_attention_heads."
)

QKLN_NOTES = (
    " qk_layernorm=true: q_layernorm / k_layernorm are nn.LayerNorm(head_dim = hidden/heads, eps=layer_norm_eps) "
    "with weight AND bias of shape [head_dim], shared by all heads; applied per head to q and k after their "
    "projections (+bias) and BEFORE RoPE. Tensors: model.layers.N.self_attn.{q,k}_layernorm.{weight,bias}. "
    "head_dim 20, partial_rotary_factor 0.4 -> rotary dim 8 (4 inv_freqs)."
)

PHI3_NOTES = (
    "Phi3ForCausalLM: pre-norm sequential block: x = x + o_proj(attn(RMSNorm(x))); x = x + down_proj(up * "
    "silu(gate)) with gate, up = gate_up_proj(RMSNorm(x)).chunk(2) (first half gate); logits = lm_head(norm(x)) (no "
    "biases anywhere). RMSNorm: xf = x.float(); xf * rsqrt(mean(xf^2) + eps), cast to input dtype, then weight * "
    "that. qkv_proj rows = [Q (heads*hd) | K (kv*hd) | V (kv*hd)], each head-major. GQA via repeat_kv: kv head j "
    "serves q heads j*g .. j*g+g-1 (g = heads/kv_heads). Attention scale head_dim**-0.5; softmax in fp32. Partial "
    "rotary (if partial_rotary_factor < 1): apply_rotary_pos_emb rotates the first rotary_dim = cos.shape[-1] = "
    "int(head_dim*partial_rotary_factor) dims (NeoX rotate_half), the rest pass through. RoPE cos/sin = "
    "cos/sin(position * inv_freq) * attention_scaling, computed in fp32 then cast to the model dtype."
)

SWA_NOTES = (
    " Sliding window W={W}: sliding_window is not null so Phi3Model uses masking_utils."
    "create_sliding_window_causal_mask; sliding_window_overlay is `kv_idx > q_idx - W` AND causal `kv_idx <= q_idx`, "
    "i.e. a query at absolute position i sees keys at positions i-W+1 .. i (W keys including itself). Verified on "
    "the materialized eager mask (prefill) and, for decode, by the cache-vs-no-cache check: DynamicCache uses "
    "DynamicSlidingWindowLayer which keeps the last W-1 keys and the mask offsets kv positions accordingly, giving "
    "the same rule at every decode step. The prompt ({P} tokens) already exceeds W."
)

NO_SCALING_NOTES = " rope_scaling null: default RoPE, attention_scaling 1.0."

MOE_NOTES = (
    "PhimoeForCausalLM (hub spelling architectures=['PhiMoEForCausalLM'], model_type 'phimoe'; {automodel}). "
    "Block: x = x + o_proj(attn(LayerNorm(x))) (q/k/v/o with biases when attention_bias), then h = LayerNorm(x) "
    "(post_attention_layernorm, nn.LayerNorm with weight+bias, eps = rms_norm_eps), router_logits = gate(h) "
    "(no bias, model dtype), x = x + sum_k w_k * w2(silu(w1 h) * w3 h) over the 2 selected experts; logits = "
    "lm_head(LayerNorm(x)) + lm_head.bias. Routing = sparsemixer eval path (training=False, no randomness; "
    "router_jitter_noise eps=0.01 IS used; input_jitter_noise is training-only): s = router logits; "
    "(m1, i1) = max(s); mask1 = ((m1 - s) / max(|s|, m1)) > 2*eps; w1 = softmax(s with mask1 -> -inf)[i1]; "
    "s2 = s with s[i1] = -inf; (m2, i2) = max(s2); mask2 = ((m2 - s) / max(|s|, m2)) > 2*eps (numerator and |s| use "
    "the ORIGINAL s, i1 stays -inf via s2); w2 = softmax(s2 with mask2 -> -inf)[i2]. The softmaxes run in the router "
    "logits' dtype (the model dtype: fp32 here, bf16 for a bf16 model); the weights are NOT renormalised "
    "(w1 + w2 != 1 in general). Experts: expert e's w1 = gate, w3 = up, w2 = down; "
    "out_e = (silu(w1 h) * w3 h) @ w2^T * w_k; contributions are index_add_-ed into a zero tensor in increasing "
    "expert index order. Routing stats over generate: {stats}. Every router decision in prefill and generation was "
    "checked to be at least 2e-5 (relative) away from a tie or from the 2*eps threshold (also in the bf16-rounded "
    "model's prompt forward). NB: rounding the weights to bf16 changes some routing decisions, so "
    "prompt_logits_bf16 differs from prompt_logits by much more here than in the dense fixtures."
)


def moe_rope_notes(facts, orig):
    return (
        " RoPE (PhimoeRotaryEmbedding.forward, pinned version): seq_len = max(position_ids)+1; mscale = long_mscale if "
        f"seq_len > original_max_position_embeddings ({orig}) else short_mscale; cos/sin = cos/sin(pos*inv_freq) * "
        "mscale, where inv_freq comes from rope_init_fn(config) called WITHOUT seq_len. Observed: a sequence of "
        f"length {orig} uses {facts['len_eq_orig']['factors']} x {facts['len_eq_orig']['scale']} "
        f"({facts['len_eq_orig']['scale_value']}); a sequence of length {orig + 1} uses "
        f"{facts['len_orig_plus_1']['factors']} x {facts['len_orig_plus_1']['scale']} "
        f"({facts['len_orig_plus_1']['scale_value']}). I.e. in this version PhiMoE NEVER uses long_factor (the "
        "@dynamic_rope_update decorator updates self.inv_freq but forward ignores it); only the mscale switches. "
        "The computed attention_factor (sqrt(1+ln(max/orig)/ln(orig))) is NOT used when short/long_mscale exist. "
        "Full rotary (head_dim), no partial rotary."
    )


def longrope_notes(facts, cfg, crossing, calls_summary):
    rp = cfg.rope_parameters
    orig = rp["original_max_position_embeddings"]
    s = (
        f" LongRoPE (rope_type longrope, original_max_position_embeddings={orig}, max_position_embeddings="
        f"{cfg.max_position_embeddings}): inv_freq = 1/(ext * theta^(arange(0,rot,2)/rot)) with ext = long_factor if "
        f"seq_len > {orig} else short_factor, where seq_len = max(position_ids)+1 of the CURRENT forward "
        "(modeling_rope_utils.dynamic_rope_update -> longrope_frequency_update, torch.where on one scalar: ONE "
        "factor set for all positions of that forward). Observed: a forward whose last position is "
        f"{orig - 1} uses {facts['len_eq_orig']['factors']}; last position {orig} uses "
        f"{facts['len_orig_plus_1']['factors']}. cos and sin are both multiplied by attention_factor = "
        f"{facts['len_eq_orig']['scale_value']!r} (= sqrt(1 + ln(max_pos/orig)/ln(orig)), computed once at init, used "
        "for short AND long factors; rope_parameters.attention_factor would override it; `factor` is absent so the "
        "ratio max_position_embeddings/original is used). generate(): Phi3ForCausalLM.prepare_inputs_for_generation "
        f"drops the cache when input_ids.shape[1] >= {orig}+1 and cache.get_seq_length() <= {orig}, then re-runs the "
        "WHOLE sequence (all layers' K and V recomputed) with long factors; later steps decode incrementally with "
        "long factors. Net: every step whose sequence (prompt + generated so far) has <= "
        f"{orig} tokens sees short factors; the step where it reaches {orig + 1} tokens re-prefills; after that "
        "everything is long (equal to a fresh no-cache forward over the prefix). "
    )
    if crossing:
        s += f"This fixture's generation crosses the switch; forward calls seen inside generate(): {calls_summary}."
    else:
        s += ("This fixture's generation stays below the switch (short factors throughout); long_prompt exceeds "
              "it (long factors for every position).")
    return s


# ---------------------------------------------------------------------------------------------------------------
# Main per-fixture flow.
# ---------------------------------------------------------------------------------------------------------------


def summarize_calls(calls):
    parts = []
    for c in calls:
        parts.append(f"(len {c['input_len']}, cache {c['cache_len_before']}, pos {c['first_position']}..{c['last_position']})")
    # compress runs of single-token decode steps
    out, i = [], 0
    while i < len(calls):
        c = calls[i]
        if c["input_len"] == 1 and c["cache_len_before"] is not None:
            j = i
            while j + 1 < len(calls) and calls[j + 1]["input_len"] == 1 and calls[j + 1]["cache_len_before"] is not None:
                j += 1
            out.append(f"decode x{j - i + 1} (pos {calls[i]['first_position']}..{calls[j]['last_position']}, "
                       f"cache {calls[i]['cache_len_before']}..{calls[j]['cache_len_before']})")
            i = j + 1
        else:
            cl = "no cache" if c["cache_len_before"] is None else f"cache {c['cache_len_before']}"
            out.append(f"full forward of {c['input_len']} tokens ({cl}, pos {c['first_position']}..{c['last_position']})")
            i += 1
    return "; ".join(out)


def try_seed(spec, cfg_obj, seed):
    gen = torch.Generator().manual_seed(seed)
    model = spec["cls"]._from_config(copy.deepcopy(cfg_obj), **load_kwargs(spec))
    model.eval()
    init_weights(model, spec, gen)
    if model.config.tie_word_embeddings:
        check(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "tie not in effect")
    T = spec["T"]
    prompt = torch.randint(0, T, (spec["prompt_len"],), generator=gen).tolist()
    greedy, logits, _, router = run_generate(model, prompt, T, record_router=spec["cls"] is PhimoeForCausalLM)
    margins = [margin(r, T) for r in logits]
    ok = min(margins) >= MIN_MARGIN and len(set(greedy)) >= 6
    if ok and router:
        ok = routing_ok(router, model.config.router_jitter_noise)
        if ok:
            st = routing_stats(router)
            ok = st["top1_weight_lt_1"] > 0 and st["top2_weight_lt_1"] > 0
    if ok and router:
        # the bf16-rounded-weight model (prompt_logits_bf16) must route robustly too
        ok = routing_ok(router_logits_of_forward(bf16_rounded(model), prompt), model.config.router_jitter_noise)
    long_prompt = None
    if ok and spec.get("long_prompt_len"):
        long_prompt = torch.randint(0, T, (spec["long_prompt_len"],), generator=gen).tolist()
        lp = forward_logits(model, long_prompt)
        ok = margin(lp[-1], T) >= MIN_MARGIN
    return ok, model, prompt, long_prompt


def make_fixture(spec, out_root):
    name = spec["name"]
    T, V = spec["T"], spec["vocab"]
    check(T < V and V % 8 != 0, f"{name}: bad vocab/tokenizer sizes")
    cfg_dict = copy.deepcopy(spec["config"])
    cfg_obj = config_from_dict(spec, cfg_dict)

    base = zlib.crc32(name.encode()) % 100000
    for seed in range(base, base + MAX_SEED_TRIES):
        ok, model, prompt, long_prompt = try_seed(spec, cfg_obj, seed)
        if ok:
            break
    else:
        raise GoldenError(f"{name}: no seed in {MAX_SEED_TRIES} tries met the margin/variety requirements")

    folder = out_root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    hf_tensors, hf_cfg = hf_save_layout(model)
    if spec.get("write_config_with_hf"):
        # HF v5 spelling, exactly as the pinned transformers writes it
        cfg_dict = hf_cfg
        check("rope_parameters" in cfg_dict and "rope_scaling" not in cfg_dict, "HF did not write rope_parameters")
    hub_sd = write_fixture_files(folder, spec, cfg_dict, model)
    loaded = load_back(folder, spec, model, hub_sd)
    same_layout = set(hf_tensors) == set(hub_sd) and all(torch.equal(hf_tensors[k], hub_sd[k]) for k in hub_sd)
    layout_note = ""
    if spec["cls"] is PhimoeForCausalLM:
        if same_layout:
            layout_note = (" Layout: in memory the pinned transformers holds fused experts (mlp.experts.gate_up_proj "
                           "[E, 2I, H] = per expert [w1 (gate); w3 (up)], mlp.experts.down_proj [E, H, I] = stacked w2, "
                           "mlp.router.weight = block_sparse_moe.gate.weight; conversion_mapping 'phimoe'), but its "
                           "save_pretrained reverses that conversion and writes exactly the hub names/tensors written "
                           "here (checked); this file was written by the script directly in the hub layout.")
        else:
            layout_note = (" Layout: the pinned transformers' save_pretrained would write different tensors "
                           f"(e.g. {sorted(set(hf_tensors) - set(hub_sd))[:3]}) than the hub layout written here; "
                           "from_pretrained converts the hub layout on load (conversion_mapping 'phimoe').")
    else:
        check(same_layout, f"{name}: HF save_pretrained layout differs from the hub layout")

    # --- rope_parameters spelling: load the legacy spelling as well and require identical behaviour
    spelling_note = ""
    if spec.get("write_config_with_hf"):
        legacy_cfg = config_from_dict(spec, spec["config"])
        check(legacy_cfg.rope_parameters == loaded.config.rope_parameters,
              f"rope_parameters differ between spellings: {legacy_cfg.rope_parameters} vs {loaded.config.rope_parameters}")
        check(legacy_cfg.original_max_position_embeddings == loaded.config.original_max_position_embeddings,
              "original_max_position_embeddings differs between spellings")
        legacy_model = spec["cls"]._from_config(legacy_cfg, **load_kwargs(spec))
        legacy_model.load_state_dict(loaded.state_dict())
        legacy_model.eval()
        check(torch.equal(forward_logits(legacy_model, prompt), forward_logits(loaded, prompt)),
              "legacy-spelled config gives different logits")
        check(torch.equal(forward_logits(legacy_model, long_prompt), forward_logits(loaded, long_prompt)),
              "legacy-spelled config gives different long-prompt logits")
        top = sorted(k for k in ("rope_theta", "rope_scaling", "partial_rotary_factor", "original_max_position_embeddings",
                                 "torch_dtype", "dtype") if k in cfg_dict)
        spelling_note = (
            " config.json is exactly what the pinned transformers' save_pretrained writes (HF v5 spelling): "
            f"rope_parameters = {json.dumps(cfg_dict['rope_parameters'], sort_keys=True)} (both 'type' and "
            "'rope_type'; rope_theta, partial_rotary_factor and original_max_position_embeddings inside); of the "
            "legacy/duplicated top-level keys it writes only " + ", ".join(top) + " (no rope_scaling, no top-level "
            "rope_theta; 'dtype' instead of 'torch_dtype'). Verified: loading the equivalent legacy spelling "
            "(rope_scaling {type: longrope, ...} + top-level rope_theta + partial_rotary_factor) gives an identical "
            "config.rope_parameters and bit-identical logits. Trap: Phi3Config.original_max_position_embeddings is a "
            "top-level field "
            "(default 4096) and standardize_rope_params copies the TOP-LEVEL value into rope_parameters, overriding "
            "the one inside rope_parameters; Phi3ForCausalLM.prepare_inputs_for_generation also reads the top-level "
            "field."
        )

    # --- goldens from the model loaded back from disk
    greedy, glogits, calls, router = run_generate(loaded, prompt, T, record_calls=True,
                                                  record_router=spec["cls"] is PhimoeForCausalLM)
    plogits = forward_logits(loaded, prompt)
    plogits_bf16 = forward_logits(bf16_rounded(loaded), prompt)
    margins = [margin(r, T) for r in glogits]
    check(min(margins) >= MIN_MARGIN, f"{name}: margin {min(margins)} after reload")
    for k in range(N_NEW):
        check(int(torch.argmax(glogits[k, :T])) == greedy[k], f"{name}: step {k} token is not the masked argmax")
    check(torch.allclose(plogits[-1], glogits[0], atol=1e-5, rtol=0), f"{name}: prefill logits != prompt_logits[-1]")
    seq = prompt + greedy
    max_dev = 0.0
    for k in range(N_NEW):
        ref = forward_logits(loaded, seq[: len(prompt) + k])[-1]
        dev = float((ref - glogits[k]).abs().max())
        max_dev = max(max_dev, dev)
        check(dev <= 1e-4, f"{name}: generate step {k} differs from a no-cache forward by {dev}")

    cfg = loaded.config
    rp = getattr(cfg, "rope_parameters", None) or {}
    golden = {
        "name": name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "safetensors_version": safetensors.__version__,
        "tokenizers_version": tokenizers.__version__,
        "architecture": cfg_dict["architectures"][0],
        "hf_class": type(loaded).__name__,
        "seed": seed,
        "vocab_size": V,
        "tokenizer_size": T,
        "prompt": prompt,
        "prompt_logits": as_f32(plogits),
        "prompt_logits_bf16": as_f32(plogits_bf16),
        "greedy": greedy,
        "greedy_logits": as_f32(glogits),
        "greedy_margins": [f32(m) for m in margins],
        "min_margin": f32(min(margins)),
        "prompt_min_margin": f32(min(margin(r, T) for r in plogits)),
        "max_cache_vs_nocache_diff": f32(max_dev),
    }

    notes = COMMON_NOTES.format(tv=transformers.__version__, pv=torch.__version__)
    arch = cfg_dict["architectures"][0]
    if arch == "PhiForCausalLM":
        check(isinstance(loaded.model.layers[0].mlp.activation_fn, NewGELUActivation), "phi activation is not gelu_new")
        notes += " " + PHI_NOTES
        if cfg.qk_layernorm:
            notes += QKLN_NOTES
    elif arch == "Phi3ForCausalLM":
        notes += " " + PHI3_NOTES
    crossing = False
    if rp.get("rope_type") == "longrope":
        facts = rope_facts(loaded)
        orig = rp["original_max_position_embeddings"]
        golden["rope"] = facts
        golden["original_max_position_embeddings"] = orig
        crossing = len(prompt) <= orig and len(prompt) + N_NEW - 1 >= orig + 1
        # expected generate() call schedule
        exp = [{"input_len": len(prompt), "cache_len_before": None}]
        for k in range(1, N_NEW):
            total = len(prompt) + k
            if total == orig + 1 and len(prompt) <= orig:
                exp.append({"input_len": total, "cache_len_before": None})
            else:
                exp.append({"input_len": 1, "cache_len_before": total - 1})
        got = [{"input_len": c["input_len"], "cache_len_before": c["cache_len_before"]} for c in calls[:N_NEW]]
        # the first call (prefill) has an empty cache object or none
        if got and got[0]["cache_len_before"] == 0:
            got[0]["cache_len_before"] = None
        for g in got[1:]:
            if g["input_len"] > 1 and g["cache_len_before"] is not None:
                raise GoldenError(f"{name}: full-sequence forward with a cache: {g}")
        check(got == exp, f"{name}: generate() call schedule differs from the documented rule:\n{got}\n{exp}")
        golden["generate_calls"] = calls[:N_NEW]
        if arch == "PhiMoEForCausalLM":
            check(facts["len_eq_orig"] == {"factors": "short_factor", "scale": "short_mscale",
                                           "scale_value": rp["short_mscale"]}, f"phimoe rope facts changed: {facts}")
            check(facts["len_orig_plus_1"]["factors"] == "short_factor"
                  and facts["len_orig_plus_1"]["scale"] == "long_mscale", f"phimoe rope facts changed: {facts}")
        else:
            af = longrope_attention_factor_formula(cfg)
            check(abs(facts["len_eq_orig"]["scale_value"] - af) < 1e-12, "attention_factor != formula")
            check(facts["len_eq_orig"]["factors"] == "short_factor" and facts["len_orig_plus_1"]["factors"] == "long_factor",
                  f"{name}: longrope factor choice changed: {facts}")
            golden["attention_factor"] = facts["len_eq_orig"]["scale_value"]
            notes += longrope_notes(facts, cfg, crossing, summarize_calls(calls[:N_NEW]))
        if arch == "PhiMoEForCausalLM":
            notes_rope = moe_rope_notes(facts, orig)
            if crossing:
                notes_rope += (" generate(): PhimoeForCausalLM.prepare_inputs_for_generation has the same cache-drop "
                               f"rule as Phi3 (input_ids.shape[1] >= {orig}+1 and cache length <= {orig} -> drop cache, "
                               "re-run the whole sequence, now with long_mscale); forward calls seen: "
                               + summarize_calls(calls[:N_NEW]) + ".")
    elif arch != "PhiMoEForCausalLM":
        if arch == "Phi3ForCausalLM":
            notes += NO_SCALING_NOTES
            check(float(loaded.model.rotary_emb.attention_scaling) == 1.0, "default rope attention_scaling != 1")
    if long_prompt is not None:
        golden["long_prompt"] = long_prompt
        golden["long_prompt_logits"] = as_f32(forward_logits(loaded, long_prompt))
    if arch == "Phi3ForCausalLM" and cfg.sliding_window is not None and cfg.sliding_window < 1024:
        W = sliding_window_rule(loaded, len(prompt) + N_NEW)
        check(len(prompt) > W, "prompt must exceed the window")
        # the window must actually change the outputs
        nowin_cfg = copy.deepcopy(loaded.config)
        nowin_cfg.sliding_window = None
        nowin = spec["cls"]._from_config(nowin_cfg, **load_kwargs(spec))
        nowin.load_state_dict(loaded.state_dict())
        nowin.eval()
        bite = float((forward_logits(nowin, seq)[-1] - forward_logits(loaded, seq)[-1]).abs().max())
        check(bite > 1e-2, f"{name}: the sliding window does not change the logits ({bite})")
        golden["sliding_window"] = W
        notes += SWA_NOTES.format(W=W, P=len(prompt))
    if arch == "Phi3ForCausalLM" and cfg.num_key_value_heads != cfg.num_attention_heads:
        notes += (f" GQA: {cfg.num_attention_heads} q heads / {cfg.num_key_value_heads} kv heads "
                  f"(group {cfg.num_attention_heads // cfg.num_key_value_heads}), head_dim "
                  f"{cfg.hidden_size // cfg.num_attention_heads}.")
    if cfg.tie_word_embeddings:
        notes += (" tie_word_embeddings=true: model.safetensors has no lm_head.weight; lm_head uses "
                  "model.embed_tokens.weight.")
    if arch == "PhiMoEForCausalLM":
        auto_cls = type(AutoModelForCausalLM.from_pretrained(str(folder), **load_kwargs(spec))).__name__
        check(auto_cls == "PhimoeForCausalLM", f"AutoModelForCausalLM gave {auto_cls}")
        automodel = (f"AutoModelForCausalLM.from_pretrained loads this folder as {auto_cls} via model_type 'phimoe'; "
                     "the architectures string is not used for class selection, there is no class named "
                     "PhiMoEForCausalLM in transformers; the goldens were computed with PhimoeForCausalLM."
                     "from_pretrained(..., experts_implementation='eager') (the default 'grouped_mm' experts kernel "
                     "computes the same math)")
        stats = routing_stats(router)
        golden["routing_stats"] = stats
        check(routing_ok(router, cfg.router_jitter_noise), f"{name}: knife-edge routing after reload")
        check(routing_ok(router_logits_of_forward(bf16_rounded(loaded), prompt), cfg.router_jitter_noise),
              f"{name}: knife-edge routing in the bf16-rounded model")
        notes += " " + MOE_NOTES.format(automodel=automodel, stats=json.dumps(stats)) + notes_rope
    if spelling_note:
        notes += spelling_note
    notes += layout_note
    golden["notes"] = notes

    text = dump_json(golden) + "\n"
    (folder / "golden.json").write_text(text)
    # the written JSON must give back exactly the float32 values
    back = json.loads(text)
    for key in ("prompt_logits", "prompt_logits_bf16", "greedy_logits", "long_prompt_logits"):
        if key in golden:
            check(np.array_equal(np.array(back[key], dtype=np.float64).astype(np.float32), golden[key]),
                  f"{key} does not round-trip through JSON")
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"{name:22s} seed {seed:6d}  min_margin {min(margins):.4g}  distinct {len(set(greedy)):2d}  "
          f"cache/no-cache {max_dev:.2g}  {size / 1024:.0f} KiB", flush=True)
    return golden


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="fixture names to (re)generate")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default tests/fixtures)")
    args = ap.parse_args()
    out_root = Path(args.out)
    specs = [s() for s in SPECS]
    if args.only:
        unknown = set(args.only) - {s["name"] for s in specs}
        check(not unknown, f"unknown fixtures: {sorted(unknown)}")
        specs = [s for s in specs if s["name"] in args.only]
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, safetensors {safetensors.__version__}, "
          f"tokenizers {tokenizers.__version__}, numpy {np.__version__}", flush=True)
    check(ACT2FN["gelu_new"].__class__ is NewGELUActivation, "gelu_new is not NewGELUActivation")
    for spec in specs:
        make_fixture(spec, out_root)
    total = sum(f.stat().st_size for s in (sp() for sp in SPECS) for f in (out_root / s["name"]).glob("*")
                if f.is_file())
    print(f"total {total / 1024 / 1024:.2f} MiB in the golden fixture folders under {out_root}")


if __name__ == "__main__":
    try:
        main()
    except GoldenError as e:
        print(f"make_goldens: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
