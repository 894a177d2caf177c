"""A connection the egress proxy refuses on its own is a denial everywhere a session's denials are counted.

The policy allows connecting to `localhost` by name; the name resolves to loopback, which no rule grants
by CIDR, so the proxy refuses it (rule guard:special-address) after the policy said allow twice (by name,
then with the addresses). A real `guard run` with a real daemon: the agent asks the proxy for a tunnel,
gets a 403, and the session's summary line, the end record's counts and summary, `guard audit show
--verdict deny` and `guard report` must all say one denial, and agree on asks.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson
import pytest
from support.daemon import GUARD
from support.realworld import RealHome

from guard.net.proxy import RULE_SPECIAL_ADDRESS

from .test_run_cli import guard_run, summary_of

POLICY = """\
version: 1
name: refused-connection
extends: [base]
defaults: {file: deny, network: deny, process: allow}
rules:
  - id: workspace
    allow: [read, write, exec]
    paths: ["${workspace}/**"]
  - id: localhost-by-name
    allow: [connect]
    hosts: [localhost]
    reason: the name is allowed; what it resolves to is the proxy's to judge
"""

# The agent: one CONNECT through the proxy guard run gives it, to a name that resolves to loopback.
AGENT = r"""
import os, socket, sys
proxy = os.environ["HTTP_PROXY"].rsplit("/", 1)[-1]
host, port = proxy.rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=30)
s.sendall(b"CONNECT localhost:9 HTTP/1.1\r\nHost: localhost:9\r\n\r\n")
answer = b""
while b"\r\n\r\n" not in answer:
    chunk = s.recv(4096)
    if not chunk:
        break
    answer += chunk
print(answer.split(b"\r\n", 1)[0].decode())
"""


@pytest.fixture
def ws(isolated_home: Path, guard_daemon: subprocess.Popen[bytes]) -> Path:
    return RealHome(isolated_home.parent).build().ws


def _records(home: Path, session: str, *extra: str) -> list[dict[str, object]]:
    res = subprocess.run([*GUARD, "audit", "show", "--session", session, "--json", *extra], capture_output=True,
                         check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    return [orjson.loads(line) for line in res.stdout.splitlines() if line]


def test_a_connection_the_proxy_refuses_counts_as_denied_everywhere(ws: Path, tmp_path: Path,
                                                                     guard_home: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    res = guard_run(ws, "-p", str(policy), "--", "/usr/bin/python3", "-c", AGENT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("HTTP/1.1 403"), res.stdout
    line = summary_of(res.stderr)
    session = next(r for r in _all_sessions(guard_home) if r.startswith(line["id"]))
    assert (line["denied"], line["conns"]) == ("1", "1"), res.stderr  # one connection, refused

    records = _records(guard_home, session)
    end = next(r for r in records if r.get("type") == "session" and r.get("event") == "end")
    counts, summary = end["counts"], end["summary"]
    assert isinstance(counts, dict) and isinstance(summary, dict)
    assert counts["denied"] == summary["denied"] == 1, end
    assert counts["allowed"] == summary["allowed"], end
    assert counts["asked"] == summary["asked"] == 0, end

    # the refusal is the connection's decision (recorded once, by the session), then its connection record
    denied = _records(guard_home, session, "--verdict", "deny")
    assert [r["type"] for r in denied] == ["decision", "connection"], denied
    decision, connection = denied
    assert decision["decision"]["rule_id"] == connection["rule_id"] == RULE_SPECIAL_ADDRESS, denied
    assert decision["action"]["target"] == "localhost:9" and connection["host"] == "localhost", denied

    report = subprocess.run([*GUARD, "audit", "report", session, "--json"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)["summary"]
    assert (totals["denied"], totals["asked"], totals["allowed"], totals["connections"]) == \
        (1, 0, summary["allowed"], 1), totals


def _all_sessions(home: Path) -> list[str]:
    res = subprocess.run([*GUARD, "audit", "show", "--json"], capture_output=True, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    return [str(r["session"]) for r in map(orjson.loads, res.stdout.splitlines())
            if r.get("type") == "session" and r.get("event") == "start"]


AUDIT_ASK = """\
version: 1
name: audit-ask
extends: [base]
mode: audit
defaults: {file: deny, network: deny, process: allow}
rules:
  - id: workspace-read
    allow: [read, exec]
    paths: ["${workspace}/**"]
  - id: ask-to-write
    ask: [write]
    paths: ["${workspace}/**"]
    reason: in audit mode this asks no one
"""


def test_an_audit_mode_ask_asks_no_one_and_every_count_says_so(ws: Path, tmp_path: Path,
                                                              guard_home: Path) -> None:
    """The end record's counts (the daemon's) and summary (guard run's) once disagreed on `asked` here."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(AUDIT_ASK)
    res = guard_run(ws, "-p", str(policy), "--", "/usr/bin/python3", "-c",
                    "open('made-in-audit-mode.txt', 'w').write('x')")
    assert res.returncode == 0, res.stderr
    assert (ws / "made-in-audit-mode.txt").exists()
    line = summary_of(res.stderr)
    session = next(r for r in _all_sessions(guard_home) if r.startswith(line["id"]))
    records = _records(guard_home, session)
    would_ask = [r for r in records if r.get("type") == "decision"
                 and r["decision"]["verdict"] == "ask"]  # type: ignore[index]
    assert would_ask and all(r["decision"]["audit_only"] for r in would_ask), records  # type: ignore[index]
    end = next(r for r in records if r.get("type") == "session" and r.get("event") == "end")
    counts, summary = end["counts"], end["summary"]
    assert isinstance(counts, dict) and isinstance(summary, dict)
    assert counts["asked"] == summary["asked"] == 0, end
    assert (counts["allowed"], counts["denied"]) == (summary["allowed"], summary["denied"]), end
    report = subprocess.run([*GUARD, "audit", "report", session, "--json"], capture_output=True, text=True,
                            check=False, timeout=60)
    totals = json.loads(report.stdout)["summary"]
    assert (totals["asked"], totals["allowed"]) == (0, summary["allowed"]), totals
