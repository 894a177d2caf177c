"""What `guard run` costs a real session: a fixed file-heavy workload bare, under the guard, and under
bubblewrap with a comparable policy, interleaved in one run (bare, guard, bwrap, bare, ...) so a busy
machine slows every mode alike; medians of the rounds.

The workload, the same shell script in every mode, in a fresh directory of a scratch workspace:
  1. /usr/bin/python3 writes N small files (default 3,000 of 1 KiB, 30 directories) and reads them back;
  2. /usr/bin/python3 imports a fixed set of standard-library modules;
  3. `tar cf` of the tree;
  4. `git add -A && git commit` (the repository is initialised outside the timed run, for every mode).
Also measured: `launch_ms`, the median wall time of `guard run -- true` with the daemon warm;
`notified_per_s`, write-opens per second that go through the seccomp supervisor inside `guard run`;
`workflows`, the bare and guarded medians and ratio of developer workflows (pip install of 20 wheels
into a fresh venv, git clone + checkout of a 400-file repository by its absolute path and by a relative
one, tar x of it, make of a small C library), each in a fresh directory, one line per workflow.

Everything lives under a scratch directory with its own HOME and GUARD_HOME; the daemon started for the
run is stopped at the end (by pid if it will not stop). Last line: one JSON object.
Also `full-audit`: guard run --full-audit, every open decided and recorded, reads included.
Targets: ratio <= 1.10, guard/bwrap <= 1.15, full-audit ratio <= 1.3, launch_ms <= 50.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

PY = "/usr/bin/python3"
# An engineer's git config as `gh auth setup-git` and an editor leave it: programs named by path, which
# become rules of every launch (guard.sandbox.git_launch). The home of both launch benchmarks holds it.
GITCONFIG = """[user]
	name = Dev Eloper
	email = dev@example.invalid
[core]
	editor = /usr/bin/vim -f
[credential "https://github.com"]
	helper =
	helper = !/usr/bin/gh auth git-credential
