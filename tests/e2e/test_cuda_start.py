#!/usr/bin/env python3
"""`backend: cuda` on a machine without a GPU (issue 21): every rank of phi-worker exits at once
with the driver's reason, in offline mode (--backend cuda) and in server mode (backend: cuda in the
YAML), before any weight is read. On a machine with a GPU this test has nothing to check and skips
(exit 77); scripts/gpu_check.sh runs the GPU path there.

Usage: test_cuda_start.py CASE PHI_WORKER SOURCE_DIR     CASE: offline | server
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

CASE, WORKER, SRC = sys.argv[1:4]
MPIRUN_SH = os.path.join(SRC, "scripts/mpirun.sh")
FIXTURE = os.path.join(SRC, "tests/fixtures/phi3_mini_4k_swa")
SKIP = 77


def fail(msg, log):
    print("FAIL:", msg)
    print("--- output (tail):")
    print(log[-6000:])
    sys.exit(1)


def gpu_visible():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    r = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return r.returncode == 0 and "GPU " in r.stdout


if gpu_visible():
    print("skip: a GPU is visible here; the refusal without one cannot be checked")
    sys.exit(SKIP)

if CASE == "offline":
    argv = [MPIRUN_SH, "-np", "2", WORKER, "--backend", "cuda", "--model", FIXTURE, "--prompt-ids", "1 2 3",
            "--max-tokens", "2"]
else:
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "cuda.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {FIXTURE}\nbackend: cuda\nlisten:\n  tcp: 127.0.0.1:0\n  http: off\n")
    argv = [MPIRUN_SH, "-np", "2", WORKER, "--config", cfg]

t0 = time.time()
r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
elapsed = time.time() - t0
out = r.stdout + r.stderr
if r.returncode == 0:
    fail("phi-worker with backend cuda and no GPU exited 0", out)
# Each rank says why, for itself: the driver's reason (a build with the CUDA backend) or the
# missing backend (a build without nvcc/NCCL).
reasons = ("no usable GPU", "cudaGetDeviceCount failed", "built without the CUDA backend")
for rank in (0, 1):
    lines = [l for l in out.splitlines() if l.startswith(f"phi-worker rank {rank}: error:")]
    if not any(any(x in l for x in reasons) for l in lines):
        fail(f"rank {rank} did not report the missing GPU", out)
if "loaded" in out or "serving" in out:
    fail("a rank got past start-up", out)
print(f"ok ({CASE}): exit {r.returncode} after {elapsed:.1f} s, both ranks named the reason:")
print("\n".join(l for l in out.splitlines() if "error:" in l))
