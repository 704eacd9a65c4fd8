#!/usr/bin/env python3
"""Train phi-tiny-code: the small, real-architecture Phi model that phi-cluster ships as its default model.

Real Phi checkpoints are gigabytes and no model hub is reachable from where phi-cluster is built, yet the
README's first command must run the main job out of the box. This script builds, on 2 CPU cores in well under
an hour, a tiny model that has actually learned something, using only data that is already on the
machine: the Python standard library source of the Python that runs this script (Phi-1 was a code model).
The committed model took 43 min of training (44 min in all) on 2 CPU cores shared with other jobs.

Steps (deterministic: fixed seeds, fixed file split, fixed step count):
  1. data       every *.py file of the running Python's standard library, minus tests, site-packages, generated
                tables (encodings/, pydoc_data/, _sysconfigdata*) and files that are not UTF-8. The files are
                split by a hash of their relative path: ~5 % held out (never seen by the tokenizer or the model).
  2. tokenizer  byte-level BPE (GPT-2 style: ByteLevel pre-tokenizer without prefix space, ByteLevel decoder,
                no normalizer), trained on the training files only. ids 0-3 are the specials
                <|endoftext|> <|user|> <|assistant|> <|end|>; 4000 ids in all.
  3. model      transformers PhiForCausalLM, Phi-1 layout (parallel attention/MLP block, one LayerNorm per layer,
                biases everywhere incl. lm_head, partial rotary 0.5, gelu_new, untied lm_head). The embedding
                has 4032 rows (tokenizer size padded up to a multiple of 64, as real Phi checkpoints pad 50295 ->
                51200); the padding rows are never trained on and serving code must mask them.
  4. training   AdamW, linear warmup + cosine decay, random 512-token windows of the concatenated training files
                (files separated by <|endoftext|>), fp32 on the CPU, torch.set_num_threads(2). The held-out loss is
                measured every EVAL_EVERY steps on a fixed subset and the best state is kept.
  5. export     bf16 weights (model.safetensors), config.json in the hub's Phi-1 spelling, generation_config.json,
                tokenizer.json, tokenizer_config.json (with a Phi-3-style chat template), README.md (model card).
  6. evaluation the saved folder is loaded back with from_pretrained (bf16 weights computed in fp32, eager
                attention). Held-out cross-entropy over every held-out token is compared with a unigram model over
                the same tokenizer (add-one smoothed counts of the training tokens).
  7. fixture    tests/fixtures/default_model_expect.json: HF tokenizer ids, HF greedy continuations (with per-step
                top-1 minus top-2 margins) and decoded text for a few prompts, plus round-trip texts taken from
                held-out files.

Usage:
  /root/venv-goldens/bin/python scripts/train_default_model.py --out models/phi-tiny-code
  ... --bench                  measure training throughput and exit
  ... --fixture-only           no training: rewrite the fixture and the model card (README.md) from an existing
                               --out folder and its training_summary.json

Pinned versions: scripts/requirements-train.txt.
"""

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sys
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs, spinning workers that wait for a
# descheduled sibling made every small op cost a scheduler time slice (greedy decoding was ~60x slower).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedTokenizerFast,
)

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "models" / "phi-tiny-code"
DEFAULT_FIXTURE = ROOT / "tests" / "fixtures" / "default_model_expect.json"

SEED = 1234
HELDOUT_PERCENT = 5

# tokenizer
SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]  # ids 0, 1, 2, 3
EOT = "<|endoftext|>"
TOKENIZER_SIZE = 4000
VOCAB_PAD_MULTIPLE = 64
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# model
HIDDEN = 256
LAYERS = 4
HEADS = 8
INTERMEDIATE = 1024
CTX = 512  # training window == max_position_embeddings

# training (sized from --bench on the 2 shared cores: see the model card for the measured time)
BATCH = 4
STEPS = 2400
LR = 2e-3
MIN_LR_FRAC = 0.1
WARMUP = 100
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0
EVAL_EVERY = 200
EVAL_WINDOWS = 16  # held-out windows used for the periodic (model-selection) evaluation

