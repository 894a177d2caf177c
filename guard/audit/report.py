"""What a session did, as a person asks it: one pure model built from the trail's records.

`build_report(records, verification)` reads no disk and no clock: the CLI reads the records, runs the
existing verifier (guard.audit.verify via segments.verify_log) and hands both in. The three renderings
(text, JSON, HTML in guard.audit.report_render) all draw from this one model, so their numbers agree.

Every string in a record may come from the agent (paths, argv, host names), and a later trail format may
carry undecodable bytes differently: text fields are taken through `text()` only, which accepts a plain
string or an encoded-bytes object, and keeps undecodable bytes as surrogates for the renderers to escape.
"""

from __future__ import annotations

import base64
import binascii
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from guard.audit.canon import parse_ts

FILE_OPS = ("read", "write", "exec")
# Reads the kernel refuses (Landlock) reach no process of guard's, so the trail cannot hold them.
UNRECORDED_NOTE = ("Reads refused by the kernel (Landlock) leave no record today: a denied read of a file "
                   "outside the policy is not in this report.")
WRITE_NOTE = ("The trail records every change to a file (create, modify, delete, rename, truncate) as one "
              "decided `write`; it does not say which, so files are listed as written.")
EXIT_NOTE = "Exit status is known for the session's own command only; the trail does not record the others'."
MAX_TIMELINE = 2000


