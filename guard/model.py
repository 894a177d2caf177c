"""The shared vocabulary: what an agent tries to do (`Action`) and what guard answers (`Decision`).

Data flows one way: interceptors (sandbox, hooks, proxy) build Actions, the policy engine turns them into
Decisions, enforcement acts on the Decision, and the audit trail records both. These types are frozen and
carry no behaviour beyond parsing and rendering, so every layer can depend on them and on nothing else.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from guard.errors import UsageError
from guard.text import from_record, to_record


class Kind(StrEnum):
    """The three kinds of things a policy governs; each has its own default verdict."""

    FILE = "file"
    NETWORK = "network"
    PROCESS = "process"


class Op(StrEnum):
    """Operations a rule may allow, deny or ask for."""

    READ = "read"
    WRITE = "write"  # create, modify, delete, rename, truncate
    EXEC = "exec"
    CONNECT = "connect"
    LISTEN = "listen"
    RUN = "run"  # a command line

    @property
    def kind(self) -> Kind:
        return _OP_KIND[self]


_OP_KIND = {
    Op.READ: Kind.FILE,
    Op.WRITE: Kind.FILE,
    Op.EXEC: Kind.FILE,
    Op.CONNECT: Kind.NETWORK,
    Op.LISTEN: Kind.NETWORK,
    Op.RUN: Kind.PROCESS,
}


class Verdict(StrEnum):
    """What the policy says. Strength for combination: deny > ask > allow."""

    ALLOW = "allow"
    ASK = "ask"
    DENY = "deny"

    @property
    def strength(self) -> int:
        return _STRENGTH[self]


_STRENGTH = {Verdict.ALLOW: 0, Verdict.ASK: 1, Verdict.DENY: 2}


@dataclass(frozen=True, slots=True)
class Action:
    """One thing an agent tries to do.

    `target` is the operation's object as a person writes it: an absolute path for file operations,
    `host:port` (`[v6]:port` for IPv6 literals) for network operations, a command line for `run`.
    The optional context (pid, exe, argv, cwd, addresses) comes from the interceptor and is recorded;
    `addresses` are the resolved IPs of a network target, which CIDR rules also judge.
    """

    op: Op
    target: str
    pid: int | None = None
    exe: str | None = None
    argv: tuple[str, ...] | None = None
    cwd: str | None = None
    addresses: tuple[str, ...] = field(default=())

    @property
    def kind(self) -> Kind:
        return self.op.kind

    def host_port(self) -> tuple[str, int | None]:
        """Split a network target into host and port (None when the target names no port)."""
        return split_host_port(self.target)

    def __str__(self) -> str:
        return f"{self.op.value} {self.target}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used on the daemon socket and in the audit trail (absent fields omitted).

        Strings are in file-system form (paths and argv are bytes on Linux); one that is not valid UTF-8
        is written in its tagged form `{"b64": ...}` (guard.text.to_record), so nothing is lost or refused.
        """
        out: dict[str, Any] = {"kind": self.kind.value, "op": self.op.value, "target": to_record(self.target)}
        if self.pid is not None:
            out["pid"] = self.pid
        if self.exe is not None:
            out["exe"] = to_record(self.exe)
        if self.argv is not None:
            out["argv"] = [to_record(a) for a in self.argv]
        if self.cwd is not None:
            out["cwd"] = to_record(self.cwd)
        if self.addresses:
            out["addresses"] = [to_record(a) for a in self.addresses]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Action:
        """Inverse of `to_dict`; raises UsageError naming the bad field."""
        try:
            op = Op(data["op"])
        except (KeyError, ValueError) as exc:
            raise UsageError(f"action.op: expected one of {', '.join(o.value for o in Op)}") from exc
        target = _text("action.target", data.get("target"))
        if not target:
            raise UsageError("action.target: expected a non-empty string")
        argv = data.get("argv")
        if argv is not None:
            if not isinstance(argv, list):
                raise UsageError("action.argv: expected a list of strings")
            argv = tuple(_text(f"action.argv[{i}]", a) for i, a in enumerate(argv))
        pid = data.get("pid")
        if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or not 0 <= pid < 2**53):
            raise UsageError("action.pid: expected a process id (a non-negative integer)")
        addresses = data.get("addresses") or []
        if not isinstance(addresses, list):
            raise UsageError("action.addresses: expected a list of strings")
        exe, cwd = data.get("exe"), data.get("cwd")
        return cls(op=op, target=target, pid=pid,
                   exe=None if exe is None else _text("action.exe", exe), argv=argv,
                   cwd=None if cwd is None else _text("action.cwd", cwd),
                   addresses=tuple(_text(f"action.addresses[{i}]", a) for i, a in enumerate(addresses)))


def _text(name: str, value: Any) -> str:
    """A recorded string (plain or `{"b64": ...}`) in file-system form, or UsageError naming the field."""
    if isinstance(value, str):
        return value
    try:
        return from_record(value)
    except ValueError as exc:
        raise UsageError(f"{name}: expected a string ({exc})") from None


def split_host_port(target: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, `host` or a bare IPv6 literal -> (host, port)."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if rest.startswith(":"):
            return host, _port(rest[1:], target)
        return host, None
    if target.count(":") == 1:
        host, _, port = target.partition(":")
        return host, _port(port, target)
    return target, None


def _port(text: str, target: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"bad port in {target!r}: expected 1-65535")
    return int(text)


def parse_action(text: str) -> Action:
    """Parse `<op> <target>` as written in `guard policy explain` and in policy tests.

    `run` takes the rest of the line as the command; every other op takes one target.
    """
    op_text, _, rest = text.strip().partition(" ")
    try:
        op = Op(op_text)
    except ValueError:
        raise UsageError(
            f"unknown operation {op_text!r} in {text!r}",
            hint=f"write '<op> <target>' with op one of: {', '.join(o.value for o in Op)}",
        ) from None
    rest = rest.strip()
    if not rest:
        raise UsageError(f"missing target in {text!r}", hint=f"write '{op.value} <target>'")
    if op is Op.RUN:
        try:
            argv = tuple(shlex.split(rest))
        except ValueError:
            argv = None
        return Action(op=op, target=rest, argv=argv)
    return Action(op=op, target=rest)


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer.

    `verdict` is what the policy says; `audit_only` is true when the deciding rule (or the whole policy)
    is in audit mode, so enforcement lets the action through but the trail still records the verdict.
    `rule_id` is None when no rule matched and the kind's default decided.
    """

    verdict: Verdict
    rule_id: str | None
    reason: str
    audit_only: bool = False

    @property
    def enforced(self) -> Verdict:
        """What enforcement must do: audit-only decisions never block."""
        return Verdict.ALLOW if self.audit_only else self.verdict

    def to_dict(self) -> dict[str, Any]:
        """The reason may quote an agent's path or command line, so it is recorded like one."""
        return {"verdict": self.verdict.value, "rule_id": self.rule_id, "reason": to_record(self.reason),
                "audit_only": self.audit_only}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        try:
            verdict = Verdict(data["verdict"])
        except (KeyError, ValueError) as exc:
            raise UsageError("decision.verdict: expected allow, ask or deny") from exc
        rule_id = data.get("rule_id")
        if rule_id is not None and not isinstance(rule_id, str):
            raise UsageError("decision.rule_id: expected a string or null")
        reason = _text("decision.reason", data.get("reason", ""))
        return cls(verdict=verdict, rule_id=rule_id, reason=reason, audit_only=bool(data.get("audit_only")))
