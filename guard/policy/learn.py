"""Learn the smallest policy that would have let recorded sessions do what they needed (pure).

Input: the trail's records of one or more sessions (what was denied or asked, in enforce or audit mode,
including connections the proxy refused on its own) and the base policy compiled for each session's
workspace. Output: a `Learned` proposal that `render()` turns into a policy file extending the base.

What it never does: grant what the base decides by an explicit rule. Deny beats ask beats allow, so an
allow added by an extending policy could not override such a rule anyway; the learner says so instead
(`refused`), and pins the base's verdict for those actions in the generated tests. Only what fell to the
base's default deny is granted, generalised no further than the observations ask for:
- file paths are written relative to `${workspace}` or `~` where they are under them;
- a directory in which two or more distinct entries were needed becomes `dir/*` (never for the home
  directory, the workspace, or a directory less than two levels deep);
- hosts stay exact names with the ports seen; a name the proxy reached at a special-purpose address
  (loopback, private, link-local) also gets that address as a /32 (or /128) CIDR, which the proxy needs
  (guard.net.grants): that grants the address and port to any name resolving there, the same destination;
- commands stay the exact argv seen.
Reads that the kernel refused leave no record today, so they cannot be learned: a workload that needs
such a read still fails after learning; grant it by hand (`guard policy explain` helps).
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard.model import Action, Kind, Op, Verdict, split_host_port
from guard.policy.engine import Policy

MIN_GLOB_DEPTH = 2  # /a/b/* at the shallowest: never /tmp/* or /*
_GLOB = "*?[\\"


@dataclass(frozen=True, slots=True)
class Observation:
    """One action a session needed and did not get (or got only because of audit mode)."""

    op: Op
    target: str
    session: str
    workspace: str
    addresses: tuple[str, ...] = ()
    argv: tuple[str, ...] | None = None
    proxy_refused_address: bool = False  # the proxy refused the resolved address, not the name

    def action(self) -> Action:
        return Action(op=self.op, target=self.target, argv=self.argv, addresses=self.addresses)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An observed need the base decides by an explicit rule: not granted, said so."""

    op: str
    target: str
    verdict: str
    rule_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class LearnedRule:
    id: str
    verdict: str
    ops: tuple[str, ...]
    paths: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    commands: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Learned:
    base: str
    sessions: tuple[str, ...]
    rules: tuple[LearnedRule, ...]
    tests: tuple[tuple[str, str], ...]  # (action text, expected verdict)
    refused: tuple[Refusal, ...]
    granted: tuple[Observation, ...]
    notes: tuple[str, ...] = field(default=())


def _text(value: Any) -> str:
    """Text fields may later carry undecodable bytes differently; take what is a string."""
    return value if isinstance(value, str) else ("" if value is None else str(value))


def observations(records: Iterable[Mapping[str, Any]],
                 text: Callable[[Any], str] = _text) -> list[Observation]:
    """The needs recorded in `records`: denied or asked decisions (audit-only ones too) and connections
    the proxy refused. Duplicates are kept once, in first-seen order. `text` reads a text field (the
    audit layer's accessor, which also knows how a trail encodes undecodable bytes)."""
    workspaces: dict[str, str] = {}
    seen: dict[tuple[Any, ...], Observation] = {}
    for r in records:
        kind, session = r.get("type"), text(r.get("session"))
        if kind == "session" and r.get("event") == "start":
            workspaces[session] = text(r.get("workspace"))
            continue
        obs: Observation | None = None
        if kind == "decision":
            action, decision = r.get("action") or {}, r.get("decision") or {}
            if decision.get("verdict") not in ("deny", "ask"):
                continue
            rule = text(decision.get("rule_id"))
            if rule.startswith("guard:") and not rule.startswith("guard:special"):
                continue  # guard's own refusals (nothing listening, no decision, cannot record): no need
            try:
                op = Op(text(action.get("op")))
            except ValueError:
                continue
            argv = action.get("argv")
            obs = Observation(op, text(action.get("target")), session, workspaces.get(session, ""),
                              tuple(text(a) for a in action.get("addresses") or ()),
                              tuple(text(a) for a in argv) if isinstance(argv, list) else None)
        elif kind == "connection" and r.get("verdict") == "deny" and text(r.get("protocol")) != "publish":
            host, port, rule = text(r.get("host")), r.get("port"), text(r.get("rule_id"))
            special = rule.startswith("guard:special")
            # the proxy's other refusals (a bad request, an unreachable host) are not the policy's to grant
            if not host or not isinstance(port, int) or (rule.startswith("guard:") and not special):
                continue
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            obs = Observation(Op.CONNECT, target, session, workspaces.get(session, ""),
                              tuple(text(a) for a in r.get("addresses") or ()), None, special)
        if obs is not None and obs.target:
            key = (obs.op, obs.target, obs.addresses, obs.argv, obs.workspace)
            if key in seen and obs.proxy_refused_address and not seen[key].proxy_refused_address:
                seen[key] = obs
            seen.setdefault(key, obs)
    return list(seen.values())


