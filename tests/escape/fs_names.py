"""Names created with no decision: every syscall that creates a name on the file system (bind of a unix
socket, mknod of a FIFO, symlink, link, mkdir, rename, open O_CREAT, O_TMPFILE then linkat) must be
decided and recorded; a protected name must not come into being by any of them.

Also errno fidelity: where the object exists and is visible, the answer is the kernel's (EEXIST), not
the policy's EACCES, so `mkdir -p` and Node's recursive mkdir of an existing folder keep working.
"""

from __future__ import annotations

import shutil

import pytest
from support.realworld import RealHome

pytestmark = pytest.mark.timeout(180)

# Each creates the name in $TARGET and prints MADE on success (the way an attacker would).
CREATORS = {
    "bind": "import os, socket; socket.socket(socket.AF_UNIX).bind(os.environ['TARGET'])",
    "mkfifo": "import os; os.mkfifo(os.environ['TARGET'])",
    "mknod": "import os, stat; os.mknod(os.environ['TARGET'], stat.S_IFREG | 0o755)",
    "symlink": "import os; os.symlink('/bin/true', os.environ['TARGET'])",
    "link": "import os; open('src.tmp', 'w').close(); os.link('src.tmp', os.environ['TARGET'])",
    "mkdir": "import os; os.mkdir(os.environ['TARGET'])",
    "rename": "import os; open('src.tmp', 'w').close(); os.rename('src.tmp', os.environ['TARGET'])",
    "open-creat": "import os; os.close(os.open(os.environ['TARGET'], os.O_CREAT | os.O_WRONLY, 0o755))",
    "tmpfile-linkat": ("import os; t = os.environ['TARGET']; "
                       "fd = os.open(os.path.dirname(t) or '.', os.O_TMPFILE | os.O_WRONLY, 0o755); "
                       "os.write(fd, b'#!/bin/sh\\n'); "
                       "os.link(f'/proc/self/fd/{fd}', t, follow_symlinks=True)"),
}
# (name relative to the home, the verdict its rule gives)
TARGETS = {
    "hook": ("src/proj/.git/hooks/post-checkout", "deny"),
    "dotenv": ("src/proj/.env", "deny"),
    "agent-settings": (".claude/settings.json", "ask"),
}


@pytest.fixture(scope="module")
def twin(world):
    """A second realistic home for the bare runs to spoil."""
    home = RealHome(world.root / "twin-names").build()
    (home.home / ".claude").mkdir(exist_ok=True)
    return home


@pytest.fixture(scope="module")
def claude_dir(world):
    (world.home / ".claude").mkdir(exist_ok=True)
    return world.home / ".claude"


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("how", list(CREATORS))
def test_every_way_of_creating_a_protected_name_is_decided(world, twin, claude_dir, how, target):
    rel, _verdict = TARGETS[target]
    code = CREATORS[how] + "; print('MADE')"
    bare_path = twin.home / rel
    bare = world.bare_run(world.py(code), cwd=twin.ws, env={"TARGET": str(bare_path), "HOME": str(twin.home)})
    if how == "tmpfile-linkat" and "Invalid cross-device link" in bare.stderr:
        pytest.skip("linking an O_TMPFILE file through /proc/self/fd fails with EXDEV on this file system "
                    "(overlayfs), so the attack cannot be shown to work bare here")
    assert "MADE" in bare.stdout and (bare_path.exists() or bare_path.is_symlink()), bare
    if bare_path.is_dir() and not bare_path.is_symlink():
        bare_path.rmdir()
    else:
        bare_path.unlink()  # the twin is reused by the next way of creating the same name
    path = world.home / rel
    run = world.guard_run(world.py(code), policy=world.fast_ask, env={"TARGET": str(path)})
    assert "MADE" not in run.stdout, run
    assert not path.exists() and not path.is_symlink(), f"{path} was created: {run!r}"
    # mkdir under a masked or read-only place can be refused by the kernel tier before any decision
    if "Read-only file system" not in run.stderr:
        world.assert_denied(run, "write", path)


def test_mkdir_of_an_existing_directory_answers_eexist(world):
    """Outside the write grants too: bare it is "File exists", and so it must be under guard."""
    script = 'mkdir /usr; mkdir "$HOME"; mkdir "$HOME/src"; mkdir -p "$HOME/src/proj/.git" && echo P-OK'
    bare = world.bare_run(world.sh(script))
    run = world.guard_run(world.sh(script))
    for r in (bare, run):
        assert r.stderr.count("File exists") == 3 and "Permission denied" not in r.stderr, r
        assert "P-OK" in r.stdout, r
    assert not [d for d in world.decisions(run.session) if d[0] == "write"], "EEXIST is not a decision"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_recursive_mkdir_of_an_existing_folder(world):
    code = ("const fs = require('fs'); fs.mkdirSync(process.env.HOME, {recursive: true}); "
            "fs.mkdirSync('/usr/lib', {recursive: true}); console.log('NODE-OK')")
    for r in (world.bare_run(["node", "-e", code]), world.guard_run(["node", "-e", code])):
        assert "NODE-OK" in r.stdout, r


def test_zz_trail_verifies(world):
    world.check_trail()
