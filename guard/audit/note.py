"""Signed notes and checkpoints in the C2SP shape (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

A checkpoint body is `<origin>\\n<tree size>\\n<base64 root>\\n` plus optional extension lines; a signed
note is the body, a blank line, and one line per signature: `— <key name> <base64(key id || sig)>`.
The key id is the first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key) for Ed25519. Keeping the
standard shape lets an off-the-shelf witness or note verifier check guard's checkpoints.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from guard.audit.canon import b64, unb64
from guard.errors import AuditError

SIG_PREFIX = "\u2014 "  # em dash + space
ED25519 = 0x01
TIME_EXT = "guard-time "
EPOCH_EXT = "guard-epoch "


def _bad_name(name: str) -> bool:
    return not name or any(c.isspace() or c == "+" for c in name)


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A named Ed25519 public key, written as the note "vkey" `<name>+<hex key id>+<base64(0x01||key)>`."""

    name: str
    public: bytes

    def __post_init__(self) -> None:
        if _bad_name(self.name):
            raise AuditError(f"bad key name {self.name!r}: no spaces or '+' allowed")
        if len(self.public) != 32:
            raise AuditError(f"Ed25519 public key must be 32 bytes, got {len(self.public)}")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{b64(bytes([ED25519]) + self.public)}"

    @classmethod
    def parse(cls, text: str, *, where: str = "key") -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise AuditError(f"{where}: expected <name>+<hex key id>+<base64 key>")
        name, hex_id, key_b64 = parts
        try:
            raw = unb64(key_b64)
            kid = bytes.fromhex(hex_id)
        except ValueError:
            raise AuditError(f"{where}: key id or key is not valid hex/base64") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise AuditError(f"{where}: not an Ed25519 note key")
        key = cls(name, raw[1:])
        if key.key_id != kid:
            raise AuditError(f"{where}: key id {hex_id} does not match the key and name")
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            _public_key(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@functools.lru_cache(maxsize=64)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object for `raw` (a verify checks every checkpoint of an epoch against the same key)."""
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The signed statement "the log `origin` has `size` leaves with Merkle root `root`"."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def extension(self, prefix: str) -> str | None:
        for ext in self.extensions:
            if ext.startswith(prefix):
                return ext[len(prefix):]
        return None


@dataclass(frozen=True, slots=True)
class SignedNote:
    text: str
    checkpoint: Checkpoint
    signatures: tuple[Signature, ...]

    @property
    def message(self) -> bytes:
        return self.checkpoint.body().encode()

    def signed_by(self, key: VerifierKey) -> bool:
        """True iff a signature line names `key` (name and id) and its signature verifies."""
        kid = key.key_id
        return any(s.name == key.name and s.key_id == kid and key.verify(self.message, s.signature)
                   for s in self.signatures)

    def signer_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signatures)


def sign_checkpoint(cp: Checkpoint, name: str, key: Ed25519PrivateKey) -> str:
    body = cp.body()
    vk = VerifierKey(name, public_bytes(key))
    sig = key.sign(body.encode())
    return f"{body}\n{SIG_PREFIX}{name} {b64(vk.key_id + sig)}\n"


def parse_note(text: str, *, where: str = "checkpoint") -> SignedNote:
    """Parse a signed checkpoint strictly; every malformation names what is wrong."""
    if not text.endswith("\n"):
        raise AuditError(f"{where}: a signed note must end with a newline")
    body, sep, sig_block = text.partition("\n\n")
    if not sep:
        raise AuditError(f"{where}: no blank line between the checkpoint and its signatures")
    lines = body.split("\n")
    if len(lines) < 3:
        raise AuditError(f"{where}: a checkpoint needs an origin, a tree size and a root hash")
    origin, size_text, root_text, *exts = lines
    if not origin:
        raise AuditError(f"{where}: line 1: empty origin")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise AuditError(f"{where}: line 2: tree size {size_text!r} is not a decimal number")
    try:
        root = unb64(root_text)
    except ValueError:
        root = b""
    if len(root) != 32:
        raise AuditError(f"{where}: line 3: root hash is not base64 of 32 bytes")
    for i, ext in enumerate(exts, start=4):
        if not ext:
            raise AuditError(f"{where}: line {i}: empty extension line")
    sigs: list[Signature] = []
    for i, line in enumerate(sig_block.split("\n")[:-1], start=1):
        if not line.startswith(SIG_PREFIX):
            raise AuditError(f"{where}: signature line {i} does not start with an em dash")
        name, _, blob = line[len(SIG_PREFIX):].partition(" ")
        try:
            raw = unb64(blob)
        except ValueError:
            raw = b""
        if _bad_name(name) or len(raw) < 5:
            raise AuditError(f"{where}: signature line {i} is malformed")
        sigs.append(Signature(name, raw[:4], raw[4:]))
    if not sigs:
        raise AuditError(f"{where}: no signature lines")
    cp = Checkpoint(origin, int(size_text), root, tuple(exts))
    return SignedNote(text, cp, tuple(sigs))
