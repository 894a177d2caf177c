"""`guard daemon start|stop|status|run`: a thin shell over guard.daemon."""

from __future__ import annotations

import json
import logging
import time

import click

from guard.cli.output import say, setup_logging
from guard.errors import DaemonError
from guard.home import guard_home
from guard.text import shown


@click.group()
def daemon() -> None:
    """The per-user service that owns keys, the audit log, sessions and approvals."""


@daemon.command()
def run() -> None:
    """Run the daemon in the foreground (what the systemd unit and `start` run)."""
    from guard.daemon.server import Daemon

    setup_logging(logging.INFO, "%(asctime)s guard-daemon %(levelname)s %(message)s")
    Daemon(guard_home()).run()


@daemon.command()
def start() -> None:
    """Start the daemon in the background unless one is already running."""
    from guard.daemon.client import ensure_running

    with ensure_running(guard_home()) as client:
        hello = client.hello()
    say(f"guard daemon running (pid {hello['pid']})")


@daemon.command()
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for it to exit.")
def stop(timeout: float) -> None:
    """Stop the daemon gracefully: pending approvals are denied and the log is sealed."""
    from guard.daemon.client import DaemonClient, DaemonNotRunning
    from guard.home import socket_path

    home = guard_home()
    try:
        client = DaemonClient.connect(home)
    except DaemonNotRunning:
        say("guard daemon is not running")
        return
    with client:
        pid = client.shutdown()["pid"]
    deadline = time.monotonic() + timeout
    while socket_path(home).exists():
        if time.monotonic() >= deadline:
            raise DaemonError(f"the daemon (pid {pid}) did not stop within {timeout:g} s",
                              hint=f"kill {pid}")
        time.sleep(0.05)
    say(f"guard daemon stopped (pid {pid})")


@daemon.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Whether the daemon runs, and its sessions and pending approvals. Exits 3 when it is not running."""
    from guard.daemon.client import DaemonClient, DaemonNotRunning

    try:
        client = DaemonClient.connect(guard_home())
    except DaemonNotRunning:
        if as_json:
            click.echo(json.dumps({"running": False}))
        else:
            say("guard daemon is not running")
        raise SystemExit(3) from None
    with client:
        info = client.status()
    if as_json:
        click.echo(json.dumps({"running": True, **info}))
        return
    say(f"guard daemon {info['version']} running (pid {info['pid']}, up {info['uptime_s']:.0f} s)")
    say(f"  socket: {info['socket']}")
    say(f"  connections: {info['connections']}, pending approvals: {info['approvals']}")
    sessions = info["sessions"]
    say(f"  sessions: {len(sessions)}")
    for s in sessions:
        counts = s["counts"]
        command = " ".join(shown(a) for a in s["argv"])  # each word escaped: argv is the agent's
        say(f"    {shown(str(s['session']))}  {shown(str(s['policy'])):<16} {command[:40]:<40} "
            f"allowed {counts['allowed']} denied {counts['denied']} asked {counts['asked']}")
