#!/usr/bin/env python3
"""Generates tests/fixtures/sampling/hf_processors.json, the data test_sampling compares the C++
sampler's logit processing (coordinator/sampling/) against.

  (a) pipeline: random logits (vocab 50..320, some with ties, some with -inf entries, some with padded
      ids at or beyond the tokenizer size) with random prompt and generated ids, processed exactly as
      coordinator/sampling/sampler.h documents:
        0. ids >= limit set to -inf (they are never sampled);
        1. HF's RepetitionPenaltyLogitsProcessor over prompt + generated ids;
        2. OpenAI frequency then presence penalty over generated ids (vLLM's tensor ops, fp32);
        3.-6. HF's warpers in the order GenerationMixin._get_logits_processor builds them (temperature,
           top-k, top-p, min-p), only when sampling (do_sample=True).
      The processor list is obtained from the pinned transformers' own _get_logits_processor for
      each case's GenerationConfig, so HF's order and its "is this knob on" conditions are the ones
      tested. Greedy cases (do_sample=False) also record HF's argmax.
  (b) openai_penalties: a plain Python reference of OpenAI's formula
        mu[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty   (c over generated tokens)
      computed in float64 on its own, with no other processing.

Top-p and min-p compare probabilities with a threshold; cases where any token lies within 1e-5 of a
threshold, or where equal logits straddle the top-p cut (HF's torch.sort is not stable, so which of
equal logits it keeps is unspecified), are redrawn, so the expectations test semantics rather than
the last bit of a float sum.

-inf is written as null. Run with the pinned versions (a virtual environment outside the repo):
    pip install torch transformers==5.24.0
    python scripts/make_sampling_expectations.py     # writes tests/fixtures/sampling/hf_processors.json
A larger local sweep (not committed): --seed 7 --count 3000 --out /tmp/sampling.json, then run
test_sampling with PHI_SAMPLING_EXPECTATIONS=/tmp/sampling.json.
"""

import argparse
import json
import math
import os
import random
import types

import numpy as np
import torch
import transformers
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.utils import GenerationMixin

PINNED = {"transformers": "5.24.0"}
SEED = 20260611
N_PIPELINE = 120
N_OPENAI = 40
MARGIN = 1e-5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "sampling", "hf_processors.json")


def f32(x):
    return float(np.float32(x))


def hf_processors(config):
    """The processor list transformers' generate() would build for `config` (a decoder-only model)."""
    dummy = types.SimpleNamespace(config=types.SimpleNamespace(is_encoder_decoder=False))
    dummy._merge_criteria_processor_list = types.MethodType(GenerationMixin._merge_criteria_processor_list, dummy)
    return GenerationMixin._get_logits_processor(
        dummy,
        generation_config=config,
        input_ids_seq_length=1,
        encoder_input_ids=None,
        prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList(),
        device="cpu",
        model_kwargs={},
    )


def openai_penalties_torch(scores, generated, presence, frequency):
    """vLLM's apply_penalties for the OpenAI knobs, on an fp32 [1, V] tensor."""
    vocab = scores.shape[-1]
    counts = torch.zeros((1, vocab), dtype=torch.int64)
    for t in generated:
        counts[0, t] += 1
    scores = scores - torch.tensor([frequency], dtype=torch.float32).unsqueeze(1) * counts
    scores = scores - torch.tensor([presence], dtype=torch.float32).unsqueeze(1) * (counts > 0)
    return scores


def openai_penalties_reference(logits, generated, presence, frequency):
    """OpenAI's documented formula, plainly, in float64."""
    counts = {}
    for t in generated:
        counts[t] = counts.get(t, 0) + 1
    out = list(logits)
    for j, c in counts.items():
        if out[j] is None:
            continue
        out[j] = out[j] - c * frequency - (1.0 if c > 0 else 0.0) * presence
    return out


def encode(values):
    return [None if v == -math.inf else float(v) for v in values]


def top_p_is_clear(scores, top_p, after):
    """No ascending cumulative probability within MARGIN of 1 - top_p, and tied logits share a fate."""
    x = scores[0].double().numpy()
    order = sorted(range(len(x)), key=lambda i: (x[i], i))
    p = np.exp(x - x.max())
    p /= p.sum()
    cum = np.cumsum(p[order])
    if np.any(np.abs(cum - (1.0 - top_p)) < MARGIN):
        return False
    kept = after[0] != -math.inf
    by_value = {}
    for i in range(len(x)):
        if x[i] != -math.inf:
            by_value.setdefault(x[i], set()).add(bool(kept[i]))
    return all(len(s) == 1 for s in by_value.values())


def min_p_is_clear(scores, min_p):
    x = scores[0].double().numpy()
    ratio = np.exp(x - x.max())
    return not np.any(np.abs(ratio - min_p) < MARGIN)


def random_logits(rng, vocab):
    kind = rng.choice(["normal", "normal", "ties", "peaked", "neg_inf"])
    scale = rng.choice([0.5, 1.0, 2.0, 4.0])
    x = np.array([rng.gauss(0.0, scale) for _ in range(vocab)], dtype=np.float64)
    if kind == "ties":
        x = np.round(x * 2.0) / 2.0
    elif kind == "peaked":
        for _ in range(rng.randint(1, 3)):
            x[rng.randrange(vocab)] += rng.uniform(4.0, 10.0)
    elif kind == "neg_inf":
        for i in range(vocab):
            if rng.random() < 0.15:
                x[i] = -math.inf
    if rng.random() < 0.2:
        x = x - 3.0 * scale  # mostly negative logits: the repetition penalty multiplies them
    return kind, x.astype(np.float32)


