"""guard.daemon.ingest with a real audit writer: spooled records reach the trail exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from guard.audit import AuditWriter, Keyring, verify_log
from guard.audit.segments import list_segments
from guard.daemon.ingest import SpoolIngest, highest_spooled
from guard.spool import SpoolWriter, spool_path

SESSION = "0a1b2c3d4e"


def decision(i: int, verdict: str = "allow") -> dict[str, object]:
    return {"type": "decision", "action": {"op": "write", "target": f"/w/f{i}"},
            "decision": {"verdict": verdict, "rule_id": "ws", "reason": "r"}}


@pytest.fixture
def writer(guard_home: Path) -> Iterator[AuditWriter]:
    Keyring(guard_home).init(now=1_767_225_600.0)
    with AuditWriter(guard_home, sync=False) as w:
        yield w


def trail(home: Path) -> list[dict[str, object]]:
    out = []
    for seg in list_segments(home / "log"):
        out += [orjson.loads(x) for x in seg.path.read_bytes().split(b"\n")[:-1]]
    return [r for r in out if r.get("session") == SESSION]


def test_ingest_appends_new_lines_once_and_acknowledges_them(guard_home: Path, writer: AuditWriter) -> None:
    ingest = SpoolIngest(guard_home, writer)
    ingest.opened(SESSION, writer.append({"type": "session", "session": SESSION, "event": "start"}))
    spool = SpoolWriter.create(guard_home, SESSION)
    for i in range(5):
        spool.append(decision(i, "deny" if i == 3 else "allow"))
    result = ingest.ingest(SESSION)
    assert result.acked == 5 and [v.value for v in result.verdicts] == ["allow"] * 3 + ["deny", "allow"]
    assert ingest.ingest(SESSION).acked == 5  # nothing new: nothing appended
    spool.append(decision(5))
    assert ingest.ingest(SESSION).acked == 6
    spooled = [r["spool"] for r in trail(guard_home) if r["type"] == "decision"]
    assert spooled == [1, 2, 3, 4, 5, 6]
    spool.close()


def test_a_restarted_daemon_finds_what_it_appended_past_its_ack(guard_home: Path, writer: AuditWriter) -> None:
    """The daemon can die between appending to the trail and saving its ack: nothing is recorded twice."""
    first = SpoolIngest(guard_home, writer)
    first.opened(SESSION, writer.append({"type": "session", "session": SESSION, "event": "start"}))
    spool = SpoolWriter.create(guard_home, SESSION)
    for i in range(3):
        spool.append(decision(i))
    first.ingest(SESSION)
    ack = spool_path(guard_home, SESSION).with_name(f"{SESSION}.jsonl.ack")
    stale = ack.read_bytes()
    for i in range(3, 7):
        spool.append(decision(i))
    first.ingest(SESSION)
    ack.write_bytes(stale)  # as if the daemon died before saving the second ack
    spool.append(decision(7))
    second = SpoolIngest(guard_home, writer)
    assert second.ingest(SESSION).acked == 8
    assert [r["spool"] for r in trail(guard_home) if r["type"] == "decision"] == list(range(1, 9))
    ack.unlink()  # no ack at all: the trail is searched from its start
    third = SpoolIngest(guard_home, writer)
    assert third.ingest(SESSION).acked == 8
    assert highest_spooled(guard_home / "log", SESSION, after_seq=-1) is not None
    assert len([r for r in trail(guard_home) if r["type"] == "decision"]) == 8
    spool.close()


@pytest.mark.parametrize("ended", [True, False])
def test_an_abandoned_spool_is_ingested_ended_and_removed(guard_home: Path, writer: AuditWriter,
                                                          ended: bool) -> None:
    ingest = SpoolIngest(guard_home, writer)
    ingest.opened(SESSION, writer.append({"type": "session", "session": SESSION, "event": "start"}))
    spool = SpoolWriter.create(guard_home, SESSION)
    spool.append(decision(0))
    spool.append({"type": "session", "event": "paused", "reason": "no ack for 10 s"})
    if ended:
        spool.append({"type": "end", "status": "closed", "exit_status": 3, "summary": {"allowed": 1}})
    path = spool.path
    spool.close()
    with open(path, "ab") as fh:
        fh.write(b'{"type":"decision"')  # a write cut short by a death: never allowed
    assert SpoolIngest(guard_home, writer).abandoned(set()) == [SESSION]
    assert ingest.abandoned({SESSION}) == []  # open in this daemon: not abandoned
    finisher = SpoolIngest(guard_home, writer)  # a daemon that started after guard run died
    fields = finisher.finish_abandoned(SESSION)
    end = trail(guard_home)[-1]
    assert end["event"] == "end" and end["torn_bytes"] == len(b'{"type":"decision"')
    if ended:
        assert (end["status"], end["exit_status"], fields["summary"]) == ("closed", 3, {"allowed": 1})
    else:
        assert end["status"] == "lost" and "guard run died" in str(end["reason"])
    assert [r["event"] for r in trail(guard_home) if r["type"] == "session"] == ["start", "paused", "end"]
    assert not path.exists() and not path.with_name(path.name + ".ack").exists()
    retired = path.with_name(path.name + ".done")  # deleted once a synced checkpoint covers the end
    assert retired.exists() and not finisher.abandoned(set())
    finisher.reap()
    assert not retired.exists()
    writer.close()
    report = verify_log(guard_home / "log", Keyring(guard_home).root().public)
    assert report.exit_code == 0, report.findings


def test_a_record_the_daemon_refuses_is_recorded_as_refused_not_dropped(guard_home: Path,
                                                                      writer: AuditWriter) -> None:
    ingest = SpoolIngest(guard_home, writer)
    ingest.opened(SESSION, writer.append({"type": "session", "session": SESSION, "event": "start"}))
    spool = SpoolWriter.create(guard_home, SESSION)
    spool.append({"type": "approval", "verdict": "allow"})
    spool.append(decision(1))
    assert ingest.ingest(SESSION).acked == 2
    kinds = [(r["type"], r.get("event"), r.get("spool")) for r in trail(guard_home)][1:]
    assert kinds == [("session", "spool_rejected", 1), ("decision", None, 2)]
    spool.close()


def test_a_session_that_never_spooled_leaves_nothing_behind(guard_home: Path, writer: AuditWriter) -> None:
    ingest = SpoolIngest(guard_home, writer)
    ingest.opened(SESSION, writer.append({"type": "session", "session": SESSION, "event": "start"}))
    ingest.finish(SESSION)
    assert list((guard_home / "spool").iterdir()) == []


def test_a_damaged_abandoned_spool_is_recorded_and_kept_as_evidence(guard_home: Path, writer: AuditWriter) -> None:
    ingest = SpoolIngest(guard_home, writer)
    ingest.opened(SESSION, writer.append({"type": "session", "session": SESSION, "event": "start"}))
    spool = SpoolWriter.create(guard_home, SESSION)
    spool.append(decision(0))
    path = spool.path
    spool.close()
    with open(path, "ab") as fh:
        fh.write(b"not json\n")
    finisher = SpoolIngest(guard_home, writer)  # a daemon that started after guard run died
    fields = finisher.finish_abandoned(SESSION)
    assert "not a JSON line" in fields["damaged"]
    events = [(r["type"], r.get("event")) for r in trail(guard_home)]
    assert events == [("session", "start"), ("decision", None), ("session", "spool_damaged"), ("session", "end")]
    assert not path.exists() and Path(fields["kept"]).read_bytes().endswith(b"not json\n")
    assert SpoolIngest(guard_home, writer).abandoned(set()) == []  # the sweep leaves the evidence alone
