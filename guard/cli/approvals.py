"""`guard approvals`, `guard approve ID`, `guard deny ID`: answer the `ask` decisions agents wait on."""

from __future__ import annotations

import json

import click

from guard.cli.output import say
from guard.home import guard_home
from guard.text import shown


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def approvals(as_json: bool) -> None:
    """List requests waiting for a human (approve or deny them by ID)."""
    from guard.daemon.client import DaemonClient

    with DaemonClient.connect(guard_home()) as client:
        pending = client.approvals()
    if as_json:
        click.echo(json.dumps({"approvals": pending}))
        return
    if not pending:
        say("no pending approvals")
        return
    say(f"{'ID':<8} {'SESSION':<12} {'AGE':>6} {'LEFT':>6}  ACTION")
    for item in pending:
        say(_pending_row(item))


def _pending_row(item: dict[str, object]) -> str:
    """One pending request, every agent-controlled field escaped (guard.text.shown): a command line carrying
    terminal sequences cannot make the row read as another request."""
    action = item.get("action")
    action = action if isinstance(action, dict) else {}
    line = (f"{shown(str(item.get('approval', ''))):<8} {shown(str(item.get('session', ''))):<12} "
            f"{_seconds(item.get('age_s')):>6} {_seconds(item.get('expires_in_s')):>6}  "
            f"{shown(str(action.get('op', '')))} {shown(action.get('target'))}")
    if action.get("cwd"):
        line += f"   (in {shown(action['cwd'])})"  # which repository a `git push` would publish
    if item.get("rule_id"):
        line += f"   [{shown(str(item['rule_id']))}]"
    return line


def _seconds(value: object) -> str:
    return f"{value:.0f}s" if isinstance(value, int | float) else "?"


@click.command()
@click.argument("approval_id")
@click.option("--by", default="", help="Name to record as the approver (default: your user name).")
def approve(approval_id: str, by: str) -> None:
    """Allow a pending request."""
    _answer(approval_id, allow=True, by=by)


@click.command()
@click.argument("approval_id")
@click.option("--by", default="", help="Name to record as the decider (default: your user name).")
def deny(approval_id: str, by: str) -> None:
    """Deny a pending request."""
    _answer(approval_id, allow=False, by=by)


def _answer(approval_id: str, *, allow: bool, by: str) -> None:
    from guard.daemon.client import DaemonClient

    with DaemonClient.connect(guard_home()) as client:
        result = client.approve(approval_id, by=by) if allow else client.deny(approval_id, by=by)
    word = "approved" if allow else "denied"
    say(f"{word} {shown(str(result['approval']))} (recorded as {shown(str(result['by']))})")
