"""The hook channel: how `guard hook` inside a sandbox reaches its session's decider.

The hook runs inside the sandbox (the agent spawns it), where the daemon's socket and the policy files are
hidden. `guard run` therefore serves hooks itself, on the proxy's loopback port inside the sandbox's network
namespace (`GUARD_HOOK_URL`, path HOOK_PATH): the hook posts the agent's raw hook input and prints the answer.
The session side (HookChannel) parses, judges with the session's own `check` (the decision the sandbox will
enforce), records the call as the agent's stated intent on the session's record path, and, after a tool
ran, tells the model which of its syscalls guard refused meanwhile.

Anything inside the sandbox can post here: it learns only what `guard policy explain` would say, and what it
records is marked as the agent's own claim (`type: intent`), never as a decision.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from guard.errors import UsageError
from guard.integrations.judge import judge
from guard.integrations.protocols import HookCall, parse_call, render_reply
from guard.model import Action, Decision, Verdict

HOOK_PATH = "/.guard/hook"
MAX_BODY = 2 << 20
_RECENT = 256


class HookChannel:
    """Session side: thread-safe; `note` is fed every enforced decision of the session."""

    def __init__(self, check: Callable[[Action], Decision], record: Callable[[dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._record = record
        self._clock = clock
        self._lock = threading.Lock()
        self._denials: deque[tuple[float, str]] = deque(maxlen=_RECENT)
        self._started: dict[str, float] = {}

    def note(self, action: Action, decision: Decision) -> None:
        if decision.enforced is Verdict.DENY:
            with self._lock:
                self._denials.append((self._clock(), f"{action} ({decision.rule_id}: {decision.reason})"))

    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """{"agent", "input"} -> {"stdout", "exit", "stderr"}: the hook's answer, in the agent's protocol."""
        agent, raw = body.get("agent"), body.get("input")
        if not isinstance(agent, str) or not isinstance(raw, str):
            raise UsageError("hook request needs 'agent' and 'input' strings")
        call = parse_call(agent, raw.encode("utf-8", "surrogateescape"))
        reply, record = judge(call, self._check, inside_session=True, denials_since=self._since(call))
        self._record(record)
        stdout, status, stderr = render_reply(call, reply)
        return {"stdout": stdout, "exit": status, "stderr": stderr}

    def _since(self, call: HookCall) -> list[str]:
        """Denials between this tool call's start (its PreToolUse) and now, for a post-tool hook."""
        now = self._clock()
        with self._lock:
            if call.phase == "pre" and call.tool_use_id:
                if len(self._started) > 4 * _RECENT:
                    self._started.clear()
                self._started[call.tool_use_id] = now
                return []
            if call.phase != "post":
                return []
            began = self._started.pop(call.tool_use_id, None) if call.tool_use_id else None
            if began is None:
                return []
            return [text for at, text in self._denials if at >= began]


def forward(url: str, agent: str, raw: bytes, *, timeout: float = 30.0) -> tuple[str, int, str]:
    """Client side, inside the sandbox: post the hook input to the session; never through a proxy."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise UsageError(f"GUARD_HOOK_URL is not an http://host:port URL: {url[:200]!r}")
    import http.client  # here, not at the top: `guard run` serves the channel and never posts to it

    body = json.dumps({"agent": agent, "input": raw.decode("utf-8", "surrogateescape")}).encode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("POST", parts.path or HOOK_PATH, body=body,
                     headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        resp = conn.getresponse()
        data = resp.read(MAX_BODY)
    finally:
        conn.close()
    if resp.status != 200:
        raise UsageError(f"the guard session refused the hook call: HTTP {resp.status} "
                         f"{data[:300].decode('utf-8', 'replace')}")
    answer = json.loads(data)
    return str(answer.get("stdout", "")), int(answer.get("exit", 0)), str(answer.get("stderr", ""))
