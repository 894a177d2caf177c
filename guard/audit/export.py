"""Reading records back for people and SIEMs: iteration, filters, and the OCSF 1.1 mapping.

Mapping (pure): file read/write -> File System Activity (1001); exec of a binary and `run` of a command
line -> Process Activity (1007, Launch); connect/listen decisions and proxied connections -> Network
Activity (4001; a refused proxied connection is activity 5 Refuse, a listen is 99 Other: OCSF 1.1 has no
Listen activity). The verdict goes in the Security Control profile: action_id (1 Allowed, 2 Denied) and
disposition_id (1 Allowed, 2 Blocked, 17 Logged for audit-only denials that were let through).

Every event carries what OCSF 1.1 requires of its class (checked by tests/unit/audit/test_ocsf_schema.py):
an `actor` (at least the guard session, plus the process when the record names one), the `device` the
trail was written on for System Activity classes, and both endpoints for Network Activity (the source is
the sandbox: the proxy's client address, or the session when the record has none).

`Follower` streams records appended to the log from a saved cursor (the last exported seq, plus where it
was in which segment so a restart does not re-read the whole trail), for `guard audit export --follow`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.audit.canon import decode, parse_ts
from guard.audit.chain import LEAF_TYPES
from guard.audit.segments import iter_batches, list_segments
from guard.errors import UsageError
from guard.model import split_host_port
from guard.text import utf8_text

OCSF_VERSION = "1.1.0"
_FILE_ACTIVITY = {"read": (2, "Read"), "write": (3, "Update")}
_NET_ACTIVITY = {"connect": (1, "Open"), "listen": (99, "Listen")}
_REFUSE = (5, "Refuse")


def iter_records(log: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(canonical line, parsed record) for every record line (not checkpoints or certificates)."""
    for seg in list_segments(log):
        for _lineno, lines, _torn in iter_batches(seg.path):
            for data in lines:
                try:
                    obj = decode(data)
                except ValueError:
                    continue
                if isinstance(obj, dict) and obj.get("type") in LEAF_TYPES:
                    yield data, obj


def _base(record: dict[str, Any], class_uid: int, activity: tuple[int, str]) -> dict[str, Any]:
    try:
        ms = int(parse_ts(record["ts"]) * 1000)
    except (KeyError, ValueError, TypeError):
        ms = 0
    category = class_uid // 1000
    return {
        "class_uid": class_uid, "category_uid": category, "activity_id": activity[0],
        "activity_name": activity[1], "type_uid": class_uid * 100 + activity[0], "time": ms,
        "metadata": {"version": OCSF_VERSION, "profiles": ["security_control"],
                     "product": {"name": "guard", "vendor_name": "guard"}, "uid": str(record.get("seq")),
                     "correlation_uid": record.get("session")},
        "unmapped": {"guard_seq": record.get("seq"), "guard_session": record.get("session")},
    }


def _control(decision: dict[str, Any]) -> dict[str, Any]:
    verdict = decision.get("verdict")
    audit_only = bool(decision.get("audit_only"))
    if verdict == "allow":
        action_id, disposition_id, disposition, severity = 1, 1, "Allowed", 1
    elif audit_only:
        action_id, disposition_id, disposition, severity = 1, 17, "Logged", 3
    else:
        action_id, disposition_id, disposition, severity = 2, 2, "Blocked", 3
    out: dict[str, Any] = {
        "action_id": action_id, "action": "Allowed" if action_id == 1 else "Denied",
        "disposition_id": disposition_id, "disposition": disposition, "severity_id": severity,
        "status_id": 1 if action_id == 1 else 2,
        "policy": {"uid": decision.get("rule_id") or "default", "name": decision.get("rule_id") or "default",
                   "desc": utf8_text(decision.get("reason", ""))},
    }
    if verdict == "ask":
        out["message"] = "asked a human: " + utf8_text(decision.get("reason", ""))
    return out


def _process(action: Mapping[str, Any]) -> dict[str, Any]:
    proc: dict[str, Any] = {}
    if action.get("pid") is not None:
        proc["pid"] = action["pid"]
    if action.get("exe"):
        exe = utf8_text(action["exe"])
        proc["file"] = {"path": exe, "name": exe.rsplit("/", 1)[-1], "type_id": 1}
    if isinstance(action.get("argv"), list) and action["argv"]:
        proc["cmd_line"] = " ".join(utf8_text(a) for a in action["argv"])
    if action.get("cwd"):
        proc["working_directory"] = utf8_text(action["cwd"])
    return proc


