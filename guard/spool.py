"""A session's spool: the crash-safe place a record reaches before its action is allowed.

`guard run` appends each record to `$GUARD_HOME/spool/<session>.jsonl` with one write(2) on an O_APPEND
descriptor before the supervisor answers the notification, so the record is in the page cache (and
survives the death of `guard run`, the supervisor or the daemon) before the action happens. The daemon
ingests spools into the signed trail (guard.daemon.ingest) and deletes a spool only once all of it is in
the trail and synced.

Each line is one JSON object with `n`, the record's sequence number in the session (1, 2, ...), so the
daemon can ingest the same spool twice (after a crash) without recording anything twice. The writer holds
an exclusive flock on the spool for its lifetime: a spool nobody holds belongs to a `guard run` that is
gone, and the daemon finishes it. A line without its newline at the end of a dead writer's spool is a
record whose write was cut short; its action was never allowed (decide() returns after the write).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from guard.errors import GuardError
from guard.home import ensure_private_dir
from guard.text import record_json

SPOOL_SUFFIX = ".jsonl"
ACK_SUFFIX = ".ack"
_SESSION_RE = re.compile(r"^[0-9a-f]{4,64}$")
READ_CHUNK = 1 << 20


class SpoolError(GuardError):
    """A spool could not be created, written or read."""


def spool_dir(home: Path) -> Path:
    return home / "spool"


def spool_path(home: Path, session: str) -> Path:
    if not _SESSION_RE.match(session):
        raise SpoolError(f"session id {session[:80]!r} cannot name a spool (expected lowercase hex)")
    return spool_dir(home) / f"{session}{SPOOL_SUFFIX}"


def session_of(path: Path) -> str | None:
    """The session a spool file belongs to, or None for anything else in the directory."""
    name = path.name
    if not name.endswith(SPOOL_SUFFIX):
        return None
    session = name[: -len(SPOOL_SUFFIX)]
    return session if _SESSION_RE.match(session) else None


class SpoolWriter:
    """The session's side: numbered records, one write(2) each, under an exclusive flock."""

    def __init__(self, fd: int, path: Path, last: int = 0) -> None:
        self._fd: int | None = fd
        self.path = path
        self._last = last
        self._lock = threading.Lock()
        self._broken: SpoolError | None = None
        # The supervisor's compiled fast path appends records too (guard.sandbox.fastpath): once attached,
        # every append goes through it, so record numbers come from one counter under one lock.
        self._core: Any = None
        self.wake_fd: int | None = None

    @classmethod
    def create(cls, home: Path, session: str) -> SpoolWriter:
        """A new, locked, empty spool. It is created under a temporary name, locked, then renamed, so the
        daemon never sees a spool of a live session without its lock (which would read as abandoned)."""
        final = spool_path(home, session)
        ensure_private_dir(final.parent)
        tmp = final.with_name(f".{session}.new")
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot create the session spool {tmp}: {exc.strerror}",
                             hint="is $GUARD_HOME on a writable disk with free space?") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, final)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SpoolError(f"cannot set up the session spool {final}: {exc.strerror}") from None
        return cls(fd, final)

    @property
    def last(self) -> int:
        """The sequence number of the last record written (0: none yet)."""
        core = self._core
        return int(core.last) if core is not None else self._last

    def use_core(self, core: Any) -> None:
        """Let the compiled fast path append to this spool; from now on every append goes through it.
        `wake_fd` (an eventfd) is written when the core appends while nothing was pending, so the
        recorder notices records it did not write itself."""
        with self._lock:
            if self._fd is None or self._broken is not None:
                return
            self.wake_fd = os.eventfd(0, os.EFD_CLOEXEC)
            core.attach_spool(self._fd, self._last)
            core.set_wake(self.wake_fd)
            self._core = core

    def flow(self, acked: int, window: int, stopped: bool) -> None:
        """Tell the fast path how far the daemon has acknowledged and whether recording stopped: it
        appends only while the window has room and recording goes on, and otherwise hands the action to
        the Python path, which waits or fails closed."""
        core = self._core
        if core is not None:
            core.set_flow(acked, window, stopped)

    @staticmethod
    def render_head(record: Mapping[str, Any]) -> bytes:
        """A record's line without its sequence number: the JSON object minus its closing brace. The
        number is added as the object's last member (`,"n":N}`) when the line is written."""
        # bytes are bytes: a name that is not UTF-8 is carried exactly ({"b64": ...}, guard.text)
        return record_json(dict(record))[:-1]

    def append(self, record: Mapping[str, Any]) -> int:
        """Write one record as one line with one write(2); -> its sequence number.

        Raises SpoolError when the record cannot be encoded or written whole. After a failed write the
        spool may end in a torn line, so every later append fails too: the caller must stop the session.
        """
        with self._lock:
            if self._broken is not None:
                raise self._broken
            if self._fd is None:
                raise SpoolError(f"{self.path}: the spool is closed")
            n = self.last + 1
            try:
                head = self.render_head(record)
            except TypeError as exc:  # nothing was written: the spool stays usable, this record is refused
                raise SpoolError(f"record {n} cannot be encoded: {exc}") from None
            if self._core is not None:
                try:
                    return int(self._core.append(head))
                except OSError as exc:  # the core reports a short write as ENOSPC
                    full = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
                    self._broken = SpoolError(f"{self.path}: writing record {n} failed: {exc.strerror}{full}",
                                              hint="free space on the disk holding $GUARD_HOME")
                    raise self._broken from None
            line = head + (b',"n":%d}\n' % n if len(head) > 1 else b'"n":%d}\n' % n)
            try:
                written = os.write(self._fd, line)
            except OSError as exc:
                self._broken = SpoolError(f"{self.path}: writing record {n} failed: {exc.strerror}",
                                          hint="free space on the disk holding $GUARD_HOME")
                raise self._broken from None
            if written != len(line):
                self._broken = SpoolError(f"{self.path}: record {n} was written only in part "
                                          f"({written} of {len(line)} bytes: the disk is full or a size "
                                          "limit was hit)",
                                          hint="free space on the disk holding $GUARD_HOME")
                raise self._broken
            self._last = n
            return n

    def close(self) -> None:
        with self._lock:
            if self._core is not None:
                self._core.detach_spool()  # the fast path hands everything back from now on
                self._last = int(self._core.last)
                self._core = None
            if self.wake_fd is not None:
                os.close(self.wake_fd)
                self.wake_fd = None
            if self._fd is not None:
                os.close(self._fd)  # drops the flock: the daemon may now finish the spool
                self._fd = None


