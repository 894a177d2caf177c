"""The one error hierarchy of guard.

Every failure a user can cause or meet is a `GuardError`: it says what went wrong, where (file:line:col,
field, record number) and, when we know one, what to do. The CLI catches `GuardError` once, prints
`diagnostics()` and exits with `exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """Where in a file something is; line and column are 1-based, 0 means unknown."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line and self.col:
            return f"{self.file}:{self.line}:{self.col}"
        if self.line:
            return f"{self.file}:{self.line}"
        return self.file


class GuardError(Exception):
    """Root of every error guard raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None, location: Location | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location

    def diagnostics(self) -> str:
        """The text a person reads: location first, like a compiler, then the remedy."""
        head = f"{self.location}: {self.message}" if self.location else self.message
        return f"{head}\n  hint: {self.hint}" if self.hint else head

    def __str__(self) -> str:
        return self.diagnostics()


class UsageError(GuardError):
    """The caller asked for something that cannot be done as asked (bad flag value, missing file)."""

    exit_code = 2


class PolicyError(GuardError):
    """A policy file is malformed, inconsistent or refers to something undefined."""


class AuditError(GuardError):
    """The audit trail could not be written or read (not tampering: see audit.verify for that)."""


class KeyringError(GuardError):
    """Signing keys are missing, malformed or have unsafe permissions."""


class SandboxError(GuardError):
    """The sandbox could not be set up as the policy requires; `guard run` exits 125 with this."""

    exit_code = 125


class DaemonError(GuardError):
    """The daemon is unreachable, refused us, or answered with an error."""


class ProtocolError(DaemonError):
    """A message on the daemon socket is malformed, oversized or of an unknown version."""
