"""Reading records back for people and SIEMs: iteration, filters, and the OCSF 1.1 mapping.

Mapping (pure): file read/write -> File System Activity (1001); exec of a binary and `run` of a command
line -> Process Activity (1007, Launch); connect/listen decisions and proxied connections -> Network
Activity (4001). The verdict goes in the Security Control profile: action_id (1 Allowed, 2 Denied) and
disposition_id (1 Allowed, 2 Blocked, 17 Logged for audit-only denials that were let through).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from guard.audit.canon import decode, parse_ts
from guard.audit.chain import LEAF_TYPES
from guard.audit.segments import iter_batches, list_segments
from guard.model import split_host_port
from guard.text import utf8_text

OCSF_VERSION = "1.1.0"
_FILE_ACTIVITY = {"read": (2, "Read"), "write": (3, "Update")}
_NET_ACTIVITY = {"connect": (1, "Open"), "listen": (7, "Listen")}


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


def _process(action: dict[str, Any]) -> dict[str, Any]:
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


def to_ocsf(record: dict[str, Any]) -> dict[str, Any] | None:
    """One record as an OCSF event, or None for record types OCSF has no class for here (session, ...)."""
    kind = record.get("type")
    if kind == "connection":
        event = _base(record, 4001, (1, "Open"))
        event["dst_endpoint"] = _endpoint(utf8_text(record.get("target", "")),
                                          [utf8_text(a) for a in record.get("addresses") or []])
        event["connection_info"] = {"direction_id": 2, "direction": "Outbound"}
        event.update(_control(record.get("decision") or {"verdict": record.get("verdict", "allow")}))
        return event
    if kind != "decision":
        return None
    action, decision = record.get("action") or {}, record.get("decision") or {}
    op, target = action.get("op"), utf8_text(action.get("target", ""))
    actor = {"process": _process(action)}
    if op in _FILE_ACTIVITY:
        event = _base(record, 1001, _FILE_ACTIVITY[op])
        event["file"] = {"path": target, "name": target.rsplit("/", 1)[-1], "type_id": 0}
        event["actor"] = actor
    elif op in ("exec", "run"):
        event = _base(record, 1007, (1, "Launch"))
        proc = _process(action)
        if op == "exec":
            proc["file"] = {"path": target, "name": target.rsplit("/", 1)[-1], "type_id": 1}
        else:
            proc["cmd_line"] = target
        event["process"] = proc
        event["actor"] = {"process": {"pid": action["pid"]}} if action.get("pid") is not None else {}
    elif op in _NET_ACTIVITY:
        event = _base(record, 4001, _NET_ACTIVITY[op])
        event["dst_endpoint"] = _endpoint(target, [utf8_text(a) for a in action.get("addresses") or []])
        event["actor"] = actor
    else:
        return None
    event.update(_control(decision))
    return event
