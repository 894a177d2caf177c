"""The session report model and its three renderings, from records in the shapes the daemon writes."""

from __future__ import annotations

import base64
import json
import re

from guard.audit.events import decision_event, session_event
from guard.audit.report import Verification, build_report, text, verification_from
from guard.audit.report_render import SUMMARY_FIELDS, render_html, render_json, render_text, shown
from guard.model import Action, Decision, Op, Verdict
from guard.net.records import ConnectionRecord

WS = "/home/u/proj"
VALID = Verification("valid", "every one of 9 lines is sealed", 9, 9)


def stamp(records: list[dict], start: int = 0) -> list[dict]:
    """Give records the seq and ts the writer adds (one per 100 ms)."""
    return [{**r, "seq": i + 1, "ts": f"2026-01-01T00:00:{(start + i) // 10:02d}.{(start + i) % 10}00000Z"}
            for i, r in enumerate(records)]


def dec(op: Op, target: str, verdict: Verdict, rule: str | None = "r", audit_only: bool = False,
        **ctx: object) -> dict:
    return decision_event("s1", Action(op, target, **ctx), Decision(verdict, rule, "because", audit_only),
                          source="client")


def conn(host: str, port: int, verdict: str, up: int = 0, down: int = 0, rule: str | None = "net") -> dict:
    return {**ConnectionRecord("connect", "127.0.0.1:40000", verdict, rule, "why", host=host, port=port,
                               addresses=("127.0.0.1",), bytes_up=up, bytes_down=down).to_dict(),
            "session": "s1"}


def session_records() -> list[dict]:
    argv = ("/bin/sh", "-c", "work")
    return stamp([
        session_event("s1", "start", argv=list(argv), workspace=WS, policy="coding-agent"),
        dec(Op.RUN, "/bin/sh -c work", Verdict.ALLOW, None, argv=argv),
        dec(Op.EXEC, "/usr/bin/dash", Verdict.ALLOW, "system-read-exec", argv=argv),
        dec(Op.WRITE, f"{WS}/src/a.py", Verdict.ALLOW, "workspace"),
        dec(Op.WRITE, f"{WS}/src/a.py", Verdict.ALLOW, "workspace"),
        dec(Op.WRITE, f"{WS}/src/b.py", Verdict.ALLOW, "workspace"),
        dec(Op.WRITE, f"{WS}/README", Verdict.ALLOW, "workspace"),
        dec(Op.WRITE, "/tmp/scratch", Verdict.ALLOW, "tmp"),
        dec(Op.WRITE, "/home/u/.bashrc", Verdict.DENY, "shell-rc"),
        dec(Op.WRITE, "/home/u/notes/n.txt", Verdict.DENY, None, audit_only=True),
        dec(Op.RUN, "git status", Verdict.ALLOW, None, argv=("git", "status")),
        dec(Op.RUN, "git status", Verdict.ALLOW, None, argv=("git", "status")),
        dec(Op.RUN, "sudo id", Verdict.DENY, "escalation", argv=("sudo", "id")),
        dec(Op.CONNECT, "pypi.org:443", Verdict.ALLOW, "registries", addresses=("151.101.0.223",)),
        conn("pypi.org", 443, "allow", up=120, down=4000, rule="registries"),
        conn("pypi.org", 443, "allow", up=80, down=1000, rule="registries"),
        dec(Op.CONNECT, "evil.example:443", Verdict.DENY, None),
        conn("evil.example", 443, "deny", rule=None),
        conn("sneaky.example", 8080, "deny", rule="guard:special-address"),  # the proxy's own refusal
        dec(Op.WRITE, f"{WS}/.vscode/settings.json", Verdict.ASK, "workspace-settings"),
        {"type": "approval", "session": "s1", "action": Action(Op.WRITE, f"{WS}/.vscode/settings.json").to_dict(),
         "rule_id": "workspace-settings", "reason": "approved by alice", "approval": "a1", "verdict": "allow",
         "by": "alice", "uid": 1000, "waited_s": 4.25},
        session_event("s1", "end", status="closed", exit_status=3, duration_s=2.0),
    ])


