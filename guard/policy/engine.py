"""The decision engine: `Policy.decide(action) -> Decision`, pure, indexed and cached.

Combination is deny > ask > allow whatever the order of rules, then the kind's default. Rules are indexed
so a decision looks only at rules that can match: file rules under the literal directory prefix of each
pattern (a path looks up each of its ancestors), network rules under their exact host or the suffix of a
`*.` pattern (a host looks up itself and each proper suffix), command rules under their program name.
Ties within a verdict go to the more specific pattern, then the smaller rule id, so the answer, including
which rule is named, never depends on rule order.

Audit mode never changes what is enforced: an audit-mode rule is reported only when it is stricter than
the enforced outcome, with `audit_only=True`; a whole policy in audit mode marks every decision audit-only.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from guard.errors import Location, UsageError
from guard.model import Action, Decision, Kind, Op, Verdict, parse_action, split_host_port
from guard.policy._tools import Form, exec_forms, is_known_program, line_forms, window_forms
from guard.policy.hosts import HostKind, IPAddress, normalize_host, parse_ip, proper_suffixes
from guard.policy.paths import PathPattern, ancestors, normalize_path
from guard.policy.rules import FileRule, Rule
from guard.policy.shell import MANY, ONE, WILDCARDS

DEFAULT_SCAN_MAX_ENTRIES = 200_000  # the launch scan's bound (guard.sandbox.scan): past it nothing starts
CACHE_SIZE = 16384
CACHE_MAX_TARGET = 4096  # longer targets are judged every time: the cache must not hold megabytes of argv
_VAR = re.compile(r"\$\{([^{}]*)\}")
_FILE_OPS = frozenset(op.value for op in Op if op.kind is Kind.FILE)
_VERB = {Verdict.ALLOW: "allowed", Verdict.ASK: "needs approval", Verdict.DENY: "denied"}


@dataclass(frozen=True, slots=True)
class PolicyTest:
    """One inline test of a policy file, expanded and parsed."""

    text: str
    action: Action
    expected: Verdict
    location: Location


@dataclass(frozen=True, slots=True)
class Match:
    rule: Rule
    specificity: int
    excluded_by: str | None = None


@dataclass(frozen=True, slots=True)
class Loser:
    """A rule that matched the action but did not decide it, and why."""

    rule_id: str
    verdict: Verdict
    why: str
    location: Location

    def to_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "verdict": self.verdict.value, "why": self.why,
                "location": str(self.location)}


@dataclass(frozen=True, slots=True)
class Explanation:
    """The answer to "why": the decision, the deciding rule, every other match and why it lost.

    For a compound command line, `parts` explains each simple command; the line's decision is the
    strictest part's. `note` says when the line could not be parsed and the strictest rule decided.
    """

    action: Action
    decision: Decision
    winner: str | None
    winner_location: Location | None
    losers: tuple[Loser, ...]
    parts: tuple[Explanation, ...] = ()
    note: str | None = None
    subject: str = ""  # what was judged: the normalized path, host:port, or one command's argv

    @property
    def matched_rule_ids(self) -> frozenset[str]:
        ids = {loser.rule_id for loser in self.losers}
        if self.winner is not None:
            ids.add(self.winner)
        for part in self.parts:
            ids |= part.matched_rule_ids
        return frozenset(ids)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action.to_dict(), "subject": self.subject,
                               "decision": self.decision.to_dict(), "winner": self.winner,
                               "winner_location": str(self.winner_location) if self.winner_location else None,
                               "losers": [loser.to_dict() for loser in self.losers]}
        if self.parts:
            out["parts"] = [part.to_dict() for part in self.parts]
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True, slots=True)
class ListenPorts:
    """`Policy.bind_ports`: the ports listed for the kernel, or None with `any_port` true when the policy
    lets every port be bound, false when it cannot be written as a list (too many, or denies to subtract)."""

    ports: tuple[int, ...] | None
    any_port: bool
    reason: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    decision: Decision
    winner: Match | None
    matches: tuple[Match, ...]
    subject: str
    parts: tuple[_Outcome, ...] = ()
    note: str | None = None


@dataclass(slots=True)
class _NetIndex:
    exact: dict[str, list[Rule]] = field(default_factory=dict)
    suffix: dict[str, list[Rule]] = field(default_factory=dict)
    any_host: list[Rule] = field(default_factory=list)
    by_net: dict[tuple[int, int], list[Rule]] = field(default_factory=dict)  # (version, leading bits)
    wide_nets: list[Rule] = field(default_factory=list)  # /0-/7 (v4), /0-/15 (v6)


@dataclass(slots=True)
class _CmdIndex:
    by_name: dict[str, list[Rule]] = field(default_factory=dict)
    by_path: dict[str, list[Rule]] = field(default_factory=dict)
    anywhere: list[Rule] = field(default_factory=list)
    with_subcommand: list[Rule] = field(default_factory=list)  # judged against a program chosen at run time


class Policy:
    """A compiled, immutable policy. Build it with `load_policy`."""

    __slots__ = ("_by_id", "_cmd_index", "_decide_cached", "_defaults", "_file_base_index", "_file_index",
                 "_host_map",
                 "_net_index", "_rules", "_variables", "ask_timeout", "description", "home", "mode", "name",
                 "pass_env", "scan_max_entries", "sources", "tests")

    def __init__(self, *, name: str, description: str, mode: str, defaults: Mapping[Kind, Verdict],
                 rules: Iterable[Rule], sources: tuple[Path, ...], ask_timeout: float,
                 host_map: Mapping[str, str], tests: tuple[PolicyTest, ...], home: str,
                 variables: Mapping[str, str] | None = None,
                 scan_max_entries: int = DEFAULT_SCAN_MAX_ENTRIES, pass_env: tuple[str, ...] = ()) -> None:
        self.name = name
        self.scan_max_entries = scan_max_entries
        self.pass_env = pass_env  # credential variables the agent may still see (`settings.pass_env`)
        self.description = description
        self.mode = mode
        self._defaults = MappingProxyType({kind: defaults.get(kind, Verdict.DENY) for kind in Kind})
        self._rules = tuple(rules)
        self._by_id = {rule.id: rule for rule in self._rules}
        self.sources = sources
        self.ask_timeout = ask_timeout
        self._host_map = MappingProxyType(dict(host_map))
        self.tests = tests
        self.home = home
        self._variables = MappingProxyType(dict(variables or {}))
        self._file_index: dict[Op, dict[str, list[Rule]]] = {op: {} for op in Op if op.kind is Kind.FILE}
        self._file_base_index: dict[Op, dict[str, list[Rule]]] = {op: {} for op in Op if op.kind is Kind.FILE}
        self._net_index = {op: _NetIndex() for op in Op if op.kind is Kind.NETWORK}
        self._cmd_index = _CmdIndex()
        for rule in self._rules:
            self._index(rule)
        self._decide_cached = functools.lru_cache(maxsize=CACHE_SIZE)(self._decide_key)

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """Pickled as the arguments it was built from (its indexes and decision cache are rebuilt): the
        compiled-policy cache (guard.policy_cache) stores policies this way."""
        return _rebuild_policy, ({
            "name": self.name, "description": self.description, "mode": self.mode,
            "defaults": dict(self._defaults), "rules": self._rules, "sources": self.sources,
            "ask_timeout": self.ask_timeout, "host_map": dict(self._host_map), "tests": self.tests,
            "home": self.home, "variables": dict(self._variables), "scan_max_entries": self.scan_max_entries,
            "pass_env": self.pass_env},)

    # -- public API (docs/contracts.md) -------------------------------------------------------------------

    @property
    def defaults(self) -> Mapping[Kind, Verdict]:
        return self._defaults

    @property
    def host_map(self) -> Mapping[str, str]:
        return self._host_map

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def rule(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def file_rules(self) -> tuple[FileRule, ...]:
        return tuple(rule.to_file_rule() for rule in self._rules if rule.kind is Kind.FILE)

    def path_patterns(self) -> dict[str, PathPattern]:
        """Every path pattern of the file rules (excepts too) by its text, as compiled: the launch scan
        matches with these rather than compiling the same texts again (guard.sandbox.scan.deny_targets)."""
        return {p.text: p for rule in self._rules if rule.kind is Kind.FILE
                for p in (*rule.paths, *rule.except_paths)}

    @property
    def variables(self) -> Mapping[str, str]:
        """Built-in and policy variables as expanded at load time (workspace, home, tmp, vars)."""
        return self._variables

    def action(self, text: str, *, cwd: str | None = None) -> Action:
        """Parse `<op> <target>` as people write it, expanding `${var}` (and `~` for file targets)."""
        op_text, _, rest = text.strip().partition(" ")
        rest = _VAR.sub(lambda m: self._variables.get(m.group(1), m.group(0)), rest.strip())
        if op_text in _FILE_OPS and (rest == "~" or rest.startswith("~/")):
            rest = self.home + rest[1:]
        action = parse_action(f"{op_text} {rest}")
        return Action(op=action.op, target=action.target, argv=action.argv, cwd=cwd) if cwd else action

    def decide(self, action: Action, *, ignore: frozenset[str] = frozenset()) -> Decision:
        """The decision for `action`; rules named in `ignore` are left out (a session ignores
        `applies_to: existing` rules for paths that did not exist at its launch)."""
        exe, argv = _exec_context(action)
        if len(action.target) > CACHE_MAX_TARGET:
            return self._evaluate(action.op, action.target, action.cwd, action.addresses, ignore, exe,
                                  argv).decision
        return self._decide_cached(action.op, action.target, action.cwd, action.addresses, ignore, exe, argv)

    def decide_uncached(self, action: Action) -> Decision:
        """`decide` without the LRU: for benchmarks and for callers that must not share a cache."""
        exe, argv = _exec_context(action)
        return self._evaluate(action.op, action.target, action.cwd, action.addresses, frozenset(), exe,
                              argv).decision

    @property
    def existing_only_rules(self) -> frozenset[str]:
        """Ids of the `applies_to: existing` rules: they protect what exists when a session starts."""
        return frozenset(rule.id for rule in self._rules if rule.existing_only)

    @property
    def outside_new_repos_rules(self) -> frozenset[str]:
        """Ids of the `applies_to: outside-new-repos` rules: they hold everywhere but inside a repository
        the session created (or cloned)."""
        return frozenset(rule.id for rule in self._rules if rule.outside_new_repos)

    def explain(self, action: Action) -> Explanation:
        exe, argv = _exec_context(action)
        outcome = self._evaluate(action.op, action.target, action.cwd, action.addresses, frozenset(), exe,
                                 argv)
        return self._explanation(action, outcome)

    def cache_info(self) -> Any:
        return self._decide_cached.cache_info()

    def bind_ports(self, limit: int = 4096) -> ListenPorts:
        """The TCP ports the sandbox's kernel tier may let the agent bind (Landlock lists ports, it cannot
        express denies or asks). A port is listed when some enforced `allow listen` rule names it and the
        decision for `listen 127.0.0.1:PORT` is an enforced allow: inside the sandbox's network namespace
        every address is its own loopback, so 127.0.0.1 stands for all of them. Port 0 is never listed
        here (rules name 1-65535); the planner decides about ephemeral binds.
        """
        def allowed(port: int) -> bool:
            target = f"127.0.0.1:{port}"
            return self._evaluate(Op.LISTEN, target, None, ()).decision.enforced is Verdict.ALLOW

        if self.mode == "audit":
            return ListenPorts(None, True, "the policy is in audit mode: no listen is refused")
        listen = [r for r in self._rules if Op.LISTEN in r.ops and not r.audit_only]
        refusing = [r for r in listen if r.verdict is not Verdict.ALLOW]
        granting = [r for r in listen if r.verdict is Verdict.ALLOW]
        loopback: tuple[IPAddress, ...] = (ipaddress.IPv4Address("127.0.0.1"),)
        portless = [r.id for r in granting if not r.ports and r.match_network("127.0.0.1", 1, loopback) >= 0
                    and r.network_excluded_by("127.0.0.1", loopback) is None]
        if self._defaults[Kind.NETWORK] is Verdict.ALLOW or portless:
            why = (f"rule {portless[0]!r} allows listening on any port" if portless
                   else "the network default is allow")
            if not refusing:
                return ListenPorts(None, True, why)
            return ListenPorts(None, False, f"{why} except what {', '.join(r.id for r in refusing)} "
                                            "refuse, and Landlock can only list allowed ports")
        ranges = sorted({(pr.low, pr.high) for r in granting for pr in r.ports})
        total = sum(high - low + 1 for low, high in ranges)
        if total > limit:
            return ListenPorts(None, False, f"the listen rules grant {total} ports, more than the "
                                            f"{limit} the sandbox lists one by one")
        ports = sorted({p for low, high in ranges for p in range(low, high + 1) if allowed(p)})
        return ListenPorts(tuple(ports), False, f"{len(ports)} port(s) granted by listen rules")

    # -- indexing -------------------------------------------------------------------------------------------

    def _index(self, rule: Rule) -> None:
        def add(table: dict[str, list[Rule]], key: str) -> None:
            bucket = table.setdefault(key, [])
            if rule not in bucket:
                bucket.append(rule)

        for op in rule.ops:
            if rule.kind is Kind.FILE:
                for path in rule.paths:
                    if path.basename is not None:
                        add(self._file_base_index[op], path.basename)
                    else:
                        add(self._file_index[op], path.prefix)
            elif rule.kind is Kind.NETWORK:
                net = self._net_index[op]
                if any(h.kind is HostKind.ANY for h in rule.hosts) and rule not in net.any_host:
                    net.any_host.append(rule)
                for cidr in rule.cidrs:
                    bits = 8 if cidr.version == 4 else 16
                    if cidr.prefixlen >= bits:
                        key = (cidr.version, int(cidr.network_address) >> (cidr.max_prefixlen - bits))
                        net_bucket = net.by_net.setdefault(key, [])
                        if rule not in net_bucket:
                            net_bucket.append(rule)
                    elif rule not in net.wide_nets:
                        net.wide_nets.append(rule)
                for host in rule.hosts:
                    if host.kind is HostKind.EXACT:
                        add(net.exact, host.key)
                    elif host.kind is HostKind.SUBDOMAINS:
                        add(net.suffix, host.key)
        if rule.kind is Kind.PROCESS:
            if any(c.names_arguments for c in rule.commands) and rule not in self._cmd_index.with_subcommand:
                self._cmd_index.with_subcommand.append(rule)
            for command in rule.commands:
                if not command.literal_program:
                    if rule not in self._cmd_index.anywhere:
                        self._cmd_index.anywhere.append(rule)
                elif command.by_path:
                    add(self._cmd_index.by_path, command.program)
                else:
                    add(self._cmd_index.by_name, command.program)

    # -- evaluation -----------------------------------------------------------------------------------------

    def _decide_key(self, op: Op, target: str, cwd: str | None, addresses: tuple[str, ...],
                    ignore: frozenset[str] = frozenset(), exe: str | None = None,
                    argv: tuple[str, ...] | None = None) -> Decision:
        return self._evaluate(op, target, cwd, addresses, ignore, exe, argv).decision

    def _evaluate(self, op: Op, target: str, cwd: str | None, addresses: tuple[str, ...],
                  ignore: frozenset[str] = frozenset(), exe: str | None = None,
                  argv: tuple[str, ...] | None = None) -> _Outcome:
        kind = op.kind
        if kind is Kind.FILE:
            return self._evaluate_file(op, target, cwd, ignore)
        if kind is Kind.NETWORK:
            return self._evaluate_network(op, target, addresses)
        if argv is not None and exe is not None and argv:
            return self._evaluate_forms(exec_forms(argv, exe), target)
        return self._evaluate_forms(line_forms(target), target)

    def _evaluate_file(self, op: Op, target: str, cwd: str | None,
                       ignore: frozenset[str] = frozenset()) -> _Outcome:
        path = target
        if path == "~" or path.startswith("~/"):
            path = self.home + path[1:]
        if not path.startswith("/"):
            if cwd and cwd.startswith("/"):
                path = cwd + "/" + path
            else:
                return self._refuse(f"relative path {target!r} without a working directory cannot be judged",
                                    target)
        path = normalize_path(path)
        index = self._file_index[op]
        candidates: dict[str, Rule] = {}
        for key in ancestors(path):
            bucket = index.get(key)
            if bucket:
                for rule in bucket:
                    candidates[rule.id] = rule
        bucket = self._file_base_index[op].get(path[path.rfind("/") + 1:])
        if bucket:
            for rule in bucket:
                candidates[rule.id] = rule
        matches: list[Match] = []
        for rule in candidates.values():
            if rule.id in ignore:
                continue
            spec = rule.match_path(path)
            if spec >= 0:
                matches.append(Match(rule, spec, rule.path_excluded_by(path) if rule.except_paths else None))
        return self._combine(matches, Kind.FILE, path)

    def _evaluate_network(self, op: Op, target: str, addresses: tuple[str, ...]) -> _Outcome:
        try:
            raw_host, port = split_host_port(target)
        except UsageError as exc:
            return self._refuse(f"malformed network target: {exc.message}", target)
        host = normalize_host(raw_host)
        ips: list[IPAddress] = []
        literal = parse_ip(host)
        if literal is not None:
            ips.append(literal)
        mapped = self._host_map.get(host)
        if mapped is not None:
            mapped_ip = parse_ip(mapped)
            if mapped_ip is not None:
                ips.append(mapped_ip)
        for text in addresses:
            ip = parse_ip(text)
            if ip is None:
                return self._refuse(f"malformed resolved address {text!r}", target)
            ips.append(ip)
        ip_tuple = tuple(dict.fromkeys(ips))
        net = self._net_index[op]
        candidates: dict[str, Rule] = {}
        for rule in net.exact.get(host, ()):
            candidates[rule.id] = rule
        for suffix in proper_suffixes(host):
            for rule in net.suffix.get(suffix, ()):
                candidates[rule.id] = rule
        for rule in net.any_host:
            candidates[rule.id] = rule
        if ip_tuple:
            for ip in ip_tuple:
                bits = 8 if ip.version == 4 else 16
                for rule in net.by_net.get((ip.version, int(ip) >> (ip.max_prefixlen - bits)), ()):
                    candidates[rule.id] = rule
            for rule in net.wide_nets:
                candidates[rule.id] = rule
        matches: list[Match] = []
        for rule in candidates.values():
            spec = rule.match_network(host, port, ip_tuple)
            if spec >= 0:
                matches.append(Match(rule, spec, rule.network_excluded_by(host, ip_tuple)))
        subject = f"[{host}]:{port}" if ":" in host and port is not None else \
            (f"{host}:{port}" if port is not None else host)
        return self._combine(matches, Kind.NETWORK, subject)

    def _command_candidates(self, program: str) -> list[Rule]:
        index = self._cmd_index
        if program in WILDCARDS:
            return index.with_subcommand
        out = list(index.by_name.get(program[program.rfind("/") + 1:], ()))
        if "/" in program:
            out.extend(r for r in index.by_path.get(program, ()) if r not in out)
        out.extend(r for r in index.anywhere if r not in out)
        return out

    def _evaluate_form(self, form: Form) -> _Outcome:
        """Match one reading of a command. A certain one is matched exactly; one with words known only
        at run time against every rule that could match some value of them (an allow rule's `except`
        then counts when it could apply; a deny or ask rule's only when it surely does)."""
        words = form.words
        if form.loose:
            return self._evaluate_loose(form)
        if words[0] == MANY:
            words = (ONE, *words[1:])  # a program chosen at run time is taken to be one word
        matches: list[Match] = []
        uncertain = any(w in WILDCARDS for w in words)
        if uncertain and words[0] in WILDCARDS and all(w in WILDCARDS for w in words[1:]):
            # nothing but words chosen at run time (`$CMD "$@"`, `eval "$X"`): nothing to judge before it
            # runs; each program it starts is judged at its own exec
            default = self._defaults[Kind.PROCESS]
            reason = "a command chosen at run time is judged when it is executed"
            return _Outcome(self._final(Decision(default, None, reason)), None, (), form.shown)
        for rule in self._command_candidates(words[0]):
            if not uncertain:
                spec = rule.match_command(words)
                if spec >= 0:
                    matches.append(Match(rule, spec, rule.command_excluded_by(words)))
                continue
            spec = max((p.specificity for p in rule.commands
                        if (words[0] not in WILDCARDS or p.names_arguments) and p.could_match(words)),
                       default=-1)
            if spec >= 0:
                excluded = None
                if rule.verdict is Verdict.ALLOW:
                    excluded = next((p.text for p in rule.except_commands if p.could_match(words)), None)
                matches.append(Match(rule, spec, excluded))
        return self._combine(matches, Kind.PROCESS, form.shown)

    def _evaluate_loose(self, form: Form) -> _Outcome:
        """Text that could not be read: every word position is tried as a program (read the way its tool
        reads it), with any remainder allowed."""
        tokens = form.words
        matches: dict[str, Match] = {}
        index = self._cmd_index
        for start in range(len(tokens)):
            word = tokens[start]
            base = word[word.rfind("/") + 1:]
            if base not in index.by_name and not index.anywhere and word not in index.by_path \
                    and not is_known_program(base):
                continue
            for reading in window_forms(tokens[start:start + 64]):
                argv = reading.words
                uncertain = any(w in WILDCARDS for w in argv)
                for rule in self._command_candidates(argv[0]):
                    if uncertain:
                        spec = max((p.specificity for p in rule.commands if p.could_match(argv)), default=-1)
                    else:
                        spec = rule.match_command(argv, loose=True)
                    if spec >= 0 and (rule.id not in matches or matches[rule.id].specificity < spec):
                        matches[rule.id] = Match(rule, spec)
        outcome = self._combine(list(matches.values()), Kind.PROCESS, form.shown)
        note = (f"could not parse the command line safely ({form.how}); decided by the strictest rule "
                "matching any part of it")
        inner = outcome.decision
        decision = Decision(inner.verdict, inner.rule_id, f"{note}: {inner.reason}", inner.audit_only)
        return _Outcome(decision, outcome.winner, outcome.matches, form.shown, note=note)

    def _evaluate_forms(self, forms: list[Form], line: str) -> _Outcome:
        """The line's decision is its strictest reading's; every reading that matched a rule is a part."""
        if not forms:
            default = self._defaults[Kind.PROCESS]
            reason = f"the line runs no command; the default for process is {default.value}"
            return _Outcome(self._final(Decision(default, None, reason)), None, (), line)
        parts = [self._evaluate_form(form) for form in forms]
        if len(parts) == 1:
            return parts[0]
        worst_index = max(range(len(parts)), key=lambda i: (parts[i].decision.enforced.strength,
                                                            parts[i].decision.verdict.strength,
                                                            parts[i].winner is not None, -i))
        worst = parts[worst_index]
        if worst.winner is None and worst.note is None:
            default = self._defaults[Kind.PROCESS]
            reason = f"no rule matched; the default for process is {default.value}"
            return _Outcome(self._final(Decision(default, None, reason)), None, (), line,
                            parts=self._shown_parts(forms, parts, None))
        how = forms[worst_index].how
        how = "" if how in ("as written", "normalised") else f"; read as {how.rstrip('; ')}"
        shown = self._shown_parts(forms, parts, worst)
        place = next((k for k, p in enumerate(shown) if p is worst), 0)
        reason = f"part {place + 1} of {len(shown)} ({worst.subject}{how}): {worst.decision.reason}"
        decision = Decision(worst.decision.verdict, worst.decision.rule_id, reason, worst.decision.audit_only)
        return _Outcome(decision, worst.winner, (), line, parts=shown, note=worst.note)

    @staticmethod
    def _shown_parts(forms: list[Form], parts: list[_Outcome],
                     worst: _Outcome | None) -> tuple[_Outcome, ...]:
        """What an explanation lists: each simple command as written and every reading that matched a
        rule (the readings tried behind wrappers that matched nothing are left out), at most 64."""
        shown = [p for f, p in zip(forms, parts, strict=True)
                 if p.matches or p is worst or f.how == "as written"]
        if worst is not None and not any(p is worst for p in shown[:64]):
            return (*shown[:63], worst)
        return tuple(shown[:64])

    def _refuse(self, reason: str, subject: str) -> _Outcome:
        return _Outcome(self._final(Decision(Verdict.DENY, None, reason)), None, (), subject)

    def _final(self, decision: Decision) -> Decision:
        if self.mode == "audit" and not decision.audit_only:
            return Decision(decision.verdict, decision.rule_id, decision.reason, True)
        return decision

    def _combine(self, matches: list[Match], kind: Kind, subject: str) -> _Outcome:
        active = [m for m in matches if m.excluded_by is None]
        policy_audit = self.mode == "audit"
        enforcing = [m for m in active if policy_audit or not m.rule.audit_only]
        winner = _best(enforcing)
        if winner is not None:
            decision = Decision(winner.rule.verdict, winner.rule.id, _reason(winner.rule))
        else:
            default = self._defaults[kind]
            reason = f"no rule matched; the default for {kind.value} is {default.value}"
            decision = Decision(default, None, reason)
        if decision.verdict is Verdict.ALLOW:
            auditing = _best([m for m in active if m.rule.audit_only and not policy_audit])
            if auditing is not None and auditing.rule.strength > decision.verdict.strength:
                winner = auditing
                decision = Decision(auditing.rule.verdict, auditing.rule.id,
                                    f"[audit mode, not enforced] {_reason(auditing.rule)}", True)
        return _Outcome(self._final(decision), winner, tuple(matches), subject)

    def _explanation(self, action: Action, outcome: _Outcome) -> Explanation:
        winner = outcome.winner
        losers: list[Loser] = []
        for match in sorted(outcome.matches, key=_rank):
            if winner is not None and match.rule.id == winner.rule.id:
                continue
            losers.append(Loser(match.rule.id, match.rule.verdict, self._why_lost(match, winner),
                                match.rule.location))
        parts = tuple(self._explanation(action, part) for part in outcome.parts)
        return Explanation(action=action, decision=outcome.decision,
                           winner=winner.rule.id if winner is not None else None,
                           winner_location=winner.rule.location if winner is not None else None,
                           losers=tuple(losers), parts=parts, note=outcome.note, subject=outcome.subject)

    def _why_lost(self, match: Match, winner: Match | None) -> str:
        if match.excluded_by is not None:
            return f"excluded by its except pattern {match.excluded_by!r}"
        if match.rule.audit_only and self.mode != "audit" and (winner is None or not winner.rule.audit_only):
            return "audit-mode rule: recorded when stricter than the outcome, never enforced"
        if winner is None:
            return "the kind's default decided"
        if match.rule.strength < winner.rule.strength:
            return f"{match.rule.verdict.value} loses to {winner.rule.verdict.value} (deny > ask > allow)"
        if winner.rule.audit_only and not match.rule.audit_only:
            return "the audit-mode winner is reported because it is stricter; this rule is what is enforced"
        if match.specificity < winner.specificity:
            return f"same verdict; {winner.rule.id!r} matches more specifically"
        return f"same verdict and specificity; {winner.rule.id!r} comes first by id"


def _exec_context(action: Action) -> tuple[str | None, tuple[str, ...] | None]:
    """An exec's resolved executable and exact argv (the supervisor gives both); a typed line has none."""
    if action.op is Op.RUN and action.exe is not None and action.argv is not None:
        return action.exe, action.argv
    return None, None


def _rank(match: Match) -> tuple[int, int, str]:
    return (-match.rule.strength, -match.specificity, match.rule.id)


def _best(matches: list[Match]) -> Match | None:
    return min(matches, key=_rank) if matches else None


def _reason(rule: Rule) -> str:
    return rule.reason or f"{_VERB[rule.verdict]} by rule {rule.id!r}"


def _rebuild_policy(kwargs: dict[str, Any]) -> Policy:
    return Policy(**kwargs)
