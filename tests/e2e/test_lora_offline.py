#!/usr/bin/env python3
"""phi-worker --adapter DIR offline: for every adapter fixture, greedy tokens at tp 1, 2 (and 4 for the 40-head
fixture) equal HF + PEFT's (with --vocab-limit set to the fixture tokenizer's size, the mask HF's goldens used).
An adapter the ranks refuse (use_dora) stops every rank with the reason.

Usage: test_lora_offline.py PHI_WORKER SOURCE_DIR
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

worker, src = sys.argv[1], Path(sys.argv[2])
mpirun = str(src / "scripts" / "mpirun.sh")
fixtures = src / "tests" / "fixtures"
failures = []


def run(np, model, adapter, prompt, n):
    # HF's goldens never generate ids at or above the fixture tokenizer's size: --vocab-limit does the same.
    limit = json.loads((model / "golden.json").read_text())["tokenizer_size"]
    argv = [mpirun, "-np", str(np), worker, "--model", str(model), "--adapter", str(adapter), "--dtype", "f32",
            "--prompt-ids", " ".join(map(str, prompt)), "--max-tokens", str(n), "--threads", "1",
            "--vocab-limit", str(limit)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


for golden in sorted(fixtures.glob("*/lora/*/golden.json")):
    adapter = golden.parent
    model = adapter.parent.parent
    g = json.loads(golden.read_text())
    heads = json.loads((model / "config.json").read_text())["num_attention_heads"]
    for np in (1, 2, 4):
        if heads % np or (np == 4 and heads < 40):
            continue
        p = run(np, model, adapter, g["prompt"], len(g["greedy"]))
        line = [l for l in p.stdout.splitlines() if l.startswith("generated ids:")]
        got = [int(x) for x in line[0].split(":")[1].split()] if line else None
        want = g["greedy"]
        ok = p.returncode == 0 and got is not None and len(got) == len(g["greedy"]) and got == want
        print(f"{adapter.name} np {np}: {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{adapter.name} np {np}: rc {p.returncode}, got {got}, want {want}\n{p.stderr[-2000:]}")

with tempfile.TemporaryDirectory() as tmp:
    bad = Path(tmp) / "dora"
    shutil.copytree(fixtures / "phi2_qkln" / "lora" / "phi2_r8_all", bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    p = run(2, fixtures / "phi2_qkln", bad, [1, 2, 3], 2)
    if p.returncode == 0 or "use_dora" not in p.stderr or "generated ids" in p.stdout:
        failures.append(f"use_dora adapter: rc {p.returncode}, stderr {p.stderr[-1500:]}")
    else:
        print("use_dora adapter refused on every rank")

for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
