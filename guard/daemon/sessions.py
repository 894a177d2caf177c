"""Sessions: one per `guard run` (or hook-driven agent), each holding the policy it is judged by.

A session belongs to the connection that opened it. The daemon closes it when that connection drops, so a
SIGKILLed `guard run` leaves a session recorded as "lost" rather than one that stays open forever.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from guard.daemon.protocol import NOT_FOUND, RequestError
from guard.model import Action, Decision


class PolicyLike(Protocol):
    """What the daemon needs from guard.policy.Policy (kept narrow so tests of this module need no YAML)."""

    @property
    def name(self) -> str: ...
    @property
    def sources(self) -> tuple[Path, ...]: ...
    @property
    def ask_timeout(self) -> float: ...
    @property
    def mode(self) -> str: ...
    def decide(self, action: Action) -> Decision: ...


@dataclass
class Counts:
    """Final outcomes: an ask that a human approved counts in `asked` and in `allowed`."""

    allowed: int = 0
    denied: int = 0
    asked: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"allowed": self.allowed, "denied": self.denied, "asked": self.asked}


@dataclass(eq=False)
class Session:
    id: str
    policy_ref: str
    workspace: Path
    argv: tuple[str, ...]
    cwd: str | None
    pid: int | None
    policy: PolicyLike
    sources_hash: str
    started: float
    owner: int  # connection number
    peer_uid: int
    counts: Counts = field(default_factory=Counts)
    reload_error: str | None = None  # the last failed reload, cleared by a good one
    env: Mapping[str, str] | None = None  # the client's policy variables; None: the daemon's own environment


    def view(self, now: float) -> dict[str, Any]:
        return {"session": self.id, "policy": self.policy.name, "workspace": str(self.workspace),
                "argv": list(self.argv), "pid": self.pid, "age_s": round(now - self.started, 3),
                "counts": self.counts.to_dict(), "sources_hash": self.sources_hash,
                "reload_error": self.reload_error}

    def policy_view(self) -> dict[str, Any]:
        return {"name": self.policy.name, "sources": [str(p) for p in self.policy.sources],
                "ask_timeout": self.policy.ask_timeout, "mode": self.policy.mode,
                "sources_hash": self.sources_hash}


def sources_hash(paths: Sequence[Path]) -> str:
    """A digest of every policy file a session is judged by, so the trail pins the exact policy text.

    A file that vanished between load and hashing is hashed as absent rather than failing the session.
    """
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path).encode() + b"\x00")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"\x00" * 32)
    return "sha256:" + digest.hexdigest()


def short_id(taken: object, nbytes: int = 5) -> str:
    """A random id short enough to type, retried on the (unlikely) collision with one in `taken`."""
    for _ in range(64):
        candidate = secrets.token_hex(nbytes)
        if candidate not in taken:  # type: ignore[operator]
            return candidate
    raise RuntimeError("could not draw a fresh id")  # 64 collisions of 40 random bits: a broken RNG


class SessionTable:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session

    def new_id(self) -> str:
        return short_id(self._sessions)

    def get(self, session_id: str) -> Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise RequestError(NOT_FOUND, f"field 'session': no open session {session_id[:64]!r}") from None

    def remove(self, session_id: str) -> Session:
        session = self.get(session_id)
        del self._sessions[session_id]
        return session

    def owned_by(self, owner: int) -> list[Session]:
        return [s for s in self._sessions.values() if s.owner == owner]

    def using_source(self, path: Path) -> list[Session]:
        return [s for s in self._sessions.values() if path in s.policy.sources]

    def watched_paths(self) -> set[Path]:
        return {p for s in self._sessions.values() for p in s.policy.sources}

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def __len__(self) -> int:
        return len(self._sessions)
