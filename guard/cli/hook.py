"""`guard hook AGENT` (an agent's hook command) and `guard hook install AGENT` (write it into the agent's
settings). The translation and the judgement live in guard.integrations; this module only does I/O."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from guard.errors import GuardError

AGENTS = ("claude", "codex", "gemini", "cursor")


@click.group()
def hook() -> None:
    """Agent hooks decided by guard's policy: `guard hook install claude`, then the agent calls
    `guard hook claude` before and after every tool call."""


def _agent_command(agent: str) -> click.Command:
    @click.command(name=agent, help=f"The {agent} hook: reads the agent's hook JSON on stdin, answers in "
                   f"its protocol. Inside `guard run` it asks the session; outside, the policy.")
    @click.option("-p", "--policy", default=None,
                  help="Outside `guard run`: the policy to decide with "
                       "(default: $GUARD_POLICY or coding-agent).")
    def command(policy: str | None) -> None:
        raw = sys.stdin.buffer.read()
        try:
            stdout, status, stderr = _answer(agent, raw, policy)
        except (GuardError, OSError, ValueError) as exc:
            # A hook that cannot judge must not wave the call through: refuse it (exit 2 blocks in every
            # agent's protocol) and say why; the kernel tier enforces regardless inside `guard run`.
            message = exc.diagnostics() if isinstance(exc, GuardError) else f"{type(exc).__name__}: {exc}"
            click.echo(f"guard hook could not decide this tool call, so it is refused: {message}", err=True)
            sys.exit(2)
        if stdout:
            click.echo(stdout)
        if stderr:
            click.echo(stderr, err=True)
        sys.exit(status)

    return command


def _answer(agent: str, raw: bytes, policy: str | None) -> tuple[str, int, str]:
    url = os.environ.get("GUARD_HOOK_URL")
    if url:
        from guard.integrations.channel import forward

        return forward(url, agent, raw)
    return _answer_locally(agent, raw, policy or os.environ.get("GUARD_POLICY") or "coding-agent")


def _answer_locally(agent: str, raw: bytes, policy_ref: str) -> tuple[str, int, str]:
    """Outside a guarded session: decide with the policy itself and record through the daemon if it runs."""
    from guard.integrations import parse_call, render_reply
    from guard.integrations.judge import judge
    from guard.policy import load_policy

    call = parse_call(agent, raw)
    workspace = Path(call.cwd or os.getcwd())
    policy = load_policy(policy_ref, workspace=workspace, env=os.environ)
    reply, record = judge(call, policy.decide, inside_session=False)
    note = _record_locally(policy_ref, workspace, agent, record)
    stdout, status, stderr = render_reply(call, reply)
    return stdout, status, "\n".join(s for s in (stderr, note) if s)


def _record_locally(policy_ref: str, workspace: Path, agent: str, record: dict[str, Any]) -> str:
    from guard.daemon.client import DaemonClient
    from guard.home import guard_home
    from guard.runner import policy_ref as absolute_ref

    try:
        with DaemonClient.connect(guard_home(), timeout=5) as client:
            session = client.open_session(policy=absolute_ref(policy_ref), workspace=str(workspace),
                                          argv=["guard", "hook", agent], cwd=str(workspace), pid=os.getpid())
            sid = session["session"]
            client.record(sid, record)
            client.close_session(sid, exit_status=0)
    except GuardError as exc:
        return f"guard hook: not recorded (no guard daemon answered: {exc.message})"
    return ""


for _agent in AGENTS:
    hook.add_command(_agent_command(_agent))


# --- install ---------------------------------------------------------------------------------------------

def hook_command(agent: str) -> str:
    """The command line an agent runs: this interpreter and this guard, whatever PATH says."""
    return f"{shlex.quote(sys.executable)} -m guard hook {agent}"


def settings_file(agent: str, scope: str, cwd: Path, home: Path) -> Path:
    base = home if scope == "user" else cwd
    return {"claude": base / ".claude" / "settings.json", "codex": base / ".codex" / "hooks.json",
            "gemini": base / ".gemini" / "settings.json", "cursor": base / ".cursor" / "hooks.json"}[agent]


def merged_settings(agent: str, current: dict[str, Any], command: str) -> dict[str, Any]:
    """`current` with guard's hooks added once (re-running install changes nothing)."""
    out: dict[str, Any] = json.loads(json.dumps(current))
    if agent == "cursor":
        out.setdefault("version", 1)
        hooks = out.setdefault("hooks", {})
        for event in ("beforeShellExecution", "beforeReadFile", "beforeMCPExecution", "afterFileEdit"):
            entries = hooks.setdefault(event, [])
            if not any(e.get("command") == command for e in entries if isinstance(e, dict)):
                entries.append({"command": command})
        return out
    events = {"claude": ("PreToolUse", "PostToolUse", "PostToolUseFailure", "UserPromptSubmit"),
              "codex": ("PreToolUse", "PostToolUse", "UserPromptSubmit"),
              "gemini": ("BeforeTool", "AfterTool", "BeforeAgent")}[agent]
    matcher = ".*" if agent == "gemini" else "*"
    hooks = out.setdefault("hooks", {})
    for event in events:
        groups = hooks.setdefault(event, [])
        present = any(h.get("command") == command for g in groups if isinstance(g, dict)
                      for h in g.get("hooks", []) if isinstance(h, dict))
        if not present:
            group: dict[str, Any] = {"hooks": [{"type": "command", "command": command, "timeout": 30}]}
            if event not in ("UserPromptSubmit", "BeforeAgent"):
                group["matcher"] = matcher
            groups.append(group)
    return out


@hook.command(name="install")
@click.argument("agent", type=click.Choice(AGENTS))
@click.option("--scope", type=click.Choice(["user", "project"]), default="user", show_default=True,
              help="user: the agent's settings in your home; project: in the current directory.")
@click.option("--print", "print_only", is_flag=True, help="Print the settings instead of writing them.")
def install(agent: str, scope: str, print_only: bool) -> None:
    """Add guard's hooks to AGENT's settings (kept: everything already there)."""
    path = settings_file(agent, scope, Path.cwd(), Path(os.environ.get("HOME") or Path.home()))
    current: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8") or "{}")
        except ValueError as exc:
            raise click.ClickException(
                f"{path} is not valid JSON ({exc}); fix it, then run install again") from None
        if not isinstance(loaded, dict):
            raise click.ClickException(f"{path} does not hold a JSON object")
        current = loaded
    settings = merged_settings(agent, current, hook_command(agent))
    text = json.dumps(settings, indent=2) + "\n"
    if print_only:
        click.echo(text, nl=False)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".guard-tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    click.echo(f"guard hooks installed for {agent} in {path}")
