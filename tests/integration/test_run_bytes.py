"""`guard run` with file names and arguments that are not UTF-8: the real CLI, daemon, kernel and trail.

Before the fix, such a name crashed the session's recorder thread (every later record, denials included,
was dropped while the trail still verified) and such an argument made `guard run` die with a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from support.daemon import GUARD

from guard.text import as_bytes

AGENT = "import os;open(b'x\\xff','w');open(os.path.expanduser('~/.bashrc'),'a')"


def _records(session: str) -> list[dict[str, object]]:
    out = subprocess.run([*GUARD, "audit", "show", "--session", session, "--json"], capture_output=True,
                         timeout=60, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_non_utf8_names_and_argv_are_recorded_denials_included_and_the_trail_verifies(
        tmp_path: Path, isolated_home: Path, guard_daemon: subprocess.Popen[bytes]) -> None:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs /usr/bin/python3 (granted by the shipped policies)")
    ws = tmp_path / "ws"
    ws.mkdir()
    res = subprocess.run([*GUARD, "run", "--", "/usr/bin/python3", "-c", AGENT, b"arg-\xff\x1b[2K"], cwd=ws,
                         capture_output=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    stderr = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 1, stderr  # the agent's own PermissionError on ~/.bashrc, nothing of guard's
    assert "guard-recorder" not in stderr and "surrogates not allowed" not in stderr, stderr
    assert (ws / os.fsdecode(b"x\xff")).exists()
    assert not (isolated_home / ".bashrc").exists()
    summary = next(line for line in stderr.splitlines() if line.startswith("guard: session "))
    assert "\x1b" not in summary
    session = summary.split()[2]
    guard_daemon.send_signal(signal.SIGTERM)  # graceful: seals the final checkpoint
    guard_daemon.wait(timeout=30)

    records = _records(session)
    decisions = {(r["action"]["op"], as_bytes(r["action"]["target"])): r["decision"]["verdict"]  # type: ignore[index]
                 for r in records if r["type"] == "decision"}
    assert decisions[("write", os.fsencode(ws) + b"/x\xff")] == "allow", decisions
    assert decisions[("write", os.fsencode(isolated_home / ".bashrc"))] == "deny", decisions
    start = next(r for r in records if r["type"] == "session" and r["event"] == "start")
    assert [as_bytes(a) for a in start["argv"]][-1] == b"arg-\xff\x1b[2K"  # type: ignore[union-attr]
    assert any(r["type"] == "session" and r["event"] == "end" for r in records)

    table = subprocess.run([*GUARD, "audit", "show", "--session", session], capture_output=True, timeout=60,
                           check=True).stdout.decode("utf-8")
    assert "x\\xff" in table and "\x1b" not in table
    verify = subprocess.run([*GUARD, "audit", "verify"], capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
