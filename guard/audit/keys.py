"""The keyring under $GUARD_HOME/keys: the root public key, the genesis certificate, the live epoch key.

The root private key exists only in memory during `guard keys init`: it signs epoch 0's certificate and is
dropped, so nothing on disk can ever re-certify history. Each epoch private key is erased (overwritten,
synced, unlinked) as soon as its successor is certified in the log. Every file we read here must be ours,
a regular file (no symlink), and unreadable to group and others; anything looser is refused, not fixed.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit.canon import b64, format_ts, unb64
from guard.audit.chain import epoch_checkpoint, epoch_key_name, origin_for, root_key_name
from guard.audit.merkle import EMPTY_ROOT
from guard.audit.note import VerifierKey, public_bytes, sign_checkpoint
from guard.errors import AuditError, KeyringError, UsageError
from guard.home import ensure_private_dir, keys_dir

ROOT_PUB = "root.pub"
GENESIS = "genesis.note"
EPOCH_KEY = "epoch.key"
EPOCH_NEXT = "epoch.key.next"
EPOCH_TMP = "epoch.key.tmp"
EPOCH_OLD = "epoch.key.old"

KeyFactory = Callable[[], Ed25519PrivateKey]


@dataclass(frozen=True, slots=True)
class EpochKey:
    epoch: int
    private: Ed25519PrivateKey
    origin: str

    @property
    def name(self) -> str:
        return epoch_key_name(self.origin, self.epoch)

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, public_bytes(self.private))


def _check_private(path: Path, *, directory: bool = False) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise KeyringError(f"{path}: missing", hint="run 'guard keys init' first") from None
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        raise KeyringError(f"{path}: not a {'directory' if directory else 'regular file'} (symlink?)",
                           hint="key material must be a plain file inside $GUARD_HOME/keys")
    if st.st_uid != os.geteuid():
        raise KeyringError(f"{path}: owned by uid {st.st_uid}, not by us ({os.geteuid()})")
    if st.st_mode & 0o077:
        want = "0700" if directory else "0600"
        raise KeyringError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read or change it",
                           hint=f"chmod {want} {path} (and check nobody replaced it)")


def _read_private(path: Path) -> bytes:
    _check_private(path.parent, directory=True)
    _check_private(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            raise KeyringError(f"{path}: changed while opening; refusing it")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` 0600 exclusively, write, fsync (file and directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def erase(path: Path) -> None:
    """Overwrite with zeros, sync, unlink. (On copy-on-write or flash storage old blocks may survive.)"""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)
    _fsync_dir(path.parent)


def _encode_epoch(key: EpochKey) -> bytes:
    raw = key.private.private_bytes_raw()
    return json.dumps({"epoch": key.epoch, "origin": key.origin, "private": b64(raw)}).encode() + b"\n"


def _decode_epoch(path: Path, data: bytes) -> EpochKey:
    try:
        obj = json.loads(data)
        epoch, origin, raw = obj["epoch"], obj["origin"], unb64(obj["private"])
        if type(epoch) is not int or not isinstance(origin, str) or len(raw) != 32:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise KeyringError(f"{path}: not a guard epoch key file") from None
    return EpochKey(epoch, Ed25519PrivateKey.from_private_bytes(raw), origin)


class Keyring:
    """The keys directory of one $GUARD_HOME."""

    def __init__(self, home: Path) -> None:
        self.dir = keys_dir(home)

    def exists(self) -> bool:
        return (self.dir / ROOT_PUB).exists()

    def init(self, *, now: float, new_key: KeyFactory = Ed25519PrivateKey.generate,
             force: bool = False) -> VerifierKey:
        """Create the root key, certify epoch 0 with it, then forget the root private key."""
        if self.exists() and not force:
            raise KeyringError(f"{self.dir}: keys already exist",
                               hint="keep them: a new root key starts a new trail and auditors "
                                    "must re-pin it")
        ensure_private_dir(self.dir)
        _check_private(self.dir, directory=True)
        for name in (ROOT_PUB, GENESIS, EPOCH_KEY, EPOCH_NEXT, EPOCH_TMP, EPOCH_OLD):
            erase(self.dir / name)
        root = new_key()
        root_vk = VerifierKey(root_key_name(origin_for(public_bytes(root))), public_bytes(root))
        origin = origin_for(root_vk.public)
        first = EpochKey(0, new_key(), origin)
        cp = epoch_checkpoint(origin, 0, EMPTY_ROOT, format_ts(now), 0, first.verifier)
        genesis = sign_checkpoint(cp, root_vk.name, root)
        del root
        _write_private(self.dir / EPOCH_KEY, _encode_epoch(first))
        _write_private(self.dir / GENESIS, genesis.encode())
        _write_private(self.dir / ROOT_PUB, (root_vk.encode() + "\n").encode())
        return root_vk

    def root(self) -> VerifierKey:
        path = self.dir / ROOT_PUB
        return parse_root_key(_read_private(path).decode("utf-8", "replace"), where=str(path))

    def genesis(self) -> str:
        return _read_private(self.dir / GENESIS).decode("utf-8")

    def epoch_key(self) -> EpochKey:
        path = self.dir / EPOCH_KEY
        return _decode_epoch(path, _read_private(path))

    def epoch_key_if_any(self) -> EpochKey | None:
        """None only when a crash fell between erasing the old key and promoting the staged one."""
        if not (self.dir / EPOCH_KEY).exists() and (self.dir / EPOCH_NEXT).exists():
            return None
        return self.epoch_key()

    def next_key(self) -> EpochKey | None:
        path = self.dir / EPOCH_NEXT
        if not path.exists():
            return None
        return _decode_epoch(path, _read_private(path))

    def stage_next(self, key: EpochKey) -> None:
        """Step 1 of a rotation: persist the successor (temp file + rename) before the log certifies it."""
        self.drop_next()
        _write_private(self.dir / EPOCH_TMP, _encode_epoch(key))
        os.rename(self.dir / EPOCH_TMP, self.dir / EPOCH_NEXT)
        _fsync_dir(self.dir)

    def commit_next(self) -> None:
        """Step 3 (after the certificate is durable in the log): erase the old key, promote the new one.

        The old key is first moved aside, so a crash at any point leaves either the old key or the staged
        one under its expected name (plus a retired copy that the next open erases).
        """
        if (self.dir / EPOCH_KEY).exists():  # absent if a crash already moved it aside
            os.rename(self.dir / EPOCH_KEY, self.dir / EPOCH_OLD)
        os.rename(self.dir / EPOCH_NEXT, self.dir / EPOCH_KEY)
        _fsync_dir(self.dir)
        erase(self.dir / EPOCH_OLD)

    def drop_leftovers(self) -> None:
        """Erase what a crash mid-rotation can leave: a half-written staged key, a retired key."""
        erase(self.dir / EPOCH_TMP)
        erase(self.dir / EPOCH_OLD)

    def drop_next(self) -> None:
        erase(self.dir / EPOCH_TMP)
        erase(self.dir / EPOCH_NEXT)


def parse_root_key(text: str, *, where: str) -> VerifierKey:
    """A root public key file: one vkey line whose name is the root name for its own origin."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1:
        raise KeyringError(f"{where}: expected exactly one key line")
    try:
        key = VerifierKey.parse(lines[0], where=where)
    except AuditError as exc:
        raise KeyringError(exc.message) from None
    if key.name != root_key_name(origin_for(key.public)):
        raise KeyringError(f"{where}: key {key.name!r} is not a guard root key")
    return key


def read_pinned_key(path: Path) -> VerifierKey:
    """An auditor's pinned root key file (kept wherever the auditor likes: modes are not ours to judge)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the pinned key: {exc}") from None
    return parse_root_key(text, where=str(path))


def fingerprint(key: VerifierKey) -> str:
    import hashlib

    digest = hashlib.sha256(key.public).hexdigest()
    return "SHA256:" + ":".join(digest[i:i + 4] for i in range(0, 32, 4))


