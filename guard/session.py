"""A guarded session's decisions and records.

`guard run` decides a session's actions in-process with the policy its sandbox was built from (the
engine is pure and takes microseconds) and streams the records to the daemon, the only writer of the
trail, in batches; only `ask` goes to the daemon synchronously. See Decider.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from guard.errors import DaemonError
from guard.model import Action, Decision, Op, Verdict

# The rule id of refusals the session makes without the policy: the daemon could not be asked or told.
FAIL_CLOSED_RULE = "guard:fail-closed"

if TYPE_CHECKING:
    from guard.daemon.client import DaemonClient
    from guard.policy import Policy


@dataclass
class Tally:
    """Counts what happened in a session, for the one-line summary; updated from several threads."""

    allowed: int = 0
    denied: int = 0
    asked: int = 0
    execs: int = 0
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, action: Action, decision: Decision) -> None:
        with self.lock:
            if decision.enforced is Verdict.DENY:
                self.denied += 1
            else:
                self.allowed += 1
            if decision.verdict is Verdict.ASK:
                self.asked += 1
            if action.op.value == "run":
                self.execs += 1
            if action.op.value == "connect":
                self.connections += 1

    def count_connection(self) -> None:
        with self.lock:
            self.connections += 1

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return {"allowed": self.allowed, "denied": self.denied, "asked": self.asked,
                    "execs": self.execs, "connections": self.connections}


# Variables that hand the agent a credential by reference: an agent socket signs or decrypts with every key
# it holds (no key file needs reading), a docker socket is root on the host. The sandbox also refuses
# connecting to sockets outside the grants; dropping these keeps honest tools from even trying.


class Decider:
    """Decides a session's actions with the policy its sandbox was built from; the daemon records them.

    Allow and deny are decided here (the engine is pure and takes microseconds) and their records are
    streamed to the daemon in batches by one thread, so a notified syscall costs no socket round trip.
    Only `ask` goes to the daemon synchronously: it holds the request for a human and records the answer.
    If the daemon stops accepting records, the sandbox is killed: nothing may act unrecorded.
    """

    BATCH = 500
    LINGER_S = 0.05

    def __init__(self, policy: Policy, client: DaemonClient, session: str, tally: Tally,
                 warn: Callable[[str], None], existed_at_launch: Sequence[str] = ()) -> None:
        self._policy = policy
        # `applies_to: existing` rules protect only what existed when the session started (the engineer's
        # repository config, say), not what the agent creates during it (a repository it clones).
        self._existing_only = policy.existing_only_rules
        self._existed = tuple(existed_at_launch)
        self._client = client
        self._session = session
        self._tally = tally
        self._warn = warn
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._on_failure: Callable[[], None] | None = None
        self._failed: DaemonError | None = None
        self._thread = threading.Thread(target=self._send_loop, name="guard-recorder", daemon=True)
        self._thread.start()

    def record_refusal(self, action: Action, decision: Decision) -> None:
        """The supervisor's record hook: everything decide() returned is already recorded; what the
        supervisor refuses on its own (an exec of a file with no path, a failed decision) is not."""
        from guard.sandbox.supervisor import SUPERVISOR_RULE

        if decision.rule_id == SUPERVISOR_RULE:
            self._enqueue(action, decision)
            self._tally.count(action, decision)

    def record_event(self, event: dict[str, Any]) -> None:
        """Queue a record made elsewhere (a proxied or published connection) on the same batched,
        fail-closed path; never blocks, so the proxy's loop may call it."""
        self._queue.put(event)

    def _existed_at_launch(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self._existed)

    def grants_socket(self, path: str) -> bool:
        """Whether a rule grants connecting to the unix socket at `path` *by path*: an enforced allow-write
        rule naming that very path (no glob). A broad write grant (/tmp/**, the workspace) is not one:
        sockets there belong to the engineer's tmux, agents and credential caches."""
        return any(rule.verdict is Verdict.ALLOW and Op.WRITE in rule.ops and not rule.audit_only
                   and path in rule.patterns for rule in self._policy.file_rules())

    def on_record_failure(self, kill: Callable[[], None]) -> None:
        self._on_failure = kill

    def check(self, action: Action) -> Decision:
        """The policy's answer, recording nothing: the supervisor vets every entry of a renamed directory
        with it and records only through decide() (the refusals), so a moved tree does not flood the trail."""
        decision = self._policy.decide(action)
        if decision.rule_id in self._existing_only and not self._existed_at_launch(action.target):
            decision = self._policy.decide(action, ignore=self._existing_only)
        return decision

    def decide(self, action: Action) -> Decision:
        decision = self.check(action)
        if self._failed is not None:
            decision = Decision(Verdict.DENY, FAIL_CLOSED_RULE,
                                f"guard daemon unreachable: {self._failed.message}")
        elif decision.enforced is Verdict.ASK:
            try:  # the daemon records the request, the approval and the final decision
                decision = self._client.decide(self._session, action)
            except DaemonError as exc:
                decision = Decision(Verdict.DENY, FAIL_CLOSED_RULE, f"no answer to the ask: {exc.message}")
                self._enqueue(action, decision)
        else:
            self._enqueue(action, decision)
        self._tally.count(action, decision)
        return decision

    def _enqueue(self, action: Action, decision: Decision) -> None:
        self._queue.put({"type": "decision", "action": action.to_dict(), "decision": decision.to_dict()})

    def close(self) -> None:
        """Send what is queued and stop; bounded, so a dead daemon cannot hang guard run's exit."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _send_loop(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.LINGER_S
            while len(batch) < self.BATCH:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            if self._failed is None:
                try:
                    self._client.record_batch(self._session, batch)
                except DaemonError as exc:
                    self._fail(exc)
                except Exception as exc:  # any failure of the record path stops the sandbox, never the thread
                    self._fail(DaemonError(f"recording failed: {exc!r}"))

    def _fail(self, exc: DaemonError) -> None:
        self._failed = exc
        self._warn(f"guard: the daemon stopped accepting records ({exc.message}); stopping the sandbox")
        if self._on_failure is not None:
            self._on_failure()
