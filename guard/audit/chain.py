"""Names and statements of the forward-secure key chain (pure: no disk, no clock).

The root key signs epoch 0's certificate; each later epoch certificate is signed by the previous epoch's
key. A certificate is an ordinary checkpoint (it seals every line before it) with one extension line
`guard-epoch <k> <vkey of the new key>`, so "this key takes over from tree size N" is bound to the root at N
by a key that is erased right after. Names embed the origin so keys of two logs never collide.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from guard.audit.note import EPOCH_EXT, TIME_EXT, Checkpoint, SignedNote, VerifierKey
from guard.errors import AuditError

LINE_CHECKPOINT = "checkpoint"
LINE_EPOCH = "epoch"
LINE_RECOVERY = "recovery"
RECORD_TYPES = frozenset({"decision", "session", "approval", "connection", "intent"})
CONTROL_TYPES = frozenset({LINE_CHECKPOINT, LINE_EPOCH})
LEAF_TYPES = RECORD_TYPES | {LINE_RECOVERY}


def origin_for(root_public: bytes) -> str:
    """The log's origin line: derived from the root key so it is stable for the log's whole life."""
    return "guard.audit/" + hashlib.sha256(root_public).hexdigest()[:16]


def root_key_name(origin: str) -> str:
    return f"{origin}/root"


def epoch_key_name(origin: str, epoch: int) -> str:
    return f"{origin}/epoch/{epoch}"


def root_verifier_key(root_public: bytes) -> VerifierKey:
    return VerifierKey(root_key_name(origin_for(root_public)), root_public)


@dataclass(frozen=True, slots=True)
class EpochGrant:
    """What an epoch certificate says: key `key` signs for epoch `epoch`, from tree size `start` on."""

    epoch: int
    key: VerifierKey
    start: int


def epoch_checkpoint(origin: str, size: int, root: bytes, ts: str, epoch: int,
                     key: VerifierKey) -> Checkpoint:
    return Checkpoint(origin, size, root, (TIME_EXT + ts, f"{EPOCH_EXT}{epoch} {key.encode()}"))


def plain_checkpoint(origin: str, size: int, root: bytes, ts: str) -> Checkpoint:
    return Checkpoint(origin, size, root, (TIME_EXT + ts,))


def read_grant(note: SignedNote, *, where: str) -> EpochGrant:
    """Parse the epoch extension of a certificate (its signature is checked by the caller)."""
    value = note.checkpoint.extension(EPOCH_EXT)
    if value is None:
        raise AuditError(f"{where}: epoch certificate has no '{EPOCH_EXT.strip()}' line")
    num, _, vkey = value.partition(" ")
    if not num.isdigit():
        raise AuditError(f"{where}: epoch number {num!r} is not a number")
    epoch = int(num)
    key = VerifierKey.parse(vkey, where=f"{where}: epoch key")
    if key.name != epoch_key_name(note.checkpoint.origin, epoch):
        raise AuditError(f"{where}: epoch {epoch} key is named {key.name!r}, expected "
                         f"{epoch_key_name(note.checkpoint.origin, epoch)!r}")
    return EpochGrant(epoch, key, note.checkpoint.size)


def verify_grant_chain(root: VerifierKey, certs: list[SignedNote], *, where: str) -> list[EpochGrant]:
    """Check epoch certificates 0..k in order against the root key; raise AuditError on the first bad one."""
    grants: list[EpochGrant] = []
    signer = root
    for i, note in enumerate(certs):
        w = f"{where}: certificate {i}"
        if note.checkpoint.origin != certs[0].checkpoint.origin:
            raise AuditError(f"{w}: origin differs from the first certificate")
        if not note.signed_by(signer):
            raise AuditError(f"{w}: not signed by {signer.name}")
        grant = read_grant(note, where=w)
        if grant.epoch != i:
            raise AuditError(f"{w}: certifies epoch {grant.epoch}, expected {i}")
        if grants and grant.start < grants[-1].start:
            raise AuditError(f"{w}: starts at tree size {grant.start}, before epoch {i - 1}")
        grants.append(grant)
        signer = grant.key
    if not grants:
        raise AuditError(f"{where}: no epoch certificates")
    if certs[0].checkpoint.origin != origin_for(root.public):
        raise AuditError(f"{where}: origin {certs[0].checkpoint.origin!r} does not belong to the root key")
    return grants