def text(value: Any) -> str:
    """The one accessor for an agent-controlled text field, whatever the trail's encoding of it.

    A JSON string is returned as is. Bytes that are not UTF-8 may be carried as an object such as
    {"b64": ...} or {"hex": ...}: they are decoded with surrogateescape, so nothing is lost and the
    renderers show each undecodable byte as an escape. Anything else becomes its JSON-ish text.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, Mapping):
        for key in ("b64", "base64", "bytes_b64"):
            if isinstance(value.get(key), str):
                try:
                    return base64.b64decode(value[key], validate=True).decode("utf-8", "surrogateescape")
                except (binascii.Error, ValueError):
                    break
        if isinstance(value.get("hex"), str):
            try:
                return bytes.fromhex(value["hex"]).decode("utf-8", "surrogateescape")
            except ValueError:
                pass
        if isinstance(value.get("text"), str):
            return str(value["text"])
    return str(value)


def field_text(obj: Mapping[str, Any], name: str) -> str:
    """`obj[name]` through `text()`, also accepting a sibling `<name>_b64` carrying the raw bytes."""
    raw = obj.get(f"{name}_b64")
    if isinstance(raw, str):
        return text({"b64": raw})
    return text(obj.get(name))


def argv_of(action: Mapping[str, Any]) -> tuple[str, ...]:
    raw = action.get("argv_b64")
    if isinstance(raw, list):
        return tuple(text({"b64": a}) if isinstance(a, str) else text(a) for a in raw)
    items = action.get("argv")
    if not isinstance(items, list):
        return ()
    return tuple(text(a) for a in items)


def _number(record: Mapping[str, Any], name: str) -> float | None:
    """A duration or count that may be recorded in seconds (`name_s`) or milliseconds (`name_ms`)."""
    for key, scale in ((f"{name}_s", 1.0), (f"{name}_ms", 0.001), (name, 1.0)):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) * scale
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- the model ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Verification:
    """What the existing verifier said about the whole trail the report was built from."""

    status: str  # "valid" | "tampered" | "unsealed" | "not verified"
    detail: str
    records: int = 0
    sealed: int = 0

    @property
    def verified(self) -> bool:
        return self.status == "valid"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    policy: str
    workspace: str
    argv: tuple[str, ...]
    started: str
    ended: str
    exit_status: int | None
    status: str
    duration_s: float | None


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    change: str  # "written" unless the trail says created / modified / deleted
    count: int


@dataclass(frozen=True, slots=True)
class DirGroup:
    directory: str
    inside_workspace: bool
    files: tuple[FileEntry, ...]
    count: int


@dataclass(frozen=True, slots=True)
class Outside:
    op: str
    path: str
    verdict: str
    rule: str
    count: int


@dataclass(frozen=True, slots=True)
class Command:
    argv: tuple[str, ...]
    count: int
    denied: int
    exit_status: int | None


@dataclass(frozen=True, slots=True)
class Destination:
    host: str
    port: int | None
    direction: str  # "outbound" through the proxy, "inbound" through a port published with --publish
    attempts: int
    allowed: int
    refused: int
    bytes_up: int
    bytes_down: int
    addresses: tuple[str, ...]
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Denial:
    ts: str
    session: str
    op: str
    target: str
    rule: str
    reason: str
    audit_only: bool  # the policy said deny but was in audit mode: the action went through


@dataclass(frozen=True, slots=True)
class Ask:
    ts: str
    session: str
    op: str
    target: str
    rule: str
    answer: str  # allow | deny | unanswered
    by: str
    waited_s: float | None


@dataclass(frozen=True, slots=True)
class ToolCall:
    ts: str
    session: str
    tool: str
    detail: str
    verdict: str


@dataclass(frozen=True, slots=True)
class Event:
    ts: str
    offset_s: float
    kind: str  # session | command | write | deny | ask | connect | tool
    session: str
    text: str
    verdict: str


@dataclass(frozen=True, slots=True)
class Summary:
    records: int = 0
    sessions: int = 0
    decisions: int = 0
    allowed: int = 0
    denied: int = 0
    audit_only_denied: int = 0
    asked: int = 0
    files_written: int = 0
    directories: int = 0
    outside_workspace: int = 0
    commands: int = 0
    command_runs: int = 0
    destinations: int = 0
    connections: int = 0
    refused_connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    tool_calls: int = 0


@dataclass(frozen=True, slots=True)
class SessionReport:
    verification: Verification
    sessions: tuple[SessionInfo, ...]
    summary: Summary
    outside: tuple[Outside, ...]
    files: tuple[DirGroup, ...]
    commands: tuple[Command, ...]
    network: tuple[Destination, ...]
    denials: tuple[Denial, ...]
    asks: tuple[Ask, ...]
    tool_calls: tuple[ToolCall, ...]
    timeline: tuple[Event, ...]
    timeline_dropped: int
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verification"]["verified"] = self.verification.verified
        return out


# -- building -----------------------------------------------------------------------------------------------
def _inside(path: str, workspace: str) -> bool:
    if not workspace:
        return False
    root = workspace.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def _parent(path: str) -> str:
    head, _, _ = path.rstrip("/").rpartition("/")
    return head or "/"


def _offset(ts: str, t0: float | None) -> float:
    if t0 is None:
        return 0.0
    try:
        return round(parse_ts(ts) - t0, 6)
    except ValueError:
        return 0.0


class _Builder:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.writes: dict[tuple[str, str], int] = {}
        self.write_ws: dict[str, bool] = {}
        self.outside: dict[tuple[str, str, str, str], int] = {}
        self.commands: dict[tuple[str, ...], list[int]] = {}
        self.net: dict[tuple[str, int | None, str], dict[str, Any]] = {}
        self.denials: list[Denial] = []
        self.denied_targets: set[tuple[str, str, str]] = set()
        self.conn_denials: list[Denial] = []
        self.asks: list[Ask] = []
        self.open_asks: dict[tuple[str, str, str], list[int]] = {}
        self.tools: list[ToolCall] = []
        self.events: list[tuple[str, str, str, str, str]] = []
        self.counts = {"records": 0, "decisions": 0, "allowed": 0, "denied": 0, "audit_only_denied": 0,
                       "asked": 0, "connections": 0, "refused": 0, "up": 0, "down": 0}

    def workspace(self, session: str) -> str:
        return str(self.sessions.get(session, {}).get("workspace", ""))

    def add(self, r: Mapping[str, Any]) -> None:
        kind = r.get("type")
        ts, session = text(r.get("ts")), text(r.get("session"))
        if kind == "session":
            self._session(r, ts, session)
            return
        if kind not in ("decision", "approval", "connection", "tool_call", "hook", "intent"):
            return
        if kind == "intent" and r.get("phase") != "pre":
            return  # an agent hook's post-tool and prompt records: the call itself is its `pre` record
        self.counts["records"] += 1
        if kind == "decision":
            self._decision(r, ts, session)
        elif kind == "approval":
            self._approval(r, ts, session)
        elif kind == "connection":
            self._connection(r, ts, session)
        else:
            self._tool(r, ts, session)

    def _session(self, r: Mapping[str, Any], ts: str, session: str) -> None:
        what = text(r.get("event"))
        if what == "start":
            self.counts["records"] += 1
            self.sessions[session] = {
                "policy": text(r.get("policy")), "workspace": field_text(r, "workspace"), "argv": argv_of(r),
                "started": ts, "ended": "", "exit_status": None, "status": "running", "duration_s": None}
            self.events.append((ts, "session", session, "session started: " + shlex.join(argv_of(r)), ""))
        elif what == "end" and session in self.sessions:
            self.counts["records"] += 1
            info = self.sessions[session]
            exit_status = r.get("exit_status")
            info.update(ended=ts, status=text(r.get("status")) or "closed", duration_s=_number(r, "duration"),
                        exit_status=exit_status if isinstance(exit_status, int) else None)
            shown = "" if info["exit_status"] is None else f" with status {info['exit_status']}"
            self.events.append((ts, "session", session, f"session ended{shown}", ""))

    def _decision(self, r: Mapping[str, Any], ts: str, session: str) -> None:
        action, decision = r.get("action") or {}, r.get("decision") or {}
        if not isinstance(action, Mapping) or not isinstance(decision, Mapping):
            return
        op, target = text(action.get("op")), field_text(action, "target")
        verdict, rule = text(decision.get("verdict")), text(decision.get("rule_id")) or "default"
        audit_only = bool(decision.get("audit_only"))
        self.counts["decisions"] += 1
        if verdict == "ask" and audit_only:  # audit mode asked no one: it let the action through
            self.asks.append(Ask(ts, session, op, target, rule, "not asked (audit mode)", "", None))
            verdict = "allow"
        if verdict == "ask":
            self.counts["asked"] += 1
            self.open_asks.setdefault((session, op, target), []).append(len(self.asks))
            self.asks.append(Ask(ts, session, op, target, rule, "unanswered", "", None))
            self.events.append((ts, "ask", session, f"ask: {op} {target}", verdict))
            return
        if verdict == "deny":
            self.counts["denied"] += 1
            if audit_only:
                self.counts["audit_only_denied"] += 1
            reason = text(decision.get("reason"))
            self.denials.append(Denial(ts, session, op, target, rule, reason, audit_only))
            self.denied_targets.add((session, op, target))
            self.events.append((ts, "deny", session, f"denied: {op} {target} (rule {rule})", verdict))
        else:
            self.counts["allowed"] += 1
        if op in FILE_OPS:
            self._file(op, target, verdict, rule, session, ts, action)
        elif op == "run":
            argv = argv_of(action) or (target,)
            entry = self.commands.setdefault(argv, [0, 0])
            entry[0] += 1
            entry[1] += verdict == "deny"
            if entry[0] == 1 and verdict != "deny":
                self.events.append((ts, "command", session, "ran: " + shlex.join(argv), verdict))
        elif op in ("connect", "listen"):
            self._net_decision(action, target, verdict, rule)

    def _file(self, op: str, target: str, verdict: str, rule: str, session: str, ts: str,
              action: Mapping[str, Any]) -> None:
        inside = _inside(target, self.workspace(session))
        if not inside and not (op in ("read", "exec") and verdict == "allow"):
            key = (op, target, verdict, rule)
            self.outside[key] = self.outside.get(key, 0) + 1
        if op == "write" and verdict != "deny":
            change = text(action.get("change")) or "written"
            key2 = (target, change)
            if key2 not in self.writes:
                self.events.append((ts, "write", session, f"{change}: {target}", verdict))
            self.writes[key2] = self.writes.get(key2, 0) + 1
            self.write_ws[target] = inside

    def _net_decision(self, action: Mapping[str, Any], target: str, verdict: str, rule: str) -> None:
        host, port = _split(target)
        dest = self._dest(host, port)
        dest["decided"] += 1
        dest["rules"].add(rule)
        for a in action.get("addresses") or ():
            dest["addresses"].add(text(a))
        if verdict == "deny":
            dest["decided_refused"] += 1

    def _dest(self, host: str, port: int | None, direction: str = "outbound") -> dict[str, Any]:
        return self.net.setdefault((host, port, direction), {
            "attempts": 0, "allowed": 0, "refused": 0, "up": 0, "down": 0, "addresses": set(), "rules": set(),
            "decided": 0, "decided_refused": 0})

    def _connection(self, r: Mapping[str, Any], ts: str, session: str) -> None:
        host = field_text(r, "host") or text(r.get("target"))
        port = r.get("port") if isinstance(r.get("port"), int) else None
        if port is None and ":" in host:
            host, port = _split(host)
        verdict, rule = text(r.get("verdict")), text(r.get("rule_id")) or "default"
        direction = "inbound" if text(r.get("protocol")) == "publish" else "outbound"
        dest = self._dest(host, port, direction)
        dest["attempts"] += 1
        dest["rules"].add(rule)
        up, down = _int(r.get("bytes_up")), _int(r.get("bytes_down"))
        dest["up"] += up
        dest["down"] += down
        self.counts["connections"] += 1
        self.counts["up"] += up
        self.counts["down"] += down
        for a in r.get("addresses") or ():
            dest["addresses"].add(text(a))
        target = f"{host}:{port}" if port is not None else host
        if verdict == "deny":
            dest["refused"] += 1
            self.counts["refused"] += 1
            if direction == "outbound" and host and port is not None:  # the agent's own connection
                denial = Denial(ts, session, "connect", target, rule, text(r.get("reason")),
                                bool(r.get("audit_only")))
                self.conn_denials.append(denial)
        else:
            dest["allowed"] += 1
        self.events.append((ts, "connect", session,
                            f"connection {target}: {verdict}, {up} B up, {down} B down", verdict))

    def _approval(self, r: Mapping[str, Any], ts: str, session: str) -> None:
        action = r.get("action") or {}
        op = text(action.get("op")) if isinstance(action, Mapping) else ""
        target = field_text(action, "target") if isinstance(action, Mapping) else ""
        answer = Ask(ts, session, op, target, text(r.get("rule_id")) or "default", text(r.get("verdict")),
                     text(r.get("by")), _number(r, "waited"))
        if answer.answer == "allow" and op in FILE_OPS:  # approved: it happened like any allowed action
            self._file(op, target, "allow", answer.rule, session, ts, action)
        if answer.answer == "deny":  # refused in the end: a denial too, as `guard run`'s summary counts it
            self.counts["denied"] += 1
            why = f"asked; denied by {answer.by or '?'}: {text(r.get('reason'))}"
            self.denials.append(Denial(ts, session, op, target, answer.rule, why, False))
            self.denied_targets.add((session, op, target))
        pending = self.open_asks.get((session, op, target))
        if pending:
            index = pending.pop(0)
            self.asks[index] = Ask(self.asks[index].ts, session, op, target, answer.rule, answer.answer,
                                   answer.by, answer.waited_s)
        else:
            self.asks.append(answer)
        self.events.append((ts, "ask", session, f"answered {answer.answer} by {answer.by}: {op} {target}",
                            answer.answer))

    def _tool(self, r: Mapping[str, Any], ts: str, session: str) -> None:
        tool = field_text(r, "tool") or field_text(r, "tool_name") or "?"
        raw = r.get("input") if r.get("input") is not None else r.get("tool_input", r.get("summary"))
        detail = text(raw) if not isinstance(raw, Mapping) else ", ".join(
            f"{text(k)}={text(v)}" for k, v in sorted(raw.items(), key=lambda kv: str(kv[0])))
        decision = r.get("decision")
        verdict = text(decision.get("verdict")) if isinstance(decision, Mapping) else text(r.get("verdict"))
        self.tools.append(ToolCall(ts, session, tool, detail, verdict))
        self.events.append((ts, "tool", session, f"tool call {tool}: {detail}", verdict))

    def finish(self, verification: Verification) -> SessionReport:
        # a connection the proxy refused on its own is a denial too: since the session records such a
        # refusal as a deny decision this only adds the refusals of trails written before that
        for denial in self.conn_denials:
            if (denial.session, "connect", denial.target) not in self.denied_targets:
                self.denials.append(denial)
                self.counts["denied"] += 1
                if denial.audit_only:
                    self.counts["audit_only_denied"] += 1
                self.denied_targets.add((denial.session, "connect", denial.target))
        self.denials.sort(key=lambda d: d.ts)
        sessions = tuple(SessionInfo(id=sid, policy=i["policy"], workspace=i["workspace"], argv=i["argv"],
                                     started=i["started"], ended=i["ended"], exit_status=i["exit_status"],
                                     status=i["status"], duration_s=i["duration_s"])
                         for sid, i in self.sessions.items())
        tops = {s.argv: s.exit_status for s in sessions if s.exit_status is not None}
        commands = tuple(sorted((Command(argv, c[0], c[1], tops.get(argv))
                                 for argv, c in self.commands.items()), key=lambda c: (-c.count, c.argv)))
        files = self._files()
        outside = tuple(sorted((Outside(op, path, verdict, rule, n) for (op, path, verdict, rule), n
                                in self.outside.items()), key=lambda o: (o.verdict != "deny", o.path, o.op)))
        network = tuple(sorted((_destination(key, d) for key, d in self.net.items()),
                               key=lambda d: (d.direction != "outbound", d.host, d.port or 0)))
        events = sorted(self.events, key=lambda e: e[0])
        t0 = None
        for ts, *_ in events:
            try:
                t0 = parse_ts(ts)
                break
            except ValueError:
                continue
        kept = events[:MAX_TIMELINE]
        timeline = tuple(Event(ts, _offset(ts, t0), kind, session, what, verdict)
                         for ts, kind, session, what, verdict in kept)
        c = self.counts
        summary = Summary(
            records=c["records"], sessions=len(sessions), decisions=c["decisions"], allowed=c["allowed"],
            denied=c["denied"], audit_only_denied=c["audit_only_denied"], asked=c["asked"],
            files_written=sum(len(g.files) for g in files), directories=len(files),
            outside_workspace=sum(o.count for o in outside), commands=len(commands),
            command_runs=sum(cmd.count for cmd in commands), destinations=len(network),
            connections=c["connections"], refused_connections=c["refused"], bytes_up=c["up"],
            bytes_down=c["down"], tool_calls=len(self.tools))
        notes = [UNRECORDED_NOTE, WRITE_NOTE, EXIT_NOTE]
        if len(events) > MAX_TIMELINE:
            notes.append(f"The time line shows the first {MAX_TIMELINE} of {len(events)} events.")
        return SessionReport(verification=verification, sessions=sessions, summary=summary, outside=outside,
                             files=files, commands=commands, network=network, denials=tuple(self.denials),
                             asks=tuple(self.asks), tool_calls=tuple(self.tools), timeline=timeline,
                             timeline_dropped=max(0, len(events) - MAX_TIMELINE), notes=tuple(notes))

    def _files(self) -> tuple[DirGroup, ...]:
        groups: dict[str, list[FileEntry]] = {}
        for (path, change), n in self.writes.items():
            groups.setdefault(_parent(path), []).append(FileEntry(path, change, n))
        out = []
        for directory, entries in groups.items():
            entries.sort(key=lambda e: e.path)
            inside = all(self.write_ws.get(e.path, False) for e in entries)
            out.append(DirGroup(directory, inside, tuple(entries), sum(e.count for e in entries)))
        out.sort(key=lambda g: (g.inside_workspace, g.directory))
        return tuple(out)


def _split(target: str) -> tuple[str, int | None]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest[1:].isdigit() else None
    if target.count(":") == 1:
        host, _, port = target.partition(":")
        return host, int(port) if port.isdigit() else None
    return target, None


def _destination(key: tuple[str, int | None, str], d: Mapping[str, Any]) -> Destination:
    host, port, direction = key
    attempts = d["attempts"]
    if attempts == 0:  # decided but never reached the proxy's record (e.g. a listen, or an older trail)
        refused = d["decided_refused"]
        return Destination(host, port, direction, d["decided"], d["decided"] - refused, refused, 0, 0,
                           tuple(sorted(d["addresses"])), tuple(sorted(d["rules"])))
    return Destination(host, port, direction, attempts, d["allowed"], d["refused"], d["up"], d["down"],
                       tuple(sorted(d["addresses"])), tuple(sorted(d["rules"])))


def build_report(records: Iterable[Mapping[str, Any]], verification: Verification) -> SessionReport:
    """The report of the given records (already selected: one session, or everything since a time)."""
    builder = _Builder()
    for record in records:
        builder.add(record)
    return builder.finish(verification)


def verification_from(report_dict: Mapping[str, Any] | None, *, reason: str = "") -> Verification:
    """Turn the verifier's `Report.to_dict()` (or None when it could not run) into the report's verdict."""
    if report_dict is None:
        return Verification("not verified", reason or "the trail was not verified")
    status = str(report_dict.get("status", "not verified"))
    first = report_dict.get("first_break")
    if status == "valid":
        detail = f"every one of {report_dict.get('leaves', 0)} lines is sealed by a signed checkpoint"
    elif status == "tampered" and isinstance(first, Mapping):
        where = ", ".join(f"{k} {first[k]}" for k in ("segment", "line", "seq") if first.get(k) is not None)
        detail = f"first break at {where or 'log'}: {first.get('message', '')}"
    elif status == "unsealed":
        detail = (f"{report_dict.get('unsealed', 0)} line(s) after the last checkpoint are not proven valid"
                  if report_dict.get("unsealed") else "a torn last line (a crash mid-append)")
    else:
        detail = reason
    return Verification(status, detail, _int(report_dict.get("records")), _int(report_dict.get("sealed")))
