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


CHILD = """
import resource, signal, sys
from pathlib import Path
from guard.audit import AuditWriter
from guard.audit.writer import AuditWriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then answers EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
w = AuditWriter(Path(sys.argv[1]), checkpoint_every=40).open()
acked = -1
try:
    for i in range(100_000):
        seq = w.append({"type": "session", "session": "s", "event": "note", "n": i, "pad": "x" * 200})
        if i % 5 == 0:
            w.flush()
            acked = seq
except AuditWriteError as exc:
    print(acked, exc.message)
    w.close()
    sys.exit(0)
sys.exit("the file size limit never hit")
"""


def test_file_size_limit_fails_closed_for_any_user(guard_home: Path, clock: Clock) -> None:
    """The same failure without root: RLIMIT_FSIZE makes the kernel answer EFBIG mid-write."""
    import subprocess
    import sys

    root = Keyring(guard_home).init(now=clock())
    done = subprocess.run([sys.executable, "-c", CHILD, str(guard_home), str(150_000)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    acked_text, message = done.stdout.split(" ", 1)
    assert "EFBIG" in message and "nothing more is accepted" in message
    report = verify_log(guard_home / "log", root.public)
    assert not report.tampered and report.exit_code in (0, 3), report.findings
    on_disk = _seqs(guard_home / "log")
    assert on_disk == list(range(len(on_disk))) and int(acked_text) < len(on_disk)
    with AuditWriter(guard_home, now=clock, segment_max_bytes=1 << 20) as w:
        assert w.append(sample_event(1)) >= len(on_disk)
    assert verify_log(guard_home / "log", root.public).exit_code == 0
