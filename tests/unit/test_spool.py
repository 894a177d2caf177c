"""guard.spool: numbered records, one write(2) each, a lock that tells a live session from a dead one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from guard.spool import SpoolError, SpoolWriter, list_spools, read_spool, spool_path, writer_alive


def test_records_are_numbered_lines_in_a_private_file(guard_home: Path) -> None:
    spool = SpoolWriter.create(guard_home, "abc123")
    assert [spool.append({"type": "decision", "i": i}) for i in range(3)] == [1, 2, 3]
    path = spool_path(guard_home, "abc123")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = path.read_bytes().split(b"\n")
    assert raw[-1] == b"" and [orjson.loads(line)["n"] for line in raw[:-1]] == [1, 2, 3]
    read = read_spool(path)
    assert [(x.n, x.record) for x in read.lines] == [(i + 1, {"type": "decision", "i": i}) for i in range(3)]
    assert read.offset == path.stat().st_size and read.partial == 0
    assert list(list_spools(guard_home)) == [("abc123", path)]
    spool.close()


def test_the_lock_tells_a_live_writer_from_a_dead_one(guard_home: Path) -> None:
    spool = SpoolWriter.create(guard_home, "abc123")
    path = spool.path
    assert writer_alive(path)
    spool.close()
    assert not writer_alive(path)
    # a writer in another process that is SIGKILLed releases the lock with its death
    code = ("import sys,time; from pathlib import Path; from guard.spool import SpoolWriter;"
            "s = SpoolWriter.create(Path(sys.argv[1]), 'def456'); s.append({'type': 'x'}); print('ok', flush=True);"
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(guard_home)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
        assert writer_alive(spool_path(guard_home, "def456"))
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert not writer_alive(spool_path(guard_home, "def456"))
    assert [x.n for x in read_spool(spool_path(guard_home, "def456")).lines] == [1]


def test_a_partial_last_line_is_left_for_the_next_read(guard_home: Path) -> None:
    spool = SpoolWriter.create(guard_home, "abc123")
    spool.append({"type": "a"})
    with open(spool.path, "ab") as fh:  # a write still in progress (or torn by a death)
        fh.write(b'{"type":"b","n":2')
    read = read_spool(spool.path)
    assert [x.n for x in read.lines] == [1] and read.partial == len(b'{"type":"b","n":2')
    with open(spool.path, "ab") as fh:
        fh.write(b"}\n")
    again = read_spool(spool.path, read.offset)
    assert [(x.n, x.record) for x in again.lines] == [(2, {"type": "b"})] and again.partial == 0
    spool.close()


def test_a_damaged_line_stops_the_read_and_is_reported_with_its_offset(guard_home: Path) -> None:
    spool = SpoolWriter.create(guard_home, "abc123")
    spool.append({"type": "a"})
    end = spool.path.stat().st_size
    with open(spool.path, "ab") as fh:
        fh.write(b"garbage\n")
    spool.append({"type": "b"})
    read = read_spool(spool.path)
    assert [x.n for x in read.lines] == [1] and read.offset == end
    assert read.damaged is not None and f"byte {end}" in read.damaged
    spool.close()


def test_a_record_that_cannot_be_encoded_is_refused_and_the_spool_goes_on(guard_home: Path) -> None:
    spool = SpoolWriter.create(guard_home, "abc123")
    with pytest.raises(SpoolError, match="cannot be encoded"):
        spool.append({"type": "decision", "target": object()})
    assert spool.append({"type": "decision"}) == 1
    spool.close()


def test_a_full_disk_breaks_the_spool_for_good(tmp_path: Path) -> None:
    """ENOSPC from the kernel (/dev/full): the record is refused and so is every later one."""
    fd = os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
    spool = SpoolWriter(fd, tmp_path / "full.jsonl")
    with pytest.raises(SpoolError, match="No space left"):
        spool.append({"type": "decision"})
    with pytest.raises(SpoolError, match="No space left"):
        spool.append({"type": "decision"})
    assert spool.last == 0
    spool.close()


def test_session_ids_that_could_escape_the_directory_are_refused(guard_home: Path) -> None:
    for bad in ("../x", "ABC", "", "a/b"):
        with pytest.raises(SpoolError):
            spool_path(guard_home, bad)


def test_a_second_writer_for_the_same_session_is_refused(guard_home: Path) -> None:
    spool = SpoolWriter.create(guard_home, "abc123")
    spool.close()
    (spool.path.parent / ".abc123.new").write_bytes(b"")
    with pytest.raises(SpoolError, match="cannot create"):
        SpoolWriter.create(guard_home, "abc123")
