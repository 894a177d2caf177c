"""OCSF mapping: class per operation, Security Control verdicts, and records read back in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.audit.events import decision_event, session_event
from guard.audit.export import iter_records, to_ocsf
from guard.model import Action, Decision, Op, Verdict

from .conftest import WriteLog


def rec(action: Action, decision: Decision) -> dict:
    return {**decision_event("s", action, decision), "seq": 7, "ts": "2026-01-01T00:00:01.500000Z"}


@pytest.mark.parametrize(("op", "target", "class_uid", "activity"), [
    (Op.READ, "/etc/passwd", 1001, 2), (Op.WRITE, "/w/x", 1001, 3), (Op.EXEC, "/usr/bin/git", 1007, 1),
    (Op.RUN, "git push", 1007, 1), (Op.CONNECT, "example.com:443", 4001, 1), (Op.LISTEN, "127.0.0.1:8000", 4001, 99),
])
def test_class_and_activity_per_operation(op: Op, target: str, class_uid: int, activity: int) -> None:
    event = to_ocsf(rec(Action(op, target, pid=5, exe="/bin/x", argv=("x",)), Decision(Verdict.ALLOW, "r", "ok")))
    assert event is not None
    assert event["class_uid"] == class_uid and event["activity_id"] == activity
    assert event["type_uid"] == class_uid * 100 + activity
    assert event["category_uid"] == class_uid // 1000
    assert event["time"] == 1_767_225_601_500
    assert "security_control" in event["metadata"]["profiles"]


@pytest.mark.parametrize(("verdict", "audit_only", "action_id", "disposition_id"), [
    (Verdict.ALLOW, False, 1, 1), (Verdict.DENY, False, 2, 2), (Verdict.DENY, True, 1, 17),
    (Verdict.ASK, False, 2, 2),
])
def test_security_control_verdicts(verdict: Verdict, audit_only: bool, action_id: int,
                                   disposition_id: int) -> None:
    event = to_ocsf(rec(Action(Op.READ, "/x"), Decision(verdict, None, "why", audit_only=audit_only)))
    assert event is not None
    assert (event["action_id"], event["disposition_id"]) == (action_id, disposition_id)
    assert event["policy"]["uid"] == "default"


def test_endpoint_and_process_details() -> None:
    net = to_ocsf(rec(Action(Op.CONNECT, "[2001:db8::1]:443", addresses=("2001:db8::1",)),
                      Decision(Verdict.DENY, "net", "no")))
    assert net is not None and net["dst_endpoint"] == {"hostname": "2001:db8::1", "port": 443, "ip": "2001:db8::1"}
    run = to_ocsf(rec(Action(Op.RUN, "rm -rf /", pid=9, argv=("rm", "-rf", "/")), Decision(Verdict.DENY, "x", "no")))
    assert run is not None and run["process"]["cmd_line"] == "rm -rf /" and run["actor"]["process"]["pid"] == 9


def test_session_records_have_no_ocsf_class() -> None:
    assert to_ocsf({**session_event("s", "start"), "seq": 1, "ts": "2026-01-01T00:00:00.000000Z"}) is None


def test_iter_records_skips_control_lines(guard_home: Path, root, write_log: WriteLog) -> None:
    write_log(12)
    recs = [r for _d, r in iter_records(guard_home / "log")]
    assert len(recs) == 12
    assert all(r["type"] in ("decision", "session") for r in recs)
    assert [r["seq"] for r in recs] == sorted(r["seq"] for r in recs)
