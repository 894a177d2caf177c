"""A guarded session's decisions and their durable record.

`guard run` decides a session's actions in-process with the policy its sandbox was built from (the
engine is pure and takes microseconds); only `ask` goes to the daemon, which holds it for a human. Every
record reaches the session's spool (guard.spool) with one write(2) before the decision is returned, so
before the supervisor lets the action happen; the daemon ingests the spool into the signed trail and
acknowledges what it has written. See Decider and Recorder; docs/durability.md tells the whole story.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from guard.errors import GuardError
from guard.model import Action, Decision, Op, Verdict
from guard.sandbox.new_repos import new_repository_of, session_clock_ns

# The rule id of refusals the session makes without the policy: the daemon could not be asked, or the
# record could not be written.
FAIL_CLOSED_RULE = "guard:fail-closed"

if TYPE_CHECKING:
    from guard.daemon.client import DaemonClient
    from guard.policy import Policy
    from guard.spool import SpoolWriter


@dataclass
class Tally:
    """Counts what happened in a session, for the one-line summary; updated from several threads."""

    allowed: int = 0
    denied: int = 0
    asked: int = 0
    execs: int = 0
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # allows the supervisor's compiled fast path made (and recorded) without passing through count()
    fast_allowed: Callable[[], int] | None = None

    def count(self, action: Action, decision: Decision, *, asked: bool = False) -> None:
        """`decision` is what was enforced; `asked` says the daemon held it for a human, who answered (the
        final decision of an answered ask is allow or deny, so it cannot say so itself). An audit-mode
        `ask` asked no one: it counts as the allow it enforced, as the daemon counts it.

        Connections are not counted here: a proxied name is decided twice (by name, then with its
        addresses) for one connection; `count_connection` counts each `connection` record once."""
        with self.lock:
            if decision.enforced is Verdict.DENY:
                self.denied += 1
            else:
                self.allowed += 1
            if asked:
                self.asked += 1
            if action.op.value == "run":
                self.execs += 1

    def count_connection(self) -> None:
        with self.lock:
            self.connections += 1

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            fast = self.fast_allowed() if self.fast_allowed is not None else 0
            return {"allowed": self.allowed + fast, "denied": self.denied, "asked": self.asked,
                    "execs": self.execs, "connections": self.connections}


@dataclass(frozen=True, slots=True)
class RecordingLimits:
    """How far the agent may run ahead of the trail, and how long a silent daemon is tolerated.

    `window`: records in the spool the daemon has not acknowledged yet; when full, the next decision
    waits (the agent waits). `pause_after`: seconds without an acknowledgement (while records wait) before
    the agent's processes are stopped (SIGSTOP); `stop_after`: before the sandbox is killed.
    """

    window: int = 10_000
    pause_after: float = 10.0
    stop_after: float = 60.0
    request_timeout: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RecordingLimits:
        """GUARD_RECORD_WINDOW, GUARD_RECORD_PAUSE_AFTER, GUARD_RECORD_STOP_AFTER override the defaults."""
        base = cls()
        try:
            window = int(env.get("GUARD_RECORD_WINDOW", base.window))
            pause = float(env.get("GUARD_RECORD_PAUSE_AFTER", base.pause_after))
            stop = float(env.get("GUARD_RECORD_STOP_AFTER", base.stop_after))
        except ValueError as exc:
            raise GuardError(f"GUARD_RECORD_*: {exc}", hint="use a number, e.g. GUARD_RECORD_STOP_AFTER=60") \
                from None
        if window < 1 or not 0 < pause <= stop:
            raise GuardError(f"GUARD_RECORD_*: need WINDOW >= 1 and 0 < PAUSE_AFTER <= STOP_AFTER "
                             f"(got {window}, {pause:g}, {stop:g})")
        return cls(window=window, pause_after=pause, stop_after=stop,
                   request_timeout=min(base.request_timeout, pause))


class AgentControl(Protocol):
    """What the recorder may do to the agent when the trail cannot keep up."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def kill(self) -> None: ...


class RecordingStopped(GuardError):
    """The session can no longer record: every later decision is a fail-closed deny."""


