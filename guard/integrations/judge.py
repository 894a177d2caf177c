"""One hook call judged by one checker, and the intent record it leaves. Pure: the checker is passed in.

The checker is the session's (inside `guard run`) or the policy's own `decide` (outside): the same engine,
so a tool call the hook lets through and the syscalls that follow are judged by the same rules. A call is
refused when any of its Actions is an enforced deny; `ask` is left to the sandbox, which holds the syscall
for a human when it happens (inside `guard run`), or to the agent's own prompt (outside, where nothing
else could ask).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from guard.integrations.protocols import HookCall, HookReply
from guard.integrations.tools import actions_for
from guard.model import Action, Decision, Verdict

SUMMARY_MAX = 400


def judge(call: HookCall, check: Callable[[Action], Decision], *, inside_session: bool,
          denials_since: Sequence[str] = ()) -> tuple[HookReply, dict[str, Any]]:
    """(the reply to the agent, the intent record for the trail)."""
    actions = actions_for(call.tool, call.tool_input, call.cwd) if call.phase == "pre" else []
    worst: tuple[Action, Decision] | None = None
    for action in actions:
        decision = check(action)
        if worst is None or decision.enforced.strength > worst[1].enforced.strength:
            worst = (action, decision)
    reply = HookReply()
    if worst is not None:
        action, decision = worst
        if decision.enforced is Verdict.DENY:
            reply = HookReply("deny", decision.rule_id, f"{action}: {decision.reason}")
        elif decision.enforced is Verdict.ASK:
            if inside_session:
                reply = HookReply("allow", decision.rule_id, decision.reason, context=(
                    f"guard will hold `{action}` for a human's approval (rule {decision.rule_id}): "
                    f"{decision.reason}"))
            else:
                reply = HookReply("ask", decision.rule_id, f"{action}: {decision.reason}")
    if call.phase == "post" and denials_since:
        listed = "; ".join(denials_since[:10])
        more = f" (and {len(denials_since) - 10} more)" if len(denials_since) > 10 else ""
        reply = HookReply("allow", context=(
            f"guard's sandbox refused parts of this tool call: {listed}{more}. These are the engineer's "
            "security policy, not transient errors: do not retry them or work around them."))
    record: dict[str, Any] = {
        "type": "intent", "agent": call.agent, "event": call.event, "phase": call.phase,
        "tool": call.tool[:200], "summary": _summary(call), "verdict": reply.verdict,
        "actions": [a.to_dict() for a in actions][:32],
    }
    if call.tool_use_id:
        record["tool_use_id"] = call.tool_use_id[:200]
    if call.agent_session:
        record["agent_session"] = call.agent_session[:200]
    if worst is not None:
        record["rule_id"] = worst[1].rule_id
        record["reason"] = worst[1].reason[:SUMMARY_MAX]
    if call.prompt is not None:  # what the person asked, as a fingerprint: prompts may hold anything
        data = call.prompt.encode("utf-8", "surrogateescape")
        record["prompt_sha256"] = hashlib.sha256(data).hexdigest()
        record["prompt_chars"] = len(call.prompt)
    return reply, record


def _summary(call: HookCall) -> str:
    """The one line a person reads in the trail: the command, the path or the URL."""
    data = call.tool_input
    for key in ("command", "cmd", "file_path", "absolute_path", "path", "notebook_path", "url", "pattern"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value[:SUMMARY_MAX]
        if isinstance(value, list) and value:
            return " ".join(str(v) for v in value)[:SUMMARY_MAX]
    return call.tool[:SUMMARY_MAX]
