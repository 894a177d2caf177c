"""The writer: sealing cadence, epochs and key erasure, torn-tail recovery, locking, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import AuditWriter, Keyring, verify_log
from guard.audit.keys import EpochKey
from guard.audit.note import VerifierKey
from guard.audit.segments import list_segments
from guard.errors import AuditError, KeyringError

from .conftest import Clock, WriteLog, sample_event


def lines(home: Path) -> list[dict[str, object]]:
    out = []
    for seg in list_segments(home / "log"):
        out += [orjson.loads(x) for x in seg.path.read_bytes().split(b"\n")[:-1]]  # complete lines only
    return out


def test_round_trip_is_valid_and_sealed(guard_home: Path, root: VerifierKey, write_log: WriteLog) -> None:
    write_log(23)
    report = verify_log(guard_home / "log", root.public)
    assert report.exit_code == 0, report.findings
    assert report.records == 23 and report.unsealed == 0
    recs = [x for x in lines(guard_home) if x["type"] not in ("checkpoint", "epoch")]
    assert [x["seq"] for x in lines(guard_home)] == list(range(report.leaves))
    assert all(isinstance(x["ts"], str) and str(x["ts"]).endswith("Z") for x in recs)


def test_append_returns_seq_and_rejects_bad_events(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    with AuditWriter(guard_home, now=clock) as w:
        assert w.append(sample_event(1)) == 1  # seq 0 is the genesis certificate
        assert w.append(sample_event(2)) == 2
        with pytest.raises(AuditError, match=r"event\.type"):
            w.append({"type": "checkpoint", "session": "s"})
        with pytest.raises(AuditError, match=r"event\.type"):
            w.append({"session": "s"})
        with pytest.raises(AuditError, match="set by the writer"):
            w.append({**sample_event(3), "seq": 9})
        with pytest.raises(AuditError, match="expected a mapping"):
            w.append(["decision"])  # type: ignore[arg-type]
        with pytest.raises(AuditError, match="blob: a object cannot be recorded"):
            w.append({**sample_event(3), "blob": object()})
        assert w.append(sample_event(4)) == 3  # a refused event takes no seq
    with pytest.raises(AuditError, match="not open"):
        w.append(sample_event(5))
    assert verify_log(guard_home / "log", root.public).exit_code == 0


def test_checkpoint_every_n_records_and_fsync_point(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    with AuditWriter(guard_home, now=clock, checkpoint_every=5) as w:
        for i in range(4):
            w.append(sample_event(i))
        assert w.sealed_size == 0
        w.append(sample_event(4))
        assert w.sync() == 6  # genesis + 5 records sealed by the checkpoint at leaf 6
        assert lines(guard_home)[6]["type"] == "checkpoint"


def test_idle_records_are_sealed_by_tick(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    with AuditWriter(guard_home, now=clock, checkpoint_interval=0.5) as w:
        w.append(sample_event(1))
        w.append(sample_event(2))
        w.tick()  # not due yet: the lines reach the file but stay unsealed
        report = verify_log(guard_home / "log", root.public)
        assert report.exit_code == 3 and report.unsealed == 2 and not report.tampered
        clock.advance(0.6)
        w.tick()
        assert w.sync() == 3
        assert verify_log(guard_home / "log", root.public).exit_code == 0


def test_seal_seals_everything_now_without_waiting_for_the_interval(guard_home: Path, root: VerifierKey,
                                                                     clock: Clock) -> None:
    with AuditWriter(guard_home, now=clock, checkpoint_interval=60, checkpoint_every=1000) as w:
        for i in range(3):
            w.append(sample_event(i))
        w.tick()  # not due for a minute
        assert verify_log(guard_home / "log", root.public).exit_code == 3
        w.seal()
        assert w.sync() == 4  # genesis + 3 records
        assert verify_log(guard_home / "log", root.public).exit_code == 0
        w.seal()  # nothing pending: no empty checkpoint
        assert w.sync() == 4
    w2 = AuditWriter(guard_home, now=clock)
    with pytest.raises(AuditError, match="not open"):
        w2.seal()


def test_close_seals_the_tail(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    w = AuditWriter(guard_home, now=clock, checkpoint_every=1000).open()
    for i in range(7):
        w.append(sample_event(i))
    w.close()
    w.close()  # idempotent
    assert verify_log(guard_home / "log", root.public).exit_code == 0


def test_epochs_rotate_and_old_private_keys_are_erased(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    ring = Keyring(guard_home)
    seen: list[bytes] = [ring.epoch_key().private.private_bytes_raw()]
    with AuditWriter(guard_home, now=clock, checkpoint_every=2, epoch_checkpoints=2) as w:
        for i in range(20):
            w.append(sample_event(i))
            current = ring.epoch_key().private.private_bytes_raw()
            if current != seen[-1]:
                seen.append(current)
    assert len(seen) >= 4
    report = verify_log(guard_home / "log", root.public)
    assert report.exit_code == 0 and report.epochs == len(seen)
    on_disk = b"".join(p.read_bytes() for p in (guard_home / "keys").iterdir())
    import base64
    for old in seen[:-1]:
        assert base64.b64encode(old) not in on_disk and old not in on_disk
    assert sorted(os.listdir(guard_home / "keys")) == ["epoch.key", "genesis.note", "root.pub"]


def test_epoch_rotates_by_time(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    with AuditWriter(guard_home, now=clock, checkpoint_every=1, epoch_checkpoints=1000, epoch_seconds=10) as w:
        w.append(sample_event(1))
        clock.advance(11)
        w.append(sample_event(2))
    assert [x["epoch"] for x in lines(guard_home) if x["type"] == "epoch"] == [0, 1]


def test_segments_rotate_after_a_seal(guard_home: Path, root: VerifierKey, write_log: WriteLog) -> None:
    write_log(60, segment_max_bytes=1500)
    segs = list_segments(guard_home / "log")
    assert len(segs) >= 3
    for seg in segs[:-1]:
        last = orjson.loads(seg.path.read_bytes().split(b"\n")[-2])
        assert last["type"] in ("checkpoint", "epoch")
    assert verify_log(guard_home / "log", root.public).exit_code == 0


def test_segments_rotate_by_line_count(guard_home: Path, root: VerifierKey, write_log: WriteLog) -> None:
    write_log(20, segment_max_lines=8)
    write_log(20, start=20, segment_max_lines=8)  # the count carries over a restart
    segs = list_segments(guard_home / "log")
    counts = [len(s.path.read_bytes().split(b"\n")) - 1 for s in segs]
    assert len(segs) >= 5 and max(counts) <= 8 + 5  # rotation waits for the next seal (every 5 records)
    assert verify_log(guard_home / "log", root.public).exit_code == 0


def test_torn_tail_is_reported_then_acknowledged(guard_home: Path, root: VerifierKey,
                                                 write_log: WriteLog) -> None:
    write_log(12)
    last = list_segments(guard_home / "log")[-1].path
    size = last.stat().st_size
    complete = orjson.dumps({"decision": {"verdict": "deny"}, "action": {"op": "read", "target": "/x"},
                             "seq": verify_log(guard_home / "log", root.public).leaves, "session": "s1",
                             "ts": "2026-01-01T00:00:00.000000Z", "type": "decision"},
                            option=orjson.OPT_SORT_KEYS)
    with open(last, "ab") as f:
        f.write(complete + b"\n" + b'{"action":{"op":"wr')
    report = verify_log(guard_home / "log", root.public)
    assert report.exit_code == 3 and not report.tampered
    assert report.unsealed == 1 and report.torn_tail is not None and report.torn_tail.size == 19
    write_log(3, start=100)
    report = verify_log(guard_home / "log", root.public)
    assert report.exit_code == 0, report.findings
    recovery = [x for x in lines(guard_home) if x["type"] == "recovery"]
    assert recovery and recovery[0]["torn_bytes"] == 19 and recovery[0]["segment"] == last.name
    assert last.stat().st_size == size + len(complete) + 1 + 19  # nothing was rewritten


def test_second_writer_is_refused(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    with AuditWriter(guard_home, now=clock) as w:
        w.append(sample_event(1))
        with pytest.raises(AuditError, match="another audit writer"):
            AuditWriter(guard_home, now=clock).open()
    with AuditWriter(guard_home, now=clock) as w2:  # the lock is released on close
        w2.append(sample_event(2))


def test_tampered_log_is_not_extended(guard_home: Path, root: VerifierKey, write_log: WriteLog) -> None:
    """Without a saved checkpoint state the writer replays everything and refuses a broken trail."""
    write_log(12)
    (guard_home / "log" / ".frontier").unlink()
    seg = list_segments(guard_home / "log")[0].path
    data = bytearray(seg.read_bytes())
    data[data.index(b"/w/file") + 3] ^= 1
    seg.write_bytes(bytes(data))
    with pytest.raises(AuditError, match="fails verification"):
        write_log(1)


def test_tampered_checkpoint_named_by_the_resume_state_forces_a_full_replay(
        guard_home: Path, root: VerifierKey, write_log: WriteLog) -> None:
    write_log(12)
    state = orjson.loads((guard_home / "log" / ".frontier").read_bytes())
    seg = guard_home / "log" / f"seg-{state['segment']:08d}.jsonl"
    data = bytearray(seg.read_bytes())
    data[state["offset"] + state["length"] // 2] ^= 1  # inside the checkpoint line it names
    seg.write_bytes(bytes(data))
    with pytest.raises(AuditError, match="fails verification"):
        write_log(1)


def test_restart_resumes_from_the_last_checkpoint(guard_home: Path, root: VerifierKey, write_log: WriteLog,
                                                 clock: Clock) -> None:
    w = write_log(40, checkpoint_every=7)
    assert w.replayed["mode"] == "full"  # the first open: nothing saved yet
    w = write_log(5, start=40)
    assert w.replayed["mode"] == "resume" and w.replayed["lines"] <= 2  # the checkpoint line (+ daemon's)
    (guard_home / "log" / ".frontier").write_bytes(b"{not json")
    w = write_log(5, start=45)
    assert w.replayed["mode"] == "full" and w.replayed["lines"] > 40
    state = orjson.loads((guard_home / "log" / ".frontier").read_bytes())
    state["frontier"][0] = "00" * 32  # a frontier that does not match the checkpoint's signed root
    (guard_home / "log" / ".frontier").write_bytes(orjson.dumps(state))
    w = write_log(5, start=50)
    assert w.replayed["mode"] == "full" and "root" in w.replayed["why"]
    report = verify_log(guard_home / "log", root.public)
    assert report.exit_code == 0 and report.records == 55, report.findings


def test_resumed_writer_does_not_rescan_history_but_verify_still_catches_a_change(
        guard_home: Path, root: VerifierKey, write_log: WriteLog) -> None:
    """The price of a restart independent of the trail's size: a change to sealed history before the last
    checkpoint is found by `guard audit verify` (from the root key), not by the restarting writer."""
    write_log(12)
    seg = list_segments(guard_home / "log")[0].path
    data = bytearray(seg.read_bytes())
    data[data.index(b"/w/file") + 3] ^= 1
    seg.write_bytes(bytes(data))
    w = write_log(1, start=50)
    assert w.replayed["mode"] == "resume"
    assert verify_log(guard_home / "log", root.public).tampered


@pytest.mark.parametrize("target", ["epoch.key", "root.pub", "."])
def test_loose_key_modes_are_refused(guard_home: Path, root: VerifierKey, write_log: WriteLog,
                                     target: str) -> None:
    write_log(2)
    path = guard_home / "keys" / target
    os.chmod(path, 0o755 if target == "." else 0o644)
    with pytest.raises(KeyringError, match="lets others read"):
        write_log(2)


def test_symlinked_key_is_refused(guard_home: Path, root: VerifierKey, write_log: WriteLog, tmp_path: Path) -> None:
    key = guard_home / "keys" / "epoch.key"
    moved = tmp_path / "elsewhere.key"
    os.rename(key, moved)
    os.symlink(moved, key)
    with pytest.raises(KeyringError, match="not a regular file"):
        write_log(1)


def test_substituted_epoch_key_is_refused(guard_home: Path, root: VerifierKey, write_log: WriteLog) -> None:
    write_log(3)
    ring = Keyring(guard_home)
    current = ring.epoch_key()
    path = guard_home / "keys" / "epoch.key"
    path.unlink()
    ring.stage_next(EpochKey(current.epoch, Ed25519PrivateKey.generate(), current.origin))
    os.rename(guard_home / "keys" / "epoch.key.next", path)
    with pytest.raises(KeyringError, match="epoch key on disk"):
        write_log(1)


def test_deleted_log_with_advanced_key_is_refused(guard_home: Path, root: VerifierKey,
                                                  write_log: WriteLog) -> None:
    write_log(30)
    for seg in list_segments(guard_home / "log"):
        seg.path.unlink()
    with pytest.raises(KeyringError, match="log is empty"):
        write_log(1)


def test_crash_during_rotation_is_recovered(guard_home: Path, root: VerifierKey, clock: Clock,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the certificate is durable but before the key swap: the restart finishes the swap."""
    calls = []

    def crash(self: Keyring) -> None:
        calls.append(1)
        raise KeyboardInterrupt("simulated crash")

    w = AuditWriter(guard_home, now=clock, checkpoint_every=1, epoch_checkpoints=1).open()
    monkeypatch.setattr(Keyring, "commit_next", crash)
    with pytest.raises(KeyboardInterrupt):
        w.append(sample_event(1))
    w._release()  # the process is gone: its fds close
    monkeypatch.undo()
    assert (guard_home / "keys" / "epoch.key.next").exists()
    with AuditWriter(guard_home, now=clock, checkpoint_every=1, epoch_checkpoints=1) as w2:
        w2.append(sample_event(2))
    assert not (guard_home / "keys" / "epoch.key.next").exists()
    assert verify_log(guard_home / "log", root.public).exit_code == 0


