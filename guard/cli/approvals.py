"""`guard approvals`, `guard approve ID`, `guard deny ID`: answer the `ask` decisions agents wait on."""

from __future__ import annotations

import json

import click

from guard.home import guard_home


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
        click.echo("no pending approvals")
        return
    click.echo(f"{'ID':<8} {'SESSION':<12} {'AGE':>6} {'LEFT':>6}  ACTION")
    for item in pending:
        action = item["action"]
        click.echo(f"{item['approval']:<8} {item['session']:<12} {item['age_s']:>5.0f}s "
                   f"{item['expires_in_s']:>5.0f}s  {action['op']} {action['target']}"
                   + (f"   [{item['rule_id']}]" if item.get("rule_id") else ""))


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
    click.echo(f"{word} {result['approval']} (recorded as {result['by']})")
