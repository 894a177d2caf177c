"""`guard run` as an engineer meets it: the real CLI in a subprocess, the real daemon, kernel and trail.

Each test gets its own GUARD_HOME and HOME (tests/conftest.py) and, unless it tests the auto-start, a daemon
started here and killed by pid in teardown, so `guard run` finds it warm. Commands inside the sandbox are
system binaries (/bin/sh, /usr/bin/python3) that the shipped policies grant.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from support.daemon import GUARD, daemon_answers, stop_daemon_of, wait_until
from support.realworld import RealHome

SUMMARY = re.compile(r"^guard: session (?P<id>[0-9a-f]+) exited (?P<status>\d+): (?P<denied>\d+) denied, "
                     r"(?P<allowed>\d+) allowed, (?P<execs>\d+) execs, (?P<conns>\d+) connections", re.M)

# A policy every host here can enforce fully: no denies inside granted trees, nothing to mask.
MINIMAL = """\
version: 1
name: minimal
extends: [base]
defaults: {file: deny, network: deny, process: allow}
rules:
  - id: workspace
    allow: [read, write, exec]
    paths: ["${workspace}/**"]
  - id: no-rm
    deny: [run]
    commands: ["rm ..."]
"""

@pytest.fixture
def ws(isolated_home: Path, guard_daemon: subprocess.Popen[bytes]) -> Path:
    """The workspace where engineers keep it: ~/src/proj, an existing repository in a realistic home."""
    return RealHome(isolated_home.parent).build().ws


def guard_run(ws: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GUARD, "run", *args], cwd=ws, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def summary_of(stderr: str) -> dict[str, str]:
    found = list(SUMMARY.finditer(stderr))
    assert found, f"no summary line on stderr: {stderr!r}"
    return found[-1].groupdict()


def minimal_policy(tmp_path: Path) -> Path:
    path = tmp_path / "minimal.yaml"
    path.write_text(MINIMAL)
    return path


# --- exit status -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 7, 124, 255])
def test_exit_code_passes_through(ws: Path, tmp_path: Path, code: int) -> None:
    res = guard_run(ws, "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "-c", f"exit {code}")
    assert res.returncode == code, res.stderr
    assert summary_of(res.stderr)["status"] == str(code)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
def test_death_by_signal_is_128_plus_signal(ws: Path, tmp_path: Path, sig: signal.Signals) -> None:
    res = guard_run(ws, "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "-c", f"kill -{int(sig)} $$")
    assert res.returncode == 128 + sig, res.stderr


def test_stdout_and_stdin_are_the_agents(ws: Path, tmp_path: Path) -> None:
    res = subprocess.run([*GUARD, "run", "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "-c", "tr a-z A-Z; echo done >&2"], cwd=ws,
                         input="hello sandbox\n", capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "HELLO SANDBOX\n"
    assert "done" in res.stderr


def test_the_command_works_in_the_workspace(ws: Path) -> None:
    res = guard_run(ws, "--", "/bin/sh", "-c", "echo made > made.txt && cat made.txt && pwd")
    assert res.returncode == 0, res.stderr
    assert (ws / "made.txt").read_text() == "made\n"
    assert res.stdout.splitlines() == ["made", str(ws)]


def test_git_init_add_commit_in_the_workspace_under_the_default_policy(ws: Path) -> None:
    """Honest work the issue lists as never denied: a commit in the engineer's existing repository, and a
    new repository inside the workspace."""
    (ws / "a.txt").write_text("a\n")
    script = ("git add -A && git commit -q -m one && mkdir new && cd new && git init -q && "
              "echo b > b.txt && git add -A && git commit -q -m two")
    res = guard_run(ws, "--", "/bin/sh", "-c", script)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (ws / "new" / ".git" / "HEAD").exists()
    assert summary_of(res.stderr)["denied"] == "0"


# --- 125: the guard could not set the sandbox up, and nothing ran ------------------------------------------
def test_policy_file_with_an_error_exits_125_naming_file_line_col(ws: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nrules:\n  - id: x\n    allow: [flarp]\n    paths: ['/tmp/**']\n")
    res = guard_run(ws, "-p", str(bad), "--", "/bin/sh", "-c", "echo ran > ran.txt")
    assert f"{bad}:5:" in res.stderr, res.stderr
    assert "flarp" in res.stderr
    assert not (ws / "ran.txt").exists()
    assert res.returncode == 125, f"a policy error must be exit 125 (sandbox not set up): {res.stderr}"


def test_unknown_policy_name_exits_125(ws: Path) -> None:
    res = guard_run(ws, "-p", "no-such-policy", "--", "/bin/sh", "-c", "echo ran > ran.txt")
    assert "no-such-policy" in res.stderr
    assert not (ws / "ran.txt").exists()
    assert res.returncode == 125, res.stderr


def test_nonexistent_command_exits_127_with_the_reason(ws: Path, tmp_path: Path) -> None:
    """As timeout(1), env(1) and nohup(1) do: 125 is the guard's own failure, 127 a command not found."""
    res = guard_run(ws, "-p", str(minimal_policy(tmp_path)), "--", "no-such-command-xyz")
    assert res.returncode == 127, res.stderr
    assert "no-such-command-xyz" in res.stderr
    assert re.search(r"not found|no such file", res.stderr, re.I), res.stderr
    assert summary_of(res.stderr)["denied"] == "0", "a PATH search is not a series of denials"


