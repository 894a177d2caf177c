"""What the launch scan must find before the sandbox starts: names of secrets planted where the agent can read.

Landlock and mounts judge paths, not inodes: a hard link to the SSH key planted (before launch) in any tree
the agent may read is the key. The workspace lies under HOME (realistic), so the planted names below lie
beside and beneath the `tmp` rule's `except ${home}` (which once hid them from the scan). And a secret must
never become readable because a tree is large: past `settings.scan_max_entries` nothing starts.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.timeout(120)


def _leaks(run, secret: str) -> bool:
    return secret in run.stdout or secret in run.stderr


def test_hard_link_to_the_key_planted_in_a_cache(world):
    """~/.cache is granted (read, and write in a private layer); a planted link there is the key."""
    cache = world.home / ".cache" / "pip" / "http"
    cache.mkdir(parents=True, exist_ok=True)
    link = cache / "entry-0001"
    os.link(world.ssh_key, link)
    try:
        attack = world.sh(f'cat "{link}"')
        assert world.ssh_secret in world.bare_run(attack).stdout
        run = world.guard_run(attack)
        assert not _leaks(run, world.ssh_secret), run
    finally:
        link.unlink()


def test_hard_link_to_the_key_as_a_home_config_file(world):
    """Home configuration files are granted one by one (`~/.editorconfig`): a planted link as one of them."""
    link = world.home / ".editorconfig"
    os.link(world.ssh_key, link)
    try:
        attack = world.sh(f'cat "{link}"')
        assert world.ssh_secret in world.bare_run(attack).stdout
        run = world.guard_run(attack)
        assert not _leaks(run, world.ssh_secret), run
    finally:
        link.unlink()


def test_hard_link_to_aws_credentials_deep_in_the_workspace_and_a_submodule(world):
    target = world.ws / "vendor" / "lib" / "docs" / "a" / "b"
    target.mkdir(parents=True, exist_ok=True)
    link = target / "conf.ini"
    os.link(world.aws, link)
    try:
        attack = world.sh(f'cat "{link}"')
        assert world.aws_secret in world.bare_run(attack).stdout
        run = world.guard_run(attack)
        assert not _leaks(run, world.aws_secret), run
    finally:
        link.unlink()


def test_dotenv_in_a_workspace_larger_than_the_scan_bound_refuses_to_start(world):
    """Past the bound the `.env` could not be checked: guard run refuses (125) rather than expose it."""
    secret = "DOTENV-BIG-" + world.aws_secret[-8:]
    big = world.ws / "node_modules"
    for i in range(60):
        (big / f"pkg{i}").mkdir(parents=True, exist_ok=True)
        (big / f"pkg{i}" / "index.js").write_text("")
    (big / "zz").mkdir(exist_ok=True)
    (big / "zz" / ".env").write_text(f"TOKEN={secret}\n")
    small = world.root / "policies" / "small-scan.yaml"
    small.write_text("version: 1\nname: small-scan\nextends: [coding-agent]\nsettings: {scan_max_entries: 50}\n")
    attack = world.sh("cat node_modules/zz/.env")
    assert secret in world.bare_run(attack).stdout
    run = world.guard_run(attack, policy=small)
    assert run.returncode == 125 and not _leaks(run, secret), run
    assert "settings.scan_max_entries" in run.stderr and "nothing was started" in run.stderr, run
    # with the default bound the same workspace starts, and the .env is hidden
    run = world.guard_run(attack)
    assert run.returncode != 125 and not _leaks(run, secret), run


def test_zz_trail_verifies(world):
    world.check_trail()
