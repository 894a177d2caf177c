"""Receipts: every sealed record provable alone; every kind of forgery or mismatch refused."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import Keyring, verify_log
from guard.audit.canon import b64, encode
from guard.audit.chain import root_verifier_key
from guard.audit.note import parse_note, public_bytes, sign_checkpoint
from guard.audit.receipt import build_receipt, encode_receipt, load_receipt, verify_receipt
from guard.errors import AuditError, UsageError

from .conftest import WriteLog


def test_every_sealed_line_has_a_valid_receipt(guard_home: Path, root, write_log: WriteLog) -> None:
    write_log(30)
    report = verify_log(guard_home / "log", root.public)
    assert report.exit_code == 0
    for seq in range(report.sealed):
        r = build_receipt(guard_home / "log", seq)
        check = verify_receipt(r, root)
        assert check.seq == seq and check.tree_size > seq
        assert check.record["seq"] == seq


def test_receipt_round_trips_through_a_file(guard_home: Path, root, write_log: WriteLog, tmp_path: Path) -> None:
    write_log(8)
    path = tmp_path / "r.json"
    path.write_bytes(encode_receipt(build_receipt(guard_home / "log", 3)))
    assert verify_receipt(load_receipt(path), root).seq == 3
    path.write_text("[1, 2]")
    with pytest.raises(UsageError, match="JSON object"):
        load_receipt(path)


def test_unsealed_and_missing_records(guard_home: Path, root, clock, write_log: WriteLog) -> None:
    from guard.audit import AuditWriter

    from .conftest import sample_event
    write_log(4)
    w = AuditWriter(guard_home, now=clock, checkpoint_every=1000).open()
    seq = w.append(sample_event(1))
    w.tick()
    with pytest.raises(AuditError, match="not sealed yet"):
        build_receipt(guard_home / "log", seq)
    w.close()
    assert verify_receipt(build_receipt(guard_home / "log", seq), root).seq == seq
    with pytest.raises(AuditError, match="not in the log"):
        build_receipt(guard_home / "log", 10_000)


@pytest.fixture
def receipt(guard_home: Path, root, write_log: WriteLog) -> dict:
    write_log(40)  # several epochs
    from guard.audit.export import iter_records
    seq = next(r["seq"] for _d, r in iter_records(guard_home / "log") if r["seq"] >= 25 and r["session"] == "s1")
    return build_receipt(guard_home / "log", seq)


def test_altered_record_is_refused(receipt: dict, root) -> None:
    r = copy.deepcopy(receipt)
    r["record"] = r["record"].replace('"s1"', '"s2"')
    with pytest.raises(AuditError, match="not included"):
        verify_receipt(r, root)


def test_altered_proof_is_refused(receipt: dict, root) -> None:
    r = copy.deepcopy(receipt)
    r["proof"] = r["proof"][1:]
    with pytest.raises(AuditError):
        verify_receipt(r, root)


def test_wrong_root_key_is_refused(receipt: dict) -> None:
    other = root_verifier_key(public_bytes(Ed25519PrivateKey.generate()))
    with pytest.raises(AuditError, match="not signed by"):
        verify_receipt(receipt, other)


def test_missing_certificate_is_refused(receipt: dict, root) -> None:
    r = copy.deepcopy(receipt)
    assert len(r["certificates"]) >= 2
    del r["certificates"][1]
    with pytest.raises(AuditError, match="not signed by"):
        verify_receipt(r, root)


def test_later_epoch_key_cannot_vouch_for_an_older_record(guard_home: Path, root, write_log: WriteLog) -> None:
    """Forward security: a thief of the current key signs a checkpoint 'including' an old, altered record."""
    write_log(40)
    genuine = build_receipt(guard_home / "log", 3)
    latest = build_receipt(guard_home / "log", verify_log(guard_home / "log", root.public).sealed - 1)
    ring = Keyring(guard_home)
    thief = ring.epoch_key()
    assert thief.epoch >= 2
    forged_record = genuine["record"].replace('"s1"', '"evil"')
    from guard.audit.merkle import leaf_hash
    note = parse_note(latest["checkpoint"])
    fake = type(note.checkpoint)(note.checkpoint.origin, 4, leaf_hash(forged_record.encode()),
                                 note.checkpoint.extensions)
    forged = {**genuine, "record": forged_record, "tree_size": 4, "proof": [],
              "checkpoint": sign_checkpoint(fake, thief.name, thief.private),
              "certificates": latest["certificates"][: thief.epoch + 1]}
    # proof [] is only valid for a size-1 tree, so also try with a real-length proof: both must fail
    with pytest.raises(AuditError):
        verify_receipt(forged, root)
    forged["proof"] = [b64(b"\0" * 32)] * 2
    with pytest.raises(AuditError, match="outside epoch"):
        verify_receipt(forged, root)


def test_malformed_receipt_fields(receipt: dict, root) -> None:
    for field, value in [("seq", "3"), ("proof", "x"), ("certificates", None), ("version", 2)]:
        r = {**receipt, field: value}
        with pytest.raises(AuditError, match=f"receipt.{field}"):
            verify_receipt(r, root)
    r = {**receipt, "record": encode({"seq": 1})[:-1].decode()}
    with pytest.raises(AuditError, match=r"receipt\.record"):
        verify_receipt(r, root)
