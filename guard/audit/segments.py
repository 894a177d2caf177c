"""The log on disk: segment files under $GUARD_HOME/log, read line by line in bounded chunks.

This is the I/O shell around the pure verifier: it lists segments in order and feeds their lines, so the
same replay serves `guard audit verify`, the writer's recovery on restart, `show`, `export` and `prove`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.audit.note import SignedNote, parse_note
from guard.audit.verify import LogVerifier, Prepared, Report, prepare_block
from guard.errors import AuditError, UsageError

SEGMENT_RE = re.compile(r"^seg-(\d{8})\.jsonl$")
CHUNK = 1 << 20
PARALLEL_MIN_BYTES = 8 << 20  # below this, starting worker processes costs more than it saves


def segment_name(index: int) -> str:
    return f"seg-{index:08d}.jsonl"


@dataclass(frozen=True, slots=True)
class Segment:
    index: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def list_segments(log: Path) -> list[Segment]:
    """Segment files in index order; raises UsageError if the directory cannot be read."""
    try:
        names = os.listdir(log)
    except FileNotFoundError:
        raise UsageError(f"{log}: no audit log here", hint="pass --log DIR or set GUARD_HOME") from None
    except OSError as exc:
        raise UsageError(f"{log}: cannot list the audit log: {exc.strerror}") from None
    segs = []
    for name in names:
        m = SEGMENT_RE.match(name)
        if m:
            segs.append(Segment(int(m.group(1)), log / name))
    return sorted(segs, key=lambda s: s.index)


def iter_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, bytes without newline, terminated) for each line; memory bounded by CHUNK."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally; generator
    except OSError as exc:
        raise AuditError(f"{path}: cannot read segment: {exc.strerror}") from None
    try:
        lineno = 0
        rest = b""
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            buf = rest + chunk if rest else chunk
            lines = buf.split(b"\n")
            rest = lines.pop()
            for line in lines:
                lineno += 1
                yield lineno, line, True
        if rest:
            yield lineno + 1, rest, False
    finally:
        f.close()


def iter_batches(path: Path, *, offset: int = 0,
                 first_lineno: int = 1) -> Iterator[tuple[int, list[bytes], bytes]]:
    """(first line number, complete lines, torn tail or b"") per chunk; the tail is set only at EOF.

    `offset` (the start of line `first_lineno`) lets a restart read only what follows a checkpoint.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally; generator
    except OSError as exc:
        raise AuditError(f"{path}: cannot read segment: {exc.strerror}") from None
    try:
        f.seek(offset)
        lineno = first_lineno
        rest = b""
        while chunk := f.read(CHUNK):
            lines = (rest + chunk if rest else chunk).split(b"\n")
            rest = lines.pop()
            yield lineno, lines, b""
            lineno += len(lines)
        if rest:
            yield lineno, [], rest
    finally:
        f.close()


def replay(log: Path, verifier: LogVerifier) -> LogVerifier:
    """Feed every segment of `log` to `verifier`, in order."""
    for seg in list_segments(log):
        verifier.begin_segment(seg.index, seg.name)
        for lineno, lines, torn in iter_batches(seg.path):
            if lines:
                verifier.feed_lines(lines, lineno)
            if torn:
                verifier.feed_torn(torn, lineno)
    return verifier


def replay_from(log: Path, verifier: LogVerifier, *, segment_index: int, offset: int,
                first_lineno: int) -> LogVerifier:
    """Feed `verifier` (resumed at line `first_lineno` of segment `segment_index`) from `offset` on, then
    every later segment; the writer's restart, whose cost depends on what follows its last checkpoint."""
    for seg in list_segments(log):
        if seg.index < segment_index:
            continue
        if seg.index == segment_index:
            batches = iter_batches(seg.path, offset=offset, first_lineno=first_lineno)
        else:
            verifier.begin_segment(seg.index, seg.name)
            batches = iter_batches(seg.path)
        for lineno, lines, torn in batches:
            if lines:
                verifier.feed_lines(lines, lineno)
            if torn:
                verifier.feed_torn(torn, lineno)
    return verifier


