"""guard.integrations: each agent's real hook JSON -> Actions -> the policy's answer in that agent's protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard.cli.hook import merged_settings
from guard.errors import UsageError
from guard.integrations import actions_for, parse_call, render_reply
from guard.integrations.channel import HookChannel
from guard.integrations.judge import judge
from guard.model import Action, Decision, Op, Verdict

WS = "/home/eng/src/proj"


def claude_pre(tool: str, tool_input: dict, **extra: object) -> bytes:
    """The shape Claude Code sends a PreToolUse hook (and Codex, which copies it)."""
    return json.dumps({"session_id": "s1", "transcript_path": "/home/eng/.claude/projects/x.jsonl",
                       "cwd": WS, "hook_event_name": "PreToolUse", "tool_name": tool,
                       "tool_input": tool_input, "tool_use_id": "toolu_1", **extra}).encode()


def checker(denied: dict[str, str], asked: frozenset[str] = frozenset()):
    def check(action: Action) -> Decision:
        if action.target in denied:
            return Decision(Verdict.DENY, denied[action.target], "not for agents")
        if action.target in asked:
            return Decision(Verdict.ASK, "publish", "a human decides")
        return Decision(Verdict.ALLOW, "ok", "fine")
    return check


@pytest.mark.parametrize(("tool", "tool_input", "expected"), [
    ("Bash", {"command": "git push"}, [(Op.RUN, "git push")]),
    ("Read", {"file_path": "/home/eng/.ssh/id_ed25519"}, [(Op.READ, "/home/eng/.ssh/id_ed25519")]),
    ("Write", {"file_path": "notes/a.md", "content": "x"}, [(Op.WRITE, f"{WS}/notes/a.md")]),
    ("Edit", {"file_path": f"{WS}/../../.bashrc"}, [(Op.WRITE, "/home/eng/.bashrc")]),
    ("WebFetch", {"url": "https://evil.example:8443/x", "prompt": "p"}, [(Op.CONNECT, "evil.example:8443")]),
    ("run_shell_command", {"command": "ls -la"}, [(Op.RUN, "ls -la")]),
    ("read_many_files", {"paths": ["a", "/etc/passwd"]}, [(Op.READ, f"{WS}/a"), (Op.READ, "/etc/passwd")]),
    ("web_fetch", {"prompt": "summarise http://a.test/x and https://b.test"},
     [(Op.CONNECT, "a.test:80"), (Op.CONNECT, "b.test:443")]),
    ("apply_patch", {"input": "*** Begin Patch\n*** Update File: src/x.py\n*** Add File: .git/hooks/pre-commit\n"},
     [(Op.WRITE, f"{WS}/src/x.py"), (Op.WRITE, f"{WS}/.git/hooks/pre-commit")]),
    ("mcp__server__tool", {"x": 1}, []),
])
def test_tool_calls_become_the_actions_the_policy_governs(tool, tool_input, expected):
    assert [(a.op, a.target) for a in actions_for(tool, tool_input, WS)] == expected


def test_claude_deny_names_guard_the_rule_and_what_to_do():
    call = parse_call("claude", claude_pre("Read", {"file_path": "/home/eng/.ssh/id_ed25519"}))
    reply, record = judge(call, checker({"/home/eng/.ssh/id_ed25519": "credentials"}), inside_session=True)
    out, status, _ = render_reply(call, reply)
    spec = json.loads(out)["hookSpecificOutput"]
    assert status == 0 and spec["hookEventName"] == "PreToolUse" and spec["permissionDecision"] == "deny"
    assert "guard policy denied this (credentials)" in spec["permissionDecisionReason"]
    assert "do not retry" in spec["permissionDecisionReason"]
    assert record["type"] == "intent" and record["verdict"] == "deny" and record["tool_use_id"] == "toolu_1"
    assert record["actions"] == [{"kind": "file", "op": "read", "target": "/home/eng/.ssh/id_ed25519"}]


def test_claude_allow_says_nothing_so_the_agents_own_permissions_still_apply():
    call = parse_call("claude", claude_pre("Bash", {"command": "pytest -q"}))
    reply, _ = judge(call, checker({}), inside_session=True)
    assert render_reply(call, reply) == ("", 0, "")


def test_an_ask_is_left_to_the_sandbox_inside_a_session_and_to_the_agent_outside():
    call = parse_call("claude", claude_pre("Bash", {"command": "git push"}))
    inside, _ = judge(call, checker({}, frozenset({"git push"})), inside_session=True)
    out = json.loads(render_reply(call, inside)[0])["hookSpecificOutput"]
    assert "permissionDecision" not in out and "human" in out["additionalContext"]
    outside, _ = judge(call, checker({}, frozenset({"git push"})), inside_session=False)
    assert json.loads(render_reply(call, outside)[0])["hookSpecificOutput"]["permissionDecision"] == "ask"


def test_codex_refuses_with_exit_2_and_the_reason_on_stderr():
    call = parse_call("codex", claude_pre("Bash", {"command": "cat ~/.aws/credentials"}))
    reply, _ = judge(call, checker({"cat ~/.aws/credentials": "creds-cmd"}), inside_session=True)
    out, status, err = render_reply(call, reply)
    assert (out, status) == ("", 2) and "creds-cmd" in err


def test_gemini_before_tool_deny_and_after_tool_context():
    raw = json.dumps({"session_id": "g", "cwd": WS, "hook_event_name": "BeforeTool",
                      "timestamp": "2026-12-06T00:00:00Z", "tool_name": "write_file",
                      "tool_input": {"file_path": "/home/eng/.bashrc", "content": "x"}}).encode()
    call = parse_call("gemini", raw)
    reply, _ = judge(call, checker({"/home/eng/.bashrc": "shell-rc"}), inside_session=True)
    out = json.loads(render_reply(call, reply)[0])
    assert out["decision"] == "deny" and "shell-rc" in out["reason"]
    post = parse_call("gemini", raw.replace(b"BeforeTool", b"AfterTool"))
    reply, _ = judge(post, checker({}), inside_session=True, denials_since=["write /x (r: no)"])
    assert "write /x" in json.loads(render_reply(post, reply)[0])["hookSpecificOutput"]["additionalContext"]


def test_cursor_shell_and_read_events():
    raw = json.dumps({"conversation_id": "c", "hook_event_name": "beforeShellExecution", "command": "rm -rf /",
                      "cwd": WS, "workspace_roots": [WS]}).encode()
    call = parse_call("cursor", raw)
    reply, _ = judge(call, checker({"rm -rf /": "destroy"}), inside_session=False)
    out = json.loads(render_reply(call, reply)[0])
    assert out["permission"] == "deny" and "destroy" in out["agent_message"]
    read = parse_call("cursor", json.dumps({"hook_event_name": "beforeReadFile", "file_path": "/etc/hosts",
                                            "content": "x", "workspace_roots": [WS]}).encode())
    reply, _ = judge(read, checker({}), inside_session=False)
    assert json.loads(render_reply(read, reply)[0]) == {"permission": "allow"}


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b"{" * 10])
def test_malformed_hook_input_is_a_usage_error(raw):
    with pytest.raises(UsageError):
        parse_call("claude", raw)


def test_unknown_agent_is_refused():
    with pytest.raises(UsageError, match="unknown agent"):
        parse_call("copilot", b"{}")


def test_channel_tells_a_post_tool_hook_only_the_denials_made_during_that_tool_call():
    now = [0.0]
    records: list[dict] = []
    channel = HookChannel(checker({}), records.append, clock=lambda: now[0])
    channel.note(Action(Op.WRITE, "/before"), Decision(Verdict.DENY, "r", "earlier"))
    now[0] = 1.0
    pre = json.loads(claude_pre("Bash", {"command": "make"}))
    channel.handle({"agent": "claude", "input": json.dumps(pre)})
    now[0] = 2.0
    channel.note(Action(Op.WRITE, "/home/eng/.bashrc"), Decision(Verdict.DENY, "shell-rc", "rc files"))
    channel.note(Action(Op.WRITE, "/ok"), Decision(Verdict.ALLOW, "ws", "fine"))
    post = {**pre, "hook_event_name": "PostToolUseFailure"}
    answer = channel.handle({"agent": "claude", "input": json.dumps(post)})
    context = json.loads(answer["stdout"])["hookSpecificOutput"]["additionalContext"]
    assert "/home/eng/.bashrc" in context and "shell-rc" in context
    assert "/before" not in context and "/ok" not in context
    assert [r["phase"] for r in records] == ["pre", "post"]


def test_install_adds_guards_hooks_once_and_keeps_the_rest(tmp_path: Path):
    current = {"theme": "dark", "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [
        {"type": "command", "command": "mine"}]}]}}
    once = merged_settings("claude", current, "py -m guard hook claude")
    twice = merged_settings("claude", once, "py -m guard hook claude")
    assert once == twice and once["theme"] == "dark"
    commands = [h["command"] for g in once["hooks"]["PreToolUse"] for h in g["hooks"]]
    assert commands == ["mine", "py -m guard hook claude"]
    assert set(once["hooks"]) == {"PreToolUse", "PostToolUse", "PostToolUseFailure", "UserPromptSubmit"}
    cursor = merged_settings("cursor", {}, "g")
    assert cursor["version"] == 1 and cursor["hooks"]["beforeShellExecution"] == [{"command": "g"}]
