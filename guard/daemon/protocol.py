"""The daemon's wire format: one JSON object per line, validated here and nowhere else.

Everything that arrives on the socket is hostile until this module has said otherwise, so parsing is a
pure function from bytes to a frozen `Request` (or a `RequestError` naming the bad field). The server
never looks at raw JSON, and docs/protocol.md documents exactly the table below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from guard.errors import GuardError, ProtocolError
from guard.model import Action, Decision, Op, Verdict
from guard.text import from_record, record_json

# The protocol number: bumped whenever a request, a reply or what an acknowledgement means changes.
# 2: `hello` is the handshake (answered whatever the envelope's version), replies to recording ops are sent
#    only after the records are written, `audit_failed` and `starting` exist.
VERSION = 2
MAX_LINE = 1 << 20  # bytes, newline excluded
MAX_ID_LEN = 128
_MAX_INT = 2**53 - 1

# Error codes a reply may carry; clients branch on these, people read the message.
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
BAD_VERSION = "bad_version"
UNKNOWN_OP = "unknown_op"
TOO_LARGE = "too_large"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
POLICY = "policy"
BUSY = "busy"
SHUTTING_DOWN = "shutting_down"
AUDIT_FAILED = "audit_failed"  # the trail cannot be written: nothing is recorded, stop acting
INTERNAL = "internal"

RequestId = int | str | None


class RequestError(ProtocolError):
    """A request the daemon refuses; `code` is the machine-readable reason sent back to the peer."""

    def __init__(self, code: str, message: str, *, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request: `args` holds exactly the op's fields, already converted (actions, verdicts)."""

    id: int | str
    op: str
    args: Mapping[str, Any]


_Check = Callable[[str, Any], Any]


def _str(name: str, value: Any) -> str:
    if isinstance(value, dict):  # a non-UTF-8 string (a path, an argv word) in its tagged form
        try:
            return from_record(value)
        except ValueError as exc:
            raise _field(name, f"expected a string ({exc})") from None
    if not isinstance(value, str):
        raise _field(name, "expected a string")
    return value


def _nonempty_str(name: str, value: Any) -> str:
    value = _str(name, value) if isinstance(value, dict) else value
    if not isinstance(value, str) or not value:
        raise _field(name, "expected a non-empty string")
    if "\x00" in value:
        raise _field(name, "must not contain NUL")
    return value


def _abs_path(name: str, value: Any) -> str:
    text = _nonempty_str(name, value)
    if not text.startswith("/"):
        raise _field(name, "expected an absolute path")
    return text


def _int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _field(name, "expected an integer")
    if not -_MAX_INT <= value <= _MAX_INT:  # what the trail can hold (docs/audit-format.md 2.1)
        raise _field(name, "integer beyond 53 bits")
    return value


def _opt_int(name: str, value: Any) -> int | None:
    return None if value is None else _int(name, value)


