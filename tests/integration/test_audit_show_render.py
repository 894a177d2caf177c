"""`guard audit show` as a person reads it: refused connections are denials too, long cells keep their end."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WRITE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from guard.audit import AuditWriter, decision_event, session_event
    from guard.model import Action, Decision, Op, Verdict
    from guard.net.records import ConnectionRecord
    with AuditWriter(Path(sys.argv[1])) as w:
        w.append(session_event("s1", "start", policy="coding-agent"))
        w.append({**ConnectionRecord(protocol="connect", client="127.0.0.1:5", verdict="deny",
                                     rule_id="guard:loopback", reason="resolves to loopback",
                                     host="evil.test", port=8080, duration_ms=2).to_dict(), "session": "s1"})
        deep = "/home/dev/src/project/" + "nested/" * 12 + ".git/hooks/pre-commit"
        w.append(decision_event("s1", Action(Op.WRITE, deep), Decision(Verdict.DENY, "git-hooks", "hooks")))
        w.append(session_event("s1", "end", exit_status=0, duration_ms=10))
""")


def guard(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "guard", *args], capture_output=True, text=True, timeout=60,
                          check=True, cwd=REPO).stdout


def test_a_refused_connection_is_listed_as_deny_and_a_long_path_keeps_its_file_name(guard_home: Path) -> None:
    guard("keys", "init")
    subprocess.run([sys.executable, "-c", WRITE, str(guard_home)], check=True, cwd=REPO, timeout=60)
    denied = guard("audit", "show", "--verdict", "deny").splitlines()[1:]
    assert len(denied) == 2, denied
    conn = next(line for line in denied if " connection " in line)
    assert " deny " in conn and "evil.test:8080" in conn and "guard:loopback" in conn
    hook = next(line for line in denied if " decision " in line)
    assert "…" in hook and ".git/hooks/pre-commit" in hook and "/home/dev/src" in hook
