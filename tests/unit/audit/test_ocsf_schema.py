"""Every OCSF event guard exports meets OCSF 1.1.0's required attributes for its class; the follower resumes.

The checker (tests/support/ocsf_schema.py) is transcribed from the schema files; it is shown to reject
events missing what the schema requires, so a pass means something.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from support.ocsf_schema import problems

from guard.audit import AuditWriter
from guard.audit.events import decision_event, session_event
from guard.audit.export import Cursor, Follower, read_cursor, to_ocsf, write_cursor
from guard.errors import UsageError
from guard.model import Action, Decision, Op, Verdict
from guard.net.records import ConnectionRecord

TS = "2026-01-01T00:00:01.500000Z"
DEVICE = {"hostname": "ws1"}


def rec(action: Action, verdict: Verdict = Verdict.ALLOW, audit_only: bool = False) -> dict:
    return {**decision_event("s1", action, Decision(verdict, "r", "why", audit_only)), "seq": 3, "ts": TS}


def connection(verdict: str, **kw: object) -> dict:
    base = ConnectionRecord("connect", "127.0.0.1:41000", verdict, None if verdict == "deny" else "registries",
                            "why", host="pypi.org", port=443, addresses=("151.101.0.223",),
                            address="151.101.0.223" if verdict == "allow" else None, bytes_up=10, bytes_down=20)
    return {**base.to_dict(), **kw, "session": "s1", "seq": 4, "ts": TS}


RECORDS = [
    rec(Action(Op.READ, "/etc/hosts", pid=5)),
    rec(Action(Op.WRITE, "/w/a.py", pid=5), Verdict.DENY),
    rec(Action(Op.WRITE, "/"), Verdict.DENY, audit_only=True),  # no pid, a name that is empty as a basename
    rec(Action(Op.EXEC, "/usr/bin/git", pid=7, exe="/usr/bin/git", argv=("git", "status"), cwd="/w")),
    rec(Action(Op.EXEC, "/usr/bin/git")),
    rec(Action(Op.RUN, "git status", pid=7, argv=("git", "status"))),
    rec(Action(Op.RUN, "sudo id"), Verdict.DENY),
    rec(Action(Op.CONNECT, "pypi.org:443", addresses=("151.101.0.223",))),
    rec(Action(Op.CONNECT, "[2001:db8::1]:443"), Verdict.DENY),
    rec(Action(Op.LISTEN, "127.0.0.1:8000", pid=9)),
    connection("allow"),
    connection("deny"),
    connection("deny", client="garbage"),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"{r['type']}-{(r.get('action') or {}).get('op', '')}")
def test_every_exported_event_meets_the_schema(record: dict) -> None:
    event = to_ocsf(record, device=DEVICE)
    assert event is not None
    assert problems(event) == []


def test_connections_carry_actor_source_and_bytes() -> None:
    event = to_ocsf(connection("allow"), device=DEVICE)
    assert event is not None
    assert event["actor"]["session"]["uid"] == "s1"
    assert event["src_endpoint"]["ip"] == "127.0.0.1" and event["src_endpoint"]["port"] == 41000
    assert event["dst_endpoint"] == {"hostname": "pypi.org", "port": 443, "ip": "151.101.0.223"}
    assert event["traffic"] == {"bytes_out": 10, "bytes_in": 20}
    refused = to_ocsf(connection("deny"), device=DEVICE)
    assert refused is not None and (refused["activity_id"], refused["action_id"]) == (5, 2)


@pytest.mark.parametrize(("path", "expected"), [
    (("actor",), "event.actor: required"), (("device",), "event.device: required"),
    (("src_endpoint",), "event.src_endpoint: required"), (("metadata", "product", "vendor_name"),
                                                            "metadata.product.vendor_name: required"),
    (("process", "pid"), "process: needs at least one of pid, uid"),
])
def test_the_checker_rejects_what_the_schema_requires(path: tuple[str, ...], expected: str) -> None:
    sample = {"event.actor": RECORDS[0], "event.device": RECORDS[0], "event.src_endpoint": RECORDS[10],
              "metadata.product.vendor_name": RECORDS[0], "process: needs": RECORDS[5]}
    record = next(r for k, r in sample.items() if expected.startswith(k))
    event = copy.deepcopy(to_ocsf(record, device=DEVICE))
    assert event is not None and problems(event) == []
    target = event
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    assert expected in problems(event)


def test_session_records_are_not_exported() -> None:
    assert to_ocsf({**session_event("s1", "start"), "seq": 1, "ts": TS}) is None


# -- the follower -------------------------------------------------------------------------------------------
def append(home: Path, first: int, n: int) -> None:
    with AuditWriter(home, checkpoint_every=5) as w:
        for i in range(first, first + n):
            w.append(decision_event("s1", Action(Op.WRITE, f"/w/f{i}", pid=1), Decision(Verdict.ALLOW, "r", "ok")))


def test_follower_resumes_from_its_cursor_without_repeats_or_gaps(guard_home: Path, root: object,
                                                                   tmp_path: Path) -> None:
    append(guard_home, 0, 12)
    cursor_file = tmp_path / "cursor"
    first = Follower(guard_home / "log", read_cursor(cursor_file))
    got = [r["action"]["target"] for _d, r in first.poll()]
    assert got == [f"/w/f{i}" for i in range(12)]
    write_cursor(cursor_file, first.cursor)
    assert first.poll() == []
    append(guard_home, 12, 7)  # a restarted writer: new records after checkpoints
    second = Follower(guard_home / "log", read_cursor(cursor_file))
    more = [r["action"]["target"] for _d, r in second.poll()]
    assert more == [f"/w/f{i}" for i in range(12, 19)]
    # a stale offset hint (the cursor's seq is what counts) repeats nothing
    stale = Follower(guard_home / "log", Cursor(first.cursor.seq, first.cursor.segment, 0))
    assert [r["action"]["target"] for _d, r in stale.poll()] == more


def test_follower_leaves_a_line_being_written(guard_home: Path, root: object) -> None:
    append(guard_home, 0, 3)
    follower = Follower(guard_home / "log", Cursor())
    assert len(follower.poll()) == 3
    seg = sorted((guard_home / "log").glob("seg-*.jsonl"))[-1]
    with open(seg, "ab") as f:
        f.write(b'{"type":"decision","seq":999')  # half a line: not a record yet
    assert follower.poll() == []


def test_a_damaged_cursor_is_an_error_not_a_silent_restart(tmp_path: Path) -> None:
    bad = tmp_path / "cursor"
    bad.write_text('{"seq": -4}')
    with pytest.raises(UsageError, match="not an export cursor"):
        read_cursor(bad)
    bad.write_text("{")
    with pytest.raises(UsageError, match="cannot read the export cursor"):
        read_cursor(bad)
    assert read_cursor(tmp_path / "absent") == Cursor()


def test_a_published_port_connection_is_inbound_from_the_host_client() -> None:
    record = {**ConnectionRecord("publish", "127.0.0.1:50000", "allow", "dev", "ok", host="127.0.0.1",
                                 port=3000, bytes_up=5, bytes_down=7).to_dict(), "session": "s1", "seq": 9, "ts": TS}
    event = to_ocsf(record, device=DEVICE)
    assert event is not None and problems(event) == []
    assert event["connection_info"]["direction_id"] == 1
    assert event["src_endpoint"] == {"name": "host client", "ip": "127.0.0.1", "port": 50000}
    assert event["dst_endpoint"]["port"] == 3000
