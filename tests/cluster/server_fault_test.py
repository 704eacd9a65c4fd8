#!/usr/bin/env python3
"""Fault tests of a 2-rank cluster in server mode (scripts/mpirun.sh -np 2 phi-worker --config ...), with
SSE and native streams in flight: what every client sees, and how fast (issue 13). Standard library only.

Usage: server_fault_test.py PHI_WORKER SOURCE_DIR CASE [--runs N]
Cases (the rank is found by OMPI_COMM_WORLD_RANK in /proc/<pid>/environ, not by process order):
  kill_follower_busy   kill -9 rank 1 while streaming: every client gets its explicit error (SSE error
                       event + [DONE]; native done frame with finish_reason "error"; a plain HTTP
                       request a 503 error body) and /health is 503
                       (or refuses connections) within 5 s; the cluster exits non-zero within 10 s.
  stall_follower_busy  SIGSTOP rank 1 while streaming: the same outcome, within 10 s (exit within 15 s).
  stall_follower_idle  SIGSTOP rank 1 with no traffic: /health 503 (or refused) within 10 s; a request
                       sent meanwhile gets an error, never a hang; exit non-zero within 15 s.
  kill_root_busy       kill -9 rank 0 while streaming: every connection is closed within 2 s (nothing is
                       left to tell the clients); the cluster exits non-zero within 10 s.
  stall_root_busy      SIGSTOP rank 0 while streaming: the followers' deadline ends the cluster within
                       15 s; every connection is closed by then.
  term_root_busy       a raw SIGTERM at rank 0 (teardown, not drain): every client gets its explicit
                       error within 5 s; exit non-zero within 10 s.
With --runs N each run prints one measurement row; the first failing run fails the test. Timing limits
are the issue's targets; scale them with PHI_FAULT_SLACK (default 1) on a machine known to be slow."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from listen_ports import wait_bound_ports  # noqa: E402

WORKER, SRC, CASE = sys.argv[1], sys.argv[2], sys.argv[3]
RUNS = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 1
SLACK = float(os.environ.get("PHI_FAULT_SLACK", "1"))
MODEL = os.path.join(SRC, "tests/fixtures/phi3_mini_4k_swa")
TOKENIZER = os.path.join(SRC, "tests/fixtures/serving_tokenizer")
N_SSE, N_NATIVE = 6, 4


class Cluster:
    """The shipped watchdog defaults (no watchdog section): what an operator gets."""

    def __init__(self):
        self.dir = tempfile.mkdtemp()
        self.cfg = os.path.join(self.dir, "cluster.yaml")
        with open(self.cfg, "w") as f:
            f.write(f"""model: {MODEL}
tokenizer: {TOKENIZER}
model_name: phi-test
tp: 2
dtype: f32
threads_per_rank: 1
kv_cache: {{blocks: 6000, block_size: 8}}
batching: {{max_num_seqs: 16, max_batched_tokens: 256}}
listen: {{tcp: 127.0.0.1:0, http: 127.0.0.1:0}}
log_level: info
""")
        self.log_path = os.path.join(self.dir, "log.txt")
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PHI_THREADS_PER_RANK="1")
        self.proc = subprocess.Popen([os.path.join(SRC, "scripts/mpirun.sh"), "-np", "2", WORKER, "--config", self.cfg],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + 180
        try:
            self.tcp_port, self.http_port = wait_bound_ports(self.read_log, self.proc, 180)
        except RuntimeError as e:
            self.dump()
            self.kill()
            raise RuntimeError(f"cluster did not become healthy: {e}") from None
        while time.time() < deadline:
            if health(self.http_port) == 200:
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        if health(self.http_port) != 200:
            self.dump()
            self.kill()
            raise RuntimeError("cluster did not become healthy")
        self.ranks = self.find_ranks()

    def find_ranks(self):
        """{rank: pid} of this cluster's phi-worker processes, by OMPI_COMM_WORLD_RANK."""
        ranks = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if not cmd or not cmd[0].endswith(b"phi-worker") or self.cfg.encode() not in cmd:
                    continue
                with open(f"/proc/{d}/environ", "rb") as f:
                    for kv in f.read().split(b"\0"):
                        if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                            ranks[int(kv.split(b"=")[1])] = int(d)
            except OSError:
                continue
        if sorted(ranks) != [0, 1]:
            raise RuntimeError(f"cannot find both ranks by OMPI_COMM_WORLD_RANK: {ranks}")
        return ranks

    def read_log(self):
        # Its own handle: the ranks write through a copy of self.log's file offset.
        with open(self.log_path) as f:
            return f.read()

    def dump(self):
        print(self.read_log()[-5000:], flush=True)

    def kill(self):
        for pid in self.ranks.values() if hasattr(self, "ranks") else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()