@dataclass(frozen=True, slots=True)
class SpoolLine:
    n: int
    record: dict[str, Any]
    end: int  # byte offset just past this line


@dataclass(frozen=True, slots=True)
class SpoolRead:
    lines: list[SpoolLine]
    offset: int  # where the next read starts: past the last complete line
    partial: int  # bytes after `offset` (a line being written, or torn if the writer is gone)
    damaged: str | None = None  # the line at `offset` is not a spool record: why (reading stopped there)


def read_spool(path: Path, offset: int = 0, *, limit: int = 1 << 30) -> SpoolRead:
    """The complete lines of `path` from byte `offset` on (at most about `limit` bytes of them).

    A complete line that is not a JSON object with an integer `n` stops the read there and is reported in
    `damaged` with its byte offset: the spool is written only by `guard run`, so that is damage, never
    something to skip silently. The lines before it are returned.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise SpoolError(f"cannot open the spool {path}: {exc.strerror}") from None
    lines: list[SpoolLine] = []
    try:
        size = os.fstat(fd).st_size
        pos = offset
        rest = b""
        while pos < size and pos - offset < limit:
            chunk = os.pread(fd, min(READ_CHUNK, size - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            buf = rest + chunk if rest else chunk
            start = 0
            base = pos - len(buf)
            while (nl := buf.find(b"\n", start)) >= 0:
                try:
                    lines.append(_parse_line(path, buf[start:nl], base + start, base + nl + 1))
                except SpoolError as exc:
                    return SpoolRead(lines, base + start, 0, damaged=exc.message)
                start = nl + 1
            rest = buf[start:]
        consumed = lines[-1].end if lines else offset
        return SpoolRead(lines, consumed, max(0, size - consumed) if pos >= size else 0)
    finally:
        os.close(fd)


def _parse_line(path: Path, raw: bytes, at: int, end: int) -> SpoolLine:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SpoolError(f"{path}: byte {at}: not a JSON line: {exc}") from None
    n = record.get("n") if isinstance(record, dict) else None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise SpoolError(f"{path}: byte {at}: a spool line needs a positive integer 'n'")
    del record["n"]
    return SpoolLine(n, record, end)


def writer_alive(path: Path) -> bool:
    """True while a `guard run` holds the spool's lock; False once it is gone (or the file is)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops our shared lock
    return False


def list_spools(home: Path) -> Iterator[tuple[str, Path]]:
    """(session, path) of every spool under `home`, oldest first by name order of the directory."""
    directory = spool_dir(home)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        path = directory / name
        session = session_of(path)
        if session is not None:
            yield session, path

