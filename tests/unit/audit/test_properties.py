"""Property tests: any flipped byte or cut is caught (or, for the unsealed tail, never called valid)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import AuditWriter, Keyring
from guard.audit.note import SignedNote, parse_note
from guard.audit.segments import list_segments
from guard.audit.verify import LogVerifier, Report

from .conftest import Clock, sample_event


class Log:
    def __init__(self, root: tuple[str, ...], segs: list[tuple[int, str, bytes]], witness: SignedNote) -> None:
        self.segs = segs
        self.root_public = bytes.fromhex(root[0])
        self.witness = witness
        self.total = sum(len(d) for _i, _n, d in segs)


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    home = tmp_path_factory.mktemp("prop") / "guard"
    clock = Clock()
    root = Keyring(home).init(now=clock())
    with AuditWriter(home, now=clock, checkpoint_every=4, epoch_checkpoints=3, segment_max_bytes=1200) as w:
        for i in range(40):
            w.append(sample_event(i))
    segs = [(s.index, s.name, s.path.read_bytes()) for s in list_segments(home / "log")]
    last = segs[-1][2].split(b"\n")[-2]
    import orjson
    return Log((root.public.hex(),), segs, parse_note(orjson.loads(last)["note"]))


def run(log: Log, segs: list[tuple[int, str, bytes]], *, witness: bool = False) -> Report:
    """Feed in-memory segments exactly as segments.replay feeds files."""
    v = LogVerifier(log.root_public, witness=log.witness if witness else None)
    for index, name, data in segs:
        v.begin_segment(index, name)
        lines = data.split(b"\n")
        rest = lines.pop()
        v.feed_lines(lines, 1)
        if rest:
            v.feed_torn(rest, len(lines) + 1)
    return v.finish()


def locate(log: Log, offset: int) -> tuple[int, int]:
    for k, (_i, _n, data) in enumerate(log.segs):
        if offset < len(data):
            return k, offset
        offset -= len(data)
    raise AssertionError("offset out of range")


def test_unmodified_log_is_valid(log: Log) -> None:
    assert run(log, log.segs, witness=True).exit_code == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_flipped_byte_is_never_valid(log: Log, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, log.total - 1), label="offset")
    mask = data.draw(st.integers(1, 255), label="xor")
    k, pos = locate(log, offset)
    segs = list(log.segs)
    index, name, seg = segs[k]
    mutated = bytearray(seg)
    mutated[pos] ^= mask
    segs[k] = (index, name, bytes(mutated))
    report = run(log, segs)
    last_line_start = len(log.segs[-1][2].rstrip(b"\n").rsplit(b"\n", 1)[0]) + 1
    in_last_line = k == len(segs) - 1 and pos >= last_line_start
    if in_last_line:
        assert report.exit_code != 0  # the final checkpoint line: tampering, or a torn tail (unsealed)
    else:
        assert report.exit_code == 1, (offset, mask, report.findings)
    assert run(log, segs, witness=True).exit_code == 1 or in_last_line


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_cut_is_caught_with_a_witness_and_never_overclaimed(log: Log, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, log.total - 1), label="cut")
    k, pos = locate(log, offset)
    segs = [*log.segs[:k], (log.segs[k][0], log.segs[k][1], log.segs[k][2][:pos])]
    with_witness = run(log, segs, witness=True)
    last_line = len(log.segs[-1][2].rstrip(b"\n").rsplit(b"\n", 1)[-1]) + 1
    if offset >= log.total - last_line:  # inside the final checkpoint line, which the witness saw only as leaf 50
        assert with_witness.exit_code == 3 and not with_witness.tampered
    else:
        assert with_witness.exit_code == 1 and with_witness.first_break is not None
        assert with_witness.first_break.kind == "truncated"
    alone = run(log, segs)
    assert alone.exit_code in (0, 1, 3)
    if alone.exit_code == 0:  # only a clean cut right after a seal line can look complete
        assert segs[-1][2] == b"" or segs[-1][2].endswith(b"\n")
        assert alone.unsealed == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000))
def test_writer_continues_after_any_cut_of_the_tail(tmp_path_factory: pytest.TempPathFactory, cut: int) -> None:
    """Cut the last segment anywhere (a crash mid-write): the writer recovers and the result verifies."""
    home = tmp_path_factory.mktemp("cut") / "guard"
    clock = Clock()
    root = Keyring(home).init(now=clock())
    with AuditWriter(home, now=clock, checkpoint_every=1000) as w:
        for i in range(12):
            w.append(sample_event(i))
        w.tick()
        seg = list_segments(home / "log")[-1].path
        before = seg.stat().st_size
        w._buf.clear()  # simulate a crash: whatever was buffered is lost with the process
        w._buf_bytes = 0
        w._pending = 0
        w._release()
    with open(seg, "r+b") as f:
        f.truncate(max(1, before - cut % before))
    with AuditWriter(home, now=clock, checkpoint_every=1000) as w2:
        w2.append(sample_event(99))
    from guard.audit.segments import verify_log
    report = verify_log(home / "log", root.public)
    assert report.exit_code == 0, report.findings