def _special(address: str) -> bool:
    try:
        return not ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def _escape(literal: str) -> str:
    return "".join("\\" + c if c in _GLOB else c for c in literal)


def _shown_path(path: str, workspace: str, home: str, *, pattern: bool = True) -> str:
    """The path as a policy writes it: `${workspace}/...`, `~/...` or absolute; in a pattern (not in a
    test's action) glob characters are escaped."""
    quote = _escape if pattern else str
    for root, name in ((workspace, "${workspace}"), (home, "~")):
        root = root.rstrip("/")
        if root and (path == root or path.startswith(root + "/")):
            return name + quote(path[len(root):])
    return quote(path)


def _too_broad(path: str, workspace: str, home: str) -> bool:
    """Writing to these would open whole trees' entries: the home directory, an ancestor of the
    workspace, or a directory less than two levels deep (a `mkdir -p` records its existing parents)."""
    path = path.rstrip("/") or "/"
    if path == home.rstrip("/") or len([p for p in path.split("/") if p]) < MIN_GLOB_DEPTH:
        return True
    ws = workspace.rstrip("/")
    return bool(ws) and ws.startswith(path + "/")


def _parent(path: str) -> str:
    return path.rstrip("/").rpartition("/")[0] or "/"


def _globbable(directory: str, workspace: str, home: str) -> bool:
    roots = {"/", workspace.rstrip("/"), home.rstrip("/")}
    depth = len([p for p in directory.split("/") if p])
    return directory not in roots and depth >= MIN_GLOB_DEPTH


def _file_patterns(paths: Sequence[tuple[str, str]], home: str) -> list[str]:
    """(path, workspace) pairs -> patterns: `dir/*` where a directory's entries vary, else the paths."""
    by_dir: dict[tuple[str, str], set[str]] = {}
    for path, ws in paths:
        by_dir.setdefault((_parent(path), ws), set()).add(path)
    out: list[str] = []
    for (directory, ws), members in sorted(by_dir.items()):
        if len(members) >= 2 and _globbable(directory, ws, home):
            out.append(_shown_path(directory, ws, home) + "/*")
        else:
            out.extend(_shown_path(p, ws, home) for p in sorted(members))
    return list(dict.fromkeys(out))


def _command_pattern(argv: Sequence[str]) -> str:
    """An exact command pattern: glob characters in a token become one-character classes."""
    def token(t: str) -> str:
        return "".join(f"[{c}]" if c in "*?[" else c for c in t)
    return shlex.join(token(t) for t in argv)


def learn(found: Sequence[Observation], base_for: Callable[[str], Policy], *, base: str, home: str,
          sessions: Sequence[str]) -> Learned:
    """Propose the rules that grant `found` on top of `base` (see the module docstring for the limits)."""
    refused: dict[tuple[str, str], Refusal] = {}
    files: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    hosts: dict[str, dict[str, set[Any]]] = {}
    commands: list[str] = []
    granted: list[Observation] = []
    tests: dict[str, str] = {}
    for obs in found:
        policy = base_for(obs.workspace)
        decision = policy.decide(obs.action())
        shown = _shown_action(obs, home)
        if decision.rule_id is not None and decision.verdict is not Verdict.ALLOW:
            refused.setdefault((obs.op.value, obs.target), Refusal(
                obs.op.value, _shown_target(obs, home), decision.verdict.value, decision.rule_id,
                decision.reason))
            tests[shown] = decision.verdict.value
            continue
        if obs.op.kind is Kind.NETWORK:
            host, port = split_host_port(obs.target)
            need_cidr = obs.proxy_refused_address or any(_special(a) for a in obs.addresses)
            entry = hosts.setdefault(f"{obs.op.value} {host}", {"ports": set(), "cidrs": set()})
            if port is not None:
                entry["ports"].add(port)
            if need_cidr:
                for address in obs.addresses or (host,):
                    cidr_refusal = _cidr_refused(policy, obs.op, address, port)
                    if cidr_refusal is not None:
                        refused.setdefault((obs.op.value, f"{address}:{port}"), cidr_refusal)
                    elif _special(address):
                        ip = ipaddress.ip_address(address)
                        entry["cidrs"].add(f"{ip}/{ip.max_prefixlen}")
            if decision.enforced is Verdict.ALLOW and not need_cidr:
                continue
        elif obs.op is Op.RUN:
            if decision.enforced is Verdict.ALLOW:
                continue
            commands.append(_command_pattern(obs.argv or tuple(shlex.split(obs.target))))
        else:
            if decision.enforced is Verdict.ALLOW:
                continue
            if obs.op is Op.WRITE and _too_broad(obs.target, obs.workspace, home):
                refused.setdefault((obs.op.value, obs.target), Refusal(
                    obs.op.value, _shown_target(obs, home), "deny", "learn:too-broad",
                    "writing this directory's entries would open a whole tree; grant what is under it"))
                tests[shown] = decision.verdict.value
                continue
            ops = ("read", "exec") if obs.op is Op.EXEC else (obs.op.value,)
            files.setdefault(ops, []).append((obs.target, obs.workspace))
        granted.append(obs)
        tests[shown] = "allow"
    rules = _rules(files, hosts, commands, home)
    return Learned(base=base, sessions=tuple(sessions), rules=tuple(rules), tests=tuple(tests.items()),
                   refused=tuple(refused.values()), granted=tuple(granted))


