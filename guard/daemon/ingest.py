"""The daemon's side of session spools (guard.spool): ingest them into the signed trail, exactly once.

Live path: `guard run` appends records to its spool, then asks `spool.ingest`; the daemon reads the new
complete lines, appends each to the trail (with `spool: n`, the record's number in the session), hands
the lines to the OS (`AuditWriter.tick`) and only then answers with the last `n`: from that moment the
records are in the trail's file and a crash of any guard process cannot lose them. The acknowledged
position is also kept in `<session>.ack` next to the spool.

Restart path: a spool whose writer no longer holds its lock belongs to a `guard run` that is gone; the
daemon ingests what is left and ends the session in the trail (with the exit status `guard run` wrote in
its end marker, or "guard run died"). Only after the trail is sealed and synced is the spool removed.

Exactly once: the ack file may lag the trail (the daemon can die between the two writes), so before
ingesting a spool it has no state for, the daemon looks in the trail after the acknowledged record for
records of that session that were appended later, and starts after the highest `spool` number it finds.
That scan starts at the last ack, so its cost does not grow with the trail.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from guard.audit import decision_event, session_event
from guard.audit.segments import iter_lines, list_segments
from guard.daemon import protocol as p
from guard.errors import GuardError
from guard.home import ensure_private_dir, log_dir
from guard.model import Verdict
from guard.spool import (
    ACK_SUFFIX,
    SPOOL_SUFFIX,
    SpoolError,
    list_spools,
    read_spool,
    spool_dir,
    spool_path,
    writer_alive,
)

log = logging.getLogger(__name__)

# Lifecycle notes a session may spool about itself (the trail must say when and why the agent was paused).
SESSION_NOTES = frozenset({"paused", "resumed", "stalled"})
END_MARKER = "end"
DONE_SUFFIX = ".done"
_READ_LIMIT = 8 << 20  # bytes of spool read per ingest call; the session asks again for the rest


@dataclass
class IngestResult:
    acked: int  # the session's last record now in the trail
    verdicts: list[Verdict] = field(default_factory=list)  # enforced verdicts of the decisions ingested
    end: dict[str, Any] | None = None  # the end marker, once it has been read
    partial: int = 0  # bytes of an unfinished last line (torn, if the writer is gone)
    more: bool = False  # the read stopped at its limit: ask again
    damaged: str | None = None  # a line that is not a spool record stopped the read: why


@dataclass
class _State:
    offset: int  # bytes of the spool consumed
    n: int  # last record number in the trail
    trail_seq: int  # the trail seq of that record (or of the session's start)
    end: dict[str, Any] | None = None
    damaged: str | None = None


class SpoolIngest:
    """Owned by the daemon, driven from its event loop; `writer` is its AuditWriter."""

    def __init__(self, home: Path, writer: Any) -> None:
        self.home = home
        self._writer = writer
        self._states: dict[str, _State] = {}
        self._retired: list[tuple[int, Path]] = []  # (lines a synced checkpoint must cover, retired spool)
        ensure_private_dir(spool_dir(home))
        self.drop_retired_leftovers()

    # ---- live sessions -----------------------------------------------------------------------------

    def opened(self, session: str, start_seq: int) -> None:
        """A new session's start record is at `start_seq`: nothing of its spool is in the trail yet."""
        self._states[session] = _State(offset=0, n=0, trail_seq=start_seq)
        self._save(session)

    def has_spool(self, session: str) -> bool:
        return spool_path(self.home, session).exists()

    def ingest(self, session: str) -> IngestResult:
        """Append the spool's new complete lines to the trail and hand them to the OS; -> what was done."""
        path = spool_path(self.home, session)
        state = self._state(session)
        read = read_spool(path, state.offset, limit=_READ_LIMIT)
        result = IngestResult(acked=state.n, partial=read.partial,
                              more=read.damaged is None and read.partial == 0 and read.offset < _size(path))
        last_seq = None
        for line in read.lines:
            if line.n <= state.n:
                continue  # already in the trail (an earlier daemon appended it before it could ack)
            if line.n != state.n + 1:
                gap = session_event(session, "spool_gap", expected=state.n + 1, found=line.n)
                last_seq = self._append(gap)
            last_seq = self._append_line(session, line.n, line.record, result) or last_seq
            state.n = line.n
        marker_read = state.end is not None and state.offset != read.offset
        state.offset = read.offset
        if read.damaged is not None and state.damaged is None:
            state.damaged = read.damaged
            last_seq = self._append(session_event(session, "spool_damaged", offset=read.offset,
                                                  error=read.damaged))
            log.error("session %s: %s", session, read.damaged)
        if last_seq is not None or marker_read:
            if last_seq is not None:
                state.trail_seq = last_seq
            self._writer.tick()  # the lines are in the trail's file before we acknowledge them
            self._save(session)
        result.acked = state.n
        result.end = state.end
        result.damaged = state.damaged
        return result

    def _append_line(self, session: str, n: int, record: dict[str, Any], result: IngestResult) -> int | None:
        shaped = p.trail_decision(record)
        if shaped is not None:  # the common record, already in the trail's shape (what decision_event makes)
            action, decision, enforced = shaped
            result.verdicts.append(enforced)
            return self._append({"source": "client", "spool": n, "type": "decision", "session": session,
                                 "action": action, "decision": decision})
        kind = record.get("type")
        if kind == END_MARKER:
            fields = {k: v for k, v in record.items() if k != "type"}
            self._state(session).end = fields
            return None
        if kind == "session":
            note = record.get("event")
            reason = record.get("reason")
            known = set(record) <= {"type", "event", "reason"}
            if note in SESSION_NOTES and isinstance(reason, str) and known:
                return self._append(session_event(session, note, reason=reason, spool=n))
            return self._append(session_event(session, "spool_rejected", spool=n,
                                              error="not a session note this daemon knows"))
        try:
            kind, fields = p.parse_record_event(record)
        except p.RequestError as exc:
            return self._append(session_event(session, "spool_rejected", spool=n, error=exc.message))
        if kind == "decision":
            result.verdicts.append(fields["decision"].enforced)
            return self._append(decision_event(session, fields["action"], fields["decision"], source="client",
                                               spool=n))
        return self._append({"type": kind, "session": session, **fields, "spool": n})

    def _append(self, record: Mapping[str, Any]) -> int:
        return int(self._writer.append(record))

    def finish(self, session: str) -> None:
        """The session has ended in the trail: retire its spool now, remove it once the trail is synced.

        The spool is renamed `<session>.jsonl.done` at once (no sweep may take it for abandoned and end
        the session twice) and deleted by `reap()` when the checkpoint covering the end record has been
        fdatasynced, so nobody waits for the disk here.
        """
        path = spool_path(self.home, session)
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + ACK_SUFFIX).unlink()
        self._states.pop(session, None)
        self._writer.seal()  # now the trail's last line is a checkpoint covering every line before it
        done = path.with_name(path.name + DONE_SUFFIX)
        try:
            os.replace(path, done)
        except FileNotFoundError:
            return
        self._retired.append((int(self._writer.size) - 1, done))

    def reap(self) -> None:
        """Delete the retired spools whose session end is now covered by a synced checkpoint."""
        durable = int(self._writer.sealed_size)
        keep = []
        for size, done in self._retired:
            if size <= durable:
                with contextlib.suppress(FileNotFoundError):
                    done.unlink()
            else:
                keep.append((size, done))
        self._retired = keep

    def drop_retired_leftovers(self) -> None:
        """At start: spools retired by an earlier daemon that died before deleting them (their session's
        end is in the trail, which the writer has just recovered and sealed)."""
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(spool_dir(self.home)):
                if name.endswith(SPOOL_SUFFIX + DONE_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        (spool_dir(self.home) / name).unlink()

    def forget(self, session: str) -> None:
        """The session left this daemon but its `guard run` lives on (it will resume or be found later)."""
        self._states.pop(session, None)

    def writer_alive(self, session: str) -> bool:
        return writer_alive(spool_path(self.home, session))

    # ---- spools whose guard run is gone ----------------------------------------------------------

    def abandoned(self, active: set[str]) -> list[str]:
        """Sessions not open here whose spool no `guard run` holds any more."""
        return [s for s, path in list_spools(self.home) if s not in active and not writer_alive(path)]

    def finish_abandoned(self, session: str) -> dict[str, Any]:
        """Ingest everything left of an abandoned spool, end the session in the trail, remove the spool.

        -> the end record's fields. The end marker, when `guard run` got to write it, supplies the exit
        status and summary; without it the session ended because `guard run` died.
        """
        counts = {"allowed": 0, "denied": 0}
        partial = 0
        while True:
            result = self.ingest(session)
            for verdict in result.verdicts:
                counts["allowed" if verdict is Verdict.ALLOW else "denied"] += 1
            partial = result.partial
            if not result.more:
                break
        end = dict(result.end or {})
        fields: dict[str, Any] = {"counts_ingested": counts}
        if result.damaged is not None:  # keep the damaged spool as evidence, out of the way of the sweep
            path = spool_path(self.home, session)
            kept = path.with_name(path.name + ".damaged")
            os.replace(path, kept)
            fields["damaged"] = result.damaged
            fields["kept"] = str(kept)
        if end:
            fields["status"] = str(end.get("status", "closed"))
            for key in ("exit_status", "summary", "reason"):
                if key in end:
                    fields[key] = end[key]
            fields["recovered"] = "the daemon ingested the spool after guard run had ended"
        else:
            fields["status"] = "lost"
            # no end marker: guard run was killed, or could not write it (its disk full, as the trail's)
            fields["reason"] = ("guard run died or could not write its end marker (a full disk?); its spool "
                                "was ingested by the daemon")
        if partial:
            # a record whose write(2) was cut short: its decide() never returned, so it was never allowed
            fields["torn_bytes"] = partial
        self._append(session_event(session, "end", **fields))
        self.finish(session)
        return fields

    # ---- state --------------------------------------------------------------------------------------

    def _state(self, session: str) -> _State:
        state = self._states.get(session)
        if state is None:
            state = self._load(session)
            self._states[session] = state
        return state

    def _ack_path(self, session: str) -> Path:
        path = spool_path(self.home, session)
        return path.with_name(path.name + ACK_SUFFIX)

    def _save(self, session: str) -> None:
        state = self._states[session]
        path = self._ack_path(session)
        tmp = path.with_name(path.name + ".tmp")
        data = orjson.dumps({"offset": state.offset, "n": state.n, "trail_seq": state.trail_seq,
                             "end": state.end})
        try:  # only a shortcut for a restart (the trail is searched past a stale ack): a failure is no loss
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(28, "short write")
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("session %s: cannot save the spool's ack (%s); a restart searches the trail further",
                        session, exc.strerror or exc)

    def _load(self, session: str) -> _State:
        """This daemon has no state for the session (it restarted): the ack file, then the trail after it."""
        state = _State(offset=0, n=0, trail_seq=-1)
        try:
            saved = orjson.loads(self._ack_path(session).read_bytes())
            state = _State(offset=int(saved["offset"]), n=int(saved["n"]), trail_seq=int(saved["trail_seq"]),
                           end=saved.get("end") if isinstance(saved.get("end"), dict) else None)
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            log.warning("session %s: unreadable ack file (%s): searching the whole trail", session, exc)
        found = highest_spooled(log_dir(self.home), session, after_seq=state.trail_seq)
        if found is not None and found[0] > state.n:
            state.n, state.trail_seq = found
            # the offset stays at the last ack: lines up to `n` are skipped by number
        return state


def highest_spooled(log: Path, session: str, *, after_seq: int) -> tuple[int, int] | None:
    """(highest `spool` number, its trail seq) among the session's records after trail seq `after_seq`.

    Reads only the segments that can hold records after `after_seq` (newest first until one starts at or
    before it), so the cost is bounded by how far the ack lagged, not by the size of the trail.
    """
    try:
        segments = list_segments(log)
    except GuardError:
        return None
    chosen = []
    for seg in reversed(segments):
        chosen.append(seg)
        first = _first_seq(seg.path)
        if first is not None and first <= after_seq:
            break
    needle = b'"session":' + orjson.dumps(session)
    best: tuple[int, int] | None = None
    for seg in reversed(chosen):
        for _lineno, line, terminated in iter_lines(seg.path):
            if not terminated or needle not in line or b'"spool":' not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                seq, n = record.get("seq"), record.get("spool")
                if (record.get("session") == session and isinstance(seq, int) and seq > after_seq
                        and isinstance(n, int) and (best is None or n > best[0])):
                    best = (n, seq)
    return best


def _first_seq(path: Path) -> int | None:
    for _lineno, line, _terminated in iter_lines(path):
        with contextlib.suppress(orjson.JSONDecodeError):
            seq = orjson.loads(line).get("seq")
            return seq if isinstance(seq, int) else None
        return None
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


__all__ = ["IngestResult", "SpoolError", "SpoolIngest", "highest_spooled"]
