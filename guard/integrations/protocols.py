"""Each agent's hook wire protocol, parsed into one HookCall and answered from one HookReply. Pure.

- Claude Code: JSON on stdin (`hook_event_name`, `tool_name`, `tool_input`, `tool_use_id`, `cwd`); a refusal
  is `hookSpecificOutput.permissionDecision: deny` with `permissionDecisionReason` (shown to the model);
  `additionalContext` reaches the model after a tool ran (PostToolUse).
- Codex: the same events and input as Claude Code; a refusal is exit status 2 with the reason on stderr,
  the form every Codex release with hooks honours.
- Gemini CLI: `BeforeTool`/`AfterTool` with `tool_name`/`tool_input`; a refusal is
  `{"decision": "deny", "reason": ...}`; `hookSpecificOutput.additionalContext` reaches the model.
- Cursor: `beforeShellExecution` (`command`), `beforeReadFile` (`file_path`), `afterFileEdit`,
  `beforeMCPExecution`; the answer is `{"permission": "allow"|"deny"|"ask", "user_message", "agent_message"}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from guard.errors import UsageError

AGENTS = ("claude", "codex", "gemini", "cursor")

# event names -> the phase guard cares about
_PHASES = {
    "PreToolUse": "pre", "PostToolUse": "post", "PostToolUseFailure": "post", "UserPromptSubmit": "prompt",
    "BeforeTool": "pre", "AfterTool": "post", "BeforeAgent": "prompt",
    "beforeShellExecution": "pre", "beforeReadFile": "pre", "beforeMCPExecution": "pre",
    "afterFileEdit": "post", "beforeSubmitPrompt": "prompt",
}
# Cursor's events carry no tool name: the event is the tool
_CURSOR_TOOLS = {"beforeShellExecution": "shell", "beforeReadFile": "read", "afterFileEdit": "edit",
                 "beforeMCPExecution": "mcp"}
MAX_INPUT = 1 << 20


@dataclass(frozen=True)
class HookCall:
    """One hook invocation, whatever the agent: what it is about to do (or did, or was asked)."""

    agent: str
    event: str
    phase: str  # pre | post | prompt | other
    tool: str
    tool_input: dict[str, Any]
    tool_use_id: str | None
    cwd: str
    agent_session: str | None
    prompt: str | None = None


@dataclass(frozen=True)
class HookReply:
    """guard's answer: `verdict` deny refuses the call; `context` is told to the model either way."""

    verdict: str = "allow"  # allow | ask | deny
    rule_id: str | None = None
    reason: str = ""
    context: str = ""


def parse_call(agent: str, raw: bytes) -> HookCall:
    """The agent's hook input -> HookCall; UsageError naming what is wrong with it."""
    if agent not in AGENTS:
        raise UsageError(f"unknown agent {agent!r}", hint=f"one of: {', '.join(AGENTS)}")
    if len(raw) > MAX_INPUT:
        raise UsageError(f"hook input larger than {MAX_INPUT} bytes")
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise UsageError(f"hook input is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("hook input is not a JSON object")
    event = str(data.get("hook_event_name") or data.get("hookEventName") or "")
    phase = _PHASES.get(event, "other")
    tool = str(data.get("tool_name") or _CURSOR_TOOLS.get(event, ""))
    tool_input = data.get("tool_input")
    if not isinstance(tool_input, dict):
        # Cursor puts the object at the top level
        tool_input = {k: data[k] for k in ("command", "file_path", "cwd", "server", "tool_name") if k in data}
    cwd = str(data.get("cwd") or tool_input.get("cwd") or "")
    if not cwd:
        roots = data.get("workspace_roots")
        cwd = str(roots[0]) if isinstance(roots, list) and roots else ""
    use_id = data.get("tool_use_id") or data.get("tool_call_id")
    session = data.get("session_id") or data.get("conversation_id")
    prompt = data.get("prompt") if phase == "prompt" else None
    return HookCall(agent=agent, event=event, phase=phase, tool=tool, tool_input=dict(tool_input),
                    tool_use_id=str(use_id) if use_id else None, cwd=cwd,
                    agent_session=str(session) if session else None,
                    prompt=str(prompt) if prompt is not None else None)


def refusal_text(reply: HookReply) -> str:
    """What the model reads: that this is guard's policy, which rule, why, and what to do instead."""
    rule = reply.rule_id or "the policy's default"
    why = reply.reason.rstrip(".")
    return (f"guard policy denied this ({rule}): {why}. This is a security policy of the "
            "engineer's guard sandbox, not a transient error: do not retry it or work around it; choose "
            "another approach or ask the user.")


def render_reply(call: HookCall, reply: HookReply) -> tuple[str, int, str]:
    """(stdout, exit status, stderr) in the agent's own protocol."""
    if call.agent == "cursor":
        return _cursor(call, reply)
    if call.agent == "codex":
        if call.phase == "pre" and reply.verdict == "deny":
            return "", 2, refusal_text(reply)
        return "", 0, ""
    if call.agent == "gemini":
        return _gemini(call, reply)
    return _claude(call, reply)


def _claude(call: HookCall, reply: HookReply) -> tuple[str, int, str]:
    out: dict[str, Any] = {"hookEventName": call.event}
    if call.phase == "pre" and reply.verdict in ("deny", "ask"):
        out["permissionDecision"] = reply.verdict
        asks = f"guard policy asks a human ({reply.rule_id}): {reply.reason}"
        out["permissionDecisionReason"] = refusal_text(reply) if reply.verdict == "deny" else asks
    if reply.context and call.phase in ("pre", "post", "prompt"):
        out["additionalContext"] = reply.context
    if len(out) == 1:
        return "", 0, ""
    return json.dumps({"hookSpecificOutput": out}), 0, ""


def _gemini(call: HookCall, reply: HookReply) -> tuple[str, int, str]:
    out: dict[str, Any] = {}
    if call.phase == "pre" and reply.verdict == "deny":
        out = {"decision": "deny", "reason": refusal_text(reply)}
    if reply.context:
        out["hookSpecificOutput"] = {"hookEventName": call.event, "additionalContext": reply.context}
    return json.dumps(out), 0, ""


def _cursor(call: HookCall, reply: HookReply) -> tuple[str, int, str]:
    if call.phase != "pre":
        return json.dumps({}), 0, ""
    if reply.verdict == "deny":
        text = refusal_text(reply)
        return json.dumps({"permission": "deny", "user_message": text, "agent_message": text}), 0, ""
    if reply.verdict == "ask":
        return json.dumps({"permission": "ask", "user_message": f"guard asks: {reply.reason}"}), 0, ""
    return json.dumps({"permission": "allow"}), 0, ""
