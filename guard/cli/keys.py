"""`guard keys`: create the audit trail's root key, show its fingerprint, export the pin auditors keep."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from guard.audit.keys import Keyring, fingerprint
from guard.cli.output import say
from guard.errors import UsageError
from guard.home import guard_home


@click.group()
def keys() -> None:
    """Manage the audit trail's signing keys (root key and forward-secure epoch keys)."""


@keys.command("init")
@click.option("--force", is_flag=True,
              help="Replace existing keys (starts a new trail; auditors must re-pin).")
def init_cmd(force: bool) -> None:
    """Create the root key, certify the first epoch key with it, and forget the root private key."""
    home = guard_home()
    ring = Keyring(home)
    if ring.exists() and not force:  # the first `guard run` creates them: following the README is no error
        existing = ring.root()
        say(f"keys already exist in {home} (the first `guard run` or `guard keys init` created them); "
            "nothing changed")
        say(f"root key: {existing.name}")
        say(f"fingerprint: {fingerprint(existing)}")
        say("give auditors the public key:  guard keys export-public -o root.pub")
        return
    root = ring.init(now=time.time(), force=force)
    say(f"root key: {root.name}")
    say(f"fingerprint: {fingerprint(root)}")
    say("the root private key was used once and not stored; give auditors the public key:")
    say("  guard keys export-public -o root.pub")


@keys.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(as_json: bool) -> None:
    """Show the root key's fingerprint and the current epoch."""
    ring = Keyring(guard_home())
    root = ring.root()
    epoch = ring.epoch_key().epoch
    if as_json:
        click.echo(json.dumps({"name": root.name, "key": root.encode(), "fingerprint": fingerprint(root),
                               "epoch": epoch}))
        return
    say(f"root key:    {root.name}")
    say(f"fingerprint: {fingerprint(root)}")
    say(f"public key:  {root.encode()}")
    say(f"epoch:       {epoch}")


@keys.command("export-public")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="File to write the root public key to ('-' for stdout).")
def export_public_cmd(output: Path) -> None:
    """Write the root public key: the pin an auditor passes to `guard audit verify --key`."""
    root = Keyring(guard_home()).root()
    text = root.encode() + "\n"
    if str(output) == "-":
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{output}: cannot write: {exc.strerror}") from None
    say(f"wrote {output} ({fingerprint(root)})", err=True)
