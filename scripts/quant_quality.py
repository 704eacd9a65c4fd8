#!/usr/bin/env python3
"""Quality gate of the quantized weights (issue 15, docs/QUANT.md) on the bundled model.

Held-out cross-entropy of models/phi-tiny-code (the tokens of its model card's loss: every held-out
stdlib file, 512-token windows, ids >= 4000 masked; see scripts/train_default_model.py) with the
decoder layers' linear weights (q, k, v, dense, fc1, fc2) quantized by scripts/quant_reference.py
and dequantized to fp32, HF transformers eager attention in fp32:
  - weight-only mode: the dequantized weights, fp32 activations (what the C++ weight-only kernels
    compute, bitwise at each level, up to the fp32 summation order);
  - int8-activation mode: the same, and the input of every quantized linear replaced by its
    per-block int8 quantization (quantize_activations: d = amax / 127 in fp32, round half away);
against the weights as shipped (bf16). As the C++ model holds them: the LM head (untied here) is
quantized to int8 (Q8) for both formats, and its input rounded too in the int8-activation mode;
the embedding stays 16-bit. The rows without "/head8" keep the LM head 16-bit (what the model did
before it quantized its head), for comparison. Also: greedy tokens agreeing with bf16 before the
first divergence on the default-model parity prompts (48 new tokens each).

    /work/venv-quant/bin/python scripts/quant_quality.py --out tests/fixtures/quant/quality.json
(pins: scripts/requirements-goldens.txt). Each configuration takes minutes of CPU; on a busy machine
run them as separate processes and merge:
    ... quant_quality.py --only int8/weight-only --out /tmp/q1.json   (one per configuration)
    ... quant_quality.py --merge /tmp/q*.json --out tests/fixtures/quant/quality.json
The bf16 baseline is the model card's held-out CE (models/phi-tiny-code/training_summary.json,
computed the same way) and the greedy tokens of tests/fixtures/default_model_expect.json (HF, bf16
weights); configuration "bf16/-" recomputes both and checks they match.
"""
import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import quant_reference as qr  # noqa: E402
import train_default_model as tdm  # noqa: E402

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense", "mlp.fc1", "mlp.fc2")
GATE = {"int8": 0.02, "int4": 0.1}  # max CE increase over bf16, percent


def quantized_modules(model, with_head):
    mods = []
    for layer in model.model.layers:
        for name in LINEARS:
            mods.append(layer.get_submodule(name))
    if with_head:
        mods.append(model.lm_head)
    return mods


def quantize_weights(model, fmt, with_head):
    for m in quantized_modules(model, with_head):
        w = m.weight.detach().float().numpy()
        if fmt == "int8" or m is model.lm_head:  # the head is int8 for both formats
            deq = qr.dequantize_q8(*qr.quantize_q8(w))
        else:
            deq = qr.dequantize_q4(*qr.quantize_q4(w))
        m.weight.data = torch.from_numpy(deq)


def activation_hook(_module, args):
    (x,) = args
    shape = x.shape
    flat = x.detach().float().reshape(-1, shape[-1]).numpy()
    q, d, _ = qr.quantize_activations(flat)
    nb = shape[-1] // qr.BLOCK
    deq = q.reshape(-1, nb, qr.BLOCK).astype(np.float32) * d[..., None]
    return (torch.from_numpy(deq.reshape(flat.shape)).reshape(shape),)


def make_model(fmt, mode, with_head):
    model = tdm.load_for_eval(tdm.DEFAULT_OUT)
    if fmt != "bf16":
        quantize_weights(model, fmt, with_head)
        if mode == "int8-act":
            for m in quantized_modules(model, with_head):
                m.register_forward_pre_hook(activation_hook)
    model.eval()
    return model


ALL_CONFIGS = ["bf16/-"] + [f"{f}/{m}{h}" for h in ("/head8", "") for f in ("int8", "int4")
                             for m in ("weight-only", "int8-act")]


def merge(paths, out):
    rows, n = [], None
    for p in paths:
        d = json.loads(Path(p).read_text())
        rows += d["rows"]
        n = d["heldout_targets"]
    order = {c: i for i, c in enumerate(ALL_CONFIGS)}
    key = lambda r: order[f"{r['weights']}/{r['mode']}" + ("/head8" if r["lm_head_quantized"] else "")]  # noqa: E731
    out.write_text(json.dumps({"model": "models/phi-tiny-code", "heldout_targets": n, "rows": sorted(rows, key=key)},
                              indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*", choices=ALL_CONFIGS, help="configurations to run (default: all)")
    ap.add_argument("--merge", nargs="*", help="merge the given --out files of separate runs into --out")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return

    files, _ = tdm.collect_files()
    heldout = [t for r, t in files if tdm.is_heldout(r)]
    tok = tdm.Tokenizer.from_file(str(tdm.DEFAULT_OUT / "tokenizer.json"))
    data = tdm.stream(tdm.encode_files(tok, heldout))
    wins = tdm.windows(data, tdm.CTX)

    summary = json.loads((tdm.DEFAULT_OUT / "training_summary.json").read_text())
    base_ce = summary["heldout_loss"]
    expect = json.loads(tdm.DEFAULT_FIXTURE.read_text())
    base_greedy = {p["name"]: p["greedy"] for p in expect["prompts"]}
    eos = expect["eos_token_ids"]
    configs = []
    for c in args.only or ALL_CONFIGS:
        parts = c.split("/")
        configs.append((parts[0], parts[1], len(parts) > 2))
    rows = []
    for fmt, mode, head in configs:
        t0 = time.time()
        model = make_model(fmt, mode, head)
        ce, n = tdm.heldout_loss(model, wins)
        greedy = {}
        for p in expect["prompts"]:
            greedy[p["name"]], _ = tdm.greedy(model, p["ids"], expect["max_new_tokens"], eos)
        if fmt == "bf16":
            assert abs(ce - base_ce) < 1e-6 * base_ce and greedy == base_greedy, (ce, base_ce, greedy, base_greedy)
        agree = {}
        for name, toks in greedy.items():
            ref = base_greedy[name]
            k = 0
            while k < min(len(toks), len(ref)) and toks[k] == ref[k]:
                k += 1
            agree[name] = k
        delta = 100.0 * (ce - base_ce) / base_ce
        row = {
            "weights": fmt,
            "mode": mode,
            "lm_head_quantized": head,
            "heldout_ce": round(ce, 6),
            "ce_delta_pct": round(delta, 4),
            "gate_pct": GATE.get(fmt),
            "passes": (delta <= GATE[fmt]) if fmt in GATE else None,
            "greedy_agree_before_divergence": agree,
            "greedy_lengths": {k: len(v) for k, v in base_greedy.items()},
        }
        rows.append(row)
        print(
            f"{fmt:5s} {mode:12s} head={'int8' if head else '16'} CE {ce:.6f} ({delta:+.4f} %) "
            f"greedy agree {agree} [{time.time() - t0:.0f} s]",
            flush=True,
        )
    out = {"model": "models/phi-tiny-code", "heldout_targets": n, "rows": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
