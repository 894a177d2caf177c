"""Terminal escape sequences in what guard shows a person (issue class: agent-controlled display text).

The attacker is the agent: it puts ANSI sequences in an argv word so that the line a human reads is not
the action that happens. Each test first shows the attack working against a naive rendering (the raw
string printed, as guard did before), then runs the real daemon, `guard run` and the real CLI, and reads
what a terminal would show through pyte, a real VT100 emulator: the true action must be on screen.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support.daemon import GUARD, wait_until

from guard.daemon.client import DaemonClient

pyte = pytest.importorskip("pyte", reason="pyte (a VT100 emulator) is in the test extras: pip install -e '.[test]'")

FAKE = "write /ws/.vscode/settings.json   [vscode-settings]"
# erase the line, go back to its start, print a harmless-looking request over it
APPROVAL_PAYLOAD = "\x1b[2K\r" + f"ab12cd34 5f3e2a1b90      0s    59s  {FAKE}" + "\x1b[8m"
# clear the whole screen (the rows above, among them a denied `su`) and draw an innocent table
SHOW_PAYLOAD = "\x1b[H\x1b[2J\x1b[3J" + "SEQ     TIME                 SESSION      TYPE       VERDICT\r\n"


def screen_of(data: bytes, columns: int = 240, lines: int = 60) -> str:
    """What a terminal shows after `data` is written to it."""
    screen = pyte.Screen(columns, lines)
    pyte.ByteStream(screen).feed(data.replace(b"\n", b"\r\n"))
    return "\n".join(line.rstrip() for line in screen.display)


def _naive_row(item: dict[str, object]) -> str:
    """How `guard approvals` printed a row before the fix: the recorded strings, raw."""
    action = item["action"]
    assert isinstance(action, dict)
    return f"{item['approval']:<8} {item['session']:<12}  {action['op']} {action['target']}"


def _spawn_guarded(ws: Path, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*GUARD, "run", "--json-summary", "--", *argv], cwd=ws, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_approvals_show_the_real_command_not_the_one_drawn_by_escape_sequences(
        tmp_path: Path, guard_home: Path, guard_daemon: subprocess.Popen[bytes]) -> None:
    git = shutil.which("git", path="/usr/bin:/bin")
    if git is None:
        pytest.skip("needs git in /usr/bin or /bin (the publishing rule asks for `git push`)")
    ws = tmp_path / "ws"
    ws.mkdir()
    agent = _spawn_guarded(ws, git, "push", "origin", APPROVAL_PAYLOAD)
    try:
        with DaemonClient.connect(guard_home) as client:
            [pending] = wait_until(lambda: client.approvals() or (agent.poll() is not None and [None]),
                                   timeout=60, what="the agent's push to be held for approval")
        assert pending is not None, agent.communicate(timeout=10)

        # bare: printed raw, the terminal shows the fake request and no push
        bare = screen_of(_naive_row(pending).encode() + b"\n")
        assert FAKE in bare and "push" not in bare, bare

        # guarded: the real `guard approvals`
        listed = subprocess.run([*GUARD, "approvals"], capture_output=True, timeout=60, check=True).stdout
        assert b"\x1b" not in listed
        seen = screen_of(listed)
        row = next(line for line in seen.splitlines() if pending["approval"] in line)
        assert "run " in row and "git push origin" in row and "\\x1b[2K\\r" in row, seen
        assert not any(line.lstrip().startswith("ab12cd34") for line in seen.splitlines()), seen

        denied = subprocess.run([*GUARD, "deny", str(pending["approval"])], capture_output=True, timeout=60,
                                check=True).stdout
        assert screen_of(denied).startswith(f"denied {pending['approval']}")
        _out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
    assert agent.returncode != 0  # git was never run
    summary = json.loads(err.decode().strip().splitlines()[-1])
    assert summary["denied"] >= 1


def test_audit_show_cannot_be_made_to_erase_a_denied_row(
        tmp_path: Path, guard_home: Path, guard_daemon: subprocess.Popen[bytes]) -> None:
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.skip("needs /usr/bin/python3")
    ws = tmp_path / "ws"
    ws.mkdir()
    # the agent tries `su` (denied), then runs a harmless command whose argument clears the screen
    script = ("import subprocess\n"
              "try:\n    subprocess.run(['su', '-c', 'id'])\nexcept OSError:\n    pass\n"
              f"subprocess.run(['/bin/true', {SHOW_PAYLOAD!r}])\n")
    res = subprocess.run([*GUARD, "run", "--json-summary", "--", python, "-c", script], cwd=ws,
                         capture_output=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    session = json.loads(res.stderr.decode().strip().splitlines()[-1])["session"]
    records = [json.loads(line) for line in subprocess.run(
        [*GUARD, "audit", "show", "--session", session, "--json"], capture_output=True, timeout=60,
        check=True).stdout.splitlines()]
    su = [r for r in records if r["type"] == "decision" and str(r["action"]["target"]).startswith("su ")]
    assert su and all(r["decision"]["verdict"] == "deny" for r in su), records
    assert any(SHOW_PAYLOAD in str(r.get("action", {}).get("target", "")) for r in records), records

    # bare: the rows printed raw, in order: the payload's row wipes the denied `su` row off the screen
    bare = screen_of(b"".join(f"{r['seq']} {r['type']} {r.get('action', {}).get('target', '')}\n".encode()
                              for r in records))
    assert "su -c id" not in bare, bare

    # guarded: the real `guard audit show`
    table = subprocess.run([*GUARD, "audit", "show", "--session", session], capture_output=True, timeout=60,
                           check=True).stdout
    assert b"\x1b" not in table
    seen = screen_of(table)
    assert "su -c id" in seen and "deny" in seen, seen
    assert len(seen.strip().splitlines()) == 1 + len(records)  # a header and one row per record, none erased
    guard_daemon.send_signal(signal.SIGTERM)
    guard_daemon.wait(timeout=30)
    verify = subprocess.run([*GUARD, "audit", "verify"], capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _on_a_terminal(argv: list[str]) -> bytes:
    """Run a CLI command with its stdout on a pseudo-terminal (as a person runs it); its output."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    return b"".join(chunks).replace(b"\r\n", b"\n")


