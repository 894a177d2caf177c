"""`guard doctor`: what this host can enforce, measured, and what is missing.

Exit 0 when every protection the default policy needs is available, 1 otherwise (informational lines,
such as Landlock's exec logging or SYNC_WAKE_UP, never fail the check).
"""

from __future__ import annotations

import json
import sys

import click

from guard.cli.output import say


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def doctor(as_json: bool) -> None:
    """Show what this host can enforce (Landlock, namespaces, seccomp) and what is missing."""
    from guard.sandbox.remedies import read_settings, remedies
    from guard.sandbox.report import host_report, probe_host

    host = probe_host()
    report = host_report(host)
    missing = report.shortfalls()
    fixes = remedies(host, read_settings())
    if as_json:
        click.echo(json.dumps({"host": host.to_dict(), **report.to_dict(),
                               "missing": [p.name for p in missing], "remedies": fixes}, indent=2))
    else:
        say(f"kernel {host.kernel}, Landlock ABI {host.landlock_abi}, "
            f"running as {'root' if host.running_as_root else 'an unprivileged user'}")
        say(report.render())
        if missing:
            say("missing for the default policy: " + ", ".join(p.name for p in missing))
        for fix in fixes:
            say(f"to fix: {fix}")
    sys.exit(1 if missing else 0)
