"""Poisoning the code the engineer runs later through their caches.

`~/.local/bin/ruff` is a symlink into uv's tool directory (a cache), and pre-commit, npx, corepack, cargo,
go and maven keep code the engineer runs later in caches too. Bare, the agent rewrites them. Under guard the
caches are seen through a layer of the session's own (`writes: private`): the agent's writes land there,
and the engineer's files never change.
"""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.timeout(120)

EVIL = "#!/bin/sh\necho pwned-by-agent\n"


def _restore(path, content: str) -> None:
    path.write_text(content)
    path.chmod(0o755)


def test_rewrite_the_tool_behind_a_local_bin_symlink(world):
    link, target = world.real.tool_link, world.real.tool_target
    original = target.read_text()
    attack = world.sh(f"printf '{EVIL}' > \"{link}\" && \"{link}\"")
    bare = world.bare_run(attack)
    assert "pwned-by-agent" in bare.stdout and target.read_text() == EVIL, bare
    _restore(target, original)
    run = world.guard_run(attack)
    assert target.read_text() == original, run
    host = subprocess.run([str(link)], capture_output=True, text=True, timeout=30)
    assert host.stdout.strip() == "ruff-0.0-fake", host


def test_rewrite_a_pre_commit_environment(world):
    hook = world.home / ".cache" / "pre-commit" / "repo-abc" / "py_env" / "bin" / "black"
    hook.parent.mkdir(parents=True, exist_ok=True)
    _restore(hook, "#!/bin/sh\necho black-ok\n")
    attack = world.sh(f"printf '{EVIL}' > \"{hook}\"; mkdir -p \"{hook.parent}/new-$T\" && "
                      f"printf '{EVIL}' > \"{hook.parent}/new-$T/x\"")
    bare = world.bare_run(attack, env={"T": "bare"})
    assert hook.read_text() == EVIL and (hook.parent / "new-bare" / "x").exists(), bare
    _restore(hook, "#!/bin/sh\necho black-ok\n")
    run = world.guard_run(attack, env={"T": "guarded"})
    assert hook.read_text() == "#!/bin/sh\necho black-ok\n", run
    assert not (hook.parent / "new-guarded").exists(), run


def test_the_agent_still_uses_its_caches(world):
    """Honest work: inside the session the caches are writable and read back what was written."""
    probe = world.home / ".cache" / "pip" / "guard-probe"
    run = world.guard_run(world.sh(f'echo cached > "{probe}" && cat "{probe}" && '
                                   f'ls "{world.home}/.cache/pip" >/dev/null'))
    assert run.returncode == 0 and "cached" in run.stdout, run
    assert not probe.exists(), "the write must stay in the session's own layer"


def test_zz_trail_verifies(world):
    world.check_trail()
