"""Agent hooks on the same engine: what an agent says it is about to do, decided by the session's policy.

An agent's own hook (Claude Code and Codex `PreToolUse`, Gemini CLI `BeforeTool`, Cursor
`beforeShellExecution`...) reports a tool call before it runs. `guard hook AGENT` translates it into the
Actions the policy governs (guard.integrations.tools), asks the one decider (inside `guard run`: the
session's, through the hook channel; outside: the policy itself), records the call as the agent's stated
intent, and answers in the agent's own protocol (guard.integrations.protocols), so a denial reaches the
model with its rule and reason. The kernel tier still enforces everything: a hook is where a refusal becomes
legible and where intent is recorded, never the only line of defence.
"""

from guard.integrations.protocols import AGENTS, HookCall, HookReply, parse_call, render_reply
from guard.integrations.tools import actions_for

__all__ = ["AGENTS", "HookCall", "HookReply", "actions_for", "parse_call", "render_reply"]