def _env_map(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _field(name, "expected an object of strings")
    return {key: _str(f"{name}.{key}", item) for key, item in value.items()}


MAX_BATCH = 1000


def _object_list(name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _field(name, "expected a non-empty list of objects")
    if len(value) > MAX_BATCH:
        raise _field(name, f"at most {MAX_BATCH} events per batch, got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _field(f"{name}[{i}]", "expected an object")
    return value


def _str_list(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _field(name, "expected a list of strings")
    return tuple(_str(f"{name}[{i}]", item) for i, item in enumerate(value))


def _object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _field(name, "expected an object")
    return value


_SUMMARY_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _summary(name: str, value: Any) -> dict[str, Any] | None:
    """A session's own summary goes into its end record, so it must be recordable as given: a flat object of
    lower-case ASCII names to integers (within 53 bits), strings, booleans or null; no floats."""
    if value is None:
        return None
    data = _object(name, value)
    if len(data) > 64:
        raise _field(name, "at most 64 fields")
    for key, item in data.items():
        if not isinstance(key, str) or not _SUMMARY_KEY.fullmatch(key):
            raise _field(f"{name}.{str(key)[:64]}", "expected a lower-case ASCII name")
        if isinstance(item, int) and not isinstance(item, bool) and not -_MAX_INT <= item <= _MAX_INT:
            raise _field(f"{name}.{key}", "integer beyond 53 bits")
        if not (item is None or isinstance(item, str | int)):  # bool is an int
            raise _field(f"{name}.{key}", "expected an integer, a string, a boolean or null (no floats)")
    return dict(data)


def _action(name: str, value: Any) -> Action:
    data = _object(name, value)
    try:
        return Action.from_dict(data)
    except GuardError as exc:  # the model names the sub-field, e.g. "action.op: ..."
        raise RequestError(BAD_REQUEST, f"field {exc.message}") from None


def _ask_decision(name: str, value: Any) -> Decision | None:
    if value is None:
        return None
    try:
        decision = Decision.from_dict(_object(name, value))
    except GuardError as exc:
        raise RequestError(BAD_REQUEST, f"field {name}.{exc.message}") from None
    if decision.verdict is not Verdict.ASK or decision.audit_only:
        raise _field(name, "only an enforced `ask` is held for a human; record other decisions")
    return decision


def _verdict(name: str, value: Any) -> Verdict:
    if value not in (Verdict.ALLOW.value, Verdict.DENY.value):
        raise _field(name, "expected 'allow' or 'deny'")
    return Verdict(value)


def _field(name: str, problem: str) -> RequestError:
    return RequestError(BAD_REQUEST, f"field {name!r}: {problem}")


@dataclass(frozen=True, slots=True)
class _Field:
    check: _Check
    required: bool = True
    default: Any = None


# op -> its fields. Anything not listed is refused, so a typo is an error, not a silently ignored field.
OPS: dict[str, dict[str, _Field]] = {
    # the handshake, first on every connection: the client says who it is, the reply says the daemon's
    # version, protocol and whether it is ready (it answers while it still recovers its trail)
    "hello": {
        "client": _Field(_object, required=False, default=None),
    },
    "status": {},
    "shutdown": {},
    "ready": {},  # answered once the daemon has recovered its trail (or with the error that stopped it)
    "session.open": {
        "policy": _Field(_nonempty_str),
        "workspace": _Field(_abs_path),
        "argv": _Field(_str_list, required=False, default=()),
        "cwd": _Field(_abs_path, required=False),
        "pid": _Field(_opt_int, required=False),
        # the client's values of the variables the policy reads (HOME, TMPDIR, ${env:NAME}), so the daemon
        # compiles the same policy the client built its sandbox from
        "env": _Field(_env_map, required=False),
        # reattach to a session whose guard run lives on (its spool is held) after a daemon restart
        "resume": _Field(_nonempty_str, required=False),
    },
    "decide": {
        "session": _Field(_nonempty_str),
        "action": _Field(_action),
        # the session's own `ask` (it decided with context the daemon lacks: what existed at launch); the
        # daemon holds it for a human as given instead of deciding again
        "decision": _Field(_ask_decision, required=False, default=None),
    },
    "record": {
        "session": _Field(_nonempty_str),
        "event": _Field(_object),
    },
    # decisions a session made itself (guard run decides locally and streams its records in batches)
    "record.batch": {
        "session": _Field(_nonempty_str),
        "events": _Field(_object_list),
    },
    # ingest the session's spool (guard.spool) into the trail; the reply acknowledges up to `acked`
    "spool.ingest": {
        "session": _Field(_nonempty_str),
    },
    "session.close": {
        "session": _Field(_nonempty_str),
        "exit_status": _Field(_opt_int, required=False),
        "summary": _Field(_summary, required=False, default=None),
    },
    "approvals.list": {},
    "approvals.decide": {
        "approval": _Field(_nonempty_str),
        "verdict": _Field(_verdict),
        "by": _Field(_str, required=False, default=""),
    },
    "approvals.watch": {},
}

_ENVELOPE = frozenset({"v", "id", "op"})


def parse_request(line: bytes) -> Request:
    """Bytes of one line (without the newline) -> a validated Request, or RequestError naming the field."""
    if len(line) > MAX_LINE:
        raise RequestError(TOO_LARGE, f"line of {len(line)} bytes exceeds the limit of {MAX_LINE}")
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RequestError(BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(BAD_REQUEST, f"expected a JSON object, got {type(data).__name__}")
    request_id = data.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        raise RequestError(BAD_REQUEST, "field 'id': expected a string or an integer")
    if isinstance(request_id, str) and len(request_id) > MAX_ID_LEN:
        raise RequestError(BAD_REQUEST, f"field 'id': longer than {MAX_ID_LEN} characters")
    try:
        return _parse_body(data, request_id)
    except RequestError as exc:
        exc.request_id = request_id
        raise


def _parse_body(data: dict[str, Any], request_id: int | str) -> Request:
    version = data.get("v")
    op = data.get("op")
    if op == "hello" and type(version) is int:
        # every protocol version answers a hello, so a client can tell which daemon it reached
        return Request(id=request_id, op="hello",
                       args={"client": data.get("client") if isinstance(data.get("client"), dict) else None,
                             "v": version})
    if version != VERSION or isinstance(version, bool):
        raise RequestError(BAD_VERSION, f"field 'v': this daemon speaks protocol version {VERSION}, "
                                        f"got {version!r}; client and daemon are different guard versions")
    if not isinstance(op, str):
        raise _field("op", "expected a string")
    spec = OPS.get(op)
    if spec is None:
        raise RequestError(UNKNOWN_OP, f"field 'op': unknown operation {op[:64]!r}; "
                                       f"known: {', '.join(sorted(OPS))}")
    for key in data:
        if key not in _ENVELOPE and key not in spec:
            raise _field(str(key)[:64], f"not a field of {op!r}")
    args: dict[str, Any] = {}
    for name, field in spec.items():
        if name in data:
            args[name] = field.check(name, data[name])
        elif field.required:
            raise _field(name, f"required by {op!r}")
        else:
            args[name] = field.default
    return Request(id=request_id, op=op, args=args)


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a line, newline included. Strings that are not valid UTF-8 (paths, argv, environment
    values in file-system form) travel in the trail's tagged form, which the field checks here accept."""
    return record_json(message) + b"\n"


def ok_reply(request_id: RequestId, result: Mapping[str, Any]) -> bytes:
    return encode({"v": VERSION, "id": request_id, "ok": True, "result": result})


def error_reply(request_id: RequestId, code: str, message: str) -> bytes:
    return encode({"v": VERSION, "id": request_id, "ok": False, "error": {"code": code, "message": message}})


def request_line(request_id: int | str, op: str, fields: Mapping[str, Any]) -> bytes:
    """What a client sends; the inverse of `parse_request`."""
    return encode({"v": VERSION, "id": request_id, "op": op, **fields})


def parse_reply(line: bytes) -> dict[str, Any]:
    """A client's view of one line from the daemon: a reply (with `id`) or a pushed event."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"daemon sent a line that is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ProtocolError(f"daemon sent an unexpected message (protocol v{VERSION} expected)")
    if "ok" not in data or not isinstance(data["ok"], bool):
        raise ProtocolError("daemon reply lacks a boolean 'ok'")
    return data


# `record` accepts events decided elsewhere. The daemon owns session and approval records, so clients may
# only add these types, each with a fixed set of typed fields (the trail's schema stays the daemon's).
# The connection fields are those of guard.net.records.ConnectionRecord.to_dict().
_CONNECTION_FIELDS: dict[str, _Check] = {
    "protocol": lambda name, value: _nonempty_str(name, value),
    "client": lambda name, value: _str(name, value),
    "host": lambda name, value: _opt_str(name, value),
    "port": lambda name, value: _opt_port(name, value),
    "addresses": _str_list,
    "address": lambda name, value: _opt_str(name, value),
    "verdict": lambda name, value: _any_verdict(name, value),
    "rule_id": lambda name, value: _opt_str(name, value),
    "reason": _str,
    "bytes_up": lambda name, value: _nonneg(name, value),
    "bytes_down": lambda name, value: _nonneg(name, value),
    "duration_ms": lambda name, value: _nonneg(name, value),
    "audit_only": lambda name, value: _bool(name, value),
    "error": lambda name, value: _opt_str(name, value),
    "pid": _int,
}
_CONNECTION_REQUIRED = ("protocol", "verdict")
RECORD_TYPES = ("connection", "decision", "intent")


def _any_verdict(name: str, value: Any) -> str:
    if value not in {v.value for v in Verdict}:
        raise _field(name, "expected 'allow', 'ask' or 'deny'")
    return str(value)


def _opt_str(name: str, value: Any) -> str | None:
    return None if value is None else _str(name, value)


def _opt_port(name: str, value: Any) -> int | None:
    if value is None:
        return None
    port = _int(name, value)
    if not 0 <= port <= 65535:
        raise _field(name, "expected a port number 0-65535")
    return port


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _field(name, "expected true or false")
    return value


def _nonneg(name: str, value: Any) -> int:
    number = _int(name, value)
    if number < 0:
        raise _field(name, "expected a non-negative integer")
    return number


def _short_str(name: str, value: Any) -> str:
    text = _str(name, value)
    if len(text) > 4096:
        raise _field(name, "longer than 4096 characters")
    return text


def _actions(name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > 64:
        raise _field(name, "expected a list of at most 64 actions")
    return [_action(f"{name}[{i}]", a).to_dict() for i, a in enumerate(value)]


# An agent's stated tool call (guard hook): its claim, recorded beside the decisions that enforce.
_INTENT_FIELDS: dict[str, Any] = {
    "agent": _short_str, "event": _short_str, "phase": _short_str, "tool": _short_str,
    "summary": _short_str, "verdict": _any_verdict, "actions": _actions, "tool_use_id": _short_str,
    "agent_session": _short_str, "rule_id": _opt_str, "reason": _short_str, "prompt_sha256": _short_str,
    "prompt_chars": _nonneg,
}


def _intent_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in event.items():
        if key == "type":
            continue
        check = _INTENT_FIELDS.get(key) if isinstance(key, str) else None
        if check is None:
            raise _field(f"event.{str(key)[:64]}", "not a field of an intent record")
        fields[key] = check(f"event.{key}", value)
    for required in ("agent", "event", "tool", "verdict"):
        if required not in fields:
            raise _field(f"event.{required}", "required by an intent record")
    return fields


_OP_KIND_TEXT = {op.value: op.kind.value for op in Op}
_VERDICT_OF = {v.value: v for v in Verdict}
_ACTION_KEYS = frozenset({"kind", "op", "target", "pid", "exe", "argv", "cwd", "addresses"})
_DECISION_KEYS = frozenset({"verdict", "rule_id", "reason", "audit_only"})


def trail_decision(event: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Verdict] | None:
    """A decision record in the one shape `guard run` writes -> its `action` and `decision` as the trail
    records them, and the enforced verdict; None for anything else, which `parse_record_event` then
    judges (and names what is wrong).

    Why: the daemon ingests every record of every session, and the general path builds an Action and a
    Decision only to render them back into the dicts they came from (about half of the daemon's time per
    record). Taken here only when every string is ASCII (so it is its own recorded form), every key is one
    the model knows and every value has the model's own type; the result is then exactly what
    `parse_record_event` and `to_dict` give (tests/unit/daemon/test_trail_decision.py compares both on
    generated records, valid and not).
    """
    if type(event) is not dict or len(event) != 3 or event.get("type") != "decision":
        return None
    action, decision = event.get("action"), event.get("decision")
    if type(action) is not dict or type(decision) is not dict:
        return None
    if not _ACTION_KEYS.issuperset(action) or not _DECISION_KEYS.issuperset(decision):
        return None
    op, target = action.get("op"), action.get("target")
    if type(op) is not str or type(target) is not str or not target or not target.isascii():
        return None
    kind = _OP_KIND_TEXT.get(op)
    if kind is None:
        return None
    out: dict[str, Any] = {"kind": kind, "op": op, "target": target}
    pid = action.get("pid")
    if pid is not None:
        if type(pid) is not int or not 0 <= pid <= _MAX_INT:
            return None
        out["pid"] = pid
    for key in ("exe", "cwd"):
        text = action.get(key)
        if text is not None:
            if type(text) is not str or not text.isascii():
                return None
            out[key] = text
    for key in ("argv", "addresses"):
        if key in action:
            words = action[key]
            if type(words) is not list or not all(type(w) is str and w.isascii() for w in words):
                return None
            if words or key == "argv":  # an empty address list is omitted, an empty argv kept
                out[key] = list(words)
    verdict_text = decision.get("verdict")
    verdict = _VERDICT_OF.get(verdict_text) if type(verdict_text) is str else None
    rule_id, reason = decision.get("rule_id"), decision.get("reason", "")
    audit_only = decision.get("audit_only", False)
    if verdict is None or type(reason) is not str or not reason.isascii() or type(audit_only) is not bool:
        return None
    if rule_id is not None and type(rule_id) is not str:
        return None
    shaped = {"verdict": verdict.value, "rule_id": rule_id, "reason": reason, "audit_only": audit_only}
    return out, shaped, Verdict.ALLOW if audit_only else verdict


def parse_record_event(event: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate the `event` of a `record` request -> (type, fields to record), naming any bad field.

    For "connection" the fields are returned as given (validated); for "decision" they are the parsed
    `action` and `decision`, which the daemon re-encodes in the trail's canonical shape.
    """
    kind = event.get("type")
    if kind not in RECORD_TYPES:
        raise _field("event.type", f"expected one of {', '.join(RECORD_TYPES)}")
    if kind == "decision":
        for key in event:
            if key not in ("type", "action", "decision"):
                raise _field(f"event.{str(key)[:64]}", "not a field of a decision record")
        action = _action("event.action", event.get("action"))
        decision_data = _object("event.decision", event.get("decision"))
        try:
            decision = Decision.from_dict(decision_data)
        except GuardError as exc:
            raise RequestError(BAD_REQUEST, f"field event.{exc.message}") from None
        return kind, {"action": action, "decision": decision}
    if kind == "intent":
        return kind, _intent_fields(event)
    fields: dict[str, Any] = {}
    for key, value in event.items():
        if key == "type":
            continue
        check = _CONNECTION_FIELDS.get(key) if isinstance(key, str) else None
        if check is None:
            raise _field(f"event.{str(key)[:64]}", "not a field of a connection record")
        checked = check(f"event.{key}", value)
        fields[key] = list(checked) if isinstance(checked, tuple) else checked
    for required in _CONNECTION_REQUIRED:
        if required not in fields:
            raise _field(f"event.{required}", "required by a connection record")
    return kind, fields