def _cidr_refused(policy: Policy, op: Op, address: str, port: int | None) -> Refusal | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    target = (f"[{ip}]" if ip.version == 6 else str(ip)) + (f":{port}" if port is not None else "")
    decision = policy.decide(Action(op=op, target=target, addresses=(str(ip),)))
    if decision.rule_id is not None and decision.verdict is not Verdict.ALLOW:
        return Refusal(op.value, target, decision.verdict.value, decision.rule_id, decision.reason)
    return None


def _rules(files: Mapping[tuple[str, ...], list[tuple[str, str]]],
           hosts: Mapping[str, Mapping[str, set[Any]]], commands: Sequence[str],
           home: str) -> list[LearnedRule]:
    rules: list[LearnedRule] = []
    for ops, paths in sorted(files.items()):
        patterns = _file_patterns(paths, home)
        rules.append(LearnedRule(id=f"learned-{'-'.join(ops)}", verdict="allow", ops=ops,
                                 paths=tuple(patterns),
                                 reason=f"Observed: {len(paths)} {'/'.join(ops)} action(s) the base "
                                        "refused by default."))
    for n, (key, entry) in enumerate(sorted(hosts.items()), start=1):
        op, _, host = key.partition(" ")
        rules.append(LearnedRule(id=f"learned-{op}-{n}", verdict="allow", ops=(op,), hosts=(host,),
                                 cidrs=tuple(sorted(entry["cidrs"])), ports=tuple(sorted(entry["ports"])),
                                 reason=f"Observed: {op} to {host}" + (
                                     " at a special-purpose address, which the proxy grants only by CIDR: "
                                     "any name resolving to it reaches the same port" if entry["cidrs"]
                                     else "") + "."))
    if commands:
        rules.append(LearnedRule(id="learned-commands", verdict="allow", ops=("run",),
                                 commands=tuple(dict.fromkeys(commands)),
                                 reason="Observed: commands the base refused by default."))
    return rules


def _shown_target(obs: Observation, home: str) -> str:
    if obs.op.kind is Kind.FILE:
        return _shown_path(obs.target, obs.workspace, home, pattern=False)
    return obs.target


def _shown_action(obs: Observation, home: str) -> str:
    if obs.op is Op.RUN and obs.argv:
        return f"run {shlex.join(obs.argv)}"
    return f"{obs.op.value} {_shown_target(obs, home)}"


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(value, ensure_ascii=True)


def _flow(items: Iterable[Any]) -> str:
    return "[" + ", ".join(str(i) if isinstance(i, int) else _q(str(i)) for i in items) + "]"


def render(learned: Learned, *, name: str, extends: str) -> str:
    """The proposal as a policy file: rules, inline tests, and a comment listing what was not granted."""
    lines = [f"# Learned by `guard policy learn` from session(s) {', '.join(learned.sessions)} on top of "
             f"{learned.base}.", "# Review before use: every rule below grants something the base did not."]
    if learned.refused:
        lines.append("# Not granted: the base decides these by an explicit rule (deny and ask beat any")
        lines.append("# allow), or (rule learn:too-broad) granting them would open a whole directory tree:")
        lines += [f"#   {r.op} {_comment(r.target)}: {r.verdict} by rule {r.rule_id}"
                  for r in learned.refused]
    lines += ["version: 1", f"name: {_q(name)}",
              f"description: {_q('Learned from recorded sessions on top of ' + learned.base + '.')}",
              f"extends: [{_q(extends)}]", "mode: enforce"]
    if learned.rules:
        lines.append("rules:")
    else:
        lines.append("rules: []")
    for rule in learned.rules:
        lines += [f"  - id: {rule.id}", f"    {rule.verdict}: {_flow(rule.ops)}"]
        for key in ("paths", "hosts", "cidrs", "ports", "commands"):
            values = getattr(rule, key)
            if values:
                lines.append(f"    {key}: {_flow(values)}")
        lines.append(f"    reason: {_q(rule.reason)}")
    if learned.tests:
        lines.append("tests:")
        lines += [f"  - {_q(action)}: {verdict}" for action, verdict in learned.tests]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)[1:-1]
