#!/usr/bin/env python3
"""How an operator starts phi-cluster, checked as they would do it (issue 16).

Usage: test_launch.py CASE PHI_WORKER PHI_CLIENT SOURCE_DIR
  usage        `phi-worker` alone prints a usage naming --config and the default config; --help
               shows the default weight dtype (bf16) and how to get fp32
  default_np4  scripts/mpirun.sh -np 4 phi-worker --config configs/default.yaml (no tp in it)
               serves; phi-client reaches it on its default port's config; SIGTERM drains
  plain_mpirun plain `mpirun -np 2 phi-worker` (root variables set here): each rank is bound to
               one core and runs one thread; `kill -USR1 <mpirun>` drains (the request in flight
               finishes, exit 0)
  plain_mpirun_term  the same cluster: SIGTERM to mpirun ends the job at once, the client in flight
               gets an error (its done frame with finish_reason "error", docs/PROTOCOL.md)
  mixed_isa    MPMD start with one rank forced to a lower kernel level through its own environment:
               every rank runs the common level, the log says so and names the rank, and the tokens
               equal a run where both ranks are forced to that level
  other_build  a rank running a different build (same code, build id stripped) is refused by every rank
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from listen_ports import wait_bound_ports  # noqa: E402

CASE, WORKER, CLIENT, SRC = sys.argv[1:5]
MPIRUN_SH = os.path.join(SRC, "scripts/mpirun.sh")
DEFAULT_CONFIG = os.path.join(SRC, "configs/default.yaml")
FIXTURE = os.path.join(SRC, "tests/fixtures/phi3_mini_4k_swa")  # 4 query heads: TP 2 works
ROOT_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def fail(msg, log=None):
    print("FAIL:", msg)
    if log:
        print("--- log (tail):")
        print(log[-6000:])
    sys.exit(1)


def default_config_copy():
    """configs/default.yaml as shipped, with only its model path made absolute and its ports moved
    off the fixed defaults to ports the kernel picks (other tests and servers may hold them)."""
    text = open(DEFAULT_CONFIG).read()
    if re.search(r"^tp:", text, re.M):
        fail("configs/default.yaml sets tp; it should be left to the MPI world size")
    text = re.sub(r"^model: *\S+", f"model: {os.path.join(SRC, 'models/phi-tiny-code')}", text, flags=re.M)
    text = re.sub(r"^( *tcp:) *\S+", r"\1 127.0.0.1:0", text, flags=re.M)
    text = re.sub(r"^( *http:) *\S+", r"\1 127.0.0.1:0", text, flags=re.M)
    d = tempfile.mkdtemp()
    path = os.path.join(d, "default.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


class Server:
    def __init__(self, argv, env):
        self.log_path = os.path.join(tempfile.mkdtemp(), "log.txt")
        self.logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def log(self):
        # Its own handle: the ranks write through a copy of self.logf's file offset.
        with open(self.log_path) as f:
            return f.read()

    def wait_serving(self, timeout=120):
        """The native port rank 0 bound, once it accepts connections."""
        deadline = time.time() + timeout
        try:
            port, _ = wait_bound_ports(self.log, self.proc, timeout, http=False)
        except RuntimeError as e:
            self.kill()
            fail(str(e), self.log())
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"the cluster exited ({self.proc.returncode}) before serving", self.log())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                time.sleep(0.2)
        self.kill()
        fail("the cluster did not start listening", self.log())

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Tcp:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.f = self.s.makefile("rb")
        self.hello = self.recv()

    def send(self, frame):
        self.s.sendall(json.dumps(frame).encode() + b"\n")

    def recv(self):
        try:
            line = self.f.readline()
        except OSError:
            return None
        return json.loads(line) if line else None

    def until_end(self):
        """Frames until done/error or a closed connection: (last frame or None, tokens seen)."""
        n = 0
        while True:
            fr = self.recv()
            if fr is None or fr.get("type") in ("done", "error"):
                return fr, n
            n += fr.get("type") == "token"


def case_usage():
    r = subprocess.run([WORKER], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    if r.returncode == 0 or "--config" not in out or DEFAULT_CONFIG not in out:
        fail(f"`phi-worker` alone: exit {r.returncode}, expected a usage naming --config and {DEFAULT_CONFIG}", out)
    r = subprocess.run([WORKER, "--help"], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    m = re.search(r"--dtype[^\n]*(\n {10,}[^\n]*)*", out)
    if r.returncode != 0 or not m or "bf16" not in m.group(0) or "--dtype f32" not in m.group(0) \
            or "=bf16" not in m.group(0):
        fail("--help does not show the default dtype bf16 and how to get f32", out)
    print("ok: usage and --help")


def case_default_np4():
    cfg = default_config_copy()
    srv = Server([MPIRUN_SH, "-np", "4", WORKER, "--config", cfg], os.environ)
    try:
        tcp = srv.wait_serving()
        r = subprocess.run([CLIENT, "--port", str(tcp), "--max-tokens", "8", "--temperature", "0", "def add(a, b):"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or not r.stdout.strip():
            fail(f"phi-client: exit {r.returncode}: {r.stderr}", srv.log())
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.wait(60)
        log = srv.log()
        if rc != 0:
            fail(f"drain after SIGTERM: exit {rc}", log)
        if "serving 'phi-tiny-code' on 4 rank(s)" not in log:
            fail("the log does not say it served on 4 ranks", log)
        print("ok: 4 ranks from configs/default.yaml without tp; phi-client answered:", repr(r.stdout.strip()[:60]))
    finally:
        srv.kill()


def plain_mpirun(cfg):
    return Server(["mpirun", "-np", "2", WORKER, "--config", cfg], ROOT_ENV)


def case_plain_mpirun():
    # Drain: kill -USR1 <mpirun pid>; the request in flight finishes, every rank exits 0.
    cfg = default_config_copy()
    srv = plain_mpirun(cfg)
    try:
        tcp = srv.wait_serving()
        c = Tcp(tcp)
        c.send(dict(type="generate", id="d", prompt="def f(x):", max_tokens=48, ignore_eos=True, temperature=0))
        first = c.recv()
        if not first or first.get("type") != "token":
            fail(f"no first token: {first}", srv.log())
        t0 = time.time()
        os.kill(srv.proc.pid, signal.SIGUSR1)
        end, n = c.until_end()
        rc = srv.wait(60)
        log = srv.log()
        if not end or end.get("type") != "done" or end.get("finish_reason") != "length" or n + 1 != 48:
            fail(f"drain: the request in flight did not finish: {end}, {n + 1} tokens", log)
        if rc != 0:
            fail(f"drain: mpirun exited {rc}", log)
        for r in (0, 1):
            if f"rank {r}: 1 thread(s) (1 CPU(s) in its affinity mask" not in log:
                fail(f"rank {r} is not on one thread of its one bound core", log)
        print(f"ok: kill -USR1 <mpirun> drained in {time.time() - t0:.1f} s, exit 0; one thread per bound rank")
    finally:
        srv.kill()


def case_plain_mpirun_term():
    # Teardown: SIGTERM to mpirun ends the job at once; the client in flight gets an error frame
    # (rank 0 fails every client on a raw SIGTERM, issue 13) before OpenMPI's SIGKILL 1 s later.
    cfg = default_config_copy()
    srv = plain_mpirun(cfg)
    try:
        tcp = srv.wait_serving()
        c = Tcp(tcp)
        # 32 long requests keep the cluster busy for seconds (one alone on this tiny model can finish
        # before mpirun has forwarded the signal on a quiet machine).
        k = 32
        for i in range(k):
            c.send(dict(type="generate", id=f"t{i}", prompt="def g(x):", max_tokens=500, ignore_eos=True,
                        temperature=0))
        first = c.recv()
        if not first or first.get("type") != "token":
            fail(f"no first token: {first}", srv.log())
        t0 = time.time()
        os.kill(srv.proc.pid, signal.SIGTERM)
        ends, n = {}, 0
        while len(ends) < k:
            fr = c.recv()
            if fr is None:
                break
            if fr.get("type") in ("done", "error"):
                ends[fr.get("id")] = fr
            n += fr.get("type") == "token"
        rc = srv.wait(30)
        dt = time.time() - t0
        log = srv.log()
        if rc is None or dt > 5:
            fail(f"SIGTERM: the job was still running {dt:.1f} s later", log)
        # docs/PROTOCOL.md: a request the server ends itself gets its `done` frame with
        # finish_reason "error" (code "aborted"); an `error` frame is accepted too.
        errors = [e for e in ends.values() if e.get("type") == "error" or e.get("finish_reason") == "error"]
        if not errors or len(errors) != len(ends):
            fail(f"SIGTERM: of {k} requests in flight {len(errors)} got an error frame; ends {list(ends.values())[:3]}"
                 f" after {n} more tokens", log)
        print(f"ok: SIGTERM ended the job in {dt:.1f} s (exit {rc}); the client got an error frame")
    finally:
        srv.kill()


def worker_run(argv_contexts, env=None, timeout=180):
    r = subprocess.run(argv_contexts, capture_output=True, text=True, timeout=timeout, env=env or os.environ)
    return r.returncode, r.stdout + r.stderr


def case_mixed_isa():
    levels = ["scalar", "avx2", "avx512"]
    flags = set(next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "").split())
    best = "avx512" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags else "avx2"
    lower = levels[levels.index(best) - 1]
    common = ["--model", FIXTURE, "--prompt-ids", "1 2 3 4", "--max-tokens", "12", "--threads", "1"]
    # MPMD: rank 0 runs at this CPU's best level, rank 1 is forced lower through its own environment.
    rc, mixed = worker_run([MPIRUN_SH, "-np", "1", WORKER] + common
                           + [":", "-np", "1", "env", f"PHI_CPU_ISA={lower}", WORKER] + common)
    if rc != 0:
        fail(f"mixed-ISA start: exit {rc}", mixed)
    want = f"kernel ISA {lower} on all 2 rank(s)"
    if want not in mixed or "limited by rank 1 (PHI_CPU_ISA)" not in mixed:
        fail(f"the log does not say '{want} ... limited by rank 1 (PHI_CPU_ISA)'", mixed)
    rc, forced = worker_run([MPIRUN_SH, "-np", "2", WORKER] + common, env=dict(os.environ, PHI_CPU_ISA=lower))
    ids = lambda out: re.search(r"generated ids:([ 0-9]+)", out)
    if rc != 0 or not ids(forced) or not ids(mixed) or ids(mixed).group(1) != ids(forced).group(1):
        fail(f"tokens differ from a run forced to {lower} on both ranks", mixed + "\n---\n" + forced)
    print(f"ok: rank 0 at {best}, rank 1 forced to {lower}: both ran {lower}, tokens{ids(mixed).group(1)}")


def case_other_build():
    d = tempfile.mkdtemp()
    other = os.path.join(d, "phi-worker")
    shutil.copy(WORKER, other)
    subprocess.run(["objcopy", "--remove-section", ".note.gnu.build-id", other], check=True)
    common = ["--model", FIXTURE, "--prompt-ids", "1 2 3", "--max-tokens", "2"]
    rc, out = worker_run([MPIRUN_SH, "-np", "1", WORKER] + common + [":", "-np", "1", other] + common, timeout=120)
    n = out.count("rank 1 runs a different phi-worker build than rank 0")
    if rc == 0 or n < 1:
        fail(f"a different build was not refused (exit {rc})", out)
    print(f"ok: a different build was refused (exit {rc})")


{"usage": case_usage, "default_np4": case_default_np4, "plain_mpirun": case_plain_mpirun,
 "plain_mpirun_term": case_plain_mpirun_term,
 "mixed_isa": case_mixed_isa, "other_build": case_other_build}[CASE]()
