"""`guard approvals`, `guard approve ID`, `guard deny ID`: answer the `ask` decisions agents wait on."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from guard.cli.output import say
from guard.errors import GuardError
from guard.home import guard_home
from guard.text import shown


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with --watch: one per change).")
@click.option("--watch", is_flag=True,
              help="Stay and show requests as they arrive; in a terminal, answer each one there.")
def approvals(as_json: bool, watch: bool) -> None:
    """List requests waiting for a human (approve or deny them by ID)."""
    from guard.daemon.client import DaemonClient

    if watch:
        _watch(as_json)
        return
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


_REMEMBER_HELP = ("Also write a rule matching exactly this request to $GUARD_HOME/remembered.yaml, for the "
                  "security team to review and adopt.")


@click.command()
@click.argument("approval_id")
@click.option("--by", default="", help="Name to record as the approver (default: your user name).")
@click.option("--remember", is_flag=True, help=_REMEMBER_HELP)
def approve(approval_id: str, by: str, remember: bool) -> None:
    """Allow a pending request."""
    _answer(approval_id, allow=True, by=by, remember=remember)


@click.command()
@click.argument("approval_id")
@click.option("--by", default="", help="Name to record as the decider (default: your user name).")
@click.option("--remember", is_flag=True, help=_REMEMBER_HELP)
def deny(approval_id: str, by: str, remember: bool) -> None:
    """Deny a pending request."""
    _answer(approval_id, allow=False, by=by, remember=remember)


def _answer(approval_id: str, *, allow: bool, by: str, remember: bool = False,
            pending: dict[str, Any] | None = None) -> None:
    from guard.daemon.client import DaemonClient

    home = guard_home()
    with DaemonClient.connect(home) as client:
        if remember and pending is None:
            pending = next((p for p in client.approvals() if p["approval"] == approval_id), None)
            if pending is None:
                raise click.ClickException(f"no pending approval {shown(approval_id)} (answered or expired?)")
        result = client.approve(approval_id, by=by) if allow else client.deny(approval_id, by=by)
    word = "approved" if allow else "denied"
    say(f"{word} {shown(str(result['approval']))} (recorded as {shown(str(result['by']))})")
    if remember and pending is not None:
        from guard.remember import remember as write_rule

        path, rule_id = write_rule(home, pending["action"], allow=allow, asked_by=pending.get("rule_id"),
                                   who=str(result["by"]), session=str(pending["session"]))
        say(f"remembered as rule {rule_id} in {path} (review: guard policy diff coding-agent {path})")


def _watch(as_json: bool) -> None:
    """Stream changes; in a terminal, ask the person at each pending request (one at a time, in order)."""
    from guard.announce import announcement, describe
    from guard.daemon.client import watch_approvals

    interactive = not as_json and sys.stdin.isatty()
    click.echo("watching for approvals (Ctrl-C to stop)", err=True)
    try:
        for change in watch_approvals(guard_home()):
            if as_json:
                click.echo(json.dumps(change))
                continue
            items = change.get("approvals", []) if change["event"] == "snapshot" else [change.get("approval")]
            for item in items:
                if not item:
                    continue
                if change["event"] == "resolved":
                    click.echo(f"{shown(str(item['approval']))} {shown(str(change.get('verdict')))} "
                               f"(by {shown(str(change.get('by')))}): {describe(item)}")
                    continue
                click.echo(announcement(item).replace("guard: WAITING FOR YOU: ", f"[{item['session']}] "))
                if interactive:
                    _prompt(item)
    except KeyboardInterrupt:
        return


def _prompt(item: dict[str, Any]) -> None:
    choice = click.prompt("  [a]pprove, [d]eny, [A]pprove and remember, [D]eny and remember, [s]kip",
                          type=click.Choice(["a", "d", "A", "D", "s"]), default="s", show_choices=False)
    if choice == "s":
        return
    try:
        _answer(str(item["approval"]), allow=choice in "aA", by="", remember=choice in "AD", pending=item)
    except GuardError as exc:
        click.echo(f"  not answered: {exc.message}", err=True)