def test_json_on_a_terminal_cannot_erase_lines_with_c1_controls(
        tmp_path: Path, guard_home: Path, guard_daemon: subprocess.Popen[bytes]) -> None:
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.skip("needs /usr/bin/python3")
    ws = tmp_path / "ws"
    ws.mkdir()
    # U+009B is the one-character CSI: JSON leaves it raw, and terminals act on it. Move up, erase.
    name = "notes\u009b1A\u009b2K\rnothing to see"
    res = subprocess.run([*GUARD, "run", "--json-summary", "--", python, "-c", f"open({name!r}, 'w')"], cwd=ws,
                         capture_output=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert res.returncode == 0, res.stderr
    session = json.loads(res.stderr.decode().strip().splitlines()[-1])["session"]
    piped = subprocess.run([*GUARD, "audit", "show", "--session", session, "--json"], capture_output=True,
                           timeout=60, check=True).stdout
    assert "\u009b".encode() in piped  # tools get the exact canonical bytes

    wide = 4000  # no line wraps
    bare = screen_of(piped, columns=wide)  # those bytes on a terminal: the line before the file's is erased
    assert len([line for line in bare.splitlines() if line.strip()]) < len(piped.splitlines()), bare

    on_tty = _on_a_terminal([*GUARD, "audit", "show", "--session", session, "--json"])
    assert "\u009b".encode() not in on_tty
    seen = [line for line in screen_of(on_tty, columns=wide).splitlines() if line.strip()]
    assert len(seen) == len(piped.splitlines()), seen  # every record's line is on screen
    assert [json.loads(line) for line in on_tty.splitlines()] == [json.loads(line) for line in piped.splitlines()]
