"""Throughput of the seccomp decision tier: write-opens per second bare, under the filter alone
(read-only opens, which never leave the kernel), and through the notification supervisor; chmod (every
attribute change is notified, as Landlock cannot judge them) bare and through the supervisor; and the
floor: umask(2), which the compiled core lets through at once (CONTINUE, nothing recorded; it then reads the
task's umask back from /proc, to keep it): the cheapest answer of the core. The kernel's own round trip,
without guard, is what scripts/bench_notify_floor.py measures.

Each loop runs in a forked child that times itself; the same run measures the bare baseline, so the
ratios compare like with like on this machine. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from guard.model import Decision, Verdict
from guard.sandbox import seccomp
from guard.sandbox import syscalls_seccomp as sc
from guard.sandbox._syscalls import drop_capabilities
from guard.sandbox.fastpath import FastPath
from guard.sandbox.supervisor import Supervisor, serving
from guard.session import decision_record
from guard.spool import SpoolWriter


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


def umask_loop(n: int) -> float:
    """The cheapest notification there is: the core lets every umask(2) through at once."""
    start = time.perf_counter()
    for _ in range(n):
        os.umask(0o022)
    return n / (time.perf_counter() - start)


def create_loop(directory: str, n: int) -> float:
    """New files, each created by a write-open (what pip, tar x and git do most)."""
    os.makedirs(directory, exist_ok=True)
    start = time.perf_counter()
    for i in range(n):
        os.close(os.open(os.path.join(directory, f"f{i:06}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    return n / (time.perf_counter() - start)


def measure(fn: Callable[[], float], spec: seccomp.SeccompSpec | None, workers: int = 1,
            core_home: str | None = None) -> float:
    """Ops/s of `fn` in a child, filtered by `spec` (served by a Supervisor when it notifies)."""
    parent_sock, child_sock = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if spec is not None:
                if os.geteuid() == 0:  # as guard run's sandbox leaves its tasks: no capability at all
                    drop_capabilities()
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
    if core_home is None:
        with serving(listener, decide=lambda _a: allow, record=lambda _a, _d: None, spec=spec,
                     workers=workers):
            return collect()
    # the compiled fast path, recording each answer in a real spool as guard run does
    assert spec is not None
    spool = SpoolWriter.create(Path(core_home), os.urandom(8).hex())
    fast = FastPath.create(listener, spec, policy=_AllowAll(), probe=lambda _a: allow, spool=spool,
                           record_of=decision_record)
    if fast is None:
        raise SystemExit("the compiled core is not built: pip install -e . with a C compiler")
    sup = Supervisor(listener, decide=lambda _a: allow, record=lambda _a, _d: None, spec=spec,
                     workers=workers, check=lambda _a: allow, fast=fast)
    stop = threading.Event()
    thread = threading.Thread(target=sup.serve_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        return collect()
    finally:
        stop.set()
        thread.join()
        sup.close()
        spool.close()


class _AllowAll:
    """A policy with no file rule: no name is spoken of (spoken_segments reads only `rules`)."""

    rules: tuple[()] = ()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=20000, help="opens per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    ap.add_argument("--workers", type=int, default=4,
                    help="supervisor worker threads (guard run uses 4)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the files are made (default: $TMPDIR); a tmpfs measures guard, not the disk")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
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
            "core_per_s": (lambda: loop(path, args.n, write), seccomp.SeccompSpec()),
            "bare_create_per_s": (lambda: create_loop(os.path.join(tmp, "bare-new"), args.n), None),
            "core_create_per_s": (lambda: create_loop(os.path.join(tmp, "core-new"), args.n),
                                  seccomp.SeccompSpec()),
            "core_floor_per_s": (lambda: umask_loop(args.n), seccomp.SeccompSpec()),
        }
        best: dict[str, float] = {}
        for round_no in range(args.rounds):
            for name, (fn, spec) in cases.items():
                core_home = os.path.join(tmp, "gh") if name.startswith("core") else None
                if name.endswith("create_per_s"):  # a fresh directory each round: creates, not reopens
                    fresh = os.path.join(tmp, f"{name}-{round_no}")
                    fn = (lambda d=fresh: create_loop(d, args.n))  # noqa: E731
                best[name] = max(best.get(name, 0.0), measure(fn, spec, 1 if core_home else args.workers,
                                                              core_home))
    result: dict[str, float] = {k: round(v) for k, v in best.items()}
    result["workers"] = args.workers
    result["notified_us"] = round(1e6 / best["notified_per_s"], 1)
    result["notified_ratio"] = round(best["bare_per_s"] / best["notified_per_s"], 1)
    result["readonly_ratio"] = round(best["bare_readonly_per_s"] / best["filtered_readonly_per_s"], 3)
    result["chmod_us"] = round(1e6 / best["notified_chmod_per_s"], 1)
    result["chmod_ratio"] = round(best["bare_chmod_per_s"] / best["notified_chmod_per_s"], 1)
    result["core_us"] = round(1e6 / best["core_per_s"], 1)
    result["core_ratio"] = round(best["bare_per_s"] / best["core_per_s"], 2)
    result["core_create_ratio"] = round(best["bare_create_per_s"] / best["core_create_per_s"], 2)
    result["floor_us"] = round(1e6 / best["core_floor_per_s"], 1)
    print(f"write-open, bare:             {result['bare_per_s']:>9}/s")
    print(f"write-open, via supervisor:   {result['notified_per_s']:>9}/s "
          f"({result['notified_us']} us each, {result['notified_ratio']}x bare)")
    print(f"read-only open, under filter: {result['filtered_readonly_per_s']:>9}/s "
          f"({result['readonly_ratio']}x bare)")
    print(f"chmod, bare:                  {result['bare_chmod_per_s']:>9}/s")
    print(f"chmod, via supervisor:        {result['notified_chmod_per_s']:>9}/s "
          f"({result['chmod_us']} us each, {result['chmod_ratio']}x bare)")
    print(f"write-open, compiled core:    {result['core_per_s']:>9}/s "
          f"({result['core_us']} us each, {result['core_ratio']}x bare; the core's two receivers, "
          "one Python worker, recorded in a spool; target >= 100000/s)")
    print(f"create, bare / core:          {result['bare_create_per_s']:>9}/s / "
          f"{result['core_create_per_s']}/s ({result['core_create_ratio']}x bare)")
    print(f"floor, umask let through:     {result['core_floor_per_s']:>9}/s ({result['floor_us']} us each: "
          "the core's cheapest answer; the kernel's own round trip: scripts/bench_notify_floor.py)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
