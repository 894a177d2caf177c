"""`guard daemon start|stop|status|run`: a thin shell over guard.daemon."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

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
    from guard.daemon import protocol
    from guard.daemon.server import Daemon

    setup_logging(logging.INFO, "%(asctime)s guard-daemon %(levelname)s %(message)s")
    claimed = os.environ.get("GUARD_TEST_DAEMON_PROTOCOL")
    if claimed:  # tests only: behave as a daemon of an older guard, to prove clients refuse it
        protocol.VERSION = int(claimed)
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
    """Stop the daemon gracefully: pending approvals are denied and the log is sealed.

    A daemon of another guard version is stopped too (asked in its own protocol), which is the upgrade step.
    """
    from guard.daemon.client import DaemonClient, DaemonNotRunning, DaemonVersionError
    from guard.home import socket_path

    home = guard_home()
    try:
        client = DaemonClient.connect(home, handshake=False)
    except DaemonNotRunning:
        say("guard daemon is not running")
        return
    with client:
        try:
            client.handshake()
            pid = client.shutdown()["pid"]
        except DaemonVersionError as exc:
            reply = client.raw_request(exc.daemon_protocol, "shutdown", {})
            result = reply.get("result")
            if not reply.get("ok") or not isinstance(result, dict):
                raise DaemonError(f"the guard {exc.daemon_version} daemon refused to stop: {reply}",
                                  hint=f"kill {exc.pid}" if exc.pid else None) from None
            pid = result.get("pid", exc.pid)
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
    from guard.daemon.client import DaemonClient, DaemonNotRunning, DaemonVersionError

    try:
        client = DaemonClient.connect(guard_home())
    except DaemonVersionError as exc:
        if as_json:
            click.echo(json.dumps({"running": True, "compatible": False, "version": exc.daemon_version,
                                   "protocol": exc.daemon_protocol, "pid": exc.pid}))
        else:
            click.echo(f"guard daemon {exc.daemon_version} running (pid {exc.pid}) but INCOMPATIBLE: "
                       f"{exc.message}; {exc.hint}")
        raise SystemExit(4) from None
    except DaemonNotRunning:
        last = _last_error(guard_home() / "daemon.log")
        if as_json:
            click.echo(json.dumps({"running": False, "last_error": last}))
        else:
            say("guard daemon is not running")
            if last:
                say(f"  its log's last error: {last}")
        raise SystemExit(3) from None
    with client:
        info = client.status()
    if as_json:
        click.echo(json.dumps({"running": True, **info}))
        return
    state = info.get("state", "running")
    say(f"guard daemon {info['version']} {state} (pid {info['pid']}, protocol {info.get('protocol')}, "
        f"up {info['uptime_s']:.0f} s)")
    say(f"  socket: {info['socket']}")
    audit = info.get("audit") or {}
    if audit.get("error"):
        say(f"  audit trail: FAILED: {audit['error']}")
    elif "size" in audit:
        say(f"  audit trail: {audit['size']} lines, {audit['sealed']} sealed")
    if audit.get("recovery"):
        say(f"  recovered at start: {audit['recovery']}")
    say(f"  connections: {info['connections']}, pending approvals: {info['approvals']}")
    sessions = info["sessions"]
    say(f"  sessions: {len(sessions)}")
    for s in sessions:
        counts = s["counts"]
        command = " ".join(shown(a) for a in s["argv"])  # each word escaped: argv is the agent's
        say(f"    {shown(str(s['session']))}  {shown(str(s['policy'])):<16} {command[:40]:<40} "
            f"allowed {counts['allowed']} denied {counts['denied']} asked {counts['asked']}")


def _last_error(path: Path) -> str | None:
    """The last ERROR line of the daemon's log (why it stopped, e.g. a full disk), if any."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line for line in tail if " ERROR " in line]
    return errors[-1][:2000] if errors else None