# fixture
FIXTURE_NEW_TOKENS = 48
N_ROUNDTRIP = 50
CARD_SAMPLE_PROMPT = "def fibonacci(n):"
CARD_SAMPLE_TOKENS = 128

FIXTURE_SUMMARY_KEYS = ("heldout_loss", "unigram_loss", "reduction_pct", "params", "python_version")

EXCLUDE_DIRS = {"test", "tests", "idle_test", "site-packages", "encodings", "pydoc_data", "__pycache__"}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def set_seed(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


# ----------------------------------------------------------------------------------------------- data


def stdlib_dir():
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def collect_files():
    """Sorted (relpath, text) of the standard library's Python source, minus tests and generated tables."""
    base = stdlib_dir()
    out, skipped = [], []
    for p in sorted(base.rglob("*.py")):
        rel = p.relative_to(base).as_posix()
        parts = rel.split("/")
        if any(d in EXCLUDE_DIRS for d in parts[:-1]):
            continue
        if parts[0].startswith("config-") or parts[-1].startswith("_sysconfigdata"):
            continue
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(rel)
            continue
        if not text.strip():
            continue
        out.append((rel, text))
    return out, skipped


def is_heldout(rel):
    return int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % 100 < HELDOUT_PERCENT


# ------------------------------------------------------------------------------------------ tokenizer


def train_tokenizer(train_texts):
    tok = Tokenizer(models.BPE())
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_SIZE,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(train_texts, trainer=trainer, length=len(train_texts))
    assert tok.get_vocab_size() == TOKENIZER_SIZE, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def wrap_tokenizer(tok):
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=EOT,
        additional_special_tokens=SPECIALS[1:],
        model_max_length=CTX,
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def write_tokenizer(tok, out):
    hf = wrap_tokenizer(tok)
    hf.save_pretrained(out)
    # tokenizer_config.json: make the few keys other loaders look at explicit and stable.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["add_bos_token"] = False
    cfg["add_eos_token"] = False
    cfg["model_max_length"] = CTX
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        # keep the folder minimal: the template lives in tokenizer_config.json
        if (out / extra).exists() and extra == "chat_template.jinja":
            (out / extra).unlink()


def encode_files(tok, texts):
    encs = tok.encode_batch(texts, add_special_tokens=False)
    return [e.ids for e in encs]


def stream(id_lists):
    eot = SPECIALS.index(EOT)
    out = []
    for ids in id_lists:
        out.extend(ids)
        out.append(eot)
    return torch.tensor(out, dtype=torch.long)


# ------------------------------------------------------------------------------------------------ model


def padded_vocab():
    return (TOKENIZER_SIZE + VOCAB_PAD_MULTIPLE - 1) // VOCAB_PAD_MULTIPLE * VOCAB_PAD_MULTIPLE


def make_config():
    return PhiConfig(
        vocab_size=padded_vocab(),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        partial_rotary_factor=0.5,
        rope_theta=10000.0,
        max_position_embeddings=CTX,
        layer_norm_eps=1e-5,
        hidden_act="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        qk_layernorm=False,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.02,
    )


def hub_config_json():
    """config.json in the spelling of the hub's microsoft/phi-1 (v4 keys: rope_theta / partial_rotary_factor)."""
    return {
        "architectures": ["PhiForCausalLM"],
        "model_type": "phi",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "embd_pdrop": 0.0,
        "hidden_act": "gelu_new",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": CTX,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": HEADS,
        "partial_rotary_factor": 0.5,
        "qk_layernorm": False,
        "resid_pdrop": 0.0,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "vocab_size": padded_vocab(),
    }


def generation_config_json():
    return {
        "bos_token_id": 0,
        "eos_token_id": [SPECIALS.index(EOT), SPECIALS.index("<|end|>")],
        "pad_token_id": SPECIALS.index(EOT),
        "do_sample": False,
        "max_new_tokens": 128,
        "transformers_version": transformers.__version__,
    }


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def windows(data, length):
    """Non-overlapping [length+1] windows; consecutive windows share one token so every token after the first
    of the stream is a target exactly once (the tail window may be shorter)."""
    out = []
    i = 0
    while i + 1 < len(data):
        out.append(data[i : i + length + 1])
        i += length
    return out


@torch.no_grad()
def heldout_loss(model, wins):
    """Mean cross-entropy (nats/token) over all targets of the given windows; ids >= tokenizer size masked."""
    model.eval()
    tot, n = 0.0, 0
    for w in wins:
        x = w[:-1].unsqueeze(0)
        y = w[1:]
        logits = model(input_ids=x).logits[0].float()
        logits[:, TOKENIZER_SIZE:] = float("-inf")
        tot += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        n += y.numel()
    model.train()
    return tot / n, n


def unigram_loss(train, wins):
    counts = torch.bincount(train, minlength=TOKENIZER_SIZE)[:TOKENIZER_SIZE].double() + 1.0
    logp = torch.log(counts / counts.sum())
    targets = torch.cat([w[1:] for w in wins])
    return float(-logp[targets].mean()), targets.numel()


def train(model, train_data, eval_wins, steps, batch):
    g = torch.Generator().manual_seed(SEED + 1)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR,
        betas=BETAS,
        eps=1e-8,
        fused=True,
    )
    # gelu_new == GELU(approximate="tanh") mathematically; the fused kernel is cheaper on the CPU. Restored below.
    acts = [layer.mlp.activation_fn for layer in model.model.layers]
    for layer in model.model.layers:
        layer.mlp.activation_fn = torch.nn.GELU(approximate="tanh")
    model.train()
    curve = []
    best = (float("inf"), -1, None)
    run_loss, run_n = 0.0, 0
    t0 = time.time()
    hi = len(train_data) - CTX - 1
    for step in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, steps)
        starts = torch.randint(0, hi, (batch,), generator=g)
        xb = torch.stack([train_data[s : s + CTX + 1] for s in starts.tolist()])
        logits = model(input_ids=xb[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), xb[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == steps:
            ev, _ = heldout_loss(model, eval_wins)
            elapsed = time.time() - t0
            tok_s = (step + 1) * batch * CTX / elapsed
            row = {
                "step": step + 1,
                "tokens": (step + 1) * batch * CTX,
                "train_loss": round(run_loss / run_n, 4),
                "heldout_loss": round(ev, 4),
                "lr": lr_at(step, steps),
                "elapsed_s": round(elapsed, 1),
            }
            curve.append(row)
            log(
                f"step {step+1}/{steps} train {row['train_loss']:.4f} heldout(subset) {ev:.4f} "
                f"lr {row['lr']:.2e} {elapsed/60:.1f} min {tok_s:.0f} tok/s"
            )
            run_loss, run_n = 0.0, 0
            if ev < best[0]:
                best = (ev, step + 1, copy.deepcopy(model.state_dict()))
    for layer, act in zip(model.model.layers, acts):
        layer.mlp.activation_fn = act
    return curve, best, time.time() - t0


# ----------------------------------------------------------------------------------------------- export


def save_model(model, out):
    bf = copy.deepcopy(model).to(torch.bfloat16)
    bf.save_pretrained(out, safe_serialization=True)
    (out / "config.json").write_text(json.dumps(hub_config_json(), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(generation_config_json(), indent=2) + "\n")


def load_for_eval(out):
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    # the shipped weights are bf16; loaded as fp32 they must be exactly the bf16 values
    sd = load_file(out / "model.safetensors")
    for k, v in sd.items():
        assert v.dtype == torch.bfloat16, (k, v.dtype)
    for k, p in model.state_dict().items():
        if k in sd:
            assert torch.equal(p, sd[k].float()), k
    return model


# ---------------------------------------------------------------------------------------------- fixture


class MaskPadded(LogitsProcessor):
    """Sets ids >= tokenizer size to -inf and records the top-1 minus top-2 margin of each step."""

    def __init__(self, t):
        self.t = t
        self.margins = []

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.t :] = float("-inf")
        top = torch.topk(scores[0].float(), 2).values
        self.margins.append(float(top[0] - top[1]))
        return scores


def greedy(model, ids, max_new, eos_ids):
    proc = MaskPadded(TOKENIZER_SIZE)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new,
            eos_token_id=eos_ids,
            pad_token_id=SPECIALS.index(EOT),
            logits_processor=LogitsProcessorList([proc]),
        )
    new = out[0, len(ids) :].tolist()
    # cross-check against a plain no-cache argmax loop over the same masked logits
    seq = list(ids)
    ref = []
    with torch.no_grad():
        for _ in range(max_new):
            lg = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
            lg[TOKENIZER_SIZE:] = float("-inf")
            nxt = int(lg.argmax())
            ref.append(nxt)
            seq.append(nxt)
            if nxt in eos_ids:
                break
    assert new == ref, (new, ref)
    return new, proc.margins[: len(new)]


def fixture_prompts(hf_tok):
    chat = hf_tok.apply_chat_template(
        [{"role": "user", "content": "Write a function that reverses a string."}],
        add_generation_prompt=True,
        tokenize=False,
    )
    return [
        ("fibonacci", "def fibonacci(n):"),
        ("import_os", "import os\n"),
        ("class_stack", "class Stack:\n    def __init__(self):"),
        ("for_range", "for i in range("),
        ("docstring", 'def read_config(path):\n    """Read a configuration file and return a dict."""\n'),
        ("chat", chat),
    ]


def roundtrip_texts(heldout, all_files):
    """Deterministic snippets of held-out files, hand-written edge cases, and non-ASCII lines of the stdlib."""
    rng = random.Random(SEED + 7)
    out = [
        "",
        "\n",
        "    ",
        "\t\tx = 1\r\n",
        "def f(x):\n    return x  # 注释 ünïcödé ∑ 🐍\n",
        "s = 'naïve café — “quotes” ½ ¼ → ∞'\n",
        "Привет, мир! こんにちは世界 안녕하세요 مرحبا\n",
        "emoji: 👍🏽 👨‍👩‍👧 🇫🇷\u200d\u00a0\ufeff end",
        "x=1;y=2\n\n\n\n        return    x+y   \n",
        "<|user|>\nhi<|end|>\n<|assistant|>\n",
        "text<|endoftext|>more <|end|>",
        "a\u0301 e\u0300 \U0001f600 \x00\x01\x7f",
    ]
    files = [t for _, t in heldout]
    while len(out) < N_ROUNDTRIP:
        t = files[rng.randrange(len(files))]
        lines = t.splitlines(keepends=True)
        a = rng.randrange(len(lines))
        n = rng.randint(1, 12)
        snip = "".join(lines[a : a + n])
        if snip and snip not in out:
            out.append(snip)
    # non-ASCII source lines (the held-out files have few or none, so all files are used: a tokenizer round trip
    # does not depend on what the model was trained on)
    non_ascii = [ln for _, t in all_files for ln in t.splitlines(keepends=True) if any(ord(c) > 127 for c in ln)]
    for ln in non_ascii[:: max(1, len(non_ascii) // 10)][:10]:
        if ln not in out:
            out.append(ln)
    return out


def write_fixture(out, heldout, all_files, fixture_path, summary):
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert len(hf_tok) == TOKENIZER_SIZE, len(hf_tok)
    model = load_for_eval(out)
    eos_ids = [SPECIALS.index(EOT), SPECIALS.index("<|end|>")]
    prompts = []
    for name, text in fixture_prompts(hf_tok):
        ids = hf_tok(text)["input_ids"]
        assert hf_tok.decode(ids) == text
        new, margins = greedy(model, ids, FIXTURE_NEW_TOKENS, eos_ids)
        prompts.append(
            {
                "name": name,
                "text": text,
                "ids": ids,
                "greedy": new,
                "stopped_on_eos": bool(new and new[-1] in eos_ids),
                "greedy_margins": [float(np.float32(m)) for m in margins],
                "min_margin": float(np.float32(min(margins))) if margins else None,
                "decoded": hf_tok.decode(new),
                "decoded_skip_special": hf_tok.decode(new, skip_special_tokens=True),
            }
        )
        log(f"fixture {name}: {len(ids)} prompt ids, {len(new)} new, min margin {min(margins):.4f}")
    rts = []
    for text in roundtrip_texts(heldout, all_files):
        ids = hf_tok(text)["input_ids"]
        dec = hf_tok.decode(ids)
        rts.append({"text": text, "ids": ids, "decoded": dec, "roundtrips": dec == text})
    fx = {
        "name": "phi-tiny-code",
        "generator": "scripts/train_default_model.py",
        "model_dir": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "safetensors_version": safetensors.__version__,
        "python_version": platform.python_version(),
        "tokenizer_size": TOKENIZER_SIZE,
        "vocab_size": padded_vocab(),
        "eos_token_ids": eos_ids,
        "special_tokens": {s: i for i, s in enumerate(SPECIALS)},
        "chat_template": CHAT_TEMPLATE,
        "max_new_tokens": FIXTURE_NEW_TOKENS,
        "notes": (
            "Reference = HF transformers at the versions above, AutoModelForCausalLM.from_pretrained(model_dir, "
            "dtype=float32, attn_implementation='eager') on the CPU: the bf16 weights of model.safetensors computed "
            "in fp32. ids = AutoTokenizer(text)['input_ids'] (default add_special_tokens; this tokenizer adds no "
            "BOS/EOS). The chat prompt is apply_chat_template([{role: user, ...}], add_generation_prompt=True, "
            "tokenize=False). greedy = generate(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id="
            "eos_token_ids) with ids >= tokenizer_size set to -inf; it stops after emitting an eos id (the eos id is "
            "included). It equals a no-cache argmax loop. greedy_margins: top1 - top2 of the masked fp32 logits at "
            "each step. decoded = tokenizer.decode(greedy) (special tokens kept). roundtrip: ids = "
            "AutoTokenizer(text)['input_ids'], decoded = decode(ids)."
        ),
        "prompts": prompts,
        "roundtrip": rts,
    }
    if summary:
        fx["model_summary"] = summary
    fixture_path.parent.mkdir(parents=True, exist_ok=True)
    fixture_path.write_text(json.dumps(fx, indent=1, ensure_ascii=False) + "\n")
    log(f"wrote {fixture_path} ({fixture_path.stat().st_size} bytes)")
    return model, hf_tok


# ------------------------------------------------------------------------------------------- model card


def card_text(s):
    curve_rows = "\n".join(
        f"| {r['step']} | {r['tokens']/1e6:.2f} M | {r['train_loss']:.3f} | {r['heldout_loss']:.3f} | {r['elapsed_s']/60:.1f} |"
        for r in s["curve"]
    )
    return f"""# phi-tiny-code

A tiny code model with the real **Phi-1 architecture** (`PhiForCausalLM`), trained from scratch on the
Python standard library so that phi-cluster has a default model that runs out of the box (no model hub
needed). It is the model of phi-cluster's default config and of the README demo. It is a toy: it writes
code that *looks* like Python (indentation, keywords, plausible names), not code that is correct.

Built by `scripts/train_default_model.py` (rerun: see *Rebuilding* below).

## Architecture

| | |
|---|---|
| class | `PhiForCausalLM` (model_type `phi`, Phi-1 layout: parallel attention + MLP block, one LayerNorm per layer, biases on every projection incl. `lm_head`, untied `lm_head`) |
| parameters | {s['params']:,} ({s['params']/1e6:.2f} M; {s['params_used']:,} excluding the {padded_vocab()-TOKENIZER_SIZE} padding rows of embedding / lm_head) |
| layers / hidden / intermediate | {LAYERS} / {HIDDEN} / {INTERMEDIATE} |
| heads | {HEADS} (head_dim {HIDDEN // HEADS}, kv heads = heads; divisible for TP 1, 2, 4, 8) |
| rotary | partial_rotary_factor 0.5 → rotary_dim {HIDDEN // HEADS // 2}, NeoX rotate_half, theta 10000 |
| activation / norm | gelu_new / LayerNorm eps 1e-5 |
| context | max_position_embeddings {CTX} (trained on {CTX}-token windows) |
| vocab | tokenizer {TOKENIZER_SIZE} ids; embedding / lm_head {padded_vocab()} rows (padded to a multiple of {VOCAB_PAD_MULTIPLE}, like real Phi checkpoints: ids ≥ {TOKENIZER_SIZE} are never produced by the tokenizer and must be masked when sampling) |
| weights | bf16 `model.safetensors`, hub tensor names |

## Tokenizer

Byte-level BPE (GPT-2 style: `ByteLevel` pre-tokenizer with the GPT-2 regex, no prefix space, `ByteLevel`
decoder, no normalizer), {TOKENIZER_SIZE} ids, trained with HF `tokenizers` on the training files only.
Special tokens: `<|endoftext|>` = 0 (bos = eos = pad), `<|user|>` = 1, `<|assistant|>` = 2, `<|end|>` = 3.
No BOS is added. Chat template (Phi-3 style; any role name is rendered as `<|role|>`, only `user` and
`assistant` are tokens), as stored in `tokenizer_config.json`:

```json
{json.dumps(CHAT_TEMPLATE)}
```

which renders `[{{"role": "user", "content": "Hi"}}]` with the generation prompt as
`<|user|>\\nHi<|end|>\\n<|assistant|>\\n`.

The model never saw chat-formatted text; the template exists so the chat endpoint has something to render.
Generation stops on `<|endoftext|>` or `<|end|>` (`generation_config.json`).

## Training data

The `*.py` files of the standard library of **Python {s['python_version']}** (`{s['stdlib_dir']}` on the build
machine), excluding `test/`, `tests/`, `idle_test/`, `site-packages/`, `encodings/` and `pydoc_data/`
(generated tables), `_sysconfigdata*`, and files that are not UTF-8.
{s['n_files']} files; {s['n_heldout_files']} of them (those whose `sha256(relative path) mod 100 < {HELDOUT_PERCENT}`) are held out
and were seen neither by the tokenizer nor by the model.

| | files | bytes | tokens |
|---|---|---|---|
| train | {s['n_train_files']} | {s['train_bytes']:,} | {s['train_tokens']:,} |
| held-out | {s['n_heldout_files']} | {s['heldout_bytes']:,} | {s['heldout_tokens']:,} |

Files are concatenated in path order, each followed by `<|endoftext|>`.

**Licence of the data:** the Python standard library is © Python Software Foundation and distributed under
the PSF License Agreement (Python Software Foundation License Version 2; see `LICENSE.txt` of the Python
distribution).

## Training

AdamW (betas {BETAS}, weight decay {WEIGHT_DECAY} on matrices), peak LR {LR}, {WARMUP} warmup steps, cosine decay to
{MIN_LR_FRAC} × peak, gradient clipping {GRAD_CLIP}, batch {BATCH} × {CTX} tokens, {s['steps']} steps
({s['steps']*BATCH*CTX/1e6:.2f} M tokens ≈ {s['steps']*BATCH*CTX/s['train_tokens']:.2f} epochs), fp32 on the CPU with
`torch.set_num_threads(2)` (and `OMP_WAIT_POLICY=PASSIVE`), seed {SEED}. No dropout. Training took {s['train_seconds']/60:.1f} min
(whole script {s['total_seconds']/60:.1f} min) on 2 cores of {s['cpu']} shared with other work.
The checkpoint with the lowest held-out loss on a fixed {EVAL_WINDOWS}-window subset is kept (step {s['best_step']}).

| step | tokens | train loss | held-out loss (subset) | minutes |
|---|---|---|---|---|
{curve_rows}

(losses in nats/token, fp32 weights during training)

## Evaluation

Cross-entropy in nats/token over **all** {s['heldout_targets']:,} held-out tokens ({CTX}-token windows), for the
weights **as shipped** (bf16, computed in fp32, HF eager attention, ids ≥ {TOKENIZER_SIZE} masked):

| model | held-out CE (nats/token) | bits/byte |
|---|---|---|
| unigram over the same tokenizer (add-one smoothed training counts) | {s['unigram_loss']:.4f} | {s['unigram_bpb']:.3f} |
| phi-tiny-code | **{s['heldout_loss']:.4f}** | {s['heldout_bpb']:.3f} |

phi-tiny-code's held-out cross-entropy is **{s['reduction_pct']:.1f} % below** the unigram model's
(final training loss {s['final_train_loss']:.4f}).

## Sample

Greedy continuation (HF transformers, {CARD_SAMPLE_TOKENS} new tokens max) of `{CARD_SAMPLE_PROMPT}`:

```python
{s['sample']}
```

## Licence

The weights and tokenizer were trained by the phi-cluster project and are released under the **MIT License**
(like phi-cluster). The training data is the Python standard library, licensed under the PSF License
Agreement. Phi is Microsoft's model family; this model only reuses the published architecture, no Microsoft
weights.

## Rebuilding

```sh
python3 -m venv /root/venv-goldens
/root/venv-goldens/bin/pip install -r scripts/requirements-train.txt
/root/venv-goldens/bin/python scripts/train_default_model.py --out models/phi-tiny-code
```

Seeded throughout (fixed file split, seeds and step count), CPU only, 2 threads. Retraining the tokenizer
reproduces `tokenizer.json` exactly; a bit-for-bit rerun of the model training has not been checked (CPU
kernels can change with the thread count and the CPU). The result depends on the Python version whose
standard library is found (here {s['python_version']}) and on the pinned package versions:
torch {s['torch_version']}, transformers {s['transformers_version']}, tokenizers {s['tokenizers_version']},
safetensors {s['safetensors_version']}. It also rewrites `tests/fixtures/default_model_expect.json`
(HF greedy continuations and tokenizer round-trips that phi-cluster's tests compare against).
`--fixture-only` rewrites that fixture and this card from the folder without training.
"""


def card_sample(model, hf_tok):
    ids = hf_tok(CARD_SAMPLE_PROMPT)["input_ids"]
    new, _ = greedy(model, ids, CARD_SAMPLE_TOKENS, [SPECIALS.index(EOT), SPECIALS.index("<|end|>")])
    sample = CARD_SAMPLE_PROMPT + hf_tok.decode(new, skip_special_tokens=True)
    log("sample:\n" + sample)
    return sample


def write_card(out, summary):
    (out / "README.md").write_text(card_text(summary))
    (out / "training_summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")


def cpu_name():
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ------------------------------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--fixture", type=Path, default=DEFAULT_FIXTURE)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--bench", action="store_true", help="measure training tokens/s and exit")
    ap.add_argument("--fixture-only", action="store_true", help="no training: rewrite the fixture and model card from --out")
    args = ap.parse_args()
    out = args.out.resolve()
    t_start = time.time()
    set_seed(SEED)

    files, skipped = collect_files()
    train_files = [(r, t) for r, t in files if not is_heldout(r)]
    heldout_files = [(r, t) for r, t in files if is_heldout(r)]
    log(
        f"Python {platform.python_version()} stdlib {stdlib_dir()}: {len(files)} files "
        f"({len(train_files)} train, {len(heldout_files)} held out), {len(skipped)} non-UTF-8 skipped"
    )

    if args.fixture_only:
        # fixture and model card from the folder and its training_summary.json (no training)
        summary = json.loads((out / "training_summary.json").read_text())
        fx_summary = {k: summary[k] for k in FIXTURE_SUMMARY_KEYS}
        model_eval, hf_tok = write_fixture(out, heldout_files, files, args.fixture.resolve(), fx_summary)
        summary["sample"] = card_sample(model_eval, hf_tok)
        write_card(out, summary)
        return

    tok = train_tokenizer([t for _, t in train_files])
    train_data = stream(encode_files(tok, [t for _, t in train_files]))
    heldout_data = stream(encode_files(tok, [t for _, t in heldout_files]))
    log(f"tokenizer: {tok.get_vocab_size()} ids; train {len(train_data):,} tokens, held-out {len(heldout_data):,}")

    hwins = windows(heldout_data, CTX)
    g = random.Random(SEED + 3)
    eval_wins = [w for w in g.sample(hwins[:-1], min(EVAL_WINDOWS, len(hwins) - 1))]

    set_seed(SEED)
    config = make_config()
    model = PhiForCausalLM(config)
    model.config._attn_implementation = "sdpa"
    log(f"model: {n_params(model):,} parameters")

    if args.bench:
        import itertools

        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for b in (BATCH,):
            xb = train_data[: b * (CTX + 1)].view(b, CTX + 1)
            times = []
            for _ in itertools.repeat(None, 4):
                t0 = time.time()
                lg = model(input_ids=xb[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), xb[:, 1:].reshape(-1))
                opt.zero_grad()
                loss.backward()
                opt.step()
                times.append(time.time() - t0)
            dt = sorted(times[1:])[1]
            log(f"bench batch {b}x{CTX}: {dt:.2f} s/step, {b*CTX/dt:.0f} tok/s")
        return

    curve, (best_loss, best_step, best_state), train_seconds = train(model, train_data, eval_wins, args.steps, BATCH)
    model.load_state_dict(best_state)
    log(f"best held-out(subset) {best_loss:.4f} at step {best_step}; training {train_seconds/60:.1f} min")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_tokenizer(tok, out)
    save_model(model, out)

    # evaluation of the folder as shipped
    model_eval = load_for_eval(out)
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert len(hf_tok) == TOKENIZER_SIZE
    assert hf_tok("def f():\n    pass")["input_ids"] == tok.encode("def f():\n    pass").ids
    ce, n_targets = heldout_loss(model_eval, hwins)
    uni, n_uni = unigram_loss(train_data, hwins)
    assert n_targets == n_uni
    reduction = 100.0 * (1 - ce / uni)
    heldout_bytes = sum(len(t.encode()) for _, t in heldout_files)
    log(f"held-out CE {ce:.4f} nats/token vs unigram {uni:.4f}: {reduction:.1f} % lower ({n_targets} tokens)")

    sample = card_sample(model_eval, hf_tok)

    summary = {
        "python_version": platform.python_version(),
        "stdlib_dir": str(stdlib_dir()),
        "n_files": len(files),
        "n_train_files": len(train_files),
        "n_heldout_files": len(heldout_files),
        "train_bytes": sum(len(t.encode()) for _, t in train_files),
        "heldout_bytes": heldout_bytes,
        "train_tokens": len(train_data),
        "heldout_tokens": len(heldout_data),
        "heldout_targets": n_targets,
        "params": n_params(model),
        "params_used": n_params(model) - (padded_vocab() - TOKENIZER_SIZE) * (2 * HIDDEN + 1),
        "steps": args.steps,
        "curve": curve,
        "best_step": best_step,
        "final_train_loss": curve[-1]["train_loss"],
        "heldout_loss": ce,
        "unigram_loss": uni,
        "heldout_bpb": ce * n_targets / heldout_bytes / math.log(2),
        "unigram_bpb": uni * n_targets / heldout_bytes / math.log(2),
        "reduction_pct": reduction,
        "sample": sample,
        "train_seconds": train_seconds,
        "cpu": cpu_name(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "safetensors_version": safetensors.__version__,
    }
    fx_summary = {k: summary[k] for k in FIXTURE_SUMMARY_KEYS}
    write_fixture(out, heldout_files, files, args.fixture.resolve(), fx_summary)
    summary["total_seconds"] = time.time() - t_start
    write_card(out, summary)
    size = sum(p.stat().st_size for p in out.iterdir())
    log(f"wrote {out}: {sorted(p.name for p in out.iterdir())}, {size/1e6:.2f} MB")
    if reduction < 40.0:
        log("WARNING: held-out CE is less than 40 % below the unigram model")
        sys.exit(1)


if __name__ == "__main__":
    main()