class Recorder:
    """Owns the session's spool, its in-flight window and the daemon's acknowledgements.

    One thread asks the daemon to ingest whatever the spool holds (`spool.ingest`), reconnecting (and
    starting a daemon) when the connection is lost, so a killed, stopped or restarted daemon loses
    nothing; a watchdog pauses the agent when acknowledgements stop for `pause_after` seconds and kills the
    sandbox after `stop_after`, with a message on stderr and a record in the spool.
    """

    LINGER_S = 0.005

    def __init__(self, spool: SpoolWriter, session: str, client: DaemonClient | None,
                 connect: Callable[[], DaemonClient], *, limits: RecordingLimits,
                 warn: Callable[[str], None]) -> None:
        self._spool = spool
        self._session = session
        self._client = client
        self._connect = connect
        self.limits = limits
        self._warn = warn
        self._cv = threading.Condition()
        self._acked = 0
        self._pending_since: float | None = None  # no acknowledgement since then, records waiting
        self._closing = False
        self._gave_up = False  # close() stopped waiting for acknowledgements
        self._failed: str | None = None
        self._paused = False
        self._control: AgentControl | None = None
        self._lost_since: float | None = None
        self._thread = threading.Thread(target=self._guarded, args=(self._ack_loop,), name="guard-recorder",
                                        daemon=True)
        self._watchdog = threading.Thread(target=self._guarded, args=(self._watch,),
                                          name="guard-record-watchdog", daemon=True)
        self._waker: threading.Thread | None = None
        self._thread.start()
        self._watchdog.start()

    def watch_fast_appends(self) -> None:
        """The supervisor's compiled fast path appends to the spool on its own (SpoolWriter.use_core):
        keep it told of the window and of a stop, and wake the recorder when it appends."""
        fd = self._spool.wake_fd
        if fd is None or self._waker is not None:
            return
        self._push_flow()
        self._waker = threading.Thread(target=self._guarded, args=(lambda: self._wake_loop(fd),),
                                       name="guard-record-waker", daemon=True)
        self._waker.start()

    def _push_flow(self) -> None:
        self._spool.flow(self._acked, self.limits.window, self._failed is not None)

    def _wake_loop(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            with self._cv:
                if self._gave_up or self._failed is not None:
                    return
            if not poller.poll(200):
                continue
            os.read(fd, 8)
            with self._cv:
                if self._pending_since is None:
                    self._pending_since = time.monotonic()
                self._cv.notify_all()

    # ---- the decision path -------------------------------------------------------------------------

    @property
    def failed(self) -> str | None:
        return self._failed

    @property
    def client(self) -> DaemonClient | None:
        return self._client

    def attach(self, control: AgentControl) -> None:
        self._control = control
        if self._failed is not None:
            control.kill()

    def wait_room(self) -> None:
        """Block while the window is full; raise RecordingStopped once the session cannot record."""
        with self._cv:
            while self._failed is None and self._spool.last - self._acked >= self.limits.window:
                self._cv.wait(0.5)
            if self._failed is not None:
                raise RecordingStopped(self._failed)

    def append(self, record: Mapping[str, Any]) -> int:
        """Spool one record (one write(2)); any failure stops the sandbox and is raised."""
        if self._failed is not None:
            raise RecordingStopped(self._failed)
        try:
            n = self._spool.append(record)
        except Exception as exc:  # any failure of the recording path, not only an OSError
            message = exc.diagnostics() if isinstance(exc, GuardError) else f"{type(exc).__name__}: {exc}"
            self.fail(f"a record could not be written: {message}")
            raise RecordingStopped(self._failed or message) from exc
        if self._pending_since is None:  # the recorder may be idle: wake it (later records find it busy)
            with self._cv:
                if self._pending_since is None:
                    self._pending_since = time.monotonic()
                    self._cv.notify_all()
        return n

    def fail(self, why: str) -> None:
        """Stop recording and the sandbox; every later decision is a fail-closed deny."""
        with self._cv:
            if self._failed is not None:
                return
            self._failed = why
            self._cv.notify_all()
        self._push_flow()  # the fast path hands everything back: each is then refused, fail closed
        self._warn(f"guard: {why}; stopping the sandbox")
        control = self._control
        if control is not None:
            control.kill()

    # ---- the daemon side ---------------------------------------------------------------------------

    def _guarded(self, body: Callable[[], None]) -> None:
        """A recorder thread that dies of a bug must not leave the agent running unwatched."""
        try:
            body()
        except BaseException as exc:
            self.fail(f"the session's recorder failed ({type(exc).__name__}: {exc})")
            raise

    def _ack_loop(self) -> None:
        backoff = 0.05
        while True:
            with self._cv:
                while not self._closing and self._acked >= self._spool.last:
                    self._cv.wait(0.5)
                if self._acked >= self._spool.last or self._gave_up:
                    return  # closing, and everything is acknowledged (or the wait for it is over)
                if self._pending_since is None:  # an append raced with the last acknowledgement
                    self._pending_since = time.monotonic()
            try:
                client = self._client
                if client is None:
                    client = self._client = self._connect()
                    self._reconnected()
                reply = client.request("spool.ingest", {"session": self._session},
                                       timeout=self.limits.request_timeout)
                acked = int(reply["acked"])
            except Exception as exc:  # any failure: reconnect and try again
                self._lost(exc)
                with self._cv:
                    if self._gave_up:
                        return
                    self._cv.wait(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self._acknowledged(acked)
            with self._cv:  # let records gather while the window is far from full: fewer, larger requests
                if not self._closing and self._spool.last - self._acked < self.limits.window // 4:
                    self._cv.wait(self.LINGER_S)

    def _acknowledged(self, acked: int) -> None:
        resumed = False
        with self._cv:
            progress = acked > self._acked
            self._acked = max(self._acked, acked)
            if self._acked >= self._spool.last:
                self._pending_since = None
            elif progress:
                self._pending_since = time.monotonic()
            if progress and self._paused and self._failed is None:
                self._paused = False
                resumed = True
            self._push_flow()
            self._cv.notify_all()
            if not progress:
                self._cv.wait(0.005)  # the last line was still being written: look again shortly
        if resumed:
            self._warn("guard: the daemon acknowledges records again; the agent continues")
            with contextlib.suppress(GuardError):
                self._spool.append({"type": "session", "event": "resumed",
                                    "reason": "the daemon acknowledged records again"})
            if self._control is not None:
                self._control.resume()

    def _lost(self, exc: BaseException) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            message = exc.message if isinstance(exc, GuardError) else f"{type(exc).__name__}: {exc}"
            self._warn(f"guard: the daemon does not acknowledge records ({message}); the agent waits while "
                       "guard reconnects")

    def _reconnected(self) -> None:
        if self._lost_since is not None:
            self._lost_since = None
            self._warn("guard: reconnected to the daemon; the session's spool is being recorded")

    def _watch(self) -> None:
        """Pause the agent after `pause_after` s without an acknowledgement, kill it after `stop_after`."""
        while True:
            with self._cv:
                if self._failed is not None or (self._closing and self._acked >= self._spool.last):
                    return
                self._cv.wait(0.1)
                since = self._pending_since
                waiting = since is not None and self._acked < self._spool.last
                stalled = time.monotonic() - since if since is not None and waiting else 0.0
                pause = stalled >= self.limits.pause_after and not self._paused
                if pause:
                    self._paused = True
            if stalled >= self.limits.stop_after:
                reason = (f"the daemon acknowledged no record for {self.limits.stop_after:g} s; "
                          "the agent was stopped")
                with contextlib.suppress(GuardError):
                    self._spool.append({"type": "session", "event": "stalled", "reason": reason})
                self.fail(reason)
                return
            if pause:
                reason = (f"the daemon acknowledged no record for {self.limits.pause_after:g} s; "
                          f"the agent is paused until it does (stopped after {self.limits.stop_after:g} s)")
                with contextlib.suppress(GuardError):
                    self._spool.append({"type": "session", "event": "paused", "reason": reason})
                self._warn(f"guard: {reason}")
                if self._control is not None:
                    self._control.pause()

    # ---- the end -----------------------------------------------------------------------------------

    def close(self, *, exit_status: int, summary: Mapping[str, Any], status: str = "closed",
              reason: str | None = None) -> str | None:
        """Spool the end marker, wait (bounded) for the daemon to take everything, close the session.

        -> None when the daemon recorded the end; otherwise why not (the spool stays, and the next daemon
        to start ingests it and ends the session from the marker).
        """
        end: dict[str, Any] = {"type": "end", "status": "stopped" if self._failed else status,
                               "exit_status": exit_status, "summary": dict(summary)}
        if self._failed is not None or reason is not None:
            end["reason"] = self._failed or reason
        problem: str | None = None
        try:
            self._spool.append(end)
        except GuardError as exc:  # the spool broke: what it holds still goes in, the reason in the summary
            summary = {**summary, "recording_failed": self._failed or exc.message}
        deadline = time.monotonic() + (self.limits.stop_after if self._failed is None else
                                       self.limits.request_timeout)
        with self._cv:
            self._closing = True
            self._cv.notify_all()
            while self._acked < self._spool.last and time.monotonic() < deadline:
                self._cv.wait(0.1)
            done = self._acked >= self._spool.last
            self._failed = self._failed or "the session has ended"
            self._gave_up = True
            self._cv.notify_all()
        self._thread.join(timeout=self.limits.request_timeout + 1)
        self._watchdog.join(timeout=1)
        if self._waker is not None:
            fd = self._spool.wake_fd
            if fd is not None:  # wake it now rather than at its next poll: the session is ending
                with contextlib.suppress(OSError):
                    os.write(fd, (1).to_bytes(8, "little"))
            self._waker.join(timeout=1)
        client = self._client
        if problem is None and not done:
            problem = "the daemon did not take the session's last records in time"
        if problem is None and client is not None:
            try:
                client.close_session(self._session, exit_status=exit_status, summary=summary)
            except GuardError as exc:
                problem = exc.message
        elif problem is None:
            problem = "no connection to the daemon"
        self._spool.close()
        if client is not None:
            client.close()
        return problem


class Decider:
    """Decides a session's actions with the policy its sandbox was built from; records each one first.

    Allow and deny are decided here (the engine is pure and takes microseconds) and recorded in the
    session's spool before decide() returns. Only `ask` goes to the daemon synchronously: it holds the
    request for a human and records the answer. If a record cannot be written, the decision is a
    fail-closed deny and the sandbox is stopped: nothing may act unrecorded.
    """

    def __init__(self, policy: Policy, recorder: Recorder, session: str, tally: Tally,
                 warn: Callable[[str], None], existed_at_launch: Sequence[str] = (),
                 workspace: str = "") -> None:
        self._policy = policy
        # `applies_to: existing` rules protect only what existed when the session started (the engineer's
        # repository config, say), not what the agent creates during it (a repository it clones).
        self._existing_only = policy.existing_only_rules
        self._existed = tuple(existed_at_launch)
        # `applies_to: outside-new-repos` rules (CI workflows, editor settings) hold everywhere but in a
        # repository born during the session (guard.sandbox.new_repos): a clone checks them out freely
        self._outside_new = policy.outside_new_repos_rules
        self._started_ns = session_clock_ns()
        self._workspace = workspace
        self._recorder = recorder
        self._session = session
        self._tally = tally
        self._warn = warn

    def record_refusal(self, action: Action, decision: Decision) -> None:
        """The supervisor's record hook: everything decide() returned is already recorded; what the
        supervisor refuses on its own (an exec of a file with no path, a failed decision) is not."""
        from guard.sandbox.supervisor import SUPERVISOR_RULE

        if decision.rule_id == SUPERVISOR_RULE:
            self.refuse(action, decision)

    def refuse(self, action: Action, decision: Decision) -> None:
        """Record and count a refusal that no decision made: the supervisor's own, or the egress proxy's (a
        name that resolves to a special-purpose address, a forwarded port nothing answers on). Its record is
        a `decision` like any other, so the summary, the daemon's counts, `audit show --verdict deny` and
        the report all count it once. Never waits for the window (the proxy's loop calls it)."""
        self._tally.count(action, decision)
        with contextlib.suppress(RecordingStopped):  # a refusal either way; the sandbox is being stopped
            self._record(action, decision)

    def record_event(self, event: dict[str, Any]) -> None:
        """Spool a record made elsewhere (a proxied, forwarded or published connection: each one is a
        connection in the summary); never waits for the window, so the proxy's loop may call it. A failure
        stops the sandbox."""
        if event.get("type") == "connection":
            self._tally.count_connection()
        with contextlib.suppress(RecordingStopped):
            self._recorder.append(event)

    def _existed_at_launch(self, path: str) -> bool:
        """`path` existed when the session started, or lies in a protected directory that did (new hooks in an
        existing `.git/hooks`). A repository's `.git` itself counts only as that name: what git creates in it
        during the session (a rebase's todo, a new submodule's modules/) did not exist."""
        for p in self._existed:
            top = p.rstrip("/")
            if path == p or (path.startswith(top + "/") and top.rsplit("/", 1)[-1] != ".git"):
                return True
        return False

    def grants_socket(self, path: str) -> bool:
        """Whether a rule grants connecting to the unix socket at `path` *by path*: an enforced allow-write
        rule naming that very path (no glob). A broad write grant (/tmp/**, the workspace) is not one:
        sockets there belong to the engineer's tmux, agents and credential caches."""
        return any(rule.verdict is Verdict.ALLOW and Op.WRITE in rule.ops and not rule.audit_only
                   and path in rule.patterns for rule in self._policy.file_rules())

    def check(self, action: Action) -> Decision:
        """The policy's answer, recording nothing: the supervisor vets every entry of a renamed directory
        with it and records only through decide() (the refusals), so a moved tree does not flood the trail."""
        decision = self._policy.decide(action)
        ignore: frozenset[str] = frozenset()
        while decision.rule_id not in ignore:
            if decision.rule_id in self._existing_only and not self._existed_at_launch(action.target):
                ignore |= self._existing_only
            elif decision.rule_id in self._outside_new and self._in_own_repository(action, decision.rule_id):
                ignore |= self._outside_new
            else:
                break
            decision = self._policy.decide(action, ignore=ignore)
        return decision

    def uniform(self, action: Action) -> Decision | None:
        """The policy's answer when it depends on nothing but the path and the repository it lies in, else
        None: what the fast path may reuse for other plain names in the same directory
        (guard.sandbox.fastpath); records nothing. Not when an `applies_to: existing` rule is involved
        (what existed at launch is per name). An `applies_to: outside-new-repos` rule is set aside as
        check() does: which repository a plain name lies in is the nearest `.git` above its directory,
        the same for every name there, and the fast path forgets its table when a `.git` changes."""
        decision = self._policy.decide(action)
        if decision.rule_id in self._outside_new and self._in_own_repository(action, decision.rule_id):
            decision = self._policy.decide(action, ignore=self._outside_new)
        return None if decision.rule_id in self._existing_only | self._outside_new else decision

    def _in_own_repository(self, action: Action, rule_id: str) -> bool:
        """`action.target` lies in a repository born during the session, and the rule would still cover
        it with that repository at the workspace's place: the protected name is inside the repository,
        not made of it (guard.sandbox.new_repos)."""
        top = new_repository_of(action.target, self._started_ns) if self._workspace else None
        if top is None or top == self._workspace:
            return False
        rel = os.path.relpath(action.target, top)
        if rel.startswith(".."):
            return False
        as_root = Action(action.op, os.path.join(self._workspace, rel), pid=action.pid)
        return self._policy.decide(as_root).rule_id == rule_id

    def decide(self, action: Action) -> Decision:
        """The enforced decision, returned only once its record is in the spool."""
        decision = self.check(action)
        asked = False
        try:
            self._recorder.wait_room()
            if decision.enforced is Verdict.ASK:
                decision, asked = self._ask(action, decision)
            else:
                self._record(action, decision)
        except RecordingStopped as exc:
            decision = Decision(Verdict.DENY, FAIL_CLOSED_RULE, f"guard cannot record: {exc.message}")
        self._tally.count(action, decision, asked=asked)
        return decision

    def _ask(self, action: Action, decision: Decision) -> tuple[Decision, bool]:
        """-> the final decision, and whether the daemon held the ask and answered it (then it counted the
        ask too; otherwise the refusal here is a plain fail-closed deny)."""
        client = self._recorder.client
        try:  # the daemon records the request, the approval and the final decision
            if client is None:
                raise GuardError("not connected to the daemon (it is being reconnected)")
            return client.decide(self._session, action, asked=decision), True
        except GuardError as exc:
            refused = Decision(Verdict.DENY, FAIL_CLOSED_RULE, f"no answer to the ask: {exc.message}")
            self._record(action, refused)
            return refused, False

    def _record(self, action: Action, decision: Decision) -> None:
        """Spool the decision's record; a record that cannot even be built stops the sandbox too."""
        try:
            record = decision_record(action, decision)
        except Exception as exc:
            why = f"a record could not be built: {type(exc).__name__}: {exc}"
            self._recorder.fail(why)
            raise RecordingStopped(why) from exc
        self._recorder.append(record)


def decision_record(action: Action, decision: Decision) -> dict[str, Any]:
    """The one shape of a decision's record (the compiled fast path fills in a rendering of it)."""
    return {"type": "decision", "action": action.to_dict(), "decision": decision.to_dict()}
