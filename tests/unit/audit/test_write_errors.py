"""Write errors never corrupt the trail: a full disk (a real tmpfs) stops the writer closed, the trail on disk
verifies (valid or an unsealed tail, never tampered), and a writer opened once there is room continues it."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from support.tmpfs import fill, small_tmpfs

from guard.audit import AuditWriter, Keyring
from guard.audit.segments import list_segments, verify_log
from guard.audit.writer import AuditWriteError

from .conftest import Clock, sample_event


def _seqs(log: Path) -> list[int]:
    out = []
    for seg in list_segments(log):
        for line in seg.path.read_bytes().split(b"\n"):
            try:
                out.append(orjson.loads(line)["seq"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
    return out


def test_full_disk_fails_closed_and_the_trail_recovers(tmp_path: Path, clock: Clock) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        home = fs / "home"
        root = Keyring(home).init(now=clock())
        writer = AuditWriter(home, now=clock, checkpoint_every=50).open()
        filler = fill(fs, leave=96 << 10)
        acknowledged = -1
        error: AuditWriteError | None = None
        for i in range(100_000):
            try:
                seq = writer.append(sample_event(i))
                if i % 7 == 0:
                    writer.flush()
                    acknowledged = seq
            except AuditWriteError as exc:
                error = exc
                break
        assert error is not None, "the tmpfs never filled up"
        assert "ENOSPC" in error.message and "nothing more is accepted" in error.message
        assert acknowledged > 0
        with pytest.raises(AuditWriteError):  # fail closed: nothing more, even a tiny record
            writer.append(sample_event(1))
        with pytest.raises(AuditWriteError):
            writer.flush()
        with pytest.raises(AuditWriteError):
            writer.tick()
        writer.close()  # releases the log without raising again

        report = verify_log(home / "log", root.public)
        assert not report.tampered, report.findings
        assert report.exit_code in (0, 3)
        on_disk = _seqs(home / "log")
        assert on_disk == list(range(len(on_disk)))  # every written line in order, none counted twice
        assert acknowledged < len(on_disk)  # an acknowledged (flushed) record is in the file

        # still full: a new writer refuses loudly, the trail stays valid
        with pytest.raises(AuditWriteError), AuditWriter(home, now=clock) as w:
            for i in range(5000):
                w.append(sample_event(i))
        assert not verify_log(home / "log", root.public).tampered

        filler.unlink()
        with AuditWriter(home, now=clock) as w:
            first = w.append(sample_event(1))
        assert first >= len(on_disk)  # seqs are never reused
        report = verify_log(home / "log", root.public)
        assert report.exit_code == 0, report.findings
