"""The escape suite's world: a scratch home, workspace and GUARD_HOME per module, and the two ways to run.

Every attack runs twice: `bare_run` (no guard: the attack must work, or it proves nothing) and
`guard_run` (a real `python -m guard run` subprocess with the same environment: the attack must fail
with the exact symptom). Both run with a PATH of system directories only and cwd = the workspace.

The files here are named after attack families (fs_*, proc_*, self_*, honest_*, network_*), not test_*,
so this conftest collects them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.realworld import RealHome

FAMILIES = ("fs_", "proc_", "self_", "honest_", "network_", "agent_")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
ROOT = os.geteuid() == 0


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # a file named on the command line is collected by pytest itself; do not collect it twice
    if (file_path.suffix == ".py" and file_path.name.startswith(FAMILIES)
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@dataclass(repr=False)
class Run:
    """What one run produced; `summary` is guard run's --json-summary line (None for bare runs)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None = None

    @property
    def session(self) -> str:
        assert self.summary is not None, f"no guard summary on stderr:\n{self.stderr}"
        return str(self.summary["session"])

    def __repr__(self) -> str:  # what an assertion shows: the whole story of the run
        err = "\n".join(line for line in self.stderr.splitlines() if not line.startswith("guard: warning:"))
        return f"\nargv={self.argv!r} rc={self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{err}\n"


