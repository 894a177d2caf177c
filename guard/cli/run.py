"""`guard run`: run a command (an agent) inside the policy's sandbox and exit with its status."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from guard.errors import UsageError


def parse_resolve(values: tuple[str, ...]) -> dict[str, str]:
    import ipaddress

    out: dict[str, str] = {}
    for value in values:
        name, sep, addr = value.rpartition(":") if value.count(":") == 1 else value.partition(":")
        if not sep or not name or not addr:
            raise UsageError(f"--resolve {value!r}: expected NAME:ADDRESS",
                             hint="e.g. --resolve pypi.org:127.0.0.1")
        try:
            ipaddress.ip_address(addr.strip("[]"))
        except ValueError:
            raise UsageError(f"--resolve {value!r}: {addr!r} is not an IP address") from None
        out[name.lower().rstrip(".")] = addr.strip("[]")
    return out


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-p", "--policy", default="coding-agent", show_default=True,
              help="A shipped policy name or a policy file.")
@click.option("-w", "--workspace", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The workspace the policy's ${workspace} means (default: the current directory).")
@click.option("--require-full", is_flag=True, help="Refuse to run unless every protection is enforced here.")
@click.option("--audit", is_flag=True,
              help="Audit mode: decide and record every action, refuse none (the guard's own state stays "
                   "hidden; see docs/sandbox.md).")
@click.option("--full-audit", is_flag=True,
              help="Also decide and record every read-only open (a read of a hidden credential is in the "
                   "trail for every user); costs more on file-heavy work, see docs/seccomp.md.")
@click.option("--json-summary", is_flag=True, help="Print the exit summary as one JSON line on stderr.")
@click.option("--resolve", "resolve", multiple=True, metavar="NAME:ADDR",
              help="Pin a host name to an address for the proxy (like curl --resolve).")
@click.option("--publish", "publish", multiple=True, type=click.IntRange(1, 65535), metavar="PORT",
              help="Expose the agent's 127.0.0.1:PORT on the host's 127.0.0.1:PORT (repeatable); the "
                   "policy must allow listen on the port.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(policy: str, workspace: Path | None, require_full: bool, audit: bool, full_audit: bool,
        json_summary: bool, resolve: tuple[str, ...], publish: tuple[int, ...],
        command: tuple[str, ...]) -> None:
    """Run COMMAND under the guard: guard run [OPTIONS] -- COMMAND [ARGS]..."""
    import gc

    gc.disable()  # while the run path is imported; run_guarded turns it on again once the agent runs
    from guard.runner import RunOptions, run_guarded

    gc.enable()

    cwd = Path.cwd()
    opts = RunOptions(argv=tuple(command), policy=policy, workspace=(workspace or cwd).resolve(), cwd=cwd,
                      require_full=require_full, audit=audit, full_audit=full_audit,
                      json_summary=json_summary,
                      resolve=parse_resolve(resolve), publish=tuple(dict.fromkeys(publish)))
    status = run_guarded(opts).status
    if sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__:  # the real process, not a test runner
        _exit_now(status)
    sys.exit(status)


def _exit_now(status: int) -> None:
    """Leave with the agent's status without the interpreter's finalization (~30 ms of tearing down every
    module, felt at the end of each short command). Everything that must outlive us is already done when
    run_guarded returns: the session's end is with the daemon (or kept in its spool), the sandbox's tree is
    gone, no thread holds anything of ours but the ask announcer, which only reads. What finalization
    would still do is flushing: the logging handlers and both standard streams, done here."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream: the status is still the agent's
    os._exit(status)
