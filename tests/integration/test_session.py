"""guard.session against a real daemon: records reach the spool before decide() returns, survive the
daemon's death, and an `ask` without a daemon is refused by name."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import orjson
from support.daemon import running_daemon, wait_until

from guard.audit.segments import list_segments
from guard.daemon.client import DaemonClient
from guard.model import Action, Op, Verdict
from guard.policy import load_policy
from guard.session import FAIL_CLOSED_RULE, Decider, Recorder, RecordingLimits, Tally
from guard.spool import SpoolWriter, read_spool

POLICY = """\
version: 1
name: session-test
rules:
  - {id: ws, allow: [read, write], paths: ["${workspace}/**"]}
  - {id: publish, ask: [run], commands: ["git push ..."]}
"""


class Control:
    """Counts what the recorder did to the agent (the real tree is exercised by tests/integration/test_faults)."""

    def __init__(self) -> None:
        self.paused = threading.Event()
        self.resumed = threading.Event()
        self.killed = threading.Event()

    def pause(self) -> None:
        self.paused.set()

    def resume(self) -> None:
        self.resumed.set()

    def kill(self) -> None:
        self.killed.set()


def _setup(guard_home: Path, tmp_path: Path) -> tuple[Path, Path]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (tmp_path / "p.yaml").write_text(POLICY)
    return workspace, tmp_path / "p.yaml"


def test_a_record_is_in_the_spool_when_decide_returns_and_reaches_the_trail_after_a_daemon_kill(
        guard_home: Path, tmp_path: Path) -> None:
    workspace, policy_file = _setup(guard_home, tmp_path)
    policy = load_policy(policy_file, workspace=workspace)
    control = Control()
    fields = {"policy": str(policy_file), "workspace": str(workspace)}
    with running_daemon(guard_home) as daemon:
        client = DaemonClient.connect(guard_home, timeout=5)
        session = client.open_session(policy_file, workspace)["session"]
        spool = SpoolWriter.create(guard_home, session)

        def reconnect() -> DaemonClient:
            fresh = DaemonClient.connect(guard_home, timeout=5)
            fresh.request("session.open", {**fields, "resume": session})
            return fresh

        recorder = Recorder(spool, session, client, reconnect, warn=lambda _line: None,
                            limits=RecordingLimits(pause_after=30, stop_after=60))
        recorder.attach(control)
        decider = Decider(policy, recorder, session, Tally(), warn=lambda _line: None)
        assert decider.decide(Action(Op.WRITE, str(workspace / "a"))).verdict is Verdict.ALLOW
        assert [x.record["action"]["target"] for x in read_spool(spool.path).lines] == [str(workspace / "a")]
        daemon.kill()
        daemon.wait(timeout=10)
        refused = decider.decide(Action(Op.RUN, "git push origin main", argv=("git", "push", "origin", "main")))
        assert (refused.verdict, refused.rule_id) == (Verdict.DENY, FAIL_CLOSED_RULE)
        assert "no answer to the ask" in refused.reason
        # with no daemon, allowed work is still recorded first, and waits for nothing but the window
        assert decider.decide(Action(Op.WRITE, str(workspace / "b"))).verdict is Verdict.ALLOW
    assert not control.killed.is_set()
    with running_daemon(guard_home):  # the daemon comes back: the recorder resumes the session on its own
        problem = recorder.close(exit_status=0, summary={"allowed": 2})
        assert problem is None, problem
    assert not spool.path.exists()
    mine = [r for r in _trail(guard_home) if r.get("session") == session]
    targets = [(r["action"]["target"], r["decision"]["verdict"]) for r in mine if r["type"] == "decision"]
    assert targets == [(str(workspace / "a"), "allow"), ("git push origin main", "deny"),
                       (str(workspace / "b"), "allow")]
    assert [r["event"] for r in mine if r["type"] == "session"][-1] == "end"


def test_a_stopped_daemon_pauses_then_stops_the_agent(guard_home: Path, tmp_path: Path) -> None:
    workspace, policy_file = _setup(guard_home, tmp_path)
    policy = load_policy(policy_file, workspace=workspace)
    control = Control()
    lines: list[str] = []
    with running_daemon(guard_home) as daemon:
        client = DaemonClient.connect(guard_home, timeout=5)
        session = client.open_session(policy_file, workspace)["session"]
        spool = SpoolWriter.create(guard_home, session)
        recorder = Recorder(spool, session, client, lambda: DaemonClient.connect(guard_home, timeout=1),
                            warn=lines.append, limits=RecordingLimits(pause_after=0.5, stop_after=2,
                                                                      request_timeout=0.5))
        recorder.attach(control)
        decider = Decider(policy, recorder, session, Tally(), warn=lines.append)
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            assert decider.decide(Action(Op.WRITE, str(workspace / "a"))).verdict is Verdict.ALLOW
            wait_until(control.paused.is_set, timeout=20, what="the agent to be paused")
            wait_until(control.killed.is_set, timeout=20, what="the agent to be stopped")
            after = decider.decide(Action(Op.WRITE, str(workspace / "b")))
            assert (after.verdict, after.rule_id) == (Verdict.DENY, FAIL_CLOSED_RULE)
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        assert any("paused" in line for line in lines) and any("stopping the sandbox" in line for line in lines)
        recorder.close(exit_status=137, summary={})
        # whether the daemon took the last records before close gave up or finds the spool abandoned after,
        # the trail ends the session saying why
        wait_until(lambda: not spool.path.exists(), timeout=20, what="the daemon to ingest the spool")
    mine = [r for r in _trail(guard_home) if r.get("session") == session]
    events = [r["event"] for r in mine if r["type"] == "session"]
    assert events[0] == "start" and "paused" in events and "stalled" in events and events[-1] == "end", events
    assert mine[-1]["status"] == "stopped" and "acknowledged no record" in mine[-1]["reason"]
    assert [r["action"]["target"] for r in mine if r["type"] == "decision"] == [str(workspace / "a")]


def _trail(home: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for seg in list_segments(home / "log") for line in seg.path.read_bytes().splitlines()]


def test_a_record_that_cannot_be_written_is_a_deny_and_stops_the_sandbox(guard_home: Path, tmp_path: Path) -> None:
    """ENOSPC from the kernel (/dev/full as the spool): the action is refused, never allowed unrecorded."""
    workspace, policy_file = _setup(guard_home, tmp_path)
    policy = load_policy(policy_file, workspace=workspace)
    control = Control()
    lines: list[str] = []
    spool = SpoolWriter(os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC), tmp_path / "full.jsonl")
    recorder = Recorder(spool, "0123456789", None, lambda: DaemonClient.connect(guard_home, timeout=1),
                        warn=lines.append, limits=RecordingLimits(request_timeout=0.5))
    recorder.attach(control)
    decider = Decider(policy, recorder, "0123456789", Tally(), warn=lines.append)
    refused = decider.decide(Action(Op.WRITE, str(workspace / "a")))
    assert (refused.verdict, refused.rule_id) == (Verdict.DENY, FAIL_CLOSED_RULE)
    assert "No space left" in refused.reason and control.killed.is_set()
    assert any("stopping the sandbox" in line for line in lines)
    later = decider.decide(Action(Op.READ, str(workspace / "b")))
    assert later.verdict is Verdict.DENY
    assert recorder.close(exit_status=137, summary={}) is not None  # nothing to deliver to: says so


def test_an_approved_ask_is_in_the_trail_before_the_answer_even_if_the_daemon_dies_at_once(
        guard_home: Path, tmp_path: Path) -> None:
    workspace, policy_file = _setup(guard_home, tmp_path)
    push = Action(Op.RUN, "git push origin main", argv=("git", "push", "origin", "main"))
    answers: list[object] = []
    with running_daemon(guard_home) as daemon:
        client = DaemonClient.connect(guard_home, timeout=5)
        session = client.open_session(policy_file, workspace)["session"]
        asking = threading.Thread(target=lambda: answers.append(client.decide(session, push)))
        asking.start()
        with DaemonClient.connect(guard_home, timeout=5) as human:
            pending = wait_until(human.approvals, timeout=20, what="the ask to be pending")
            human.approve(pending[0]["approval"], by="test")
        asking.join(timeout=30)
        daemon.kill()  # the moment the answer is out: nothing may be lost with the daemon's memory
        daemon.wait(timeout=10)
        client.close()
    assert answers and getattr(answers[0], "verdict", None) is Verdict.ALLOW, answers
    mine = [r for r in _trail(guard_home) if r.get("session") == session]
    assert [r["type"] for r in mine] == ["session", "decision", "approval"], mine
    assert mine[-1]["verdict"] == "allow" and mine[-1]["by"] == "test"
