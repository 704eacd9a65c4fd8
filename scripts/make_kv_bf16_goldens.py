#!/usr/bin/env python3
"""HF reference for `kv_cache.dtype: bf16`: the golden prompt's logits with K and V rounded to bf16.

For each fixture written by scripts/make_goldens.py (config.json, model.safetensors, golden.json), loads the
model with the pinned transformers (scripts/requirements-goldens.txt), eager attention, fp32, one thread, and
runs the golden prompt with every layer's keys (after RoPE) and values rounded to bf16 and widened back to
fp32 before attention: exactly what phi-cluster's bf16 cache stores and reads. Writes kv_bf16.json beside
golden.json:
  {"prompt": [...], "prompt_logits_kv_bf16": [[...] per position], "max_abs_diff_vs_fp32_kv": float}
The last field records how far the rounding moves the logits (so a test can tell the golden is not the fp32 one).

Usage:  python scripts/make_kv_bf16_goldens.py [--only NAME ...]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_goldens import dump_json  # noqa: E402

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.models.phi import modeling_phi  # noqa: E402
from transformers.models.phi3 import modeling_phi3  # noqa: E402
from transformers.models.phimoe import modeling_phimoe  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT = ["phi1", "phi2_qkln", "phi3_mini_4k_swa", "phi3_128k_longrope", "phi3_rope_params", "phi4_mini", "phi_40q10kv",
           "phimoe"]
MODULES = [modeling_phi, modeling_phi3, modeling_phimoe]


class RoundedKv:
    """Within the block, every eager attention call sees K and V rounded to bf16 (nearest even)."""

    def __enter__(self):
        self.saved = [m.eager_attention_forward for m in MODULES]
        for m, orig in zip(MODULES, self.saved):
            def rounded(module, query, key, value, *args, _orig=orig, **kw):
                return _orig(module, query, key.to(torch.bfloat16).to(torch.float32),
                             value.to(torch.bfloat16).to(torch.float32), *args, **kw)
            m.eager_attention_forward = rounded
        return self

    def __exit__(self, *exc):
        for m, orig in zip(MODULES, self.saved):
            m.eager_attention_forward = orig


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0].float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    for name in args.only:
        folder = FIXTURES / name
        golden = json.loads((folder / "golden.json").read_text())
        prompt = golden["prompt"]
        kw = dict(attn_implementation="eager", dtype=torch.float32)
        if json.loads((folder / "config.json").read_text())["architectures"][0].lower().startswith("phimoe"):
            kw["experts_implementation"] = "eager"
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kw).eval()
        plain = logits(model, prompt)
        with RoundedKv():
            rounded = logits(model, prompt)
        ref = torch.tensor(golden["prompt_logits"], dtype=torch.float32)
        if (plain - ref).abs().max().item() > 1e-5:
            sys.exit(f"{name}: the fp32 forward no longer matches golden.json's prompt_logits")
        diff = (rounded - plain).abs().max().item()
        if diff == 0.0:
            sys.exit(f"{name}: rounding K/V to bf16 changed nothing: the patch did not reach the attention")
        out = {"name": name, "transformers_version": transformers.__version__, "torch_version": torch.__version__,
               "prompt": prompt, "prompt_logits_kv_bf16": rounded.numpy().astype(np.float32),
               "max_abs_diff_vs_fp32_kv": diff}
        (folder / "kv_bf16.json").write_text(dump_json(out) + "\n")  # float32 values, shortest spelling
        print(f"{name}: {len(prompt)} positions, K/V rounding moves the logits by up to {diff:.3g}")


if __name__ == "__main__":
    main()
