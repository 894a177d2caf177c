"""C2SP signed notes: exact text shape, key ids per the spec, and strict parsing with precise errors."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit.note import Checkpoint, VerifierKey, parse_note, public_bytes, sign_checkpoint
from guard.errors import AuditError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ROOT = hashlib.sha256(b"root").digest()


def test_signed_checkpoint_text_shape_and_key_id() -> None:
    cp = Checkpoint("example.org/log", 42, ROOT, ("guard-time 2026-01-01T00:00:00.000000Z",))
    text = sign_checkpoint(cp, "example.org/log/k", KEY)
    body, sig_block = text.split("\n\n")
    assert body + "\n" == f"example.org/log\n42\n{base64.b64encode(ROOT).decode()}\n" \
                          "guard-time 2026-01-01T00:00:00.000000Z\n"
    assert sig_block.startswith("\u2014 example.org/log/k ") and sig_block.endswith("\n")
    blob = base64.b64decode(sig_block.split(" ")[2])
    expected_id = hashlib.sha256(b"example.org/log/k\n\x01" + public_bytes(KEY)).digest()[:4]
    assert blob[:4] == expected_id and len(blob) == 68
    note = parse_note(text)
    assert note.checkpoint == cp
    assert note.signed_by(VerifierKey("example.org/log/k", public_bytes(KEY)))
    assert not note.signed_by(VerifierKey("example.org/log/other", public_bytes(KEY)))
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    assert not note.signed_by(VerifierKey("example.org/log/k", public_bytes(other)))


def test_vkey_round_trip_and_mismatched_id() -> None:
    vk = VerifierKey("a/b", public_bytes(KEY))
    assert VerifierKey.parse(vk.encode()) == vk
    name, _kid, key = vk.encode().split("+", 2)
    with pytest.raises(AuditError, match="does not match"):
        VerifierKey.parse(f"{name}+00000000+{key}")
    with pytest.raises(AuditError, match="no spaces"):
        VerifierKey("a b", public_bytes(KEY))


@pytest.mark.parametrize(("text", "error"), [
    ("o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 k AAAAAAAA\n", None),
    ("o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n", "no signature lines"),
    ("o\n1\n" + base64.b64encode(ROOT).decode() + "\n", "no blank line"),
    ("o\n01\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 k AAAAAAAA\n", "line 2"),
    ("o\n1\nnot-base64\n\n\u2014 k AAAAAAAA\n", "line 3"),
    ("\n1\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 k AAAAAAAA\n", "line 1"),
    ("o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n- k AAAAAAAA\n", "em dash"),
    ("o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n\u2014 k AAAAAAAA", "end with a newline"),
])
def test_parse_errors_name_the_problem(text: str, error: str | None) -> None:
    if error is None:
        assert parse_note(text).checkpoint.size == 1
        return
    with pytest.raises(AuditError, match=error):
        parse_note(text)