def health(port):
    """HTTP status of /health, or None when the connection is refused or dropped."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        c.request("GET", "/health")
        st = c.getresponse().status
        c.close()
        return st
    except (OSError, http.client.HTTPException):
        return None


class Client:
    """One streaming request in a thread. outcome: 'told' (explicit error: SSE error event then [DONE],
    or a native done frame with finish_reason "error"), 'closed' (connection ended without it),
    'finished' (ended normally), None (still streaming). t_end: when the outcome came."""

    def __init__(self, port, native, i, plain=False):
        self.port, self.native, self.i, self.plain = port, native, i, plain
        self.tokens, self.outcome, self.t_end, self.detail = 0, None, None, ""
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def end(self, outcome, detail=""):
        if self.outcome is None:
            self.outcome, self.t_end, self.detail = outcome, time.time(), detail
        self.started.set()

    def run(self):
        try:
            self.run_native() if self.native else self.run_plain() if self.plain else self.run_sse()
        except (OSError, http.client.HTTPException, ValueError) as e:
            self.end("closed", repr(e))

    def run_sse(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("POST", "/v1/completions", body=json.dumps({
            "prompt": f"fault {self.i}", "max_tokens": 3900, "temperature": 0, "ignore_eos": True,
            "stream": True}).encode(), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        errored = False
        while True:
            line = r.fp.readline()
            if not line:
                return self.end("closed", "EOF without [DONE]")
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                return self.end("told" if errored else "finished", "" if errored else "[DONE] without an error")
            ev = json.loads(payload)
            if "error" in ev:
                errored = True
            elif ev.get("choices"):
                self.tokens += 1
                self.started.set()

    def run_plain(self):
        """A non-streaming completion: told = a 503 error body."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("POST", "/v1/completions", body=json.dumps({
            "prompt": f"plain {self.i}", "max_tokens": 3900, "temperature": 0, "ignore_eos": True}).encode(),
            headers={"Content-Type": "application/json"})
        self.started.set()  # nothing streams; the request is in flight once sent
        r = c.getresponse()
        body = r.read()
        if r.status == 503 and b'"error"' in body:
            return self.end("told")
        return self.end("finished" if r.status == 200 else "closed", f"status {r.status}: {body[:200]!r}")

    def run_native(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        f = s.makefile("rb")
        json.loads(f.readline())  # hello
        s.sendall(json.dumps({"type": "generate", "id": f"n{self.i}", "prompt": f"fault {self.i}",
                              "max_tokens": 3900, "temperature": 0, "ignore_eos": True}).encode() + b"\n")
        while True:
            line = f.readline()
            if not line:
                return self.end("closed", "EOF without a done frame")
            fr = json.loads(line)
            if fr.get("type") == "token":
                self.tokens += 1
                self.started.set()
            elif fr.get("type") in ("done", "error"):
                told = fr.get("finish_reason") == "error" or fr.get("type") == "error"
                return self.end("told" if told else "finished", json.dumps(fr)[:200])


def run_once(case):
    """One run; returns (row dict, list of failures)."""
    slack = SLACK
    c = Cluster()
    fails = []
    busy = case.endswith("_busy")
    clients = []
    try:
        if busy:
            clients = [Client(c.http_port, False, i) for i in range(N_SSE)] + \
                      [Client(c.tcp_port, True, i) for i in range(N_NATIVE)] + [Client(c.http_port, False, 99, True)]
            for cl in clients:
                if not cl.started.wait(60) or cl.outcome is not None:
                    raise RuntimeError(f"client {cl.i} did not start streaming: {cl.outcome} {cl.detail}")
        else:
            time.sleep(2)  # idle: only heartbeats
        victim = c.ranks[0 if "root" in case else 1]
        sig = {"kill": signal.SIGKILL, "stall": signal.SIGSTOP, "term": signal.SIGTERM}[case.split("_")[0]]
        t0 = time.time()
        os.kill(victim, sig)
        # Meanwhile: /health until it says 503 (or refuses), and for the idle stall one request.
        t_health, probe = None, {}
        if not busy:
            def probe_request():
                st = None
                try:
                    hc = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=30)
                    hc.request("POST", "/v1/completions", body=json.dumps({"prompt": "hello", "max_tokens": 50}),
                               headers={"Content-Type": "application/json"})
                    st = hc.getresponse().status
                except (OSError, http.client.HTTPException) as e:
                    st = f"closed ({type(e).__name__})"
                probe["status"], probe["t"] = st, time.time() - t0
            time.sleep(0.5)
            pt = threading.Thread(target=probe_request, daemon=True)
            pt.start()
        t_exit, rc = None, None
        while time.time() - t0 < 20 * slack:
            if t_health is None:
                st = health(c.http_port)
                if st != 200:
                    t_health = time.time() - t0
            if t_exit is None and c.proc.poll() is not None:
                t_exit, rc = time.time() - t0, c.proc.returncode
            if t_exit is not None and all(cl.outcome is not None for cl in clients) and t_health is not None:
                break
            time.sleep(0.1)
        if sig == signal.SIGSTOP:
            try:
                os.kill(victim, signal.SIGCONT)  # if it is still there, let SIGKILL/SIGTERM act
            except OSError:
                pass
        told = sum(cl.outcome == "told" for cl in clients)
        closed = sum(cl.outcome == "closed" for cl in clients)
        t_last = max((cl.t_end - t0 for cl in clients if cl.t_end), default=None)
        row = dict(case=case, told=told, closed=closed, total=len(clients), t_last_client=t_last,
                   t_health=t_health, t_exit=t_exit, rc=rc, probe=probe.get("status"))
        # The outcome each case promises.
        if t_exit is None:
            fails.append(f"the cluster was still running {20 * slack:.0f} s after the fault")
        elif rc == 0:
            fails.append("the cluster exited 0 after a fault")
        if case in ("kill_follower_busy", "term_root_busy", "stall_follower_busy"):
            limit = (10 if case.startswith("stall") else 5) * slack
            bad = [f"{'native' if cl.native else 'plain' if cl.plain else 'SSE'} {cl.i}: {cl.outcome} {cl.detail}" for cl in clients
                   if cl.outcome != "told"]
            if bad:
                fails.append(f"{len(bad)} client(s) not told: {bad[:4]}")
            if t_last is not None and t_last > limit:
                fails.append(f"the last client was told {t_last:.1f} s after the fault (limit {limit:.0f} s)")
            if t_health is None or t_health > limit:
                fails.append(f"/health still 200 {limit:.0f} s after the fault ({t_health})")
            exit_limit = (15 if case.startswith("stall") else 10) * slack
            if t_exit is not None and t_exit > exit_limit:
                fails.append(f"exit {t_exit:.1f} s after the fault (limit {exit_limit:.0f} s)")
        elif case == "stall_follower_idle":
            if t_health is None or t_health > 10 * slack:
                fails.append(f"/health still 200 10 s after an idle stall ({t_health})")
            if t_exit is not None and t_exit > 15 * slack:
                fails.append(f"exit {t_exit:.1f} s after an idle stall (limit 15 s)")
            if probe.get("status") == 200:
                fails.append("a request sent during the stall succeeded")
            if "t" not in probe or probe["t"] > 12 * slack:
                fails.append(f"a request sent during the stall hung ({probe})")
        elif case in ("kill_root_busy", "stall_root_busy"):
            limit = (2 if case.startswith("kill") else 15) * slack
            bad = [f"{cl.i}: {cl.outcome}" for cl in clients if cl.outcome not in ("closed", "told")]
            if bad:
                fails.append(f"connections not closed: {bad[:4]}")
            if t_last is not None and t_last > limit:
                fails.append(f"the last connection closed {t_last:.1f} s after the fault (limit {limit:.0f} s)")
            exit_limit = (10 if case.startswith("kill") else 15) * slack
            if t_exit is not None and t_exit > exit_limit:
                fails.append(f"exit {t_exit:.1f} s after the fault (limit {exit_limit:.0f} s)")
        if fails or os.environ.get("PHI_FAULT_VERBOSE"):
            c.dump()
        return row, fails
    finally:
        c.kill()


def fmt(v):
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def main():
    failed = []
    for k in range(RUNS):
        try:
            row, fails = run_once(CASE)
        except RuntimeError as e:
            row, fails = dict(case=CASE), [str(e)]
        print(f"| {CASE} | {k + 1} | {fmt(row.get('told'))}/{fmt(row.get('total'))} (closed {fmt(row.get('closed'))}) | "
              f"{fmt(row.get('t_last_client'))} | {fmt(row.get('t_health'))} | {fmt(row.get('t_exit'))} | "
              f"{fmt(row.get('rc'))} | {fmt(row.get('probe'))} |", flush=True)
        for f in fails:
            print(f"FAIL ({CASE} run {k + 1}): {f}", flush=True)
        failed += fails
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
