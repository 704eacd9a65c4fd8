"""The ports a phi-worker bound, read from its log.

Tests configure `listen: {tcp: 127.0.0.1:0, http: 127.0.0.1:0}` so the kernel picks free ports at
bind time. A port the test picked earlier (bind to 0, read it, close) is free only until something
else takes it: mpirun's own TCP wiring or a test running beside this one took such a port between
the pick and the server's bind (CI: "cannot bind the HTTP server ... Address already in use", and a
health probe that reached OpenMPI's listener instead of ours)."""
import re
import time

_TCP = re.compile(r"native protocol v\d+ listening on \S+:(\d+)")
_HTTP = re.compile(r"OpenAI-compatible HTTP listening on \S+:(\d+)")


def wait_bound_ports(read_log, proc, timeout, tcp=True, http=True):
    """(tcp_port, http_port) once rank 0's log names them (None for one not asked for).

    read_log() returns the log so far; proc is the launched process. Raises RuntimeError naming
    what is missing when the process exits first or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while True:
        log = read_log()
        t = _TCP.search(log) if tcp else None
        h = _HTTP.search(log) if http else None
        if (t or not tcp) and (h or not http):
            return (int(t.group(1)) if t else None, int(h.group(1)) if h else None)
        missing = [name for name, m, want in (("native", t, tcp), ("HTTP", h, http)) if want and not m]
        if proc.poll() is not None:
            raise RuntimeError(f"the cluster exited ({proc.returncode}) before its log named the bound "
                               f"{' and '.join(missing)} port(s)")
        if time.time() > deadline:
            raise RuntimeError(f"the log named no bound {' and '.join(missing)} port within {timeout} s")
        time.sleep(0.1)
