"""The parallel verifier (worker processes do the state-free per-line checks) must report exactly what the
serial one does, on the golden log, on every tampered twin, and on logs damaged in ways the fast path
cannot see alone (seqs off by one, a torn tail, a recovery)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from guard.audit import AuditWriter, Keyring
from guard.audit.keys import read_pinned_key
from guard.audit.segments import list_segments, replay, replay_parallel
from guard.audit.verify import LogVerifier

from .conftest import Clock, sample_event

REPO = Path(__file__).resolve().parents[3]
VECTORS = REPO / "tests" / "vectors" / "audit"
LOGS = sorted(p.parent for p in VECTORS.glob("*/log/seg-*.jsonl"))


def both(log: Path, root: bytes, chunk: int = 4096) -> tuple[dict[str, object], dict[str, object]]:
    serial = replay(log, LogVerifier(root)).finish().to_dict()
    parallel = replay_parallel(log, LogVerifier(root), 2, chunk=chunk).finish().to_dict()
    return serial, parallel


@pytest.mark.parametrize("log", sorted(set(LOGS)), ids=lambda p: p.parent.name)
def test_vectors_report_the_same_in_parallel(log: Path) -> None:
    root = read_pinned_key(VECTORS / "root.pub").public
    serial, parallel = both(log, root)
    assert parallel == serial


def test_damage_only_the_verifier_state_can_see(guard_home: Path, clock: Clock, tmp_path: Path) -> None:
    root = Keyring(guard_home).init(now=clock())
    with AuditWriter(guard_home, now=clock, checkpoint_every=50, segment_max_lines=400) as w:
        for i in range(1500):
            w.append(sample_event(i))
    log = guard_home / "log"
    serial, parallel = both(log, root.public, chunk=2048)
    assert parallel == serial and serial["exit_code"] == 0
    segs = list_segments(log)
    # a record whose seq is off by one (canonical, well formed: only seq == index catches it)
    lines = segs[1].path.read_bytes().split(b"\n")
    obj = orjson.loads(lines[70])
    obj["seq"] += 1
    lines[70] = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    segs[1].path.write_bytes(b"\n".join(lines))
    # a torn tail on the last segment
    with open(segs[-1].path, "ab") as f:
        f.write(b'{"action":{"op":"wri')
    serial, parallel = both(log, root.public, chunk=2048)
    assert serial["exit_code"] == 1 and parallel == serial
    # a recovery after the torn tail, then more records
    with AuditWriter(guard_home, now=clock, checkpoint_every=50) as w:
        w.replayed.clear()
    serial, parallel = both(log, root.public, chunk=1024)
    assert parallel == serial


def test_a_threaded_caller_gets_spawned_workers_and_the_same_report(tmp_path: Path) -> None:
    """Forking a process that has other threads can copy a lock one of them holds: with a second thread
    alive the workers are spawned instead, and the report is still the serial one."""
    import threading

    from guard.audit.segments import _pool_context

    log = LOGS[0]
    root = read_pinned_key(VECTORS / "root.pub").public
    out: dict[str, object] = {}

    def go() -> None:
        out["method"] = _pool_context().get_start_method()
        out["reports"] = both(log, root)

    worker = threading.Thread(target=go)
    worker.start()
    worker.join(timeout=120)
    assert out["method"] == "spawn"
    serial, parallel = out["reports"]  # type: ignore[misc]
    assert parallel == serial