def test_relative_policy_path_is_the_callers(ws: Path, tmp_path: Path) -> None:
    """`-p ../p.yaml` means the file next to the caller's workspace, for the kernel plan and the decisions."""
    minimal_policy(ws.parent)
    res = guard_run(ws, "-p", "../minimal.yaml", "--", "/bin/sh", "-c", "echo ok")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ok\n"


def test_no_command_is_a_usage_error(ws: Path) -> None:
    res = guard_run(ws)
    assert res.returncode == 2
    assert "COMMAND" in res.stderr or "command" in res.stderr


# --- --require-full ----------------------------------------------------------------------------------------
def _capped_scan_policy(ws: Path, tmp_path: Path) -> Path:
    """A policy whose launch scan bound is smaller than the workspace: glob denies and planted hard links
    beyond it could not be checked."""
    for i in range(20):
        (ws / f"f{i}.txt").write_text("x")
    policy = tmp_path / "capped.yaml"
    policy.write_text("version: 1\nname: capped\nextends: [coding-agent]\nsettings: {scan_max_entries: 5}\n")
    return policy


def test_a_scan_past_its_bound_refuses_to_start_and_runs_nothing(ws: Path, tmp_path: Path) -> None:
    """Fail closed: a secret must never become readable because the workspace is large."""
    policy = _capped_scan_policy(ws, tmp_path)
    res = guard_run(ws, "-p", str(policy), "--", "/bin/sh", "-c", "echo ran > ran.txt")
    assert res.returncode == 125, res.stderr
    assert "stopped after 5 directory entries (settings.scan_max_entries)" in res.stderr
    assert "nothing was started" in res.stderr and "scan_max_entries: 25" in res.stderr
    assert "guard doctor" not in res.stderr
    assert not (ws / "ran.txt").exists()
    assert not SUMMARY.search(res.stderr), "no session ran"


def test_require_full_runs_a_fully_enforceable_policy(ws: Path, tmp_path: Path) -> None:
    policy = minimal_policy(tmp_path)
    res = guard_run(ws, "--require-full", "-p", str(policy), "--", "/bin/sh", "-c", "echo ran > ran.txt")
    assert res.returncode == 0, res.stderr
    assert (ws / "ran.txt").read_text() == "ran\n"
    assert "warning" not in res.stderr


# --- the summary ---------------------------------------------------------------------------------------------
def test_stderr_summary_counts_and_points_at_the_denials(ws: Path, tmp_path: Path) -> None:
    policy = minimal_policy(tmp_path)
    (ws / "keep.txt").write_text("x")
    # From a script file the shell's own command line shows no rm: the exec of rm is what gets refused.
    (ws / "t.sh").write_text("rm keep.txt\nexit 3\n")
    res = guard_run(ws, "-p", str(policy), "--", "/bin/sh", "t.sh")
    assert res.returncode == 3
    assert (ws / "keep.txt").exists()
    s = summary_of(res.stderr)
    assert s["status"] == "3"
    assert int(s["denied"]) >= 1
    assert int(s["execs"]) >= 2  # sh and the refused rm
    assert f"guard audit show --session {s['id']} --verdict deny" in res.stderr
    assert res.stderr.rstrip("\n").splitlines()[-1].startswith("guard: session "), "summary is the last line"


def test_summary_without_denials_has_no_pointer(ws: Path, tmp_path: Path) -> None:
    res = guard_run(ws, "-p", str(minimal_policy(tmp_path)), "--", "/bin/true")
    assert res.returncode == 0, res.stderr
    s = summary_of(res.stderr)
    assert s["denied"] == "0"
    assert "guard audit show" not in res.stderr