"""

FILES_PY = r"""
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blob = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
dirs = max(1, n // 100)
for d in range(dirs):
    os.mkdir(os.path.join(root, f"d{d:03}"))
for i in range(n):
    with open(os.path.join(root, f"d{i % dirs:03}", f"f{i:05}.txt"), "wb") as fh:
        fh.write(blob)
total = 0
for dirpath, _dirs, names in os.walk(root):
    for name in names:
        with open(os.path.join(dirpath, name), "rb") as fh:
            total += len(fh.read())
assert total == n * size, (total, n * size)
"""

IMPORTS = [
    "json", "csv", "email.parser", "http.client", "urllib.request", "xml.etree.ElementTree", "sqlite3",
    "decimal", "fractions", "asyncio", "unittest", "argparse", "logging.handlers", "concurrent.futures",
    "multiprocessing", "tarfile", "zipfile", "hashlib", "ssl", "difflib", "pathlib", "dataclasses", "typing",
    "inspect", "ast", "dis", "tokenize", "textwrap", "pprint", "statistics", "random", "uuid", "shutil",
    "tempfile", "subprocess", "socket", "selectors",
]

WORKLOAD_SH = f"""set -e
mkdir tree
{PY} "$1/files.py" tree "$2" "$3"
{PY} -c 'import {", ".join(IMPORTS)}'
tar cf tree.tar tree
git add -A
git -c user.name=bench -c user.email=bench@example.invalid commit -q -m bench
"""

OPENS_PY = r"""
import os, sys, time
n = int(sys.argv[1])
path = "opens.dat"
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
os.close(os.open(path, flags, 0o644))
start = time.perf_counter()
for _ in range(n):
    os.close(os.open(path, flags, 0o644))
print(round(n / (time.perf_counter() - start)))
"""


# Developer workflows (tests/integration/test_workflows.py runs them for correctness; here: their cost).
# name -> (setup, untimed, run bare in the round's directory; timed, in every mode). $A: the shared assets.
WHEEL_PY = r"""
import base64, hashlib, sys, zipfile
from pathlib import Path
dist = Path(sys.argv[1]); dist.mkdir(parents=True, exist_ok=True)
for n in range(int(sys.argv[2])):
    name = f"benchpkg{n}"; info = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": f"VALUE = {n}\n" * 50,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    def digest(t):
        return base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b"=").decode()
    rec = [f"{p},sha256={digest(t)},{len(t.encode())}" for p, t in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = "\n".join(rec) + "\n"
    with zipfile.ZipFile(dist / f"{name}-1.0-py3-none-any.whl", "w") as z:
        for p, t in files.items():
            z.writestr(p, t)
"""

ASSETS_SH = f"""set -e
cd "$1"
{PY} wheel.py wheels 20
mkdir src && cd src
for i in $(seq 1 400); do mkdir -p "d$((i % 20))"; echo "line $i" > "d$((i % 20))/f$i.txt"; done
git init -q . && git add -A && git -c user.name=b -c user.email=b@example.invalid commit -q -m src
cd .. && git clone -q --bare src upstream.git && tar cf big.tar src && rm -rf src
mkdir cproj && cd cproj
for i in $(seq 1 24); do printf 'int f%d(int x) {{ return x * %d; }}\n' "$i" "$i" > "f$i.c"; done
printf 'OBJS := $(patsubst %%.c,%%.o,$(wildcard f*.c))\nlib.a: $(OBJS)\n\tar rcs $@ $^\n' > Makefile
"""

WORKFLOWS: dict[str, tuple[str, str]] = {
    "pip-wheels": (f"{PY} -m venv v",
                   "v/bin/pip install -q --disable-pip-version-check --no-index --find-links $A/wheels "
                   + " ".join(f"benchpkg{n}" for n in range(20))),
    "git-clone": ("", "git clone -q $A/upstream.git c && git -C c checkout -q -b topic && "
                      "git -C c status -s"),
    # the same clone by a relative path: git links every object from a path through ".."
    "git-clone-rel": ("", 'git clone -q "$(realpath --relative-to=. "$A")/upstream.git" c && '
                          "git -C c checkout -q -b topic && git -C c status -s"),
    "tar-x": ("", "tar xf $A/big.tar && tar cf again.tar src"),
    "make": ("cp -r $A/cproj .", "make -s -C cproj -j2 && make -s -C cproj -B"),
}


class BenchError(Exception):
    """A mode failed to run the workload: the numbers would mean nothing."""


def timed(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], what: str) -> float:
    """Wall seconds of one run; a failure stops the benchmark with the command's own words."""
    start = time.perf_counter()
    res = subprocess.run(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                         capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).decode(errors="replace")[-1500:]
        raise BenchError(f"{what}: exit {res.returncode}: {' '.join(argv)}\n{tail}")
    return elapsed


def output_of(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], what: str) -> str:
    res = subprocess.run(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise BenchError(f"{what}: exit {res.returncode}\n{(res.stdout + res.stderr)[-1500:]}")
    return res.stdout


def bwrap_prefix(workspace: Path, home: Path) -> list[str]:
    """A bubblewrap policy comparable to coding-agent: system read-only, the workspace read-write, /tmp
    private, home read-only, every namespace unshared (no network), killed with its parent."""
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/etc"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    argv += ["--ro-bind", str(home), str(home), "--bind", str(workspace), str(workspace)]
    return argv


class Scratch:
    """A scratch workspace, HOME and GUARD_HOME, and the environment every mode runs with."""

    def __init__(self, parent: Path | None, files: int, size: int, *, cold_bytecode: bool) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="guard-bench-", dir=parent)).resolve()
        self.home = self.root / "home"
        self.guard_home = self.root / "guard-home"
        self.ws = self.root / "ws"
        for d in (self.home, self.ws):
            d.mkdir()
        (self.home / ".gitconfig").write_text(GITCONFIG)
        self.guard_home.mkdir(mode=0o700)
        (self.ws / "files.py").write_text(FILES_PY)
        (self.ws / "workload.sh").write_text(WORKLOAD_SH)
        (self.ws / "opens.py").write_text(OPENS_PY)
        self.files, self.size = files, size
        self.env = {**os.environ, "HOME": str(self.home), "GUARD_HOME": str(self.guard_home),
                    "XDG_CONFIG_HOME": str(self.home / ".config"),
                    "XDG_CACHE_HOME": str(self.home / ".cache"),
                    "XDG_STATE_HOME": str(self.root / "state"), "GIT_CONFIG_NOSYSTEM": "1"}
        # guard itself, as `python -m guard` with this interpreter (and its options: see below)
        self.guard_cmd = [sys.executable, "-m", "guard"]
        if not cold_bytecode:
            # An installed guard runs from cached bytecode; a checkout under PYTHONDONTWRITEBYTECODE
            # would recompile every module at every launch (~90 ms here) and measure that instead. The
            # cache prefix is an option of guard's own interpreter, not of the environment: the workload
            # inherits the environment, and a prefix in the scratch directory is out of every sandbox's
            # view (/tmp is private to each), so each sandboxed python would compile the standard library
            # afresh at every run while the bare one reused its bytecode.
            self.env.pop("PYTHONDONTWRITEBYTECODE", None)
            self.env.pop("PYTHONPYCACHEPREFIX", None)
            self.guard_cmd[1:1] = ["-X", f"pycache_prefix={self.root / 'pycache'}"]
        self._n = 0

    def fresh_run_dir(self) -> Path:
        """A new git repository for one run (initialised here, untimed, the same for every mode)."""
        self._n += 1
        run = self.ws / f"run{self._n:04}"
        run.mkdir()
        (run / ".gitignore").write_text("*.tar\n")
        subprocess.run(["git", "init", "-q", str(run)], env=self.env, check=True, stdin=subprocess.DEVNULL)
        return run

    def workload_argv(self) -> list[str]:
        return ["/bin/sh", str(self.ws / "workload.sh"), str(self.ws), str(self.files), str(self.size)]

    def guard(self, *args: str) -> list[str]:
        return [*self.guard_cmd, "run", "--workspace", str(self.ws), *args]

    def daemon_pid(self, env: Mapping[str, str] | None = None) -> int | None:
        res = subprocess.run([*self.guard_cmd, "daemon", "status", "--json"], env=env or self.env,
                             capture_output=True, text=True, check=False)
        try:
            info: dict[str, Any] = json.loads(res.stdout)
        except ValueError:
            return None
        return int(info["pid"]) if info.get("running") else None

    def stop_daemon(self, env: Mapping[str, str] | None = None) -> None:
        pid = self.daemon_pid(env)
        subprocess.run([*self.guard_cmd, "daemon", "stop"], env=env or self.env, capture_output=True,
                       check=False, timeout=30)
        if pid is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def median_ms(samples: Sequence[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def launch_samples(n: int, modes: Mapping[str, Sequence[str]], s: Scratch,
                   envs: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, list[float]]:
    """`n` launches of each mode, interleaved (one of each, n times) so a busy machine slows all alike."""
    out: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(n):
        for mode, argv in modes.items():
            env = (envs or {}).get(mode, s.env)
            out[mode].append(timed(argv, cwd=s.ws, env=env, what=f"launch {mode}"))
    return out


Modes = dict[str, Callable[[Path], list[str]]]


def run_rounds(s: Scratch, rounds: int, modes: Modes) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode, argv_for in modes.items():
            run = s.fresh_run_dir()
            times[mode].append(timed(argv_for(run), cwd=run, env=s.env, what=f"{mode} round {r + 1}"))
            shutil.rmtree(run)  # untimed: keep the workspace (and guard's launch scan) the same size
        line = "  ".join(f"{m} {times[m][-1]:.3f}s" for m in modes)
        print(f"round {r + 1}/{rounds}: {line}", flush=True)
    return times


def run_workflows(s: Scratch, rounds: int, policy: Sequence[str]) -> dict[str, dict[str, float]]:
    """Each workflow bare and guarded, interleaved, in fresh directories; medians of the rounds."""
    assets = s.ws / "assets"
    assets.mkdir()
    (assets / "wheel.py").write_text(WHEEL_PY)
    timed(["/bin/sh", "-c", ASSETS_SH, "sh", str(assets)], cwd=assets, env=s.env, what="workflow assets")
    env = {**s.env, "A": str(assets)}
    out: dict[str, dict[str, float]] = {}
    for name, (setup, work) in WORKFLOWS.items():
        times: dict[str, list[float]] = {"bare": [], "guard": []}
        for r in range(rounds + 1):  # the first round warms up, untimed
            for mode in times:
                run = s.ws / f"wf-{name}-{mode}-{r}"
                run.mkdir()
                if setup:
                    timed(["/bin/sh", "-c", setup], cwd=run, env=env, what=f"{name} setup")
                argv = ["/bin/sh", "-c", work]
                if mode == "guard":
                    argv = [*s.guard(*policy), "--", *argv]
                took = timed(argv, cwd=run, env=env, what=f"{name} {mode} round {r}")
                if r:
                    times[mode].append(took)
                shutil.rmtree(run)
        bare_s, guard_s = statistics.median(times["bare"]), statistics.median(times["guard"])
        out[name] = {"bare_s": round(bare_s, 3), "guard_s": round(guard_s, 3),
                     "ratio": round(guard_s / bare_s, 3)}
        print(f"workflow {name}: bare {out[name]['bare_s']} s, guard {out[name]['guard_s']} s "
              f"(ratio {out[name]['ratio']})", flush=True)
    shutil.rmtree(assets)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians are reported)")
    ap.add_argument("--files", type=int, default=3000, help="small files written then read")
    ap.add_argument("--size", type=int, default=1024, help="bytes per file")
    ap.add_argument("--launch-runs", type=int, default=20, help="runs of `guard run -- true`")
    ap.add_argument("--opens", type=int, default=3000, help="write-opens for notified_per_s")
    ap.add_argument("--policy", default="coding-agent")
    ap.add_argument("--dir", type=Path, default=None,
                    help="parent of the scratch directory (default: $TMPDIR)")
    ap.add_argument("--no-bwrap", action="store_true", help="skip bubblewrap even when installed")
    ap.add_argument("--no-full-audit", action="store_true", help="skip the --full-audit mode")
    ap.add_argument("--cold-bytecode", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE (measure recompiling guard at each launch)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--workflow-rounds", type=int, default=3,
                    help="rounds of each developer workflow (pip from wheels, git clone, tar x, make); "
                         "0: skip")
    ap.add_argument("--baseline", type=Path, default=None, metavar="SRC",
                    help="also launch another guard's source tree (e.g. `git archive REV` unpacked), "
                         "interleaved, with its own GUARD_HOME and daemon: before/after in one run")
    ap.add_argument("--launch-only", action="store_true",
                    help="only the launch line (no workload rounds, no write-opens, no workflows)")
    args = ap.parse_args()

    s = Scratch(args.dir, args.files, args.size, cold_bytecode=args.cold_bytecode)
    bwrap = None if args.no_bwrap else shutil.which("bwrap")
    policy = ["--policy", args.policy]
    modes: Modes = {
        "bare": lambda run: s.workload_argv(),
        "guard": lambda run: [*s.guard(*policy), "--", *s.workload_argv()],
    }
    if bwrap:
        modes["bwrap"] = lambda run: [*bwrap_prefix(s.ws, s.home), "--chdir", str(run), "--",
                                      *s.workload_argv()]
    if not args.no_full_audit:  # every open decided and recorded, reads included (guard run --full-audit)
        modes["full-audit"] = lambda run: [*s.guard(*policy, "--full-audit"), "--", *s.workload_argv()]
    try:
        print(f"scratch {s.root}; workload: {args.files} files of {args.size} B, "
              f"{len(IMPORTS)} stdlib imports, tar, git add+commit; "
              f"{args.rounds} rounds of {', '.join(modes)}", flush=True)
        subprocess.run([*s.guard_cmd, "daemon", "start"], env=s.env, check=True, capture_output=True)
        # Warm-up, untimed: page cache, the daemon's first session, bwrap's first namespace setup.
        for mode, argv_for in modes.items():
            run = s.fresh_run_dir()
            argv = argv_for(run)
            if args.launch_only:  # warm with `true` in place of the workload
                argv = [*argv[:-len(s.workload_argv())], "true"]
            timed(argv, cwd=run, env=s.env, what=f"{mode} warm-up")
            shutil.rmtree(run)
        times = run_rounds(s, 0 if args.launch_only else args.rounds, modes)

        launch_modes: dict[str, list[str]] = {"guard": [*s.guard(*policy), "--", "true"], "bare": ["true"],
                                              "floor": [*s.guard_cmd, "--version"]}
        if bwrap:
            launch_modes["bwrap"] = [*bwrap_prefix(s.ws, s.home), "--", "true"]
        envs: dict[str, dict[str, str]] = {}
        if args.baseline is not None:
            launch_modes["baseline"] = launch_modes["guard"]
            envs["baseline"] = baseline_env = {**s.env, "PYTHONPATH": str(args.baseline.resolve()),
                                               "GUARD_HOME": str(s.root / "guard-home-baseline")}
            Path(baseline_env["GUARD_HOME"]).mkdir(mode=0o700)
            timed(launch_modes["baseline"], cwd=s.ws, env=baseline_env, what="baseline warm-up")
        launches = launch_samples(args.launch_runs, launch_modes, s, envs)
        true_guard, true_bare, cli_floor = launches["guard"], launches["bare"], launches["floor"]
        true_bwrap = launches.get("bwrap")

        notified = opens_bare = None
        workflows: dict[str, dict[str, float]] = {}
        if not args.launch_only:
            opens_argv = [PY, str(s.ws / "opens.py"), str(args.opens)]
            notified = int(output_of([*s.guard(*policy), "--", *opens_argv], cwd=s.ws, env=s.env,
                                     what="notified write-opens").split()[-1])
            opens_bare = int(output_of(opens_argv, cwd=s.ws, env=s.env, what="bare write-opens").split()[-1])
            if args.workflow_rounds > 0:
                workflows = run_workflows(s, args.workflow_rounds, policy)
    except BenchError as exc:
        print(f"bench_run: {exc}", file=sys.stderr)
        return 1
    finally:
        s.stop_daemon()
        if args.baseline is not None:
            s.stop_daemon({**s.env, "PYTHONPATH": str(args.baseline.resolve()),
                           "GUARD_HOME": str(s.root / "guard-home-baseline")})
        if args.keep:
            print(f"kept {s.root}")
        else:
            s.cleanup()

    result: dict[str, Any] = {}
    if not args.launch_only:
        bare_s = statistics.median(times["bare"])
        guard_s = statistics.median(times["guard"])
        bwrap_s = statistics.median(times["bwrap"]) if "bwrap" in times else None
        full_s = statistics.median(times["full-audit"]) if "full-audit" in times else None
        result = {
            "bare_s": round(bare_s, 3),
            "guard_s": round(guard_s, 3),
            "ratio": round(guard_s / bare_s, 3),
            "bwrap_s": round(bwrap_s, 3) if bwrap_s is not None else None,
            "bwrap_ratio": round(bwrap_s / bare_s, 3) if bwrap_s is not None else None,
            "guard_to_bwrap": round(guard_s / bwrap_s, 3) if bwrap_s is not None else None,
            "full_audit_s": round(full_s, 3) if full_s is not None else None,
            "full_audit_ratio": round(full_s / bare_s, 3) if full_s is not None else None,
        }
    result |= {
        "notified_per_s": notified,
        "bare_write_opens_per_s": opens_bare,
        "launch_ms": median_ms(true_guard),
        "launch_bare_ms": median_ms(true_bare),
        "launch_bwrap_ms": median_ms(true_bwrap) if true_bwrap is not None else None,
        "cli_floor_ms": median_ms(cli_floor),
        "launch_baseline_ms": median_ms(launches["baseline"]) if "baseline" in launches else None,
        "rounds": args.rounds,
        "files": args.files,
        "policy": args.policy,
        "bytecode_cached": not args.cold_bytecode,
        "workflows": workflows,
        "workflow_rounds": args.workflow_rounds,
    }
    if not args.launch_only:
        print(f"workload: bare {result['bare_s']} s, guard {result['guard_s']} s (ratio {result['ratio']}, "
              f"target <= 1.10), bwrap {result['bwrap_s']} s (ratio {result['bwrap_ratio']}); guard/bwrap "
              f"{result['guard_to_bwrap']} (target <= 1.15); --full-audit {result['full_audit_s']} s "
              f"(ratio {result['full_audit_ratio']}, target <= 1.3)")
    print(f"launch: guard run -- true {result['launch_ms']} ms (target <= 50), "
          f"bare {result['launch_bare_ms']} ms, "
          f"bwrap {result['launch_bwrap_ms']} ms, `python -m guard --version` {result['cli_floor_ms']} ms"
          + (f", baseline guard run -- true {result['launch_baseline_ms']} ms" if args.baseline else ""))
    if not args.launch_only:
        print(f"write-opens: {notified}/s through the supervisor, {opens_bare}/s bare")
    launch_s = statistics.median(true_guard)
    for name, w in workflows.items():
        # what the session itself costs, without the fixed launch (measured above as launch_ms)
        w["ratio_excluding_launch"] = round(max(w["guard_s"] - launch_s, 0.0) / w["bare_s"], 3)
        print(f"workflow {name}: bare {w['bare_s']} s, guard {w['guard_s']} s, ratio {w['ratio']} "
              f"({w['ratio_excluding_launch']} without the launch)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
