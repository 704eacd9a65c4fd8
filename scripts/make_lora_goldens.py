#!/usr/bin/env python3
"""PEFT LoRA adapters on the golden fixtures, and HF transformers + PEFT (fp32) outputs with them.

For each adapter spec below, loads the fixture written by scripts/make_goldens.py (fp32, eager attention,
one thread), wraps it with peft.get_peft_model, gives every lora_A and lora_B RANDOM values (PEFT
initialises B to zero, which would make the adapter a no-op and test nothing), rounds them to the dtype the
adapter is saved in (so the fp32 reference computes with exactly the values the file holds), and writes
tests/fixtures/<model>/lora/<adapter>/:
  adapter_config.json, adapter_model.safetensors   as PEFT's save_pretrained writes them
  golden.json   {"prompt", "prompt_logits" [[...] per position], "greedy" (32 tokens), "greedy_margins",
                 "min_margin", "base_max_abs_diff" (max |adapter - base| over the prompt logits),
                 "base_greedy_differs", "tensor_dtype", peft/transformers/torch versions}
A seed is accepted only when the adapter moves the prompt logits by >= 1e-3 (100x the C++ tolerance), changes
the greedy continuation, and every greedy step's margin (top-1 minus top-2) is >= 1e-3.

golden.json also holds "prompt_logits_bf16_base": the same with every base parameter rounded to bf16
(the reference for dtype: bf16; --bf16-base-only adds it to existing fixtures without touching them).

Usage:  python scripts/make_lora_goldens.py [--only NAME ...] [--bf16-base-only]
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_goldens import MIN_MARGIN, as_f32, dump_json, margin, run_generate  # noqa: E402

import peft  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MIN_BASE_DIFF = 1e-3
MAX_SEED_TRIES = 50

PHI_ALL = ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"]
PHI3_ALL = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]

# name -> (fixture, LoraConfig kwargs, tensor dtype in the file, B's standard deviation)
SPECS = {
    # Phi-2 style, unfused q/k/v, every target, rank 8, fp32 tensors.
    "phi2_r8_all": ("phi2_qkln", dict(r=8, lora_alpha=16, target_modules=PHI_ALL), torch.float32, 0.05),
    # rsLoRA, rank 4, a regex target (PEFT full-match rule), bf16 tensors.
    "phi2_r4_rslora_regex": ("phi2_qkln", dict(r=4, lora_alpha=8, use_rslora=True,
                                               target_modules=r".*\.(q_proj|v_proj|fc2)"), torch.bfloat16, 0.1),
    # Phi-3 style, fused qkv_proj / gate_up_proj, rank 8 with rank_pattern and alpha_pattern, fp16 tensors.
    "phi3_r8_pattern": ("phi3_mini_4k_swa", dict(r=8, lora_alpha=16, target_modules=PHI3_ALL,
                                                 rank_pattern={"o_proj": 4}, alpha_pattern={"down_proj": 32}),
                        torch.float16, 0.05),
    # Phi-3 style, rank 4, only some targets in one layer (layers_to_transform).
    "phi3_r4_layers": ("phi3_mini_4k_swa", dict(r=4, lora_alpha=4, target_modules=["qkv_proj", "gate_up_proj"],
                                                layers_to_transform=[1]), torch.float32, 0.2),
    # Fused targets with 40 query / 10 KV heads (KV heads replicated at TP 4).
    "phi40_r8_qkv_down": ("phi_40q10kv", dict(r=8, lora_alpha=8, target_modules=["qkv_proj", "down_proj"]),
                          torch.float32, 0.1),
}


def load_base(folder):
    return AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager",
                                                dtype=torch.float32).eval()


def forward_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].float()


def randomize(model, gen, dtype, b_std):
    """Random A (uniform, like PEFT's kaiming init) and random B, rounded to the file's dtype."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                bound = 1.0 / np.sqrt(p.shape[1])
                v = (torch.rand(p.shape, generator=gen) * 2 - 1) * bound
            elif "lora_B" in name:
                v = torch.randn(p.shape, generator=gen) * b_std
            else:
                continue
            p.copy_(v.to(dtype).to(torch.float32))


def make_adapter(name, out_root):
    fixture, kwargs, dtype, b_std = SPECS[name]
    folder = FIXTURES / fixture
    golden = json.loads((folder / "golden.json").read_text())
    prompt, T = golden["prompt"], golden["tokenizer_size"]
    base = load_base(folder)
    base_logits = forward_logits(base, prompt)
    ref = torch.tensor(golden["prompt_logits"], dtype=torch.float32)
    if (base_logits - ref).abs().max().item() > 1e-5:
        sys.exit(f"{fixture}: the fp32 forward no longer matches golden.json's prompt_logits")
    for seed in range(MAX_SEED_TRIES):
        model = get_peft_model(load_base(folder), LoraConfig(lora_dropout=0.0, bias="none", **kwargs)).eval()
        randomize(model, torch.Generator().manual_seed(1000 + seed), dtype, b_std)
        logits = forward_logits(model, prompt)
        diff = (logits - base_logits).abs().max().item()
        greedy, glogits, _, _ = run_generate(model, prompt, T)
        margins = [margin(r, T) for r in glogits]
        if diff >= MIN_BASE_DIFF and greedy != golden["greedy"] and min(margins) >= MIN_MARGIN:
            break
    else:
        sys.exit(f"{name}: no seed in {MAX_SEED_TRIES} tries met the diff/greedy/margin requirements")

    out = out_root / fixture / "lora" / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(str(out))
    # The saved folder must hold exactly the values the reference ran with, in the spec's dtype.
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = f"phi-cluster-fixture/{fixture}"  # not a path of this machine
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    saved = load_file(str(out / "adapter_model.safetensors"))
    if dtype != torch.float32:
        from safetensors.torch import save_file
        saved = {k: v.to(dtype).contiguous() for k, v in saved.items()}
        save_file(saved, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    state = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    for k, v in saved.items():
        if not torch.equal(v.float(), state[k].float()):
            sys.exit(f"{name}: saved tensor {k} differs from the values the reference ran with")

    result = {"name": name, "fixture": fixture, "peft_version": peft.__version__,
              "transformers_version": transformers.__version__, "torch_version": torch.__version__,
              "seed": 1000 + seed, "tensor_dtype": str(dtype).replace("torch.", ""), "prompt": prompt,
              "prompt_logits": as_f32(logits), "greedy": greedy, "greedy_margins": margins,
              "min_margin": min(margins), "base_max_abs_diff": diff,
              "base_greedy_differs": greedy != golden["greedy"]}
    (out / "golden.json").write_text(dump_json(result) + "\n")
    print(f"{name}: seed {1000 + seed}, moves the base logits by up to {diff:.3g}, greedy min margin "
          f"{min(margins):.3g}, tensors: {sorted(saved)[:2]}...")


def add_bf16_base(name, out_root):
    """prompt_logits_bf16_base: HF + PEFT (fp32 arithmetic) with every BASE parameter rounded to bf16 and
    the adapter's values as saved: the reference for `dtype: bf16` with an adapter (adapters are always
    computed in fp32). Added to the existing golden.json; the adapter files are not touched."""
    from peft import PeftModel
    fixture = SPECS[name][0]
    out = out_root / fixture / "lora" / name
    golden = json.loads((out / "golden.json").read_text())
    model = PeftModel.from_pretrained(load_base(FIXTURES / fixture), str(out)).eval()
    if (forward_logits(model, golden["prompt"]) - torch.tensor(golden["prompt_logits"])).abs().max().item() > 1e-5:
        sys.exit(f"{name}: the saved adapter no longer reproduces golden.json's prompt_logits")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" not in n:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    golden["prompt_logits_bf16_base"] = as_f32(forward_logits(model, golden["prompt"]))
    (out / "golden.json").write_text(dump_json(golden) + "\n")
    print(f"{name}: prompt_logits_bf16_base written")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=list(SPECS))
    ap.add_argument("--out", type=Path, default=FIXTURES)
    ap.add_argument("--bf16-base-only", action="store_true",
                    help="only add prompt_logits_bf16_base to existing adapter fixtures")
    args = ap.parse_args()
    for name in args.only:
        if not args.bf16_base_only:
            make_adapter(name, args.out)
        add_bf16_base(name, args.out)


if __name__ == "__main__":
    main()