def test_crash_before_certificate_drops_staged_key(guard_home: Path, root: VerifierKey,
                                                   write_log: WriteLog) -> None:
    write_log(3)
    ring = Keyring(guard_home)
    cur = ring.epoch_key()
    ring.stage_next(EpochKey(cur.epoch + 1, Ed25519PrivateKey.generate(), cur.origin))
    write_log(3, start=10)
    assert not (guard_home / "keys" / "epoch.key.next").exists()
    assert verify_log(guard_home / "log", root.public).exit_code == 0


def test_keys_init_layout_and_refusal(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    keys = guard_home / "keys"
    assert os.stat(keys).st_mode & 0o777 == 0o700
    assert sorted(os.listdir(keys)) == ["epoch.key", "genesis.note", "root.pub"]
    assert all(os.stat(keys / n).st_mode & 0o777 == 0o600 for n in os.listdir(keys))
    with pytest.raises(KeyringError, match="already exist"):
        Keyring(guard_home).init(now=clock())


def test_timestamps_stay_monotonic(guard_home: Path, root: VerifierKey, clock: Clock) -> None:
    with AuditWriter(guard_home, now=clock) as w:
        w.append(sample_event(1))
        clock.advance(-3600)
        w.append(sample_event(2))
    ts = [x["ts"] for x in lines(guard_home) if x["type"] == "decision"]
    assert ts == sorted(ts)
