"""`guard policy lint`: every error in a policy file, then warnings about rules that cannot matter.

Warnings are only computed for a policy that compiles: lists nobody uses, allow/ask rules that a broader
deny always beats (so they never decide anything), and rules no inline test exercises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.errors import Location, UsageError
from guard.model import Verdict
from guard.policy.commands import ELLIPSIS, CommandPattern
from guard.policy.diagnostics import Diagnostic, Severity
from guard.policy.hosts import HostKind, HostPattern
from guard.policy.loader import Compiled, compile_policy
from guard.policy.paths import PathKind, PathPattern
from guard.policy.rules import Rule
from guard.policy.testing import TestReport, run_tests


@dataclass(frozen=True, slots=True)
class LintReport:
    ref: str
    diagnostics: tuple[Diagnostic, ...]
    tests: TestReport | None

    @property
    def ok(self) -> bool:
        return not any(d.severity is Severity.ERROR for d in self.diagnostics)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.ref, "ok": self.ok, "diagnostics": [d.to_dict() for d in self.diagnostics]}


def lint(ref: str | Path, *, workspace: Path, home: Path | None = None,
         env: Mapping[str, str] | None = None) -> LintReport:
    try:
        compiled = compile_policy(ref, workspace=workspace, home=home, env=env)
    except UsageError as exc:
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return LintReport(str(ref), (Diagnostic(Severity.ERROR, message, Location(str(ref))),), None)
    diagnostics = list(compiled.diagnostics)
    report = None
    if compiled.policy is not None:
        report = run_tests(compiled.policy, own_rule_ids(compiled))
        diagnostics.extend(_warnings(compiled, report))
    diagnostics.sort(key=lambda d: (d.location.file != str(ref), d.location.file, d.location.line,
                                    d.location.col, d.severity.value))
    return LintReport(str(ref), tuple(diagnostics), report)


def own_rule_ids(compiled: Compiled) -> tuple[str, ...]:
    return tuple(rule.id for rule in compiled.top.rules) if compiled.top is not None else ()


def _warnings(compiled: Compiled, report: TestReport) -> list[Diagnostic]:
    assert compiled.top is not None and compiled.policy is not None
    top = compiled.top
    out: list[Diagnostic] = []
    for name, (loc, _) in top.lists.items():
        if name not in compiled.used_lists:
            out.append(Diagnostic(Severity.WARNING, f"list {name!r} is never used", loc,
                                  hint=f"reference it as ${name} in a rule or remove it"))
    rules = compiled.policy.rules
    own = set(own_rule_ids(compiled))
    for rule in rules:
        if rule.id not in own or rule.verdict is Verdict.DENY:
            continue
        for other in rules:
            if other.id != rule.id and shadows(other, rule):
                out.append(Diagnostic(Severity.WARNING,
                                      f"rule {rule.id!r} never decides anything: the broader deny rule "
                                      f"{other.id!r} ({other.location}) matches everything it matches",
                                      rule.location,
                                      hint="narrow the deny, add an 'except', or remove this rule"))
                break
    for rule in rules:
        if rule.id in own and rule.hosts and rule.cidrs:
            out.append(Diagnostic(
                Severity.WARNING,
                f"rule {rule.id!r} has both 'hosts' and 'cidrs': both must hold (a listed name, resolving "
                "inside the ranges); they were alternatives before, when either one matched",
                rule.location,
                hint="keep it if you mean 'these names, only at these addresses'; split it into a hosts rule "
                     "and a cidrs rule to match either"))
    if top.tests:
        for rule_id in report.uncovered:
            untested = compiled.policy.rule(rule_id)
            assert untested is not None
            out.append(Diagnostic(Severity.WARNING, f"no test exercises rule {rule_id!r}", untested.location,
                                  hint="add a test under 'tests:' whose action this rule matches"))
    elif top.rules:
        out.append(Diagnostic(Severity.WARNING, "the policy has no tests", Location(top.display, 1, 1),
                              hint="add 'tests:' entries such as '- read ~/.ssh/id_rsa: deny'"))
    return out


def shadows(deny: Rule, rule: Rule) -> bool:
    """Does `deny` (an enforced deny without excepts) match at least everything `rule` matches?"""
    if deny.verdict is not Verdict.DENY or deny.audit_only or deny.kind is not rule.kind:
        return False
    if not rule.ops <= deny.ops:
        return False
    if deny.except_paths or deny.except_hosts or deny.except_cidrs or deny.except_commands:
        return False
    if rule.paths:
        return all(any(_path_covers(q, p) for q in deny.paths) for p in rule.paths)
    if rule.hosts or rule.cidrs:
        if rule.cidrs and not any(h.kind is HostKind.ANY for h in deny.hosts):
            return False
        if deny.ports and not (rule.ports and all(
                any(d.low <= r.low and r.high <= d.high for d in deny.ports) for r in rule.ports)):
            return False
        return all(any(_host_covers(q, p) for q in deny.hosts) for p in rule.hosts)
    if rule.commands:
        return all(any(_command_covers(q, p) for q in deny.commands) for p in rule.commands)
    return False


def _path_covers(q: PathPattern, p: PathPattern) -> bool:
    if q.text == p.text:
        return True
    if q.kind is PathKind.TREE:
        return q.prefix == "/" or p.text == q.prefix or p.text.startswith(q.prefix + "/")
    return q.kind in (PathKind.GLOB, PathKind.SEGMENTS) and p.kind is PathKind.EXACT and q.matches(p.text)


def _host_covers(q: HostPattern, p: HostPattern) -> bool:
    if q.kind is HostKind.ANY:
        return True
    if p.kind is HostKind.ANY:
        return False
    if q.kind is HostKind.EXACT:
        return p.kind is HostKind.EXACT and p.key == q.key
    return p.key.endswith("." + q.key)


def _command_covers(q: CommandPattern, p: CommandPattern) -> bool:
    if q.tokens == p.tokens:
        return True
    if q.tokens[-1] != ELLIPSIS or q.by_path != p.by_path:
        return False
    head = q.tokens[:-1]
    if any(t == ELLIPSIS or any(c in t for c in "*?[") for t in head):
        return False
    return p.tokens[: len(head)] == head and len(p.tokens) >= len(head)
