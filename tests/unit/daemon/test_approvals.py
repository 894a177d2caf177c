"""The pending-approval registry: first answer wins, watchers see changes, sessions end their requests."""

from __future__ import annotations

import asyncio

import pytest

from guard.daemon.approvals import WATCH_QUEUE, Answer, Approvals
from guard.daemon.protocol import NOT_FOUND, RequestError
from guard.model import Action, Decision, Op, Verdict

ACTION = Action(Op.RUN, "git push")
ASK = Decision(Verdict.ASK, "push-asks", "pushing needs a human")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_answer_resolves_the_future_and_a_second_answer_is_not_found() -> None:
    async def scenario() -> None:
        approvals = Approvals()
        pending = approvals.create(session="s1", policy="p", action=ACTION, decision=ASK, now=100.0, timeout=5)
        approvals.answer(pending.id, Answer(Verdict.ALLOW, "alice", 1000, "approved by alice"))
        assert (await pending.future).by == "alice"
        with pytest.raises(RequestError) as info:
            approvals.answer(pending.id, Answer(Verdict.DENY, "bob", 1001, "denied by bob"))
        assert info.value.code == NOT_FOUND
        approvals.finish(pending, pending.future.result(), now=101.0)
        assert len(approvals) == 0
    run(scenario())


def test_list_reports_age_and_time_left() -> None:
    async def scenario() -> None:
        approvals = Approvals()
        approvals.create(session="s1", policy="p", action=ACTION, decision=ASK, now=100.0, timeout=60)
        [view] = approvals.list(now=110.0)
        assert view["age_s"] == 10.0 and view["expires_in_s"] == 50.0 and view["timeout_s"] == 60
        assert view["action"] == ACTION.to_dict() and view["rule_id"] == "push-asks"
    run(scenario())


def test_answer_all_only_touches_the_named_session() -> None:
    async def scenario() -> None:
        approvals = Approvals()
        mine = approvals.create(session="s1", policy="p", action=ACTION, decision=ASK, now=0, timeout=5)
        other = approvals.create(session="s2", policy="p", action=ACTION, decision=ASK, now=0, timeout=5)
        assert approvals.answer_all(session="s1", answer=Answer(Verdict.DENY, "daemon", None, "lost"), now=1) == 1
        assert mine.future.done() and not other.future.done()
        assert [v["approval"] for v in approvals.list(now=1)] == [other.id]  # gone at once, not on wake-up
    run(scenario())


def test_watchers_see_pending_and_resolved_then_the_end_marker() -> None:
    async def scenario() -> None:
        approvals = Approvals()
        queue = approvals.watch()
        pending = approvals.create(session="s1", policy="p", action=ACTION, decision=ASK, now=0, timeout=5)
        answer = Answer(Verdict.DENY, "bob", 0, "denied by bob")
        approvals.answer(pending.id, answer)
        approvals.finish(pending, answer, now=1)
        approvals.close_watchers()
        events = [queue.get_nowait() for _ in range(3)]
        assert events[0] is not None and events[0]["event"] == "pending"
        assert events[1] is not None and events[1]["event"] == "resolved" and events[1]["by"] == "bob"
        assert events[2] is None
    run(scenario())


def test_a_watcher_that_falls_behind_is_dropped_with_an_end_marker() -> None:
    async def scenario() -> None:
        approvals = Approvals()
        queue = approvals.watch()
        for i in range(WATCH_QUEUE + 1):
            approvals.create(session=f"s{i}", policy="p", action=ACTION, decision=ASK, now=0, timeout=5)
        drained = [queue.get_nowait() for _ in range(queue.qsize())]
        assert drained[-1] is None
        assert len(drained) == WATCH_QUEUE
    run(scenario())
