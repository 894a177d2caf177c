"""The `guard` command: a lazily loaded group so `guard run` does not pay for `guard audit`'s imports.

Each subcommand lives in its own module under guard/cli and is registered in `COMMANDS` by
"module:attribute". `GuardError` is caught here, once: its diagnostics go to stderr and its exit code out.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from guard import __version__
from guard.errors import GuardError

COMMANDS: dict[str, str] = {
    "policy": "guard.cli.policy:policy",
    "audit": "guard.cli.audit:audit",
    "keys": "guard.cli.keys:keys",
    "daemon": "guard.cli.daemon:daemon",
    "approvals": "guard.cli.approvals:approvals",
    "approve": "guard.cli.approvals:approve",
    "deny": "guard.cli.approvals:deny",
    "doctor": "guard.cli.doctor:doctor",
    "hook": "guard.cli.hook:hook",
    "run": "guard.cli.run:run",
    "demo": "guard.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = spec.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GuardError as exc:
            from guard.text import shown_text  # messages may quote agent-controlled paths and commands

            click.echo(f"guard: {shown_text(exc.diagnostics())}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="guard")
def main() -> None:
    """guard: run AI agents with least privilege, decide every action by policy, sign the trail."""
    from guard.cli.output import setup_logging

    setup_logging()  # warnings of any layer (a supervisor error naming an action) reach stderr escaped
