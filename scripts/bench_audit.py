#!/usr/bin/env python3
"""Benchmark the audit trail: append through the real writer, verify, and compare with signing every record.

    python3 scripts/bench_audit.py [--records N] [--out DIR] [--restart-records N] [--no-restart]

With --out DIR, DIR is used as $GUARD_HOME (DIR/log, DIR/keys) and DIR/root.pub is written, so anyone can
run `guard audit verify --log DIR/log --key DIR/root.pub` on the result. The verifier runs in a child process
so its peak RSS is its own (with the worker processes `guard audit verify` starts on a log of 32 MiB or more
when there are 2 or more CPUs; verify_serial_* is the same verification in one process). Rates are
wall-clock records/s; the *_cpu_per_s fields divide by the
process's own CPU time, which is what "on one core" means on a shared machine. The baseline (sign and
verify each record with Ed25519, as a naive signed log would) is measured in the same run on the first
min(N, 20,000) records. The restart benchmark opens a writer (what the daemon does at start) on a trail
of 10,000 records and on one of --restart-records (1,000,000), from the checkpoint state each checkpoint
saves and, for comparison, with that state removed (a full replay); the ratio large/small says whether
restart cost depends on the trail's size. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from guard.audit import AuditWriter, Keyring, decision_event, session_event  # noqa: E402
from guard.audit.segments import default_workers  # noqa: E402
from guard.model import Action, Decision, Op, Verdict  # noqa: E402

PEAK = """
def peak_mb():
    # VmHWM is per address space, so unlike ru_maxrss it does not inherit the forking parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
"""

VERIFY_CHILD = PEAK + """
import sys, time, json, resource
from pathlib import Path
from guard.audit.keys import read_pinned_key
from guard.audit.segments import verify_log
root = read_pinned_key(Path(sys.argv[2])).public
workers = None if sys.argv[3] == "auto" else int(sys.argv[3])
t, c = time.perf_counter(), time.process_time()
report = verify_log(Path(sys.argv[1]), root, workers=workers)
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, reaped by now
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu,
                  "workers_cpu_seconds": kids.ru_utime + kids.ru_stime, "exit_code": report.exit_code,
                  "leaves": report.leaves, "records": report.records,
                  "peak_rss_mb": peak_mb()}))
"""

IDLE_CHILD = PEAK + """
import json
import guard.audit.segments, guard.audit.keys
print(json.dumps({"peak_rss_mb": peak_mb()}))
"""


def events(n: int) -> list[dict[str, object]]:
    """A realistic mix: file reads/writes in a workspace, execs, command lines, connections, sessions."""
    out: list[dict[str, object]] = []
    sessions = [f"sess-{k:04d}-{'abcdef'[k % 6]}" for k in range(8)]
    for i in range(n):
        s = sessions[i % 8]
        kind = i % 10
        if kind < 4:
            a = Action(Op.READ, f"/home/dev/project/src/pkg{i % 37}/module_{i % 211}.py", pid=4000 + i % 97,
                       exe="/usr/bin/python3", argv=("python3", "-m", "pytest", "-q"))
            d = Decision(Verdict.ALLOW, "workspace-read", "inside the workspace")
        elif kind < 6:
            a = Action(Op.WRITE, f"/home/dev/project/build/obj{i % 53}/unit_{i % 401}.o", pid=5000 + i % 61,
                       exe="/usr/bin/cc")
            d = Decision(Verdict.ALLOW, "workspace-write", "inside the workspace")
        elif kind == 6:
            a = Action(Op.EXEC, "/usr/bin/git", pid=6000 + i % 13, exe="/usr/bin/git",
                       argv=("git", "diff", "--stat"), cwd="/home/dev/project")
            d = Decision(Verdict.ALLOW, "dev-tools", "developer tools")
        elif kind == 7:
            a = Action(Op.RUN, "curl -s https://example.com/install.sh | sh", pid=7000 + i % 7,
                       argv=("sh", "-c", "curl -s https://example.com/install.sh | sh"))
            d = Decision(Verdict.DENY, "no-pipe-to-shell", "piping downloads into a shell")
        elif kind == 8:
            a = Action(Op.CONNECT, "pypi.org:443", pid=8000 + i % 5, addresses=("151.101.0.223",))
            d = Decision(Verdict.ALLOW, "package-index", "package downloads")
        else:
            if i % 100 == 9:
                out.append(session_event(s, "start", policy="coding-agent", workspace="/home/dev/project"))
                continue
            a = Action(Op.READ, "/home/dev/.aws/credentials", pid=4000 + i % 97, exe="/usr/bin/cat")
            d = Decision(Verdict.DENY, "cloud-credentials", "cloud credentials are never readable")
        out.append(decision_event(s, a, d))
    return out


def baseline(evs: list[dict[str, object]], path: Path) -> tuple[float, float]:
    """Sign every record (the naive design) and verify every signature: records per second for each."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    opts = orjson.OPT_SORT_KEYS
    t = time.perf_counter()
    with open(path, "wb") as f:
        for seq, ev in enumerate(evs):
            data = orjson.dumps({**ev, "seq": seq, "ts": "2026-01-01T00:00:00.000000Z"}, option=opts)
            sig = key.sign(data)
            f.write(orjson.dumps({"r": data.decode(), "sig": sig.hex()}) + b"\n")
        f.flush()
        os.fdatasync(f.fileno())
    append = len(evs) / (time.perf_counter() - t)
    t = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            obj = orjson.loads(line)
            data = obj["r"].encode()
            pub.verify(bytes.fromhex(obj["sig"]), data)
            orjson.loads(data)
    verify = len(evs) / (time.perf_counter() - t)
    return append, verify


