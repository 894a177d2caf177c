"""The one writer of the audit trail (the daemon owns it).

Append is cheap: encode, hash, buffer. `flush()` hands the buffer to the kernel with write(2) and only then
grows the Merkle frontier by those lines, so the tree never counts a line the file does not hold; the
daemon flushes before it answers, so an acknowledged record survives the death of any process. Sealing
flushes, writes a checkpoint signed by the current epoch key (or, when the epoch is due, the next epoch's
certificate signed by the current key, which is then erased), and fdatasyncs. A machine crash therefore
loses at most lines after the last checkpoint; on restart the log is replayed through the verifier, a torn
last line is acknowledged by a `recovery` record in a fresh segment (its bytes are kept as evidence, never
truncated away), and the chain continues. An exclusive flock keeps a second writer out.

Restart cost does not grow with the trail: each checkpoint leaves `log/.frontier` (the tree's frontier, seq
and epoch state before that checkpoint line, and where and what the line is). A restart checks that the
named line is there byte for byte, resumes a verifier from that state, feeds it the checkpoint line (whose
root and signature must match) and what follows. Any doubt about the file means a full replay, which also
decides whether the trail may be extended; `guard audit verify` always checks everything from the root key.

A write error (ENOSPC, EIO, EDQUOT...) fails the writer closed: it stops, remembers the error and raises
`AuditWriteError` from every later call, so the daemon refuses records instead of acknowledging what it
cannot store. The file then ends with complete lines, perhaps followed by a torn fragment, which verify
reports as an unsealed tail (exit 3), never as tampering; a new writer opened once the disk has room
acknowledges the fragment and continues.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit.canon import TimeFormatter, encode
from guard.audit.chain import (
    LINE_CHECKPOINT,
    LINE_EPOCH,
    LINE_RECOVERY,
    RECORD_TYPES,
    epoch_checkpoint,
    plain_checkpoint,
)
from guard.audit.keys import EpochKey, KeyFactory, Keyring
from guard.audit.merkle import Frontier
from guard.audit.note import VerifierKey, parse_note, sign_checkpoint
from guard.audit.segments import replay, replay_from, segment_name
from guard.audit.verify import LogVerifier
from guard.errors import AuditError, KeyringError
from guard.home import ensure_private_dir, log_dir

_SHA256 = hashlib.sha256

CHECKPOINT_EVERY = 1000  # records
CHECKPOINT_INTERVAL = 0.5  # seconds; with tick() every <=250 ms a record is sealed within 1 s
EPOCH_CHECKPOINTS = 60  # a new epoch key at least every 60 checkpoints ...
EPOCH_SECONDS = 60.0  # ... or every 60 seconds, whichever comes first (docs/audit-format.md)
SEGMENT_MAX_BYTES = 64 << 20  # segments rotate after a seal once past either limit
SEGMENT_MAX_LINES = 250_000
BUFFER_BYTES = 1 << 18
RESUME_FILE = ".frontier"  # in the log directory; never named like a segment


class AuditWriteError(AuditError):
    """The trail could not be written (disk full, I/O error): the writer has stopped, fail closed."""


class AuditWriter:
    """Append-only writer; see the module docstring. One per log (flock); thread-safe within a process."""

    def __init__(self, home: Path, *, now: Callable[[], float] = time.time,
                 checkpoint_every: int = CHECKPOINT_EVERY, checkpoint_interval: float = CHECKPOINT_INTERVAL,
                 epoch_checkpoints: int = EPOCH_CHECKPOINTS, epoch_seconds: float = EPOCH_SECONDS,
                 segment_max_bytes: int = SEGMENT_MAX_BYTES, segment_max_lines: int = SEGMENT_MAX_LINES,
                 new_key: KeyFactory = Ed25519PrivateKey.generate,
                 sync: bool = True) -> None:
        if checkpoint_every < 1 or checkpoint_interval <= 0 or epoch_checkpoints < 1 or epoch_seconds <= 0:
            raise AuditError("checkpoint and epoch limits must be positive")
        self.home = home
        self.log = log_dir(home)
        self._now = now
        self._every = checkpoint_every
        self._interval = checkpoint_interval
        self._epoch_checkpoints_max = epoch_checkpoints
        self._epoch_seconds = epoch_seconds
        self._segment_max = segment_max_bytes
        self._segment_max_lines = segment_max_lines
        self._new_key = new_key
        self._sync = sync
        self._keyring = Keyring(home)
        self._lock = threading.Lock()
        self._ts = TimeFormatter()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._frontier = Frontier()
        self._buf: list[bytes] = []  # encoded lines (newline included) not yet written
        self._buf_leaves: list[bytes] = []  # their leaf hashes, folded into the frontier once written
        self._buf_bytes = 0
        self._failed: AuditWriteError | None = None
        self._key: EpochKey | None = None
        self._origin = ""
        self._pending = 0  # lines after the last seal line
        self._first_pending_at = 0.0
        self._epoch_started_at = 0.0
        self._epoch_checkpoints = 0
        self._last_t = 0.0
        self._segment_index = 0
        self._segment_bytes = 0
        self._segment_start = 0  # leaf index of the current segment's first line (or of this open)
        self._sealed = 0
        self._syncer: _Syncer | None = None
        self.recovery: str | None = None  # what the last open() repaired (a torn tail), for logs and status
        self.replayed: dict[str, Any] = {}  # how the last open() rebuilt its state: mode, from_seq, lines

    # -- lifecycle ----------------------------------------------------------------------------------------
    def __enter__(self) -> AuditWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def size(self) -> int:
        """Lines appended so far, buffered ones included (the next seq)."""
        return self._frontier.size + len(self._buf_leaves)

    @property
    def written_size(self) -> int:
        """Lines [0, written_size) are in the file (handed to the kernel; they survive a process crash)."""
        return self._frontier.size

    @property
    def failure(self) -> AuditWriteError | None:
        """The write error that stopped this writer, if any."""
        return self._failed

    @property
    def sealed_size(self) -> int:
        """Lines [0, sealed_size) are covered by a checkpoint whose fdatasync has completed."""
        return self._syncer.durable if self._syncer is not None else self._sealed

    def open(self) -> AuditWriter:
        with self._lock:
            if self._fd is not None:
                raise AuditError("audit writer is already open")
            root = self._keyring.root()
            ensure_private_dir(self.log)
            self._take_lock()
            if self._sync:
                self._syncer = _Syncer()
            try:
                self._recover(root.public)
            except BaseException:
                self._release()
                raise
        return self

    def _take_lock(self) -> None:
        fd = os.open(self.log / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(f"{self.log}: another audit writer holds the log",
                             hint="only the guard daemon writes the trail; stop the other writer") from None
        self._lock_fd = fd

    def _release(self) -> None:
        syncer, self._syncer = self._syncer, None
        try:
            if syncer is not None:
                try:
                    self._sealed = syncer.stop()
                except AuditError:
                    if self._failed is None:
                        raise
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing drops the flock
                self._lock_fd = None
            self._key = None

    def _replay(self, root_public: bytes) -> tuple[LogVerifier, dict[str, Any]]:
        """The log replayed from the last saved checkpoint state when it checks out, else from the start."""
        try:
            resumed = self._resumed(root_public)
        except (AuditError, OSError, ValueError, KeyError, TypeError) as exc:
            reason = exc.message if isinstance(exc, AuditError) else str(exc) or type(exc).__name__
            return replay(self.log, LogVerifier(root_public)), {"mode": "full", "from_seq": 0, "why": reason}
        return resumed

    def _resumed(self, root_public: bytes) -> tuple[LogVerifier, dict[str, Any]]:
        try:
            raw = (self.log / RESUME_FILE).read_bytes()
        except FileNotFoundError:
            raise AuditError("no saved checkpoint state") from None
        doc = orjson.loads(raw[:1 << 16])
        seal, index, offset, length, line = (doc["seal"], doc["segment"], doc["offset"], doc["length"],
                                             doc["line"])
        if not all(type(x) is int and x >= 0 for x in (seal, index, offset, length, line)) or line < 1:
            raise AuditError("saved checkpoint state is malformed")
        frontier = Frontier(seal, [bytes.fromhex(h) for h in doc["frontier"]])
        key = VerifierKey.parse(doc["epoch_key"], where="saved checkpoint state")
        name = segment_name(index)
        with open(self.log / name, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if (len(data) != length or not data.endswith(b"\n")
                or _SHA256(data).hexdigest() != doc["sha256"]):
            raise AuditError(f"the checkpoint line the saved state names ({name} line {line}) is not there")
        verifier = LogVerifier.resumed(root_public, frontier=frontier, epoch=int(doc["epoch"]), epoch_key=key,
                                       epoch_checkpoints=int(doc["epoch_checkpoints"]), segment_index=index,
                                       segment_name=name, segment_lines=line - 1)
        replay_from(self.log, verifier, segment_index=index, offset=offset, first_lineno=line)
        return verifier, {"mode": "resume", "from_seq": seal}

    def _save_resume(self, point: dict[str, Any], line: bytes) -> None:
        """Best effort (a cache): a missing or stale file only costs a longer replay at the next start."""
        doc = {**point, "length": len(line) + 1, "sha256": _SHA256(line + b"\n").hexdigest()}
        tmp = self.log / (RESUME_FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, orjson.dumps(doc))
            finally:
                os.close(fd)
            os.replace(tmp, self.log / RESUME_FILE)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _resume_point(self, key: EpochKey) -> dict[str, Any]:
        """The state a verifier has just before the seal line about to be written (after a flush)."""
        n = self._frontier.size
        return {"v": 1, "seal": n, "segment": self._segment_index, "offset": self._segment_bytes,
                "line": n - self._segment_start + 1, "frontier": [h.hex() for h in self._frontier.stack],
                "epoch": key.epoch, "epoch_key": key.verifier.encode(),
                "epoch_checkpoints": self._epoch_checkpoints}

    def _recover(self, root_public: bytes) -> None:
        report_v, how = self._replay(root_public)
        state = report_v.resume_state()
        report = report_v.finish()
        breaks = [f for f in report.findings if f.tampering and f.kind != "empty"]
        if breaks and how["mode"] != "full":  # the full replay decides, not the cache
            report_v = replay(self.log, LogVerifier(root_public))
            how = {"mode": "full", "from_seq": 0, "why": f"resuming found {breaks[0]}"}
            state = report_v.resume_state()
            report = report_v.finish()
            breaks = [f for f in report.findings if f.tampering and f.kind != "empty"]
        how["lines"] = state.frontier.size - how["from_seq"]
        self.replayed = how
        if breaks:
            first = breaks[0]
            raise AuditError(f"{self.log}: the existing trail fails verification ({first}); refusing to "
                             "extend it",
                             hint="run 'guard audit verify' and preserve the evidence; move the log aside to "
                                  "start a new trail")
        self._keyring.drop_leftovers()
        current = self._keyring.epoch_key_if_any()
        staged = self._keyring.next_key()
        now = self._now()
        self._last_t = now
        if state.epoch is None:  # empty log: write the genesis certificate
            key = self._keyring.epoch_key()
            if key.epoch != 0 or state.frontier.size:
                raise KeyringError(f"the log is empty but the epoch key is at epoch {key.epoch}",
                                   hint="the trail was deleted; run 'guard keys init --force' to start anew "
                                        "(auditors must pin the new root key)")
            genesis = self._keyring.genesis()
            note = parse_note(genesis, where="keys/genesis.note")
            self._origin = note.checkpoint.origin
            self._key = key
            self._frontier = state.frontier
            self._segment_index = max(state.segment_index, 0)
            self._open_segment(self._segment_index)
            if state.torn is not None:  # only a torn genesis line: nothing was ever sealed or recorded
                assert self._fd is not None
                os.ftruncate(self._fd, 0)
                self._segment_bytes = 0
            self._write_line(encode({"epoch": 0, "note": genesis, "seq": 0, "type": LINE_EPOCH}))
            self._seal_written(seal_index=0, wait=True)
            self._epoch_started_at = now
            return
        assert state.epoch_key is not None
        if staged is not None and staged.verifier == state.epoch_key and staged.epoch == state.epoch:
            self._keyring.commit_next()  # crashed after the certificate was durable
            key = staged
        else:
            if staged is not None:
                self._keyring.drop_next()  # crashed before the certificate was written
            key = current if current is not None else self._keyring.epoch_key()
        if key.epoch != state.epoch or key.verifier != state.epoch_key:
            raise KeyringError(f"the epoch key on disk is for epoch {key.epoch}, the log is at epoch "
                               f"{state.epoch}",
                               hint="the key file was replaced or restored from a backup; the trail cannot "
                                    "continue with it")
        self._key = key
        self._origin = key.origin
        self._frontier = state.frontier
        self._epoch_checkpoints = state.epoch_checkpoints
        self._epoch_started_at = now
        self._sealed = max(state.last_seal, 0)
        if self._syncer is not None:
            self._syncer.mark(self._sealed)
        self._pending = self._frontier.size - state.last_seal - 1
        self._first_pending_at = now
        torn = state.torn
        if torn is not None and torn.segment == state.segment_name:
            self._open_segment(state.segment_index + 1)
        else:
            self._open_segment(max(state.segment_index, 0))
            self._segment_start -= state.segment_lines
        if torn is not None:
            self._append_locked({"type": LINE_RECOVERY, "segment": torn.segment, "torn_bytes": torn.size,
                                 "torn_sha256": torn.sha256})
            self.recovery = (f"a torn last line ({torn.size} bytes, {torn.segment} line {torn.line}) from an "
                             "interrupted write was acknowledged by a recovery record in a new segment; it "
                             "was never a record, and its bytes are kept")
        if self._pending:
            self._seal()

    def close(self) -> None:
        """Seal whatever is pending, sync, and release the log."""
        with self._lock:
            if self._fd is None:
                return
            try:
                if self._failed is None:
                    if self._pending:
                        self._seal()
                    else:
                        self._flush()
            finally:
                self._release()

    # -- appending ----------------------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> int:
        """Add one record (the writer sets `seq` and `ts`); returns its seq."""
        if not isinstance(event, Mapping):
            raise AuditError(f"event: expected a mapping, got {type(event).__name__}")
        kind = event.get("type")
        if kind not in RECORD_TYPES:
            raise AuditError(f"event.type: {kind!r} is not one of {', '.join(sorted(RECORD_TYPES))}")
        if "seq" in event or "ts" in event:
            raise AuditError("event: 'seq' and 'ts' are set by the writer; remove them")
        with self._lock:
            self._check_usable()
            return self._append_locked(event)

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._fd is None:
            raise AuditError("audit writer is not open", hint="call open() or use it as a context manager")

    def _append_locked(self, event: Mapping[str, Any]) -> int:
        seq = self.size
        t = self._now()
        if t < self._last_t:  # keep timestamps monotonic across clock steps
            t = self._last_t
        self._last_t = t
        record = dict(event)
        record["seq"] = seq
        record["ts"] = self._ts(t)
        try:
            data = encode(record)
        except AuditError as exc:
            raise AuditError(f"event (seq {seq}): {exc.message}", hint=exc.hint) from None
        self._write_line(data)
        if not self._pending:
            self._first_pending_at = t
        self._pending += 1
        if self._pending >= self._every or t - self._first_pending_at >= self._interval:
            self._seal()
        elif self._buf_bytes >= BUFFER_BYTES:
            self._flush()
        return seq

    def _write_line(self, data: bytes) -> None:
        self._buf_leaves.append(_SHA256(b"\x00" + data).digest())
        self._buf.append(data + b"\n")
        self._buf_bytes += len(data) + 1

    def flush(self) -> int:
        """Write every buffered line to the file now; -> `written_size`. Raises AuditWriteError on failure.

        What this returns is in the kernel's page cache: a crash of any process keeps it, a machine crash
        may lose what no checkpoint has fdatasync'd yet (verify then reports an unsealed tail).
        """
        with self._lock:
            self._check_usable()
            self._flush()
            return self._frontier.size

    def tick(self) -> None:
        """Seal if the oldest unsealed record is due; otherwise hand buffered lines to the OS."""
        with self._lock:
            if self._fd is None:
                return
            if self._failed is not None:
                raise self._failed
            if self._pending and self._now() - self._first_pending_at >= self._interval:
                self._seal()
            else:
                self._flush()

    # -- sealing ------------------------------------------------------------------------------------------
    def _seal(self) -> None:
        """Checkpoint now. Any failure on the way (a write, the key rotation's files, a bug) leaves the
        writer's state unknown, so it fails the writer closed."""
        try:
            self._seal_now()
        except AuditWriteError:
            raise
        except Exception as exc:
            raise self._fail(exc, "sealing") from exc

    def _seal_now(self) -> None:
        key = self._key
        assert key is not None
        self._flush()  # the root signed below covers written lines only
        n = self._frontier.size
        root = self._frontier.root()
        t = max(self._now(), self._last_t)
        ts = self._ts(t)
        due = (self._epoch_checkpoints + 1 >= self._epoch_checkpoints_max
               or t - self._epoch_started_at >= self._epoch_seconds)
        point = self._resume_point(key)
        if due:
            nxt = EpochKey(key.epoch + 1, self._new_key(), self._origin)
            self._keyring.stage_next(nxt)
            cp = epoch_checkpoint(self._origin, n, root, ts, nxt.epoch, nxt.verifier)
            note = sign_checkpoint(cp, key.name, key.private)
            line = encode({"epoch": nxt.epoch, "note": note, "seq": n, "type": LINE_EPOCH})
            self._write_line(line)
            self._seal_written(seal_index=n, wait=True)  # the certificate is durable before the old key goes
            self._keyring.commit_next()
            self._key = nxt
            self._epoch_checkpoints = 0
            self._epoch_started_at = t
        else:
            note = sign_checkpoint(plain_checkpoint(self._origin, n, root, ts), key.name, key.private)
            line = encode({"epoch": key.epoch, "note": note, "seq": n, "type": LINE_CHECKPOINT})
            self._write_line(line)
            self._seal_written(seal_index=n)
            self._epoch_checkpoints += 1
        self._save_resume(point, line)
        if (self._segment_bytes >= self._segment_max
                or self._frontier.size - self._segment_start >= self._segment_max_lines):
            self._open_segment(self._segment_index + 1)

    def _seal_written(self, *, seal_index: int, wait: bool = False) -> None:
        """Make the seal line durable: in the background (appends go on meanwhile), or now when `wait`."""
        self._flush()
        self._pending = 0
        syncer = self._syncer
        if syncer is None:
            self._sealed = seal_index
            return
        assert self._fd is not None
        try:
            if wait:
                syncer.drain()
                os.fdatasync(self._fd)
                syncer.mark(seal_index)
            else:
                syncer.submit(os.dup(self._fd), seal_index)
        except OSError as exc:
            raise self._fail(exc, "fdatasync") from None
        except AuditError as exc:  # the background fdatasync of an earlier checkpoint failed
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else OSError(errno.EIO, exc.message)
            raise self._fail(cause, "fdatasync") from None

    def seal(self) -> None:
        """Seal every record appended so far, now (a session ended: its trail should verify at once)."""
        with self._lock:
            self._check_usable()
            if self._pending:
                self._seal()

    def sync(self) -> int:
        """Wait for the last checkpoint's fdatasync; returns `sealed_size`."""
        with self._lock:
            if self._syncer is not None:
                self._syncer.drain()
        return self.sealed_size

    def _flush(self) -> None:
        """Write the buffer; only then count its lines. On an error count what reached the file, and fail."""
        if self._failed is not None:
            raise self._failed
        if not self._buf:
            return
        data = b"".join(self._buf)
        assert self._fd is not None
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            self._segment_bytes += done
            self._count_written(done)
            raise self._fail(exc, "write") from None
        self._segment_bytes += done
        append = self._frontier.append
        for leaf in self._buf_leaves:
            append(leaf)
        self._buf.clear()
        self._buf_leaves.clear()
        self._buf_bytes = 0

    def _count_written(self, done: int) -> None:
        """After a short write: count the lines wholly inside the first `done` bytes of the buffer."""
        for line, leaf in zip(self._buf, self._buf_leaves, strict=True):
            if done < len(line):
                break
            done -= len(line)
            self._frontier.append(leaf)

    def _fail(self, exc: Exception, what: str) -> AuditWriteError:
        """Stop for good: from now on every call raises this error (fail closed), nothing is acknowledged."""
        if self._failed is None:
            if isinstance(exc, OSError):
                name = errno.errorcode.get(exc.errno or 0, "error")
                detail = exc.strerror or str(exc)
            else:
                name, detail = type(exc).__name__, str(exc)
            where = self.log / segment_name(self._segment_index)
            self._failed = AuditWriteError(
                f"{where}: {what} of the audit trail failed: {name} ({detail}); the trail "
                f"holds {self._frontier.size} lines, later records were not stored and nothing more is "
                "accepted",
                hint="free space on (or repair) the disk holding $GUARD_HOME/log, then start the daemon "
                     "again (`guard daemon start`); `guard audit verify` reports the unsealed tail")
            self._buf.clear()
            self._buf_leaves.clear()
            self._buf_bytes = 0
        return self._failed

    def _open_segment(self, index: int) -> None:
        self._flush()
        path = self.log / segment_name(index)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise self._fail(exc, f"creating {path.name}") from None
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segment_index = index
        self._segment_bytes = os.fstat(fd).st_size
        self._segment_start = self._frontier.size
        if self._sync:
            dfd = os.open(self.log, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)



class _Syncer:
    """One background thread running fdatasync for checkpoints, at most one in flight.

    fdatasync releases the GIL, so the daemon keeps appending while the disk catches up; `durable` only
    advances once the seal line is on disk. A failed sync is raised at the next submit, drain or stop.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._job: tuple[int, int] | None = None
        self._error: OSError | None = None
        self._stopping = False
        self.durable = 0
        self._thread = threading.Thread(target=self._run, name="guard-audit-fsync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._stopping:
                    self._cv.wait()
                if self._job is None:
                    return
                fd, index = self._job
            try:
                os.fdatasync(fd)
            except OSError as exc:
                with self._cv:
                    self._error = exc
            finally:
                os.close(fd)
            with self._cv:
                if self._error is None:
                    self.durable = max(self.durable, index)
                self._job = None
                self._cv.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise AuditError(f"fdatasync of the audit log failed: {err.strerror}",
                             hint="the disk holding $GUARD_HOME/log is failing or full") from err

    def submit(self, fd: int, index: int) -> None:
        with self._cv:
            while self._job is not None:
                self._cv.wait()
            self._raise()
            self._job = (fd, index)
            self._cv.notify_all()

    def drain(self) -> None:
        with self._cv:
            while self._job is not None:
                self._cv.wait()
            self._raise()

    def mark(self, index: int) -> None:
        with self._cv:
            self.durable = max(self.durable, index)

    def stop(self) -> int:
        with self._cv:
            while self._job is not None:
                self._cv.wait()
            self._stopping = True
            self._cv.notify_all()
        self._thread.join()
        self._raise()
        return self.durable
