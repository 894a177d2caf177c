"""`guard policy learn`, proven by replay: real `guard run` sessions, a real daemon, trail and loopback server.

A workload runs under coding-agent and is refused things it needs (files in a home directory the policy
does not grant, a test server on loopback reached by name). `guard policy learn` proposes a policy from the
trail; the same workload re-run under it is refused nothing, while what it never did (another file in the
home directory, the SSH key, another port, another host) is still refused, and what the base denies by
rule (a shell rc file, the SSH directory) is never granted even though a session tried it.

HOME lives under /dev/shm here, not under /tmp: the base policy's `tmp` grant excepts the home, and a home
inside a granted tree is carved into an empty tmpfs, where a write to an ungranted directory fails with
ENOENT before any decision is made (so nothing would be recorded to learn from). A real home is not inside
a granted tree.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import GUARD, running_daemon

SHM = Path("/dev/shm")
SUMMARY = re.compile(r"^guard: session (?P<id>[0-9a-f]+) exited (?P<status>\d+): (?P<denied>\d+) denied", re.M)


def summary_of(stderr: str) -> dict[str, str]:
    found = list(SUMMARY.finditer(stderr))
    assert found, f"no summary line on stderr: {stderr!r}"
    return found[-1].groupdict()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"x" * 500
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def world(isolated_home: Path, guard_home: Path, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(workspace, home): the test's own home (the base policy's scratch grant excepts it, so nothing in it
    is granted but what coding-agent grants) and a daemon of the test's own."""
    home = isolated_home
    try:
        (home / "notes").mkdir()
        (home / ".ssh").mkdir(mode=0o700)
        (home / ".ssh" / "id_rsa").write_text("SECRET-KEY-MATERIAL\n")
        ws = tmp_path / "ws"
        ws.mkdir()
        with running_daemon(guard_home):
            yield ws, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GUARD, *args], cwd=ws, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def workload(port: int) -> str:
    fetch = (f"import urllib.request; print('got', len(urllib.request.urlopen("
             f"'http://testhost.example:{port}/').read()))")
    return (f'echo a > "$HOME/notes/a.txt" && echo b > "$HOME/notes/b.txt" && echo w > out.txt && '
            f'/usr/bin/python3 -c "{fetch}"')


def denials(ws: Path, session: str) -> list[dict]:
    shown = run(ws, "audit", "show", "--session", session, "--json")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    return [r for r in records if (r.get("decision") or {}).get("verdict") == "deny"
            or (r.get("type") == "connection" and r.get("verdict") == "deny")]


def test_learned_policy_replays_with_zero_denials_and_refuses_the_rest(
        world: tuple[Path, Path], loopback_server: int, tmp_path: Path) -> None:
    ws, home = world
    # other.example is another destination: a loopback address nothing granted (a special-purpose address
    # is granted by CIDR, so any name that resolves to the granted address and port reaches the same server)
    pin = ("--resolve", "testhost.example:127.0.0.1", "--resolve", "other.example:127.0.0.2")
    first = run(ws, "run", *pin, "--", "/bin/sh", "-c", workload(loopback_server))
    assert first.returncode != 0, first.stderr  # the first write is refused, so the && chain stops
    learn_from = summary_of(first.stderr)["id"]
    # the workload needed more than the first refusal shows: record it in audit mode to see it all
    audit_policy = tmp_path / "record.yaml"
    audit_policy.write_text("version: 1\nname: record\nextends: [coding-agent]\nmode: audit\n")
    steps = workload(loopback_server).replace(" && ", "; ")  # each step alone: all of them are tried
    recorded = run(ws, "run", "-p", str(audit_policy), *pin, "--", "/bin/sh", "-c", steps)
    recorded_id = summary_of(recorded.stderr)["id"]
    # a session that also tried what the base denies by rule
    hostile = run(ws, "run", "--", "/bin/sh", "-c", 'echo x >> "$HOME/.bashrc"; echo y > "$HOME/.ssh/config"')
    hostile_id = summary_of(hostile.stderr)["id"]
    needed = denials(ws, learn_from) + denials(ws, recorded_id)
    assert len(needed) >= 3, needed

    learned = tmp_path / "learned.yaml"
    out = run(ws, "policy", "learn", "--session", learn_from, "--session", recorded_id, "--session", hostile_id,
              "-o", str(learned))
    assert out.returncode == 0, out.stdout + out.stderr
    text = learned.read_text()
    assert '"~/notes/*"' in text and '"testhost.example"' in text and "127.0.0.1/32" in text
    assert "not granted: write ~/.bashrc: deny by rule shell-rc" in out.stdout
    # ~/.ssh is a FUSE mask that records each attempt: the write's lookup of the name is refused (and
    # recorded) as a read of it, before the write could be judged (README, "Not enforced")
    assert any(f"not granted: {op} ~/.ssh/config: deny by rule credentials" in out.stdout
               for op in ("write", "read")), out.stdout
    assert "~/.bashrc" not in text.split("rules:")[1].split("tests:")[0]  # only in comments and tests
    assert run(ws, "policy", "lint", str(learned)).returncode == 0
    assert run(ws, "policy", "test", str(learned)).returncode == 0
    diff = run(ws, "policy", "diff", "coding-agent", str(learned))
    assert diff.returncode == 1 and "added    rule learned-write" in diff.stdout, diff.stdout  # it loosens

    replay = run(ws, "run", "-p", str(learned), *pin, "--", "/bin/sh", "-c", workload(loopback_server))
    assert replay.returncode == 0, replay.stderr
    summary = summary_of(replay.stderr)
    assert summary["denied"] == "0" and denials(ws, summary["id"]) == []
    assert "got 500" in replay.stdout
    assert (home / "notes" / "a.txt").read_text() == "a\n" and (home / "notes" / "b.txt").read_text() == "b\n"

    never_did = (
        'echo x > "$HOME/other.txt" && echo LEAK-1; cat "$HOME/.ssh/id_rsa" && echo LEAK-2; '
        'echo x >> "$HOME/.bashrc" && echo LEAK-3; '
        f"/usr/bin/python3 -c \"import urllib.request; urllib.request.urlopen('http://other.example:"
        f"{loopback_server}/')\" && echo LEAK-4; "
        f"/usr/bin/python3 -c \"import urllib.request; urllib.request.urlopen('http://testhost.example:"
        f"{loopback_server + 1 if loopback_server < 65535 else 1}/')\" && echo LEAK-5; true")
    attempt = run(ws, "run", "-p", str(learned), *pin, "--", "/bin/sh", "-c", never_did)
    assert "LEAK" not in attempt.stdout and "SECRET-KEY-MATERIAL" not in attempt.stdout, attempt.stdout
    refused = {(r.get("action") or {}).get("target") or f"{r.get('host')}:{r.get('port')}"
               for r in denials(ws, summary_of(attempt.stderr)["id"])}
    assert {f"{home}/other.txt", f"{home}/.bashrc", f"other.example:{loopback_server}"} <= refused, refused
    assert not (home / "other.txt").exists()
    print(f"learn proof: {len(needed)} refusals recorded in the learning sessions; learned "
          f"{text.count('- id: ')} rule(s); replay denied {summary['denied']}; "
          f"{len(refused)} never-done action(s) refused: {sorted(refused)}")
