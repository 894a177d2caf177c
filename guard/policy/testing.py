"""Inline policy tests: run them, and say which of the file's own rules they exercise.

A rule counts as exercised when some test's action matched it, whether or not it decided: a deny that
shadows an allow in a test still proves the allow's patterns reach the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guard.model import Decision
from guard.policy.engine import Explanation, Policy, PolicyTest


@dataclass(frozen=True, slots=True)
class TestResult:
    __test__ = False  # not a pytest class

    test: PolicyTest
    explanation: Explanation

    @property
    def decision(self) -> Decision:
        return self.explanation.decision

    @property
    def passed(self) -> bool:
        return self.decision.verdict is self.test.expected

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test.text, "location": str(self.test.location),
                "expected": self.test.expected.value, "got": self.decision.to_dict(), "passed": self.passed}


@dataclass(frozen=True, slots=True)
class TestReport:
    __test__ = False

    policy: str
    results: tuple[TestResult, ...]
    own_rules: tuple[str, ...]
    covered: tuple[str, ...]

    @property
    def failures(self) -> tuple[TestResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def uncovered(self) -> tuple[str, ...]:
        return tuple(r for r in self.own_rules if r not in self.covered)

    @property
    def coverage(self) -> float:
        return len(self.covered) / len(self.own_rules) if self.own_rules else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "passed": len(self.results) - len(self.failures),
                "failed": len(self.failures), "results": [r.to_dict() for r in self.results],
                "coverage": {"rules": len(self.own_rules), "covered": list(self.covered),
                             "uncovered": list(self.uncovered), "ratio": round(self.coverage, 4)}}


def run_tests(policy: Policy, own_rules: tuple[str, ...]) -> TestReport:
    """Run `policy.tests`; coverage is measured over `own_rules` (the tested file's rule ids)."""
    results = tuple(TestResult(test, policy.explain(test.action)) for test in policy.tests)
    matched: set[str] = set()
    for result in results:
        matched |= result.explanation.matched_rule_ids
    return TestReport(policy=policy.name, results=results, own_rules=own_rules,
                      covered=tuple(r for r in own_rules if r in matched))
