"""`guard demo`: watch a scripted rogue agent run under the default policy, then verify the trail."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--keep", is_flag=True, help="Keep the scratch world (workspace, trail, keys) afterwards.")
def demo(keep: bool) -> None:
    """Run a rogue agent in a scratch workspace under the default policy and verify the signed trail."""
    from guard.demo import run_demo

    sys.exit(run_demo(keep=keep))