def _actor(record: Mapping[str, Any], action: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """OCSF's actor needs one of process, user, invoked_by or session: the guard session is always known."""
    actor: dict[str, Any] = {"session": {"uid": str(record.get("session", ""))}, "app_name": "guard"}
    proc = _process(action) if action else {}
    if proc.get("pid") is not None:
        actor["process"] = proc
    return actor


def _source(record: Mapping[str, Any], *, inbound: bool = False) -> dict[str, Any]:
    """Where a connection came from: for the proxy, the sandbox (its client address, else the session);
    for a published port, the client on the host."""
    src: dict[str, Any] = ({"name": "host client"} if inbound else
                           {"uid": str(record.get("session", "")), "name": "guard sandbox"})
    client = record.get("client")
    if isinstance(client, str) and client:
        try:
            host, port = split_host_port(client)
        except Exception:  # a malformed client address is still worth exporting as given
            host, port = client, None
        src["ip"] = host
        if port is not None:
            src["port"] = port
    return src


def _endpoint(target: str, addresses: list[str]) -> dict[str, Any]:
    try:
        host, port = split_host_port(target)
    except Exception:  # a malformed target is still worth exporting as given
        host, port = target, None
    ep: dict[str, Any] = {"hostname": host}
    if port is not None:
        ep["port"] = port
    if addresses:
        ep["ip"] = addresses[0]
    return ep


def _connection_target(record: Mapping[str, Any]) -> str:
    host, port = record.get("host"), record.get("port")
    if isinstance(host, str) and host:
        if isinstance(port, int):
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return host
    return str(record.get("target", ""))


def to_ocsf(record: dict[str, Any], *, device: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """One record as an OCSF event, or None for record types OCSF has no class for here (session, ...).

    `device` is the host the trail was written on (System Activity classes require one); the caller knows
    it, this function reads nothing.
    """
    kind = record.get("type")
    host_device = {"type_id": 0, "type": "Unknown", **(device or {})}
    if kind == "connection":
        verdict = record.get("verdict", "allow")
        event = _base(record, 4001, _REFUSE if verdict == "deny" else (1, "Open"))
        event["dst_endpoint"] = _endpoint(utf8_text(_connection_target(record)),
                                          [utf8_text(a) for a in record.get("addresses") or []])
        if isinstance(record.get("address"), str):
            event["dst_endpoint"]["ip"] = record["address"]
        inbound = record.get("protocol") == "publish"  # a host client into a port published with --publish
        event["src_endpoint"] = _source(record, inbound=inbound)
        event["actor"] = _actor(record)
        event["connection_info"] = {"direction_id": 1 if inbound else 2,
                                    "direction": "Inbound" if inbound else "Outbound",
                                    "protocol_name": str(record.get("protocol", ""))}
        event["traffic"] = {"bytes_out": int(record.get("bytes_up") or 0),
                            "bytes_in": int(record.get("bytes_down") or 0)}
        event.update(_control(record.get("decision") or {
            "verdict": verdict, "rule_id": record.get("rule_id"), "reason": record.get("reason", ""),
            "audit_only": record.get("audit_only", False)}))
        return event
    if kind != "decision":
        return None
    action, decision = record.get("action") or {}, record.get("decision") or {}
    op, target = action.get("op"), utf8_text(action.get("target", ""))
    if op in _FILE_ACTIVITY:
        event = _base(record, 1001, _FILE_ACTIVITY[op])
        event["file"] = {"path": target, "name": target.rsplit("/", 1)[-1] or target, "type_id": 0}
        event["actor"] = _actor(record, action)
        event["device"] = host_device
    elif op in ("exec", "run"):
        event = _base(record, 1007, (1, "Launch"))
        proc = _process(action)
        if op == "exec":
            proc["file"] = {"path": target, "name": target.rsplit("/", 1)[-1] or target, "type_id": 1}
        else:
            proc["cmd_line"] = target
        if proc.get("pid") is None:  # OCSF's process needs a pid or a uid; the record has no pid
            proc["uid"] = f"{record.get('session')}:{record.get('seq')}"
        event["process"] = proc
        event["actor"] = _actor(record, {"pid": action["pid"]} if action.get("pid") is not None else None)
        event["device"] = host_device
    elif op in _NET_ACTIVITY:
        event = _base(record, 4001, _NET_ACTIVITY[op])
        event["dst_endpoint"] = _endpoint(target, [utf8_text(a) for a in action.get("addresses") or []])
        event["src_endpoint"] = _source(record)
        event["actor"] = _actor(record, action)
    else:
        return None
    event.update(_control(decision))
    return event


# -- following the log ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cursor:
    """Where an export stopped: the last exported record's seq, and the byte offset just past it in its
    segment (a hint: a restart seeks there instead of re-reading the trail, and falls back to a full
    scan, still skipping seq <= `seq`, when the hint does not fit the log any more)."""

    seq: int = 0
    segment: int | None = None
    offset: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"seq": self.seq, "segment": self.segment, "offset": self.offset}).encode() + b"\n"


