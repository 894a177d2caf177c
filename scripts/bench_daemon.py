"""Decide round-trip latency through DaemonClient against a real daemon (policy engine + audit writer).

The baseline, measured in the same run on the same connection, is `hello`: the socket and protocol cost
with no policy and no audit record. Last line: one JSON object.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from guard.daemon.client import DaemonClient, DaemonNotRunning
from guard.model import Action, Op

POLICY = """\
version: 1
name: bench
defaults: {file: deny, network: deny, process: deny}
rules:
  - id: workspace
    allow: [read, write]
    paths: ["${workspace}/**"]
  - id: git
    allow: [run]
    commands: ["git ..."]
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(call, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        start = time.perf_counter_ns()
        call(i)
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        root = Path(tmp)
        home, ws = root / "home", root / "ws"
        ws.mkdir()
        (root / "policy.yaml").write_text(POLICY)
        log = open(root / "daemon.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "guard", "daemon", "run"], stdout=log, stderr=log,
                                env={**os.environ, "GUARD_HOME": str(home)})
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    client = DaemonClient.connect(home)
                    break
                except DaemonNotRunning:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        log_text = (root / "daemon.log").read_text()
                        raise SystemExit("daemon did not start: " + log_text) from None
                    time.sleep(0.02)
            with client:
                session = client.open_session(root / "policy.yaml", ws)["session"]
                same = Action(Op.WRITE, str(ws / "main.py"))
                for _ in range(500):  # warm up both paths
                    client.hello()
                    client.decide(session, same)
                hello = timed(lambda i: client.hello(), n)
                cached = timed(lambda i: client.decide(session, same), n)
                fresh = timed(lambda i: client.decide(session, Action(Op.WRITE, str(ws / f"f{i}.py"))), n)
                client.close_session(session, exit_status=0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
    result = {
        "n": n,
        "hello_p50_us": round(percentile(hello, 0.50), 1),
        "hello_p99_us": round(percentile(hello, 0.99), 1),
        "decide_p50_us": round(percentile(cached, 0.50), 1),
        "decide_p99_us": round(percentile(cached, 0.99), 1),
        "decide_uncached_p50_us": round(percentile(fresh, 0.50), 1),
        "decide_uncached_p99_us": round(percentile(fresh, 0.99), 1),
        "decide_mean_us": round(statistics.fmean(cached), 1),
        "ratio_decide_vs_hello_p50": round(percentile(cached, 0.5) / percentile(hello, 0.5), 2),
    }
    print(f"hello  p50 {result['hello_p50_us']} µs  p99 {result['hello_p99_us']} µs "
          "(baseline: socket+protocol)")
    print(f"decide p50 {result['decide_p50_us']} µs  p99 {result['decide_p99_us']} µs (same action)")
    print(f"decide p50 {result['decide_uncached_p50_us']} µs  p99 {result['decide_uncached_p99_us']} µs "
          "(distinct actions)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
