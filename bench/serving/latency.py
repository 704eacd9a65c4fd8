#!/usr/bin/env python3
"""TTFT and inter-token latency (p50/p99) of a running cluster over the native protocol, for K
concurrent clients. Usage: latency.py PORT [K ...] (default K = 1 16); greedy, 64-token replies."""
import json
import socket
import statistics
import sys
import threading
import time


def client(port, prompt, out):
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    f.readline()  # hello
    s.sendall((json.dumps({"type": "generate", "id": "q", "prompt": prompt, "max_tokens": 64, "temperature": 0,
                           "ignore_eos": True}) + "\n").encode())
    t0 = time.perf_counter()
    stamps = []
    while True:
        fr = json.loads(f.readline())
        if fr["type"] == "token":
            stamps.append(time.perf_counter())
        elif fr["type"] in ("done", "error"):
            break
    s.close()
    out.append((stamps[0] - t0, [b - a for a, b in zip(stamps, stamps[1:])], len(stamps) / (stamps[-1] - t0)))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    port = int(sys.argv[1])
    for k in [int(a) for a in sys.argv[2:]] or [1, 16]:
        out = []
        ts = [threading.Thread(target=client, args=(port, f"def function_{i}(x):\n", out)) for i in range(k)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        ttft = [o[0] for o in out]
        itl = [d for o in out for d in o[1]]
        print(f"{k:3d} concurrent: TTFT p50 {pct(ttft, 0.5) * 1e3:7.1f} ms p99 {pct(ttft, 0.99) * 1e3:7.1f} ms | "
              f"ITL p50 {pct(itl, 0.5) * 1e3:6.1f} ms p99 {pct(itl, 0.99) * 1e3:6.1f} ms | "
              f"{statistics.mean(o[2] for o in out):.1f} tok/s per client, {sum(o[2] for o in out):.1f} total")


if __name__ == "__main__":
    main()