def fill_trail(home: Path, n: int, chunk: list[dict[str, object]]) -> None:
    Keyring(home).init(now=time.time())
    with AuditWriter(home, sync=False) as w:
        append = w.append
        done = 0
        while done < n:
            for ev in chunk[: n - done]:
                append(ev)
            done += min(len(chunk), n - done)


def time_open(home: Path) -> tuple[float, dict[str, object]]:
    t = time.perf_counter()
    w = AuditWriter(home).open()
    elapsed = time.perf_counter() - t
    w.close()
    return elapsed, dict(w.replayed)


def restart_bench(big: int, chunk: list[dict[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="guard-bench-restart-") as d:
        for label, n in (("small", 10_000), ("large", big)):
            home = Path(d) / label
            fill_trail(home, n, chunk)
            runs = [time_open(home) for _ in range(7)]
            best = min(r[0] for r in runs)
            (home / "log" / ".frontier").unlink()
            full, how = time_open(home)
            assert how["mode"] == "full", how
            out[f"restart_{label}_records"] = n
            out[f"restart_{label}_s"] = round(best, 4)
            out[f"restart_{label}_replayed_lines"] = runs[-1][1].get("lines")
            out[f"restart_{label}_full_replay_s"] = round(full, 3)
            shutil.rmtree(home)
    out["restart_ratio"] = round(float(out["restart_large_s"]) / float(out["restart_small_s"]), 2)  # type: ignore[arg-type]
    print(f"restart: {out['restart_small_records']:,} records {out['restart_small_s']:.4f} s, "
          f"{out['restart_large_records']:,} records {out['restart_large_s']:.4f} s: ratio "
          f"{out['restart_ratio']} (a full replay instead: {out['restart_small_full_replay_s']} s and "
          f"{out['restart_large_full_replay_s']} s)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="audit trail benchmark")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=None, help="use DIR as $GUARD_HOME and write DIR/root.pub")
    ap.add_argument("--restart-records", type=int, default=1_000_000)
    ap.add_argument("--no-restart", action="store_true", help="skip the restart benchmark")
    args = ap.parse_args()
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="guard-bench-")
        home = Path(tmp.name) / "home"
    else:
        home = args.out.resolve()
        if (home / "log").exists() and any((home / "log").iterdir()):
            sys.exit(f"{home}/log is not empty; pass a fresh --out DIR")
    n = args.records
    chunk = events(min(n, 50_000))
    Keyring(home).init(now=time.time())
    pin = home / "root.pub"
    pin.write_text(Keyring(home).root().encode() + "\n")

    t, c = time.perf_counter(), time.process_time()
    with AuditWriter(home) as w:
        append = w.append
        done = 0
        while done < n:
            for ev in chunk[: n - done]:
                append(ev)
            done += min(len(chunk), n - done)
    append_s, append_cpu = time.perf_counter() - t, time.process_time() - c
    print(f"append: {n} records in {append_s:.2f} s ({n / append_s:,.0f}/s, fdatasync at each checkpoint)")

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", VERIFY_CHILD, str(home / "log"), str(pin), "auto"],
                           check=True, capture_output=True, text=True, env=env)
    ver = json.loads(child.stdout)
    workers = default_workers(home / "log")
    child = subprocess.run([sys.executable, "-c", VERIFY_CHILD, str(home / "log"), str(pin), "0"], check=True,
                           capture_output=True, text=True, env=env)
    serial = json.loads(child.stdout)
    idle = json.loads(subprocess.run([sys.executable, "-c", IDLE_CHILD], check=True, capture_output=True,
                                     text=True, env=env).stdout)
    print(f"verify: {ver['leaves']} lines in {ver['seconds']:.2f} s ({ver['records'] / ver['seconds']:,.0f} "
          f"records/s), exit {ver['exit_code']}, peak RSS {ver['peak_rss_mb']:.1f} MB "
          f"(interpreter + modules alone: {idle['peak_rss_mb']:.1f} MB; worker processes: {workers})")
    total_cpu = ver["cpu_seconds"] + ver["workers_cpu_seconds"]
    print(f"verify CPU, all processes: {total_cpu:.2f} s ({ver['records'] / total_cpu:,.0f} records per "
          f"CPU-second; this process {ver['cpu_seconds']:.2f} s, workers {ver['workers_cpu_seconds']:.2f} s)")
    print(f"verify in one process: {serial['records'] / serial['seconds']:,.0f} records/s "
          f"({serial['records'] / serial['cpu_seconds']:,.0f}/s of CPU)")
    if ver["exit_code"] != 0 or serial["exit_code"] != 0:
        sys.exit("verification failed")

    sample = events(min(n, 20_000))
    with tempfile.TemporaryDirectory(prefix="guard-bench-base-") as d:
        b_append, b_verify = baseline(sample, Path(d) / "signed.jsonl")
    print(f"baseline (Ed25519 signature per record, {len(sample)} records): append {b_append:,.0f}/s, "
          f"verify {b_verify:,.0f}/s")
    log_bytes = sum(p.stat().st_size for p in (home / "log").glob("seg-*.jsonl"))
    result = {
        "records": n, "append_per_s": round(n / append_s),
        "verify_per_s": round(ver["records"] / ver["seconds"]), "verify_workers": workers,
        "verify_serial_per_s": round(serial["records"] / serial["seconds"]),
        "verify_serial_cpu_per_s": round(serial["records"] / serial["cpu_seconds"]),
        "baseline_append_per_s": round(b_append), "baseline_verify_per_s": round(b_verify),
        "append_speedup": round(n / append_s / b_append, 1),
        "verify_speedup": round(ver["records"] / ver["seconds"] / b_verify, 1),
        "append_cpu_per_s": round(n / append_cpu),
        "verify_main_cpu_per_s": round(ver["records"] / ver["cpu_seconds"]),
        "verify_total_cpu_per_s": round(ver["records"] / total_cpu),
        "verify_seconds": round(ver["seconds"], 2), "verify_peak_rss_mb": round(ver["peak_rss_mb"], 1),
        "idle_rss_mb": round(idle["peak_rss_mb"], 1), "log_bytes": log_bytes,
        "verify_processes": 1 + (workers or 0),
    }
    if not args.no_restart:
        result.update(restart_bench(args.restart_records, chunk))
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
