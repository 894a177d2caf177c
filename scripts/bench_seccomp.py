"""Throughput of the seccomp decision tier: write-opens per second bare, under the filter alone
(read-only opens, which never leave the kernel), and through the notification supervisor; chmod (every
attribute change is notified, as Landlock cannot judge them) bare and through the supervisor.

Each loop runs in a forked child that times itself; the same run measures the bare baseline, so the
ratios compare like with like on this machine. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable

from guard.model import Decision, Verdict
from guard.sandbox import seccomp
from guard.sandbox import syscalls_seccomp as sc
from guard.sandbox.supervisor import serving


def loop(path: str, n: int, flags: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        os.close(os.open(path, flags, 0o644))
    return n / (time.perf_counter() - start)


def chmod_loop(path: str, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        os.chmod(path, 0o600 | (i & 0o44))
    return n / (time.perf_counter() - start)


def measure(fn: Callable[[], float], spec: seccomp.SeccompSpec | None, workers: int = 1) -> float:
    """Ops/s of `fn` in a child, filtered by `spec` (served by a Supervisor when it notifies)."""
    parent_sock, child_sock = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if spec is not None:
                sc.set_no_new_privs()
                fd = seccomp.install(spec)
                socket.send_fds(child_sock, [b"L"], [fd] if fd is not None else [])
                if fd is not None:
                    os.close(fd)
            os.write(w, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    child_sock.close()
    listener = None
    if spec is not None:
        _, fds, _, _ = socket.recv_fds(parent_sock, 1, 1)
        listener = fds[0] if fds else None
    parent_sock.close()

    def collect() -> float:
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        return float(json.loads(data))

    if listener is None:
        return collect()
    allow = Decision(Verdict.ALLOW, "bench", "bench")
    with serving(listener, decide=lambda _a: allow, record=lambda _a, _d: None, spec=spec, workers=workers):
        return collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=20000, help="opens per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    ap.add_argument("--workers", type=int, default=4,
                    help="supervisor worker threads (guard run uses 4)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f")
        open(path, "w").close()
        write = os.O_WRONLY | os.O_CREAT
        cases: dict[str, tuple[Callable[[], float], seccomp.SeccompSpec | None]] = {
            "bare_per_s": (lambda: loop(path, args.n, write), None),
            "filtered_readonly_per_s": (lambda: loop(path, args.n, os.O_RDONLY), seccomp.SeccompSpec()),
            "bare_readonly_per_s": (lambda: loop(path, args.n, os.O_RDONLY), None),
            "notified_per_s": (lambda: loop(path, args.n // 4, write), seccomp.SeccompSpec()),
            "bare_chmod_per_s": (lambda: chmod_loop(path, args.n), None),
            "notified_chmod_per_s": (lambda: chmod_loop(path, args.n // 4), seccomp.SeccompSpec()),
        }
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, (fn, spec) in cases.items():
                best[name] = max(best.get(name, 0.0), measure(fn, spec, args.workers))
    result: dict[str, float] = {k: round(v) for k, v in best.items()}
    result["workers"] = args.workers
    result["notified_us"] = round(1e6 / best["notified_per_s"], 1)
    result["notified_ratio"] = round(best["bare_per_s"] / best["notified_per_s"], 1)
    result["readonly_ratio"] = round(best["bare_readonly_per_s"] / best["filtered_readonly_per_s"], 3)
    result["chmod_us"] = round(1e6 / best["notified_chmod_per_s"], 1)
    result["chmod_ratio"] = round(best["bare_chmod_per_s"] / best["notified_chmod_per_s"], 1)
    print(f"write-open, bare:             {result['bare_per_s']:>9}/s")
    print(f"write-open, via supervisor:   {result['notified_per_s']:>9}/s "
          f"({result['notified_us']} us each, {result['notified_ratio']}x bare)")
    print(f"read-only open, under filter: {result['filtered_readonly_per_s']:>9}/s "
          f"({result['readonly_ratio']}x bare)")
    print(f"chmod, bare:                  {result['bare_chmod_per_s']:>9}/s")
    print(f"chmod, via supervisor:        {result['notified_chmod_per_s']:>9}/s "
          f"({result['chmod_us']} us each, {result['chmod_ratio']}x bare)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
