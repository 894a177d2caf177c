"""What the sandbox actually enforces on this host, protection by protection, in three states.

A sandbox that silently enforces less than the policy asks is worse than none, because people rely on it.
So every downgrade (older Landlock ABI, a capped scan, a deny whose path does not exist yet) becomes a
line in an `EnforcementReport`; `guard doctor` prints it, `guard run` shows it, and `require_full()`
turns anything short of "fully" into a refusal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from guard.errors import SandboxError


class State(StrEnum):
    FULLY = "fully"
    PARTLY = "partly"
    NOT = "not"


@dataclass(frozen=True, slots=True)
class Protection:
    """One protection and how much of it this host and plan deliver.

    `required` is false for protections that only improve observation (a missing one never blocks
    `--require-full`).
    """

    name: str
    state: State
    reason: str
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state.value, "reason": self.reason,
                "required": self.required}


@dataclass(frozen=True, slots=True)
class EnforcementReport:
    protections: tuple[Protection, ...]

    @property
    def overall(self) -> State:
        required = [p for p in self.protections if p.required]
        if required and all(p.state is State.NOT for p in required):
            return State.NOT
        if all(p.state is State.FULLY for p in required):
            return State.FULLY
        return State.PARTLY

    @property
    def fully_enforced(self) -> bool:
        return self.overall is State.FULLY

    def summary(self) -> str:
        """One line: the overall state and what falls short."""
        short = self.shortfalls()
        if not short:
            return "fully enforced"
        names = ", ".join(f"{p.name} ({p.state.value})" for p in short)
        return f"{self.overall.value} enforced; short: {names}"

    def warnings(self) -> list[str]:
        """One line per required protection that is not fully enforced, with the reason."""
        return [f"{p.name}: {p.state.value} enforced: {p.reason}" for p in self.shortfalls()]

    def shortfalls(self) -> tuple[Protection, ...]:
        return tuple(p for p in self.protections if p.required and p.state is not State.FULLY)

    def get(self, name: str) -> Protection:
        for p in self.protections:
            if p.name == name:
                return p
        raise KeyError(name)

    def with_protections(self, extra: Iterable[Protection]) -> EnforcementReport:
        """A report with `extra` added, replacing same-named entries (spawn adds what it learnt)."""
        extra = tuple(extra)
        names = {p.name for p in extra}
        return EnforcementReport(tuple(p for p in self.protections if p.name not in names) + extra)

    def require_full(self) -> None:
        """Raise SandboxError naming every required protection that is not fully enforced."""
        missing = self.shortfalls()
        if missing:
            lines = "; ".join(f"{p.name}: {p.state.value} ({p.reason})" for p in missing)
            raise SandboxError(f"--require-full: {len(missing)} protection(s) not fully enforced: {lines}",
                               hint="run `guard doctor` to see what this host lacks, or drop --require-full")

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall.value, "protections": [p.to_dict() for p in self.protections]}

    def render(self) -> str:
        width = max((len(p.name) for p in self.protections), default=0)
        lines = [f"{p.name.ljust(width)}  {p.state.value:<6}  {p.reason}"
                 + ("" if p.required else "  (informational)") for p in self.protections]
        lines.append(f"overall: {self.overall.value}")
        return "\n".join(lines)