def _summary(stderr: str) -> dict[str, Any] | None:
    for line in reversed(stderr.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"session"' in line:
            with contextlib.suppress(ValueError):
                return dict(json.loads(line))
    return None


@dataclass
class World:
    """One attacker's playground. Paths are resolved so they match what the guard records."""

    root: Path
    home: Path = field(init=False)
    ws: Path = field(init=False)
    gh: Path = field(init=False)
    scratch: Path = field(init=False)
    outside: Path = field(init=False)
    ssh_key: Path = field(init=False)
    aws: Path = field(init=False)
    real: RealHome = field(init=False)
    ssh_secret: str = field(init=False)
    aws_secret: str = field(init=False)
    fast_ask: Path = field(init=False)
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.root.chmod(0o755)
        # the realistic home: workspace at ~/src/proj, an existing repository with a submodule and a
        # worktree, dotfiles, credential files, toolchain links into caches (tests/support/realworld.py)
        self.real = RealHome(self.root).build()
        self.home = self.real.home
        self.ws = self.real.ws
        self.gh = self.root / "gh"
        self.scratch = self.root / "scratch"  # under /tmp, outside the workspace and the home
        self.outside = self.home / "outside"  # the engineer's files: nothing grants them
        for d in (self.scratch, self.outside):
            d.mkdir(parents=True, exist_ok=True)
        self.ssh_secret = self.real.secrets["ssh_key"]
        self.aws_secret = self.real.secrets["aws"]
        self.ssh_key = self.home / ".ssh" / "id_ed25519"
        self.aws = self.home / ".aws" / "credentials"
        policies = self.root / "policies"
        policies.mkdir()
        self.fast_ask = policies / "fast-ask.yaml"
        self.fast_ask.write_text("version: 1\nname: fast-ask\nextends: [coding-agent]\n"
                                 "settings: {ask_timeout: 1}\n")

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "GUARD_HOME": str(self.gh), "PATH": SYSTEM_PATH,
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    def guard_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "guard", *args]

    def guard(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A guard CLI command (outside any sandbox) against this world's GUARD_HOME."""
        proc = subprocess.run(self.guard_argv(*args), env=self.env, cwd=self.ws, capture_output=True,
                              text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"guard {' '.join(args)}: rc={proc.returncode}\n{proc.stderr}"
        return proc

    def guard_run_argv(self, argv: Sequence[str], *, policy: str | Path | None = None,
                       extra_args: Sequence[str] = ()) -> list[str]:
        cmd = self.guard_argv("run", "--json-summary")
        if policy is not None:
            cmd += ["--policy", str(policy)]
        return [*cmd, *extra_args, "--", *argv]

    def guard_run(self, argv: Sequence[str], *, policy: str | Path | None = None,
                  extra_args: Sequence[str] = (), timeout: float = 60, cwd: Path | None = None,
                  env: Mapping[str, str] | None = None, input: str | None = None,
                  prefix: Sequence[str] = ()) -> Run:
        """`prefix` wraps the guard command, e.g. a shell that exports its own pid and execs it."""
        cmd = [*prefix, *self.guard_run_argv(argv, policy=policy, extra_args=extra_args)]
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, cwd=cwd or self.ws, capture_output=True,
                              text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        return Run(list(argv), proc.returncode, proc.stdout, proc.stderr, _summary(proc.stderr))

    def bare_run(self, argv: Sequence[str], *, timeout: float = 60, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None, input: str | None = None) -> Run:
        proc = subprocess.run(list(argv), env={**self.env, **(env or {})}, cwd=cwd or self.ws,
                              capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        return Run(list(argv), proc.returncode, proc.stdout, proc.stderr)

    def records(self, session: str) -> list[dict[str, Any]]:
        """The session's records, once its end record is in the log (the daemon writes asynchronously)."""
        recs: list[dict[str, Any]] = []

        def ended() -> bool:
            nonlocal recs
            out = self.guard("audit", "show", "--json", "--session", session).stdout
            recs = [json.loads(line) for line in out.splitlines() if line.strip()]
            return any(r.get("type") == "session" and r.get("event") == "end" for r in recs)

        assert self.wait_until(ended, timeout=10), f"session {session} has no end record: {recs}"
        return recs

    def decisions(self, session: str, verdict: str | None = None) -> list[tuple[str, str, str]]:
        """(op, target, verdict) of every decision record of a session."""
        found = []
        for rec in self.records(session):
            if rec.get("type") != "decision":
                continue
            v = rec["decision"]["verdict"]
            if verdict is None or v == verdict:
                found.append((rec["action"]["op"], str(rec["action"].get("target", "")), v))
        return found

    def assert_denied(self, run: Run, op: str, target: str | Path) -> None:
        """The session recorded a deny (or an unanswered ask) of `op` on `target` or on the directory
        that would have held it (mkdir -p stops at the first refused component)."""
        got = self.decisions(run.session)
        refused = [t for o, t, v in got if v in ("deny", "ask") and o == op]
        hit = [t for t in refused if t == str(target) or str(target).startswith(t.rstrip("/") + "/")]
        assert hit, f"no refusal of {op} {target} recorded; decisions: {got}"

    def assert_write_refused(self, run: Run, target: Path, *, op: str = "write") -> None:
        """The write failed and left nothing. Refused by a decision (EACCES): it must be in the trail.
        Or the kernel tier hid the place entirely (ENOENT under a mask): nothing reached a decision."""
        assert run.returncode != 0, run
        assert not target.exists(), f"{target} was written: {run!r}"
        hidden = ("nonexistent", "No such file", "FileNotFoundError")
        if any(h in run.stderr for h in hidden) and "Permission denied" not in run.stderr:
            return
        assert "Permission denied" in run.stderr or "PermissionError" in run.stderr, run
        self.assert_denied(run, op, target)

    def daemon_status(self) -> dict[str, Any]:
        return dict(json.loads(self.guard("daemon", "status", "--json", check=False).stdout or "{}"))

    def track(self, pid: int) -> None:
        self.pids.append(pid)

    def check_trail(self) -> None:
        """The trail every attack of a module wrote verifies with only the exported public key."""
        pub = self.root / "root.pub"
        if not pub.exists():
            self.guard("keys", "export-public", "-o", str(pub))
        proc = self.guard("audit", "verify", "--key", str(pub), check=False)
        # a checkpoint seals the tail within a second: wait for it rather than call the tail invalid
        deadline = time.monotonic() + 10
        while proc.returncode != 0 and "UNSEALED" in proc.stdout and time.monotonic() < deadline:
            time.sleep(0.3)
            proc = self.guard("audit", "verify", "--key", str(pub), check=False)
        assert proc.returncode == 0, f"guard audit verify failed:\n{proc.stdout}\n{proc.stderr}"
        assert "VALID" in proc.stdout

    @staticmethod
    def pid_alive(pid: int) -> bool:
        """True while `pid` exists and is not a zombie."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return state not in (b"Z", b"X")

    @staticmethod
    def pids_with(token: str) -> list[int]:
        """Live processes whose command line contains `token` (how attacks' leftovers are found outside)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if token.encode() in cmdline and World.pid_alive(int(entry)):
                found.append(int(entry))
        return found

    @staticmethod
    def wait_until(predicate: Any, timeout: float = 15.0) -> bool:
        """Poll `predicate` until true or `timeout` passes (a bound, not a timed assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return bool(predicate())

    @staticmethod
    def py(code: str) -> list[str]:
        """An attack in Python, run by the system interpreter (what an agent finds on PATH)."""
        return ["python3", "-I", "-c", code]

    @staticmethod
    def sh(script: str) -> list[str]:
        return ["/bin/sh", "-c", script]

    def stop(self) -> None:
        status = self.daemon_status()
        self.guard("daemon", "stop", check=False)
        pid = status.get("pid") if status.get("running") else None
        if isinstance(pid, int):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.pid_alive(pid):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for p in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p, os.WNOHANG)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("escape"))
    w.guard("keys", "init")
    try:
        yield w
    finally:
        w.stop()

