"""Problems found in a policy, collected rather than raised one at a time.

A policy author fixing a file wants every mistake in one pass, like a compiler gives them, so the loader
records `Diagnostic`s and raises one `PolicyLoadError` carrying all of them at the end.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from guard.errors import Location, PolicyError


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    message: str
    location: Location
    hint: str | None = None

    def __str__(self) -> str:
        tag = "" if self.severity is Severity.ERROR else "warning: "
        head = f"{self.location}: {tag}{self.message}"
        return f"{head} (hint: {self.hint})" if self.hint else head

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity.value, "file": self.location.file, "line": self.location.line,
                "col": self.location.col, "message": self.message, "hint": self.hint}


class PolicyLoadError(PolicyError):
    """A policy could not be loaded; `diagnostics_list` holds every error found, in file order."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics_list = tuple(diagnostics)
        message = "\n".join(str(d) for d in self.diagnostics_list) or "policy could not be loaded"
        super().__init__(message)  # each line already carries its location and hint


class Collector:
    """Accumulates diagnostics while the loader walks a policy."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, message: str, location: Location, hint: str | None = None) -> None:
        self.items.append(Diagnostic(Severity.ERROR, message, location, hint))

    def warning(self, message: str, location: Location, hint: str | None = None) -> None:
        self.items.append(Diagnostic(Severity.WARNING, message, location, hint))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest valid spelling, or None when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None
