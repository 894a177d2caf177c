"""`guard audit report` and `guard audit export --follow` on a real session's trail, and the page in a browser.

A real `guard run` (real daemon, kernel sandbox, proxy and loopback server) writes a trail; the report's
numbers are checked against counts taken from `guard audit show --json` directly, in the text, the JSON and
the HTML page as headless Chromium renders it (Debian's `chromium`; the test skips, saying why, when it is
not installed). Set GUARD_TEST_ARTIFACTS to a directory to keep the page and its screenshot.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.daemon import GUARD, wait_until
from support.ocsf_schema import problems

SUMMARY = re.compile(r"^guard: session (?P<id>[0-9a-f]+) exited (?P<status>\d+): (?P<denied>\d+) denied", re.M)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
ODD_NAME = "odd\x1b[31mred\u202eevil.txt"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"y" * 700
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


def guard(ws: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*GUARD, *args], cwd=ws, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    if check is not None:
        assert proc.returncode == check, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def session_of(stderr: str) -> dict[str, str]:
    found = list(SUMMARY.finditer(stderr))
    assert found, f"no summary line on stderr: {stderr!r}"
    return found[-1].groupdict()


@pytest.fixture
def session(tmp_path: Path, guard_daemon: subprocess.Popen[bytes],
            loopback_server: int) -> tuple[Path, str, int]:
    """A real session: workspace edits, an odd file name, refused writes, one allowed and one refused
    connection to loopback servers (the policy grants exactly one by name, port and CIDR)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    policy = tmp_path / "agent.yaml"
    policy.write_text(f"""version: 1
name: agent
extends: [coding-agent]
settings: {{ask_timeout: 1}}
rules:
  - id: test-server
    allow: [connect]
    hosts: [testhost.example]
    cidrs: [127.0.0.1/32]
    ports: [{loopback_server}]
""")
    fetch = ("import urllib.request, sys; print(len(urllib.request.urlopen(sys.argv[1]).read()))")
    script = (f'mkdir -p src && echo a > src/a.py && echo b > src/b.py && echo c > src/c.py && rm src/c.py; '
              f'printf x > "$(printf "{ODD_NAME}")"; echo hi >> "$HOME/.bashrc"; '
              f'mkdir -p .vscode; echo {{}} > .vscode/settings.json; '
              f'/usr/bin/python3 -c "{fetch}" http://testhost.example:{loopback_server}/; '
              f'/usr/bin/python3 -c "{fetch}" http://evil.example:{loopback_server}/; true')
    run = guard(ws, "run", "-p", str(policy), "--resolve", "testhost.example:127.0.0.1", "--resolve",
                "evil.example:127.0.0.2", "--", "/bin/sh", "-c", script)
    assert "700" in run.stdout, run.stdout + run.stderr
    summary = session_of(run.stderr)
    return ws, summary["id"], int(summary["denied"])


def trail_counts(ws: Path, sid: str) -> dict[str, int]:
    """The numbers a person checks, counted straight from the records (not through the report)."""
    records = [json.loads(line) for line in guard(ws, "audit", "show", "--session", sid, "--json")
               .stdout.splitlines()]
    decisions = [r for r in records if r["type"] == "decision"]
    connections = [r for r in records if r["type"] == "connection"]
    approvals = [r for r in records if r["type"] == "approval"]
    denied_targets = {r["action"]["target"] for r in decisions if r["decision"]["verdict"] == "deny"}
    proxy_only = [c for c in connections if c["verdict"] == "deny"
                  and f"{c['host']}:{c['port']}" not in denied_targets]
    return {
        "denied": sum(r["decision"]["verdict"] == "deny" for r in decisions) + len(proxy_only)
        + sum(a["verdict"] == "deny" for a in approvals),
        "asked": sum(r["decision"]["verdict"] == "ask" for r in decisions),
        "allowed": sum(r["decision"]["verdict"] == "allow" for r in decisions),
        "connections": len(connections),
        "refused_connections": sum(c["verdict"] == "deny" for c in connections),
        "bytes_up": sum(c["bytes_up"] for c in connections),
        "bytes_down": sum(c["bytes_down"] for c in connections),
        "command_runs": sum(r["action"]["op"] == "run" for r in decisions),
        "files_written": len({r["action"]["target"] for r in decisions
                              if r["action"]["op"] == "write" and r["decision"]["verdict"] == "allow"}
                             | {a["action"]["target"] for a in approvals
                                if a["action"]["op"] == "write" and a["verdict"] == "allow"}),
    }