def iter_blocks(path: Path, chunk: int = CHUNK) -> Iterator[tuple[bytes, bytes]]:
    """(block of complete lines, each newline-terminated, or b""; torn tail or b"") per read; bounded."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally; generator
    except OSError as exc:
        raise AuditError(f"{path}: cannot read segment: {exc.strerror}") from None
    try:
        rest = b""
        while data := f.read(chunk):
            data = rest + data if rest else data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield data[:cut], b""
        if rest:
            yield b"", rest
    finally:
        f.close()


def scan_block(path: str, offset: int, length: int, base: int) -> Prepared:
    """A worker's job: read one block of a segment itself (no copy through a pipe) and prepare it."""
    with open(path, "rb") as f:
        f.seek(offset)
        block = f.read(length)
    return prepare_block(block, base)


def _pool_context() -> Any:
    """fork while this process has one thread (cheap: the workers start at once); spawn otherwise, since
    forking a threaded process can copy a lock some other thread holds."""
    import multiprocessing
    import threading

    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def replay_parallel(log: Path, verifier: LogVerifier, workers: int, *, chunk: int = CHUNK) -> LogVerifier:
    """`replay`, with the state-free per-line work done by `workers` processes.

    This process reads each block to cut it at a line end and count its lines, so it knows the leaf index
    every block starts at; a worker reads the same bytes, checks every line (seq == that index too),
    hashes the leaves and the subtrees they fill. The verifier still sees every block in order
    (`feed_prepared`), so findings are the serial replay's; a block the worker saw differently (the file
    changed under us) is verified here from this process's copy. Memory stays bounded: at most 2 blocks
    per worker are in flight.
    """
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor

    base = verifier.leaves
    with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        for seg in list_segments(log):
            verifier.begin_segment(seg.index, seg.name)
            blocks = iter_blocks(seg.path, chunk)
            pending: deque[tuple[bytes, bytes, int, Future[Prepared] | None]] = deque()
            lineno = 1
            offset = 0
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2 * workers:
                    item = next(blocks, None)
                    if item is None:
                        exhausted = True
                        break
                    block, torn = item
                    count = block.count(b"\n")
                    future = None
                    if block:
                        future = pool.submit(scan_block, str(seg.path), offset, len(block), base)
                        offset += len(block)
                        base += count
                    pending.append((block, torn, count, future))
                if not pending:
                    break
                block, torn, count, future = pending.popleft()
                if future is not None:
                    verifier.feed_prepared(block, future.result(), lineno, lines=count)
                    lineno += count
                if torn:
                    verifier.feed_torn(torn, lineno)
    return verifier


def default_workers(log: Path) -> int:
    """Worker processes worth starting for verifying `log`: 0 (serial) for small logs or one CPU."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpus < 2:
        return 0
    try:
        size = sum(seg.path.stat().st_size for seg in list_segments(log))
    except OSError:
        return 0
    return min(cpus, 4) if size >= PARALLEL_MIN_BYTES else 0


def verify_log(log: Path, root_public: bytes, *, witness: SignedNote | None = None,
               workers: int | None = None) -> Report:
    """Verify the whole log from the root key; `workers` > 1 spreads the per-line checks over processes
    (default: by the log's size and the CPUs available; never with a witness, which needs every line)."""
    verifier = LogVerifier(root_public, witness=witness)
    count = default_workers(log) if workers is None else workers
    if count > 1 and witness is None:
        return replay_parallel(log, verifier, count).finish()
    return replay(log, verifier).finish()


def read_witness(path: Path) -> SignedNote:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the witnessed checkpoint: {exc}") from None
    try:
        return parse_note(text, where=str(path))
    except AuditError as exc:
        raise UsageError(exc.message) from None
