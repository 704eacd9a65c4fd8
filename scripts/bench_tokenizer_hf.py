#!/usr/bin/env python3
"""Encode throughput: phi-cluster's tokenizer (build/bench/tokenizer/bench_tokenizer) vs HF tokenizers, same
text, same machine, one thread, in one run.

The text (written to bench/data/, which git ignores) is ~2 MB of what prompts look like: the project's own
English docs and C++/Python sources, plus the multilingual / emoji / whitespace texts of the tokenizer test
expectations. HF is measured as the Rust `tokenizers.Tokenizer.encode` on one string (TOKENIZERS_PARALLELISM
=false, no encode_batch) and as `transformers.AutoTokenizer(...)(text)`; ids are checked equal to ours.

Usage: /root/venv-goldens/bin/python scripts/bench_tokenizer_hf.py [--bench build-tok/bench/tokenizer/bench_tokenizer]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RAYON_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "tokenizers"
FAMILIES = ["phi2", "phi3", "phi4mini"]


def build_text(target_bytes: int) -> str:
    parts = []
    roots = [REPO, REPO.parent / "shared"]
    for root in roots:
        if not root.exists():
            continue
        for p in sorted(root.rglob("*")):
            if any(s in p.parts for s in (".git", "build", "build-tok", "fixtures", ".venv")) or p.name.startswith("build"):
                continue
            if p.suffix in (".md", ".cpp", ".h", ".py", ".txt", ".cmake") and p.is_file() and p.stat().st_size < 2_000_000:
                try:
                    parts.append(p.read_text(encoding="utf-8"))
                except UnicodeDecodeError:
                    pass
    exp = json.loads((FIXTURES / "expectations" / "phi4mini.json").read_text(encoding="utf-8"))
    parts.append("\n".join(c["text"] for c in exp["cases"] if "text" in c))
    base = "\n".join(parts)
    text = base
    while len(text.encode("utf-8")) < target_bytes:
        text += "\n" + base
    return text


def split_chunks(text: str, chunk: int) -> list[str]:
    """Same cuts as bench_tokenizer --chunk: after the first newline at or past every `chunk`-byte mark."""
    data = text.encode("utf-8")
    out, start = [], 0
    while start < len(data):
        cut = data.find(b"\n", min(len(data), start + chunk))
        cut = len(data) if cut < 0 else cut + 1
        out.append(data[start:cut].decode("utf-8"))
        start = cut
    return out


def best_time(fn, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.thread_time()  # CPU time of this thread (the Rust encode runs on it): robust on shared machines
        out = fn()
        best = min(best, time.thread_time() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=str(REPO / "build-tok" / "bench" / "tokenizer" / "bench_tokenizer"))
    ap.add_argument("--mb", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=4096, help="prompt size of the chunked measurement (bytes)")
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    data = REPO / "bench" / "data"
    data.mkdir(parents=True, exist_ok=True)
    text_path = data / "tokenizer_bench.txt"
    text = build_text(int(args.mb * 1e6))
    text_path.write_text(text, encoding="utf-8")
    nbytes = len(text.encode("utf-8"))
    mb = nbytes / 1e6

    ours, ours_chunked = {}, {}
    if Path(args.bench).exists():
        for chunk, dest in ((0, ours), (args.chunk, ours_chunked)):
            out = subprocess.run([args.bench, "--text", str(text_path), "--repeat", str(args.repeat), "--json",
                                  "--chunk", str(chunk)],
                                 check=True, capture_output=True, text=True, env=dict(os.environ, PHI_SOURCE_DIR=str(REPO)))
            for line in out.stdout.splitlines():
                r = json.loads(line)
                dest[r["family"]] = r
    else:
        print(f"note: {args.bench} not found; build it first (cmake --build ... --target bench_tokenizer)")
    chunks = split_chunks(text, args.chunk)

    print(f"text: {text_path.relative_to(REPO)}, {mb:.2f} MB; best of {args.repeat}; one thread; "
          f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}")
    print(f"one prompt of {mb:.2f} MB, and {len(chunks)} prompts of ~{args.chunk} bytes")
    print(f"{'family':10} {'ours MB/s':>10} {'HF tokenizers MB/s':>19} {'ratio':>6} {'AutoTokenizer MB/s':>19} "
          f"{'tokens':>9} {'same count':>10} | {'chunked: ours':>13} {'HF':>7} {'ratio':>6}")
    for fam in FAMILIES:
        with tempfile.TemporaryDirectory() as tmp:
            for f in (FIXTURES / fam).iterdir():
                if f.name.endswith(".gz"):
                    with gzip.open(f, "rb") as g:
                        (Path(tmp) / f.name[:-3]).write_bytes(g.read())
                else:
                    shutil.copy(f, Path(tmp) / f.name)
            raw = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
            auto = AutoTokenizer.from_pretrained(tmp)
        t_raw, enc = best_time(lambda: raw.encode(text, add_special_tokens=False), args.repeat)
        t_auto, ids_auto = best_time(lambda: auto(text, add_special_tokens=False)["input_ids"], max(1, args.repeat // 2))
        t_chunks, n_chunk_ids = best_time(lambda: sum(len(raw.encode(c, add_special_tokens=False).ids) for c in chunks),
                                          args.repeat)
        o = ours.get(fam)
        oc = ours_chunked.get(fam)
        ours_mbs = o["mb_per_s"] if o else float("nan")
        ours_c = oc["mb_per_s"] if oc else float("nan")
        same = o is not None and o["tokens"] == len(ids_auto) and oc is not None and oc["tokens"] == n_chunk_ids
        print(f"{fam:10} {ours_mbs:10.2f} {mb / t_raw:19.2f} {ours_mbs / (mb / t_raw):6.2f} {mb / t_auto:19.2f} "
              f"{len(ids_auto):9d} {str(same):>10} | {ours_c:13.2f} {mb / t_chunks:7.2f} {ours_c / (mb / t_chunks):6.2f}")
        if len(enc.ids) != len(ids_auto):
            print(f"  note: raw tokenizers and AutoTokenizer differ on this text ({len(enc.ids)} vs {len(ids_auto)} ids)")


if __name__ == "__main__":
    sys.exit(main())