def test_groups_and_counts() -> None:
    report = build_report(session_records(), VALID)
    s = report.summary
    assert (s.denied, s.audit_only_denied, s.asked) == (5, 1, 1)
    assert {d.target for d in report.denials} == {"/home/u/.bashrc", "/home/u/notes/n.txt", "sudo id",
                                                  "evil.example:443", "sneaky.example:8080"}
    assert next(d for d in report.denials if d.target == "/home/u/notes/n.txt").audit_only
    # refused by both a decision and the proxy's record: one denial, not two
    assert sum(d.target == "evil.example:443" for d in report.denials) == 1
    groups = {g.directory: g for g in report.files}
    assert {e.path: e.count for e in groups[f"{WS}/src"].files} == {f"{WS}/src/a.py": 2, f"{WS}/src/b.py": 1}
    assert groups["/tmp"].inside_workspace is False and groups[WS].inside_workspace is True
    assert report.files[0].directory == "/tmp"  # outside the workspace comes first
    assert s.files_written == 5 and s.directories == 4  # the approved ask wrote .vscode/settings.json
    assert [(o.op, o.path, o.verdict) for o in report.outside] == [
        ("write", "/home/u/.bashrc", "deny"), ("write", "/home/u/notes/n.txt", "deny"),
        ("write", "/tmp/scratch", "allow")]
    commands = {c.argv: c for c in report.commands}
    assert commands[("git", "status")].count == 2 and commands[("sudo", "id")].denied == 1
    assert commands[("/bin/sh", "-c", "work")].exit_status == 3
    assert commands[("git", "status")].exit_status is None
    net = {(d.host, d.port): d for d in report.network}
    assert (net["pypi.org", 443].attempts, net["pypi.org", 443].bytes_up, net["pypi.org", 443].bytes_down) == \
        (2, 200, 5000)
    assert net["evil.example", 443].refused == 1 and net["sneaky.example", 8080].refused == 1
    assert (s.connections, s.refused_connections, s.bytes_up, s.bytes_down) == (4, 2, 200, 5000)
    (ask,) = report.asks
    assert (ask.answer, ask.by, ask.waited_s, ask.rule) == ("allow", "alice", 4.25, "workspace-settings")
    assert report.sessions[0].exit_status == 3 and report.sessions[0].workspace == WS
    assert [e.offset_s for e in report.timeline] == sorted(e.offset_s for e in report.timeline)
    assert report.timeline[0].kind == "session" and report.timeline[-1].text.endswith("status 3")
    assert any("Landlock" in n for n in report.notes)


def test_unanswered_ask_and_waited_in_milliseconds() -> None:
    ask = dec(Op.RUN, "git push", Verdict.ASK, "publish", argv=("git", "push"))
    report = build_report(stamp([ask]), VALID)
    assert report.asks[0].answer == "unanswered"
    answered = {"type": "approval", "session": "s1", "action": Action(Op.RUN, "git push").to_dict(),
                "rule_id": "publish", "verdict": "deny", "by": "timeout", "waited_ms": 60000}
    report = build_report(stamp([ask, answered]), VALID)
    assert (report.asks[0].answer, report.asks[0].waited_s) == ("deny", 60.0)
    assert report.summary.denied == 1 and report.denials[0].reason.startswith("asked; denied by timeout")


def test_tool_calls_from_hooks_are_listed() -> None:
    """guard hook's intent records: one tool call per `pre` record; the post-tool record is not another."""
    pre = {"type": "intent", "session": "s1", "agent": "claude", "event": "PreToolUse", "phase": "pre",
           "tool": "Read", "summary": "/home/e/.ssh/id_ed25519", "verdict": "deny", "actions": []}
    post = {**pre, "event": "PostToolUse", "phase": "post", "verdict": "allow"}
    report = build_report(stamp([pre, post]), VALID)
    assert [(t.tool, t.detail, t.verdict) for t in report.tool_calls] == [
        ("Read", "/home/e/.ssh/id_ed25519", "deny")]
    assert report.summary.tool_calls == 1


HOSTILE = "x\x1b[2J\x1b]0;pwned\x07\r\u202egnp.exe\x9b31m\udcff<script>alert(1)</script>"


