"""Compiled rules: every pattern expanded, validated and ready to match.

Matching answers "how specific was the best pattern that matched" (or -1), because specificity is the
order-independent tie-break between rules of the same verdict. Unknown facts count against the action:
a deny or ask rule with `ports` matches a target without a port, while an allow rule does not; an allow
rule with `cidrs` needs every known address inside its ranges, a deny rule needs just one. Matchers are
conditions, never alternatives: a rule with `hosts` and `cidrs` needs both (see Rule.match_network).
"""

from __future__ import annotations

from dataclasses import dataclass

from guard.errors import Location
from guard.model import Kind, Op, Verdict
from guard.policy.commands import CommandPattern
from guard.policy.hosts import HostPattern, IPAddress, IPNetwork, PortRange, in_networks
from guard.policy.paths import PathPattern


@dataclass(frozen=True, slots=True)
class FileRule:
    """What the sandbox planner needs from a file rule (docs/contracts.md)."""

    rule_id: str
    verdict: Verdict
    ops: frozenset[Op]
    patterns: tuple[str, ...]
    excepts: tuple[str, ...]
    audit_only: bool
    existing_only: bool = False  # protects only what exists at launch (`applies_to: existing`)
    private: bool = False  # `writes: private`: the sandbox keeps these writes in a layer of the session's own


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    verdict: Verdict
    ops: frozenset[Op]
    kind: Kind
    reason: str
    audit_only: bool
    location: Location
    paths: tuple[PathPattern, ...] = ()
    hosts: tuple[HostPattern, ...] = ()
    cidrs: tuple[IPNetwork, ...] = ()
    ports: tuple[PortRange, ...] = ()
    commands: tuple[CommandPattern, ...] = ()
    except_paths: tuple[PathPattern, ...] = ()
    except_hosts: tuple[HostPattern, ...] = ()
    except_cidrs: tuple[IPNetwork, ...] = ()
    except_commands: tuple[CommandPattern, ...] = ()
    existing_only: bool = False
    outside_new_repos: bool = False  # not inside a repository created during the session
    private: bool = False

    @property
    def strength(self) -> int:
        return self.verdict.strength

    def match_path(self, path: str) -> int:
        best = -1
        for pattern in self.paths:
            if pattern.specificity > best and pattern.matches(path):
                best = pattern.specificity
        return best

    def path_excluded_by(self, path: str) -> str | None:
        for pattern in self.except_paths:
            if pattern.matches(path):
                return pattern.text
        return None

    def match_network(self, host: str, port: int | None, ips: tuple[IPAddress, ...]) -> int:
        """A rule's matchers are conditions that must all hold: its ports, its hosts (when it has any)
        and its CIDRs (when it has any) for the addresses the host resolved to. So `hosts: [api.corp]`
        with `cidrs: [10.0.0.0/8]` grants that one name, and only while it resolves inside 10/8.

        Unknown addresses (the proxy's first check, by name alone, before any DNS query): a rule with
        hosts and CIDRs is judged on its name, since the connection is decided again with the resolved
        addresses before anything is opened; a CIDR-only rule cannot match."""
        allow = self.verdict is Verdict.ALLOW
        if self.ports:
            if port is None:
                if allow:
                    return -1
            elif not any(port in r for r in self.ports):
                return -1
        best = -1
        if self.hosts:
            for pattern in self.hosts:
                if pattern.specificity > best and pattern.matches(host):
                    best = pattern.specificity
            if best < 0:
                return -1
        if self.cidrs:
            if ips:
                inside = [in_networks(ip, self.cidrs) for ip in ips]
                if not (all(inside) if allow else any(inside)):
                    return -1
            elif not self.hosts:
                return -1
            best = max(best, 0) + max(net.prefixlen for net in self.cidrs)
        return best

    def network_excluded_by(self, host: str, ips: tuple[IPAddress, ...]) -> str | None:
        for pattern in self.except_hosts:
            if pattern.matches(host):
                return pattern.text
        for net in self.except_cidrs:
            if ips and all(in_networks(ip, (net,)) for ip in ips):
                return str(net)
        return None

    def match_command(self, argv: tuple[str, ...], *, loose: bool = False) -> int:
        best = -1
        for pattern in self.commands:
            if pattern.specificity > best and pattern.matches(argv, prefix=loose):
                best = pattern.specificity
        return best

    def command_excluded_by(self, argv: tuple[str, ...]) -> str | None:
        for pattern in self.except_commands:
            if pattern.matches(argv):
                return pattern.text
        return None

    def to_file_rule(self) -> FileRule:
        return FileRule(rule_id=self.id, verdict=self.verdict, ops=self.ops,
                        patterns=tuple(p.text for p in self.paths),
                        excepts=tuple(p.text for p in self.except_paths), audit_only=self.audit_only,
                        existing_only=self.existing_only, private=self.private)
