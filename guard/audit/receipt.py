"""Receipts: one record, its inclusion proof, the checkpoint that seals it and the epoch certificate chain.

A receipt is checkable alone with only the pinned root public key: the chain proves which key signed the
checkpoint, the proof ties the record's bytes to the checkpoint's root. The checkpoint used is the first
seal after the record, so it is signed by the key of the record's own epoch; `verify_receipt` insists on
that, which keeps forward security: a thief of a later epoch key cannot vouch for older records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from guard.audit.canon import b64, decode, is_canonical, unb64
from guard.audit.chain import LINE_CHECKPOINT, LINE_EPOCH, verify_grant_chain
from guard.audit.merkle import inclusion_proof, leaf_hash, root_from_inclusion
from guard.audit.note import VerifierKey, parse_note
from guard.audit.segments import iter_batches, list_segments
from guard.errors import AuditError, UsageError

RECEIPT_VERSION = 1
_CONTROL_TAILS = (b'"type":"epoch"}', b'"type":"checkpoint"}')


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    seq: int
    record: dict[str, Any]
    tree_size: int
    epoch: int
    origin: str


def build_receipt(log: Path, seq: int) -> dict[str, Any]:
    """Scan the log up to the first seal after `seq` and assemble a receipt; raises AuditError if unsealed."""
    if seq < 0:
        raise UsageError(f"SEQ must be >= 0, got {seq}")
    hashes = bytearray()
    certs: list[str] = []
    record: bytes | None = None
    for seg in list_segments(log):
        for _lineno, lines, _torn in iter_batches(seg.path):
            for data in lines:
                idx = len(hashes) // 32
                if idx == seq:
                    record = data
                if data.endswith(_CONTROL_TAILS):
                    try:
                        obj = decode(data)
                    except ValueError:
                        raise AuditError(f"{seg.name}: seq {idx} is not JSON",
                                         hint="run 'guard audit verify'") from None
                    kind, note = obj.get("type"), obj.get("note")
                    if kind in (LINE_EPOCH, LINE_CHECKPOINT) and isinstance(note, str) and idx > seq:
                        if kind == LINE_CHECKPOINT:
                            return _assemble(seq, record, hashes, idx, note, certs)
                        return _assemble(seq, record, hashes, idx, note, list(certs))
                    if kind == LINE_EPOCH and isinstance(note, str):
                        certs.append(note)
                hashes += leaf_hash(data)
    if record is None:
        raise AuditError(f"seq {seq} is not in the log ({len(hashes) // 32} lines)")
    raise AuditError(f"seq {seq} is not sealed yet: no checkpoint after it",
                     hint="wait a second for the daemon to seal it, then retry")


def _assemble(seq: int, record: bytes | None, hashes: bytearray, size: int, note: str,
              certs: list[str]) -> dict[str, Any]:
    assert record is not None
    leaves = [bytes(hashes[i:i + 32]) for i in range(0, size * 32, 32)]
    proof = inclusion_proof(leaves, seq, size)
    return {"version": RECEIPT_VERSION, "seq": seq, "record": record.decode("utf-8"), "tree_size": size,
            "proof": [b64(p) for p in proof], "checkpoint": note, "certificates": certs}


def encode_receipt(receipt: Mapping[str, Any]) -> bytes:
    return orjson.dumps(receipt, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def load_receipt(path: Path) -> dict[str, Any]:
    try:
        obj = decode(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read receipt: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: receipt is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: receipt must be a JSON object")
    return obj


def verify_receipt(receipt: Mapping[str, Any], root: VerifierKey) -> ReceiptCheck:
    """Check a receipt against the pinned root key; raises AuditError naming the first failed check."""
    fields = {"version": int, "seq": int, "record": str, "tree_size": int, "proof": list, "checkpoint": str,
              "certificates": list}
    for name, kind in fields.items():
        if not isinstance(receipt.get(name), kind):
            raise AuditError(f"receipt.{name}: missing or not a {kind.__name__}")
    if receipt["version"] != RECEIPT_VERSION:
        raise AuditError(f"receipt.version: {receipt['version']} is not supported "
                         f"(expected {RECEIPT_VERSION})")
    seq, size = receipt["seq"], receipt["tree_size"]
    certs = []
    for i, text in enumerate(receipt["certificates"]):
        if not isinstance(text, str):
            raise AuditError(f"receipt.certificates[{i}]: not a string")
        certs.append(parse_note(text, where=f"receipt.certificates[{i}]"))
    grants = verify_grant_chain(root, certs, where="receipt.certificates")
    signer = grants[-1]
    note = parse_note(receipt["checkpoint"], where="receipt.checkpoint")
    cp = note.checkpoint
    if cp.origin != certs[0].checkpoint.origin:
        raise AuditError("receipt.checkpoint: origin differs from the certificates'")
    if not note.signed_by(signer.key):
        raise AuditError(f"receipt.checkpoint: not signed by {signer.key.name}, the key its certificates "
                         "end with")
    if cp.size != size:
        raise AuditError(f"receipt.tree_size: {size} but the checkpoint covers {cp.size}")
    if not signer.start <= seq < size:
        raise AuditError(f"receipt.seq: {seq} is outside epoch {signer.epoch} of the signing key "
                         f"(tree sizes {signer.start}..{size - 1}): a later key cannot vouch for older "
                         "records")
    data = receipt["record"].encode("utf-8")
    try:
        record = decode(data)
    except ValueError:
        raise AuditError("receipt.record: not JSON") from None
    if not isinstance(record, dict) or record.get("seq") != seq or not is_canonical(record, data):
        raise AuditError(f"receipt.record: not the canonical record with seq {seq}")
    try:
        proof = [unb64(p) for p in receipt["proof"]]
    except (ValueError, TypeError, AttributeError):
        raise AuditError("receipt.proof: entries must be base64 hashes") from None
    if any(len(p) != 32 for p in proof) or root_from_inclusion(leaf_hash(data), seq, size, proof) != cp.root:
        raise AuditError(f"receipt.proof: record seq {seq} is not included in the checkpoint's tree")
    return ReceiptCheck(seq, record, size, signer.epoch, cp.origin)