def read_cursor(path: Path) -> Cursor:
    """The saved cursor, or the start when the file does not exist; a damaged cursor is an error."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Cursor()
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the export cursor: {exc}",
                         hint="fix or remove it (removing it exports everything again)") from None
    seq, segment, offset = data.get("seq"), data.get("segment"), data.get("offset", 0)
    if not isinstance(seq, int) or seq < 0 or not (segment is None or isinstance(segment, int)) \
            or not isinstance(offset, int) or offset < 0:
        raise UsageError(f"{path}: not an export cursor (expected seq, segment, offset)",
                         hint="fix or remove it (removing it exports everything again)")
    return Cursor(seq, segment, offset)


def write_cursor(path: Path, cursor: Cursor) -> None:
    """Replace the cursor atomically and durably: a crash leaves the old one or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, cursor.to_json())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot save the export cursor: {exc.strerror}") from None


class Follower:
    """Reads records appended to a log after a cursor, in order, each exactly once per Follower.

    Only complete lines are consumed (a line being appended is left for the next poll); records with a
    seq at or below the cursor are skipped, so a stale offset hint can repeat nothing.
    """

    def __init__(self, log: Path, cursor: Cursor) -> None:
        self._log = log
        self.cursor = cursor
        self._segment, self._offset = self._start(cursor)

    def _start(self, cursor: Cursor) -> tuple[int, int]:
        segments = list_segments(self._log)
        if not segments:
            return 0, 0
        if cursor.segment is not None:
            match = next((s for s in segments if s.index == cursor.segment), None)
            if match is not None and match.path.stat().st_size >= cursor.offset:
                return cursor.segment, cursor.offset
        return segments[0].index, 0

    def poll(self) -> list[tuple[bytes, dict[str, Any]]]:
        """Every complete record line appended since the last poll (may be empty)."""
        out: list[tuple[bytes, dict[str, Any]]] = []
        for seg in list_segments(self._log):
            if seg.index < self._segment:
                continue
            if seg.index > self._segment:
                self._segment, self._offset = seg.index, 0
            try:
                with open(seg.path, "rb") as f:
                    f.seek(self._offset)
                    chunk = f.read()
            except OSError:
                break
            end = chunk.rfind(b"\n")
            if end < 0:
                break
            for data in chunk[:end].split(b"\n"):
                self._take(data, out)
            self._offset += end + 1
        if out:
            last = out[-1][1]
            self.cursor = Cursor(int(last["seq"]), self._segment, self._offset)
        elif self.cursor.segment != self._segment or self.cursor.offset != self._offset:
            self.cursor = Cursor(self.cursor.seq, self._segment, self._offset)
        return out

    def _take(self, data: bytes, out: list[tuple[bytes, dict[str, Any]]]) -> None:
        try:
            obj = decode(data)
        except ValueError:
            return
        if not isinstance(obj, dict) or obj.get("type") not in LEAF_TYPES:
            return
        seq = obj.get("seq")
        if isinstance(seq, int) and seq > self.cursor.seq and (not out or seq > out[-1][1]["seq"]):
            out.append((data, obj))
