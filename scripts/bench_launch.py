"""What a launch costs as the workspace grows: `guard run -- true` with a workspace of 0, 3,700 and 120,000
directory entries (a node_modules-like tree: packages of a few directories and ~25 files), against `true`
bare in the same run, interleaved (bare, 0, 3700, 120000, bare, ...) so a busy machine slows every mode
alike; medians of the rounds.

Also measured, in-process: `scan_ms`, the launch scan alone (guard.sandbox.scan) on each workspace, and the
walkers it was chosen against on the 120,000-entry tree (os.scandir as guard walks it, os.walk, find(1)).

Everything lives under a scratch directory with its own HOME (the workspaces under it, each a git
repository, as an engineer keeps them; a ~/.gitconfig naming programs by path, as `gh auth setup-git` and
an editor leave it) and GUARD_HOME; the daemon started for the run is stopped at the end (by pid if it
will not stop).
One JSON line per workspace size, then the walkers' line. With --phases, first the breakdown of one
launch (scripts/launch_phases.py, run --rounds times in the empty workspace; medians per phase).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_run import GITCONFIG  # the engineer's git config both benchmarks' homes hold

GUARD = [sys.executable, "-m", "guard"]
SIZES = (0, 3_700, 120_000)


def make_tree(root: Path, entries: int) -> int:
    """A node_modules-like tree of about `entries` entries under root (which is not counted)."""
    root.mkdir(parents=True, exist_ok=True)
    made = 0
    i = 0
    modules = root / "node_modules"
    while made < entries:
        if made == 0:
            modules.mkdir()
            made += 1
        pkg = modules / f"pkg{i}"
        (pkg / "lib" / "sub").mkdir(parents=True)
        made += 3
        for j in range(12):
            (pkg / "lib" / f"f{j}.js").write_bytes(b"")
            (pkg / "lib" / "sub" / f"g{j}.js").write_bytes(b"")
        (pkg / "package.json").write_bytes(b"{}")
        made += 25
        i += 1
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(root))


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def walkers(root: Path) -> dict[str, float]:
    from guard.sandbox.scan import _Budget, _walk

    def guard_walk() -> int:
        return sum(1 for _ in _walk(str(root), _Budget(10**9), []))

    def os_walk() -> int:
        return sum(len(d) + len(f) for _, d, f in os.walk(root))

    def find() -> int:
        out = subprocess.run(["find", str(root), "-mindepth", "1", "-printf", "%y%p\\0"], capture_output=True,
                             check=True, timeout=120).stdout
        return out.count(b"\0")

    out: dict[str, float] = {}
    for name, fn in (("scandir_ms", guard_walk), ("os_walk_ms", os_walk), ("find_ms", find)):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = round(statistics.median(times) * 1000, 1)
    return out


def scan_ms(ws: Path, home: Path, gh: Path) -> float:
    from guard.policy import load_policy
    from guard.sandbox.scan import scan_launch_facts

    env = {"HOME": str(home), "TMPDIR": "/tmp"}
    policy = load_policy("coding-agent", workspace=ws, env=env)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        scan_launch_facts(policy, workspace=ws, protected=[gh], home=home,
                          max_entries=policy.scan_max_entries)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 1)


def phases(rounds: int, envs: dict[str, dict[str, str]], cwd: Path) -> None:
    """Print the median of each phase of `guard run -- true` over `rounds` runs (scripts/launch_phases.py),
    one column per guard (this tree, and --baseline's), runs interleaved; `wall_ms` is the whole process as
    its parent sees it, `exit and the rest` what the phases leave out of it (the interpreter's exit...)."""
    script = Path(__file__).with_name("launch_phases.py")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in envs}
    for _ in range(rounds):
        for label, env in envs.items():
            start = time.perf_counter()
            out = subprocess.run([sys.executable, str(script), "true"], env=env, cwd=cwd, capture_output=True,
                                 text=True, timeout=120)
            wall = (time.perf_counter() - start) * 1000
            if out.returncode != 0:
                raise SystemExit(f"launch_phases.py failed ({out.returncode}):\n{out.stderr}")
            run = json.loads(out.stdout.splitlines()[-1])
            run["wall_ms"] = wall
            run["rest_ms"] = wall - sum(run[k] for k in _TOP)
            runs[label].append(run)

    def median(label: str, key: str) -> float | None:
        values = [r[key] for r in runs[label] if key in r]
        return statistics.median(values) if values else None

    def phase(label: str, name: str) -> float | None:
        values = [p["ms"] for r in runs[label] for p in r["phases"] if p["phase"] == name]
        return statistics.median(values) if values else None

    labels = list(envs)
    def cell(value: float | None) -> str:
        return f"{value:8.1f}" if value is not None else "       -"

    print(f"{'phase of guard run -- true (median of ' + str(rounds) + ' runs, ms)':58s}"
          + "".join(f"{lab:>9s}" for lab in labels))
    for key in ("wall_ms", *_TOP, "rest_ms"):
        print(f"  {key:56s}" + "".join(cell(median(lab, key)) for lab in labels))
    names = list(dict.fromkeys(p["phase"] for lab in labels for r in runs[lab] for p in r["phases"]))
    first = {n: min(p["at_ms"] for lab in labels for r in runs[lab] for p in r["phases"] if p["phase"] == n)
             for n in names}
    print("  of run_guarded_ms (phases that overlap each show their own time):")
    for name in sorted(names, key=lambda n: first[n]):
        print(f"    {name:54s}" + "".join(cell(phase(lab, name)) for lab in labels))
    print(json.dumps({lab: {"wall_ms": median(lab, "wall_ms"), **{k: median(lab, k) for k in _TOP},
                            "phases": {n: phase(lab, n) for n in names}} for lab in labels}), flush=True)


_TOP = ("startup_ms", "import_cli_ms", "import_run_ms", "run_guarded_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--phases", action="store_true", help="first print the breakdown of one launch")
    parser.add_argument("--baseline", type=Path, default=None, metavar="SRC",
                        help="also measure another guard's source tree (git archive REV), interleaved, with "
                             "its own GUARD_HOME and daemon (its phases too, with --phases)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="guard-bench-launch-"))
    home, gh = scratch / "home", scratch / "gh"
    env = {"HOME": str(home), "GUARD_HOME": str(gh), "PATH": "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8"}
    daemon_pid: int | None = None
    try:
        for d in (home / ".cache", gh):
            d.mkdir(parents=True)
        # an engineer's git config as `gh auth setup-git` and an editor leave it (programs named by path:
        # rules of the launch, guard.sandbox.git_launch), and each workspace a repository
        (home / ".gitconfig").write_text(GITCONFIG)
        spaces = {n: home / "src" / f"ws{n}" for n in SIZES}
        for n, ws in spaces.items():
            make_tree(ws, n)
            subprocess.run(["git", "init", "-q", str(ws)], env=env, check=True, capture_output=True,
                           timeout=60)
        counted = {n: sum(len(d) + len(f) for _, d, f in os.walk(ws)) for n, ws in spaces.items()}
        subprocess.run([*GUARD, "keys", "init"], env=env, check=True, capture_output=True, timeout=120)
        timed([*GUARD, "run", "--", "true"], env, spaces[0])  # warm: starts the daemon
        status = json.loads(subprocess.run([*GUARD, "daemon", "status", "--json"], env=env,
                                           capture_output=True, text=True, timeout=60).stdout or "{}")
        daemon_pid = status.get("pid") if status.get("running") else None
        envs = {"this": env}
        if args.baseline is not None:
            base_env = {**env, "PYTHONPATH": str(args.baseline.resolve()),
                        "GUARD_HOME": str(scratch / "gh-base")}
            (scratch / "gh-base").mkdir(mode=0o700)
            timed([*GUARD, "run", "--", "true"], base_env, spaces[0])  # starts the baseline's daemon
            envs["baseline"] = base_env
        try:
            if args.phases:
                phases(args.rounds, envs, spaces[0])
            bare: list[float] = []
            guarded: dict[tuple[str, int], list[float]] = {(label, n): [] for label in envs for n in SIZES}
            for _ in range(args.rounds):
                bare.append(timed(["true"], env, spaces[0]))
                for n in SIZES:
                    for label, label_env in envs.items():
                        guarded[label, n].append(timed([*GUARD, "run", "--", "true"], label_env, spaces[n]))
        finally:
            if args.baseline is not None:
                subprocess.run([*GUARD, "daemon", "stop"], env=envs["baseline"], capture_output=True,
                               timeout=60)
        bare_s = statistics.median(bare)
        for n in SIZES:
            med = statistics.median(guarded["this", n])
            line: dict[str, Any] = {"workspace_entries": counted[n], "launch_s": round(med, 3),
                                    "bare_true_s": round(bare_s, 4), "ratio_vs_bare": round(med / bare_s, 1),
                                    "scan_ms": scan_ms(spaces[n], home, gh), "rounds": args.rounds}
            if args.baseline is not None:
                line["baseline_launch_s"] = round(statistics.median(guarded["baseline", n]), 3)
            print(json.dumps(line), flush=True)
        print(json.dumps({"walk_120k": walkers(spaces[SIZES[-1]])}), flush=True)
    finally:
        subprocess.run([*GUARD, "daemon", "stop"], env=env, capture_output=True, timeout=60)
        if isinstance(daemon_pid, int):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{daemon_pid}").exists():
                time.sleep(0.05)
            if Path(f"/proc/{daemon_pid}").exists():
                os.kill(daemon_pid, signal.SIGKILL)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