def make_pipeline_case(rng, index):
    while True:
        vocab = rng.randint(50, 320)
        limit = vocab if rng.random() < 0.6 else rng.randint(vocab - 20, vocab - 1)
        kind, logits = random_logits(rng, vocab)
        if not np.any(np.isfinite(logits[:limit])):
            continue
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(0, 30))]
        generated = [rng.randrange(limit) for _ in range(rng.randint(0, 20))]
        if generated and rng.random() < 0.5:  # repeats, so frequency differs from presence
            generated += [rng.choice(generated) for _ in range(rng.randint(1, 6))]
        do_sample = rng.random() < 0.85
        params = {
            "temperature": f32(rng.choice([1.0, 1.0, 0.5, 0.7, 1.3, 2.0, 0.25])),
            "top_k": rng.choice([0, 0, 1, 3, 5, 20, 50, 1000]),
            "top_p": f32(rng.choice([1.0, 1.0, 0.9, 0.5, 0.95, 0.1, 0.75])),
            "min_p": f32(rng.choice([0.0, 0.0, 0.05, 0.1, 0.3, 0.6])),
            "repetition_penalty": f32(rng.choice([1.0, 1.0, 1.2, 0.8, 1.5, 2.0])),
            "presence_penalty": f32(rng.choice([0.0, 0.0, 0.5, -0.5, 1.5, -2.0, 2.0])),
            "frequency_penalty": f32(rng.choice([0.0, 0.0, 0.3, -0.7, 2.0, 1.1])),
        }
        config = GenerationConfig(
            do_sample=do_sample,
            temperature=params["temperature"],
            top_k=params["top_k"],
            top_p=params["top_p"],
            min_p=params["min_p"] if params["min_p"] > 0 else None,
            repetition_penalty=params["repetition_penalty"],
        )
        processors = hf_processors(config)

        scores = torch.from_numpy(logits.copy()).unsqueeze(0)
        scores[0, limit:] = -math.inf
        input_ids = torch.tensor([prompt + generated], dtype=torch.int64)
        if input_ids.shape[1] == 0:
            input_ids = torch.zeros((1, 0), dtype=torch.int64)
        penalties_done = params["presence_penalty"] == 0 and params["frequency_penalty"] == 0
        clear = True
        order = []
        for proc in processors:
            if not penalties_done and not isinstance(proc, RepetitionPenaltyLogitsProcessor):
                scores = openai_penalties_torch(scores, generated, params["presence_penalty"], params["frequency_penalty"])
                order.append("OpenAIPenalties")
                penalties_done = True
            before = scores.clone()
            scores = proc(input_ids, scores)
            order.append(type(proc).__name__)
            if isinstance(proc, TopPLogitsWarper):
                clear = clear and top_p_is_clear(before, params["top_p"], scores)
            if isinstance(proc, MinPLogitsWarper):
                clear = clear and min_p_is_clear(before, params["min_p"])
        if not penalties_done:
            scores = openai_penalties_torch(scores, generated, params["presence_penalty"], params["frequency_penalty"])
            order.append("OpenAIPenalties")
            penalties_done = True
        if not clear:
            continue
        case = {
            "name": f"pipeline_{index}_{kind}",
            "do_sample": do_sample,
            "params": params,
            "limit": limit,
            "prompt": prompt,
            "generated": generated,
            "logits": encode(logits.tolist()),
            "hf_order": order,
            "expected": encode(scores[0].tolist()),
        }
        if not do_sample:
            case["expected_argmax"] = int(torch.argmax(scores[0]).item())
        return case


def make_openai_case(rng, index):
    vocab = rng.randint(20, 200)
    _, logits = random_logits(rng, vocab)
    generated = [rng.randrange(vocab) for _ in range(rng.randint(0, 40))]
    presence = f32(rng.uniform(-2.0, 2.0))
    frequency = f32(rng.uniform(-2.0, 2.0))
    raw = encode(logits.tolist())
    return {
        "name": f"openai_{index}",
        "presence_penalty": presence,
        "frequency_penalty": frequency,
        "generated": generated,
        "logits": raw,
        "expected": openai_penalties_reference(raw, generated, presence, frequency),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--count", type=int, default=N_PIPELINE)
    args = ap.parse_args()
    if transformers.__version__ != PINNED["transformers"]:
        raise SystemExit(f"transformers {transformers.__version__} found, {PINNED['transformers']} pinned")

    transformers.logging.set_verbosity_error()  # greedy configs carry sampling knobs on purpose
    rng = random.Random(args.seed)
    full = GenerationConfig(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, repetition_penalty=1.2)
    data = {
        "generator": "scripts/make_sampling_expectations.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "hf_order": [type(p).__name__ for p in hf_processors(full)],
        "pipeline": [make_pipeline_case(rng, i) for i in range(args.count)],
        "openai_penalties": [make_openai_case(rng, i) for i in range(N_OPENAI)],
    }
    expected_order = [
        RepetitionPenaltyLogitsProcessor.__name__,
        TemperatureLogitsWarper.__name__,
        TopKLogitsWarper.__name__,
        TopPLogitsWarper.__name__,
        MinPLogitsWarper.__name__,
    ]
    if data["hf_order"] != expected_order:
        raise SystemExit(f"HF's processor order changed: {data['hf_order']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(data['pipeline'])} pipeline cases, {len(data['openai_penalties'])} penalty cases")


if __name__ == "__main__":
    main()
