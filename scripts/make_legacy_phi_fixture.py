#!/usr/bin/env python3
"""Writes tests/fixtures/phi1_msft: tests/fixtures/phi1 (an HF PhiForCausalLM fixture) renamed to the
legacy remote-code 'phi-msft' layout of Phi-1.5/Phi-2's first releases, the layout MLC-LLM still loads.

  model.embed_tokens.weight                 -> transformer.embd.wte.weight
  model.layers.N.input_layernorm.*          -> transformer.h.N.ln.*
  model.layers.N.self_attn.{q,k,v}_proj.*   -> transformer.h.N.mixer.Wqkv.*   rows [Q | K | V] (MixFormer's
                                               MHA splits its output as "(three h d)")
  model.layers.N.self_attn.dense.*          -> transformer.h.N.mixer.out_proj.*
  model.layers.N.mlp.fc1/fc2.*              -> transformer.h.N.mlp.fc1/fc2.*
  model.final_layernorm.*                   -> lm_head.ln.*
  lm_head.*                                 -> lm_head.linear.*

This is the inverse of transformers' convert_phi_weights_to_hf.py mapping (which additionally
interleaves Wqkv per head for the intermediate fused 'query_key_value' HF class; the original
phi-msft Wqkv is plain [Q | K | V]). config.json gets the phi-msft keys (n_embd, n_head, n_head_kv,
n_inner, n_layer, rotary_dim, n_positions, layer_norm_epsilon, activation_function, vocab_size).
The values are copied bit for bit, so the C++ forward must give bitwise the same logits on both
folders (tests/cluster/test_legacy_phi.cpp). No golden.json: the test uses phi1's.

    pip install safetensors==0.8.0 numpy==2.4.6     # pinned in scripts/requirements-goldens.txt
    python scripts/make_legacy_phi_fixture.py
"""

import json
import os

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "tests", "fixtures", "phi1")
DST = os.path.join(ROOT, "tests", "fixtures", "phi1_msft")


def main():
    with open(os.path.join(SRC, "config.json"), encoding="utf-8") as fh:
        hf = json.load(fh)
    assert hf["model_type"] == "phi" and not hf.get("qk_layernorm"), "phi-msft has no qk_layernorm"
    head_dim = hf["hidden_size"] // hf["num_attention_heads"]
    src = load_file(os.path.join(SRC, "model.safetensors"))
    out = {
        "transformer.embd.wte.weight": src.pop("model.embed_tokens.weight"),
        "lm_head.ln.weight": src.pop("model.final_layernorm.weight"),
        "lm_head.ln.bias": src.pop("model.final_layernorm.bias"),
        "lm_head.linear.weight": src.pop("lm_head.weight"),
        "lm_head.linear.bias": src.pop("lm_head.bias"),
    }
    for n in range(hf["num_hidden_layers"]):
        p, q = f"model.layers.{n}.", f"transformer.h.{n}."
        for kind in ("weight", "bias"):
            out[q + "ln." + kind] = src.pop(p + "input_layernorm." + kind)
            out[q + "mixer.Wqkv." + kind] = np.concatenate(
                [src.pop(p + f"self_attn.{x}_proj.{kind}") for x in ("q", "k", "v")], axis=0)
            out[q + "mixer.out_proj." + kind] = src.pop(p + "self_attn.dense." + kind)
            out[q + "mlp.fc1." + kind] = src.pop(p + "mlp.fc1." + kind)
            out[q + "mlp.fc2." + kind] = src.pop(p + "mlp.fc2." + kind)
    assert not src, f"unmapped tensors: {sorted(src)}"
    config = {
        "_name_or_path": "microsoft/phi-1_5",
        "activation_function": hf["hidden_act"],
        "architectures": ["PhiForCausalLM"],
        "attn_pdrop": 0.0,
        "auto_map": {"AutoConfig": "configuration_phi.PhiConfig", "AutoModelForCausalLM": "modeling_phi.PhiForCausalLM"},
        "embd_pdrop": 0.0,
        "flash_attn": False,
        "flash_rotary": False,
        "fused_dense": False,
        "img_processor": None,
        "initializer_range": 0.02,
        "layer_norm_epsilon": hf["layer_norm_eps"],
        "model_type": "phi-msft",
        "n_embd": hf["hidden_size"],
        "n_head": hf["num_attention_heads"],
        "n_head_kv": None,
        "n_inner": hf["intermediate_size"],
        "n_layer": hf["num_hidden_layers"],
        "n_positions": hf["max_position_embeddings"],
        "resid_pdrop": 0.0,
        "rotary_dim": int(head_dim * hf["partial_rotary_factor"]),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.34.1",
        "vocab_size": hf["vocab_size"],
    }
    assert hf["rope_theta"] == 10000.0, "phi-msft's rotary base is fixed at 10000"
    os.makedirs(DST, exist_ok=True)
    save_file(out, os.path.join(DST, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(DST, "config.json"), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    print(f"wrote {DST}: {len(out)} tensors")


if __name__ == "__main__":
    main()