def test_shown_escapes_every_non_printing_character() -> None:
    out = shown(HOSTILE)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", out)
    assert out.startswith("x\\x1b[2J\\x1b]0;pwned\\x07\\r\\u202egnp.exe\\u009b31m\\xff")
    assert shown("plain ünïcode/path") == "plain ünïcode/path"


def test_text_accessor_takes_encoded_bytes() -> None:
    raw = b"bad\xff\x1bname"
    assert text({"b64": base64.b64encode(raw).decode()}) == raw.decode("utf-8", "surrogateescape")
    assert text({"hex": raw.hex()}) == raw.decode("utf-8", "surrogateescape")
    assert text("plain") == "plain" and text(None) == "" and text(7) == "7"
    rec = dec(Op.WRITE, "placeholder", Verdict.DENY, "r")
    rec["action"]["target_b64"] = base64.b64encode(b"/w/\xff\x1b[31m").decode()
    report = build_report(stamp([rec]), VALID)
    assert report.denials[0].target == "/w/\udcff\x1b[31m"
    assert "/w/\\xff\\x1b[31m" in render_text(report)


def hostile_report() -> tuple[list[dict], str]:
    records = stamp([
        session_event("s1", "start", argv=["sh", HOSTILE], workspace=WS, policy=HOSTILE),
        dec(Op.WRITE, f"{WS}/{HOSTILE}", Verdict.ALLOW, "workspace"),
        dec(Op.WRITE, f"/home/u/{HOSTILE}", Verdict.DENY, HOSTILE),
        dec(Op.RUN, HOSTILE, Verdict.ALLOW, None, argv=("sh", HOSTILE)),
        conn(HOSTILE, 443, "deny"),
    ])
    return records, HOSTILE


def test_no_rendering_lets_a_control_character_through() -> None:
    records, _ = hostile_report()
    report = build_report(records, VALID)
    out = render_text(report)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e\udcff]", out)  # newlines are the layout's own
    page = render_html(report)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e\udcff]", page)
    assert "<script>" not in page and "&lt;script&gt;" in page
    data = json.loads(render_json(report))
    assert data["summary"]["denied"] == 2  # JSON escapes control characters itself; the numbers agree


def test_three_renderings_agree_on_the_numbers() -> None:
    report = build_report(session_records(), VALID)
    out = render_text(report)
    data = json.loads(render_json(report))
    page = render_html(report)
    for key, label in SUMMARY_FIELDS:
        value = data["summary"][key]
        assert f"  {label}: {value}\n" in out
        assert f'<b id="n-{key}">{value}</b>' in page
    assert data["verification"]["verified"] is True
    assert "trail: VERIFIED" in out and 'data-status="valid"' in page


def test_page_fetches_nothing() -> None:
    page = render_html(build_report(session_records(), VALID))
    assert "default-src 'none'" in page
    assert not re.search(r"<(script|img|link|iframe|object|embed)\b", page)
    assert "http://" not in page and "https://" not in page and "url(" not in page


def test_verification_states() -> None:
    assert verification_from(None, reason="no key").status == "not verified"
    tampered = verification_from({"status": "tampered", "first_break": {"segment": "seg-00000000.jsonl",
                                                                       "line": 4, "message": "hash mismatch"}})
    assert tampered.status == "tampered" and "line 4" in tampered.detail and "hash mismatch" in tampered.detail
    report = build_report(session_records(), tampered)
    assert "trail: TAMPERED" in render_text(report) and 'class="banner bad"' in render_html(report)
    unsealed = verification_from({"status": "unsealed", "unsealed": 3})
    assert "3 line(s)" in unsealed.detail and not unsealed.verified


def test_published_ports_are_inbound_not_destinations() -> None:
    published = {**ConnectionRecord("publish", "127.0.0.1:50000", "allow", "dev-server", "ok", host="127.0.0.1",
                                    port=3000, bytes_up=10, bytes_down=900).to_dict(), "session": "s1"}
    report = build_report(stamp([published, conn("pypi.org", 443, "allow", rule="registries")]), VALID)
    assert [(d.host, d.port, d.direction) for d in report.network] == [
        ("pypi.org", 443, "outbound"), ("127.0.0.1", 3000, "inbound")]
    assert "inbound to 127.0.0.1:3000 (published)" in render_text(report)