class _Summary(HTMLParser):
    """The visible summary numbers: the text of every element whose id is n-<name>."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: dict[str, str] = {}
        self.status = ""
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id") or ""
        if ident.startswith("n-"):
            self._current = ident[2:]
        if ident == "verification":
            self.status = dict(attrs).get("data-status") or ""

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self.numbers[self._current] = self.numbers.get(self._current, "") + data

    def handle_endtag(self, tag: str) -> None:
        self._current = None


def test_report_numbers_agree_with_the_trail_in_text_json_and_page(session: tuple[Path, str, int],
                                                                   tmp_path: Path) -> None:
    ws, sid, run_denied = session
    counts = trail_counts(ws, sid)
    assert counts["denied"] == run_denied == 3 and counts["asked"] == 1  # .bashrc, evil.example, the ask
    assert counts["connections"] == 2 and counts["bytes_down"] > 700
    text = guard(ws, "audit", "report", sid).stdout
    for key, value in counts.items():
        label = {"denied": "denied", "asked": "asked", "allowed": "allowed", "connections": "connections",
                 "refused_connections": "connections refused", "bytes_up": "bytes sent",
                 "bytes_down": "bytes received", "command_runs": "command runs",
                 "files_written": "files written"}[key]
        assert f"\n  {label}: {value}\n" in text, (label, value, text)
    assert "trail: VERIFIED" in text
    assert text.index("OUTSIDE THE WORKSPACE") < text.index("SUMMARY")
    assert ".bashrc" in text.split("SUMMARY")[0]  # the refused write outside is called out first
    assert "odd\\x1b[31mred\\u202eevil.txt" in text and "\x1b" not in text and "\u202e" not in text
    data = json.loads(guard(ws, "audit", "report", sid, "--json").stdout)
    assert {k: data["summary"][k] for k in counts} == counts
    assert data["verification"]["status"] == "valid"
    (ask,) = data["asks"]
    assert ask["target"].endswith("/.vscode") and ask["rule"] == "workspace-settings"  # the mkdir asks
    assert (ask["answer"], ask["by"]) == ("deny", "timeout") and ask["waited_s"] >= 1
    (net,) = [d for d in data["network"] if d["host"] == "testhost.example"]
    assert net["allowed"] == 1 and net["bytes_down"] > 700
    assert guard(ws, "audit", "report", sid[:6], "--json").stdout == guard(ws, "audit", "report", "--json").stdout
    since = json.loads(guard(ws, "audit", "report", "--since", "1h", "--json").stdout)
    assert [s["id"] for s in since["sessions"]] == [sid] and since["summary"]["denied"] == counts["denied"]
    # a window that starts mid-session still knows the session's workspace (from its start record)
    records = [json.loads(line) for line in guard(ws, "audit", "show", "--session", sid, "--json").stdout.splitlines()]
    middle = next(r["ts"] for r in records if r["type"] == "decision" and r["action"]["op"] == "write")
    later = json.loads(guard(ws, "audit", "report", "--since", middle, "--json").stdout)
    assert later["sessions"][0]["workspace"] == str(ws)
    assert [o["path"].rsplit("/", 1)[-1] for o in later["outside"]] == [".bashrc"]


def test_report_page_in_headless_chromium(session: tuple[Path, str, int], tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it in CI: "
                    "apt-get install -y chromium)")
    ws, sid, _denied = session
    page = tmp_path / "report.html"
    guard(ws, "audit", "report", sid, "--html", "-o", str(page))
    profile = tempfile.mkdtemp(prefix="guard-chromium-", dir=tmp_path)
    base = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1800"]
    env = {**os.environ, "HOME": profile}
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180,
                         env=env, check=False)
    assert dom.returncode == 0 and "</html>" in dom.stdout, dom.stderr[-2000:]
    parsed = _Summary()
    parsed.feed(dom.stdout)
    counts = trail_counts(ws, sid)
    assert {k: int(parsed.numbers[k]) for k in counts} == counts
    assert parsed.status == "valid"
    assert "\x1b" not in dom.stdout and "odd\\x1b[31mred\\u202eevil.txt" in dom.stdout
    shot = tmp_path / "report.png"
    snap = subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True,
                          timeout=180, env=env, check=False)
    assert snap.returncode == 0 and shot.stat().st_size > 10_000, snap.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("GUARD_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
        shutil.copy(page, Path(keep) / "report.html")
        print(f"report page and screenshot kept in {keep}")


def test_a_tampered_trail_is_reported_as_such(session: tuple[Path, str, int], guard_home: Path,
                                              tmp_path: Path) -> None:
    ws, sid, _denied = session
    copy = tmp_path / "log"
    shutil.copytree(guard_home / "log", copy)
    seg = sorted(copy.glob("seg-*.jsonl"))[0]
    data = seg.read_bytes()
    assert b'"src/a.py"' not in data and b"/src/a.py" in data
    seg.write_bytes(data.replace(b"/src/a.py", b"/src/A.py", 1))
    out = guard(ws, "audit", "report", sid, "--log", str(copy), check=1)
    assert "trail: TAMPERED: first break at" in out.stdout
    page = tmp_path / "t.html"
    guard(ws, "audit", "report", sid, "--log", str(copy), "--html", "-o", str(page), check=1)
    assert 'data-status="tampered"' in page.read_text()


def test_export_follow_resumes_from_its_cursor(session: tuple[Path, str, int], guard_home: Path,
                                               tmp_path: Path) -> None:
    ws, _sid, _denied = session
    cursor, out = tmp_path / "cursor.json", tmp_path / "events.jsonl"
    follow = subprocess.Popen([*GUARD, "audit", "export", "--format", "ocsf", "--follow", "--interval", "0.1",
                               "--cursor", str(cursor), "-o", str(out)], cwd=ws, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        wait_until(lambda: cursor.exists() and out.exists() and out.stat().st_size > 0, what="the first export")
        second = guard(ws, "run", "--", "/bin/sh", "-c", 'echo more > more.txt; echo x >> "$HOME/.bashrc"', check=2)
        sid2 = session_of(second.stderr)["id"]
        wait_until(lambda: f'"correlation_uid":"{sid2}"' in out.read_text(), what="the second session exported")
    finally:
        follow.send_signal(signal.SIGTERM)
        _, err = follow.communicate(timeout=30)
    assert follow.returncode == 0, err
    stopped_at = json.loads(cursor.read_text())["seq"]
    third = guard(ws, "run", "--", "/bin/sh", "-c", "echo again > again.txt")
    sid3 = session_of(third.stderr)["id"]
    guard(ws, "audit", "export", "--format", "ocsf", "--cursor", str(cursor), "-o", str(out))  # resume, no follow
    events = [json.loads(line) for line in out.read_text().splitlines()]
    seqs = [e["unmapped"]["guard_seq"] for e in events]
    assert len(seqs) == len(set(seqs)), "an event was exported twice"
    everything = [json.loads(line) for line in guard(ws, "audit", "export", "--format", "ocsf").stdout.splitlines()]
    assert seqs == [e["unmapped"]["guard_seq"] for e in everything], "an event was skipped or reordered"
    assert any(e["metadata"]["correlation_uid"] == sid3 for e in events)
    assert json.loads(cursor.read_text())["seq"] > stopped_at
    bad = [(e["unmapped"]["guard_seq"], p) for e in events for p in problems(e)]
    assert bad == []
    assert {e["class_uid"] for e in events} == {1001, 1007, 4001}
    assert all("actor" in e for e in events if e["class_uid"] == 4001)
