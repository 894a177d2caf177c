"""Shared fixtures for the audit tests: a keyed $GUARD_HOME, a controllable clock, sample events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guard.audit import AuditWriter, Keyring, decision_event, session_event
from guard.audit.note import VerifierKey
from guard.model import Action, Decision, Op, Verdict


class Clock:
    """A clock the test moves; each read also advances it a little, like a real one."""

    def __init__(self, t: float = 1_767_225_600.0, step: float = 0.001) -> None:
        self.t = t
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def sample_event(i: int, session: str = "s1") -> dict[str, Any]:
    ops = [Op.READ, Op.WRITE, Op.EXEC, Op.CONNECT, Op.RUN]
    op = ops[i % len(ops)]
    target = {Op.CONNECT: "example.com:443", Op.RUN: "git status"}.get(op, f"/w/file{i}")
    verdict = Verdict.DENY if i % 3 == 0 else Verdict.ALLOW
    if i % 17 == 4:
        return session_event(session, "note", n=i)
    return decision_event(session, Action(op, target, pid=100 + i), Decision(verdict, f"r{i % 4}", "why"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def root(guard_home: Path, clock: Clock) -> VerifierKey:
    return Keyring(guard_home).init(now=clock())


WriteLog = Callable[..., AuditWriter]


@pytest.fixture
def write_log(guard_home: Path, root: VerifierKey, clock: Clock) -> WriteLog:
    """write_log(n, **writer_kwargs): append n sample records through a fresh writer and close it."""

    def run(n: int, start: int = 0, **kwargs: Any) -> AuditWriter:
        params: dict[str, Any] = {"checkpoint_every": 5, "epoch_checkpoints": 3, "now": clock}
        params.update(kwargs)
        w = AuditWriter(guard_home, **params)
        with w:
            for i in range(start, start + n):
                w.append(sample_event(i))
        return w

    return run
