"""Pending `ask` decisions waiting for a human.

Each pending request holds a future the deciding coroutine awaits; `guard approve`/`guard deny` resolve it
from another connection. Watchers (`approvals.watch`) get a queue of changes so a UI need not poll.
Everything here runs on the daemon's event loop thread; time is passed in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from guard.daemon.protocol import NOT_FOUND, RequestError
from guard.daemon.sessions import short_id
from guard.model import Action, Decision, Verdict

WATCH_QUEUE = 256  # a watcher that falls this far behind is dropped, never allowed to grow memory


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    by: str  # who answered: a name, "timeout" or "daemon"
    uid: int | None
    reason: str


@dataclass(eq=False)
class Pending:
    id: str
    session: str
    policy: str
    action: Action
    decision: Decision
    created: float
    timeout: float
    future: asyncio.Future[Answer]

    def view(self, now: float) -> dict[str, Any]:
        return {"approval": self.id, "session": self.session, "policy": self.policy,
                "action": self.action.to_dict(), "rule_id": self.decision.rule_id,
                "reason": self.decision.reason, "age_s": round(now - self.created, 3),
                "timeout_s": self.timeout,
                "expires_in_s": round(max(0.0, self.created + self.timeout - now), 3)}


class Approvals:
    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}
        self._watchers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def create(self, *, session: str, policy: str, action: Action, decision: Decision, now: float,
               timeout: float) -> Pending:
        loop = asyncio.get_running_loop()
        pending = Pending(id=short_id(self._pending, 3), session=session, policy=policy, action=action,
                          decision=decision, created=now, timeout=timeout, future=loop.create_future())
        self._pending[pending.id] = pending
        self._notify({"event": "pending", "approval": pending.view(now)})
        return pending

    def answer(self, approval_id: str, answer: Answer) -> Pending:
        """Resolve a pending request; unknown or already answered ids are NOT_FOUND (first answer wins)."""
        pending = self._pending.get(approval_id)
        if pending is None or pending.future.done():
            raise RequestError(NOT_FOUND, f"field 'approval': no pending approval {approval_id[:64]!r}")
        pending.future.set_result(answer)
        return pending

    def finish(self, pending: Pending, answer: Answer, now: float) -> None:
        """Forget a request once its waiter has its answer, and tell watchers how it ended."""
        if self._pending.pop(pending.id, None) is not None:
            self._notify({"event": "resolved", "approval": pending.view(now), "verdict": answer.verdict.value,
                          "by": answer.by})

    def answer_all(self, *, session: str | None, answer: Answer, now: float) -> int:
        """Answer and forget every pending request (of one session, or all), at once: on session loss and
        shutdown nobody may approve them any more, even before their waiters wake up to record the answer."""
        count = 0
        for pending in list(self._pending.values()):
            if (session is None or pending.session == session) and not pending.future.done():
                pending.future.set_result(answer)
                self.finish(pending, answer, now)
                count += 1
        return count

    def list(self, now: float) -> list[dict[str, Any]]:
        return [p.view(now) for p in sorted(self._pending.values(), key=lambda p: p.created)]

    def __len__(self) -> int:
        return len(self._pending)

    def watch(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(WATCH_QUEUE)
        self._watchers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._watchers.discard(queue)

    def close_watchers(self) -> None:
        for queue in list(self._watchers):
            self._push(queue, None)
        self._watchers.clear()

    def _notify(self, message: dict[str, Any]) -> None:
        for queue in list(self._watchers):
            self._push(queue, message)

    def _push(self, queue: asyncio.Queue[dict[str, Any] | None], message: dict[str, Any] | None) -> None:
        try:
            queue.put_nowait(message)
        except asyncio.QueueFull:
            self._watchers.discard(queue)
            # make room for the end marker so the watching connection notices it was dropped
            queue.get_nowait()
            queue.put_nowait(None)
