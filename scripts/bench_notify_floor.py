#!/usr/bin/env python3
"""The kernel's own cost of a seccomp user notification on this machine, with nothing of guard in it.

    python3 scripts/bench_notify_floor.py [--calls N] [--rounds R]

Why: every write-open the sandbox's agent makes is a notification the supervisor answers by injecting the
descriptor it opened (SECCOMP_IOCTL_NOTIF_ADDFD), and issue 11 asks for 100,000 of them a second on one
worker. What no supervisor can go below is the kernel's round trip: the task stops, a supervisor thread
wakes, answers, the task wakes. `scripts/notify_floor.c` (compiled here with gcc into a scratch
directory) measures it with the cheapest answers there are and nothing else: a child calls getppid(2) N
times under a filter that notifies it, and the parent answers each with CONTINUE (nothing read, nothing
decided) or with ADDFD of an already open /dev/null (the child closes each descriptor, as after a
write-open); the child times its own loop and checks every answer. Also: no filter, and a filter that
lets the call through in the kernel, for reference. Variants: one to three threads waiting in RECV
(guard's core runs two: see guard/_core.c, RECEIVERS), two of which only one waits in RECV at a time, one
that polls for the next call a while before it waits, the same-CPU wake-up flag on or off, both sides
pinned to one CPU or to two.

Rounds interleave every variant; medians. Last line: one JSON object. Needs gcc and a kernel with
seccomp user notification (5.5; SYNC_WAKE_UP 6.6): otherwise it says why and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("notify_floor.c")

# name -> (mode, sync wake-up, cpu of the child, cpu of the supervisor (the first or second this process
# may use; -1: not pinned), receivers, spin us, what it shows)
VARIANTS: dict[str, tuple[str, int, int, int, int, int, str]] = {
    "bare": ("bare", 0, -1, -1, 1, 0, "no filter"),
    "filter": ("filter", 0, -1, -1, 1, 0, "a filter that lets the call through in the kernel"),
    "continue_1": ("notify", 1, -1, -1, 1, 0, "CONTINUE, one receiver, same-CPU wake-up"),
    "continue_2": ("notify", 1, -1, -1, 2, 0, "CONTINUE, two receivers, same-CPU wake-up"),
    "continue_1_nosync": ("notify", 0, -1, -1, 1, 0, "CONTINUE, one receiver, no same-CPU wake-up"),
    "addfd_1": ("addfd", 1, -1, -1, 1, 0, "ADDFD, one receiver, same-CPU wake-up"),
    "addfd_2": ("addfd", 1, -1, -1, 2, 0, "ADDFD, two receivers, same-CPU wake-up (guard's core)"),
    "addfd_3": ("addfd", 1, -1, -1, 3, 0, "ADDFD, three receivers, same-CPU wake-up"),
    "addfd_2_one_in_recv": ("addfd", 1, -1, -1, -2, 0, "ADDFD, two receivers, one in RECV at a time"),
    "addfd_1_spin": ("addfd", 1, -1, -1, 1, 30, "ADDFD, one receiver that looks for the next call for 30 us"),
    "addfd_1_one_cpu": ("addfd", 1, 0, 0, 1, 0, "ADDFD, one receiver, task and receiver pinned to one CPU"),
    "addfd_1_two_cpus": ("addfd", 1, 0, 1, 1, 0, "ADDFD, one receiver, task and receiver on two CPUs"),
}


def pinned_to(cpus: list[int]) -> dict[str, tuple[str, int, int, int, int, int, str]]:
    """VARIANTS with the pinned ones on CPUs this process may use (a container's cpuset need not hold CPU
    0); the two-CPU variant only where there are two."""
    variants = dict(VARIANTS)
    for name, (mode, sync, child, parent, receivers, spin, what) in VARIANTS.items():
        if child < 0:
            continue
        if max(child, parent) >= len(cpus):
            del variants[name]
        else:
            variants[name] = (mode, sync, cpus[child], cpus[parent], receivers, spin, what)
    return variants


def build(scratch: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("bench_notify_floor: needs gcc to build scripts/notify_floor.c")
    out = scratch / "notify_floor"
    res = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(out), str(SOURCE)],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"bench_notify_floor: building {SOURCE.name} failed:\n{res.stderr}")
    return out


def run_one(binary: Path, calls: int, variant: tuple[str, int, int, int, int, int, str]) -> float:
    mode, sync, cpu_child, cpu_parent, receivers, spin_us, _what = variant
    argv = [str(binary), str(calls), mode, str(sync), str(cpu_child), str(cpu_parent), str(receivers),
            str(spin_us)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if res.returncode != 0:
        sys.exit(f"bench_notify_floor: {' '.join(argv[2:])}: {res.stderr.strip() or res.returncode}")
    return float(res.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000, help="notified calls per measurement")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    variants = pinned_to(cpus)
    with tempfile.TemporaryDirectory(prefix="notify-floor-") as tmp:
        binary = build(Path(tmp))
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, variant in variants.items():
                calls = args.calls * 20 if variant[0] in ("bare", "filter") else args.calls
                rates[name].append(run_one(binary, calls, variant))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        print(f"{variants[name][6] + ':':<76} {rate:>11,.0f}/s ({1e6 / rate:6.2f} us each)")
    best_addfd = max(v for k, v in medians.items() if k.startswith("addfd") and "cpu" not in k)  # unpinned
    print(f"the kernel's ADDFD round trip, unpinned on the {len(cpus)} CPU(s) this process may use, best of "
          f"every way of receiving: {best_addfd:,.0f}/s ({1e6 / best_addfd:.1f} us): the ceiling of any "
          "write-open answer here (issue 11's target: >= 100,000/s)")
    print(json.dumps({"calls": args.calls, "rounds": args.rounds,
                      **{f"{k}_per_s": round(v) for k, v in medians.items()},
                      "addfd_ceiling_per_s": round(best_addfd), "cpus": len(cpus)}))


if __name__ == "__main__":
    main()