def test_json_summary_is_one_json_line_last(ws: Path, tmp_path: Path) -> None:
    (ws / "t.sh").write_text("rm nothing\nexit 5\n")
    res = guard_run(ws, "--json-summary", "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "t.sh")
    assert res.returncode == 5
    last = res.stderr.rstrip("\n").splitlines()[-1]
    data = json.loads(last)
    assert set(data) >= {"session", "exit_status", "allowed", "denied", "asked", "execs", "connections"}
    assert data["exit_status"] == 5
    assert data["denied"] >= 1
    assert isinstance(data["session"], str) and data["session"]
    assert all(isinstance(data[k], int) for k in ("allowed", "denied", "asked", "execs", "connections"))
    assert not SUMMARY.search(res.stderr), "the human line is replaced, not added"


# --- --resolve ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "words"), [
    ("example.org", "expected NAME:ADDRESS"),
    (":127.0.0.1", "expected NAME:ADDRESS"),
    ("example.org:", "expected NAME:ADDRESS"),
    ("example.org:not-an-ip", "is not an IP address"),
    ("example.org:999.1.1.1", "is not an IP address"),
])
def test_resolve_parse_errors_are_usage_errors(ws: Path, value: str, words: str) -> None:
    res = guard_run(ws, "--resolve", value, "--", "/bin/sh", "-c", "echo ran > ran.txt")
    assert res.returncode == 2, res.stderr
    assert words in res.stderr
    assert repr(value) in res.stderr
    assert not (ws / "ran.txt").exists()


@pytest.mark.parametrize("value", ["example.org:127.0.0.1", "example.org:[::1]", "example.org:::1"])
def test_resolve_accepts_v4_and_v6(ws: Path, tmp_path: Path, value: str) -> None:
    res = guard_run(ws, "--resolve", value, "-p", str(minimal_policy(tmp_path)), "--", "/bin/true")
    assert res.returncode == 0, res.stderr


# --- signals toward guard run --------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_to_guard_run_kills_the_whole_tree(ws: Path, tmp_path: Path, sig: signal.Signals) -> None:
    script = "sleep 300 & sleep 300 & (sleep 300 &) ; echo up > up.txt; wait"
    proc = subprocess.Popen([*GUARD, "run", "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "-c", script],
                            cwd=ws, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (ws / "up.txt").exists() or proc.poll() is not None, what="the agent to start")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        wait_until(lambda: len([p for p in psutil.Process(proc.pid).children(recursive=True)
                                if p.name() == "sleep"]) >= 3, what="the three sleeps")
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode != 0
        _gone, alive = psutil.wait_procs(tree, timeout=20)
        assert not alive, f"survived guard run: {alive}"
        assert "guard: session" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_sigint_to_guard_run_outside_a_terminal_reaches_the_agent_not_the_guard(ws: Path, tmp_path: Path) -> None:
    """Ctrl-C belongs to the agent: guard run ignores SIGINT, the agent (same process group) gets it."""
    script = "trap 'echo got-int > int.txt; exit 42' INT; echo up > up.txt; while :; do sleep 0.05; done"
    proc = subprocess.Popen([*GUARD, "run", "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "-c", script],
                            cwd=ws, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until(lambda: (ws / "up.txt").exists() or proc.poll() is not None, what="the agent to start")
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the whole foreground group
        proc.communicate(timeout=20)
        assert (ws / "int.txt").read_text() == "got-int\n"
        assert proc.returncode == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# --- the trail -----------------------------------------------------------------------------------------------
def test_session_shows_in_audit_show_and_the_trail_verifies(ws: Path, tmp_path: Path,
                                                            guard_daemon: subprocess.Popen[bytes]) -> None:
    (ws / "t.sh").write_text("rm x\n/bin/true\n")
    res = guard_run(ws, "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "t.sh")
    assert res.returncode == 0, res.stderr
    session = summary_of(res.stderr)["id"]
    guard_daemon.send_signal(signal.SIGTERM)  # graceful: seals the final checkpoint
    guard_daemon.wait(timeout=20)
    shown = subprocess.run([*GUARD, "audit", "show", "--session", session, "--json"], capture_output=True,
                           text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    assert records and all(r.get("session") == session for r in records)
    kinds = [r["type"] for r in records]
    assert kinds[0] == "session" and kinds[-1] == "session"
    text = json.dumps(records)
    assert "/bin/true" in text and "rm" in text
    assert any(r["type"] == "decision" and r["decision"]["verdict"] == "deny" for r in records), records
    denied = subprocess.run([*GUARD, "audit", "show", "--session", session, "--verdict", "deny"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert denied.returncode == 0 and "rm" in denied.stdout
    verify = subprocess.run([*GUARD, "audit", "verify"], capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_guard_run_starts_the_daemon_when_none_runs(tmp_path: Path, guard_home: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    try:
        assert not daemon_answers(guard_home)
        res = guard_run(ws, "-p", str(minimal_policy(tmp_path)), "--", "/bin/sh", "-c", "exit 4")
        assert res.returncode == 4, res.stderr
        assert daemon_answers(guard_home)
    finally:
        stop_daemon_of(guard_home)
