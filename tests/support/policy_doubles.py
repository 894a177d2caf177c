"""A stand-in for guard.policy.Policy with only what the sandbox planner reads (docs/contracts.md), so the
planner's tests can state their rules directly instead of writing YAML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guard.model import Op, Verdict


@dataclass(frozen=True)
class Rule:
    """The fields of guard.policy.FileRule, with the defaults a test usually wants."""

    rule_id: str
    verdict: Verdict
    ops: frozenset[Op]
    patterns: tuple[str, ...]
    excepts: tuple[str, ...] = ()
    audit_only: bool = False


@dataclass(frozen=True)
class Pol:
    rules: tuple[Rule, ...]
    sources: tuple[Path, ...] = ()

    def file_rules(self) -> tuple[Rule, ...]:
        return self.rules
