"""Attribute changes by descriptor, raced: the descriptor table is the task's, and a second thread can
make the same number name another file between the supervisor's look and the kernel's act.

fchmod(fd), chmod("/proc/self/fd/N"), futimens(fd) and fsetxattr(fd) change the file a descriptor holds, and a read-only descriptor
is enough (fchmod needs ownership, not write access). An agent can read many files it may not change
(its rc files, the engineer's notes): so one thread calls fchmod(N) on a workspace file while another
flips N between that file and a read-only descriptor of the victim with dup2(). Had the check looked at
N and then let the kernel act on whatever N is by then, the victim's mode, times or extended attributes
would change. Bare each race lands; under guard the change is made on the very file judged, so the
victim never changes.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)
ROOT = os.geteuid() == 0

RACE = """
import os, sys, threading
victim, mine, what, patience = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(os.path.join(os.path.dirname(mine), 'warm-' + what), 'w').close()  # the core answers in this directory
vfd = os.open(victim, os.O_RDONLY)
mfd = os.open(mine, os.O_RDONLY)
n = os.dup(mfd)
stop = False
swaps = [0]
def swapper():
    while not stop:
        os.dup2(vfd, n); os.dup2(mfd, n)
        swaps[0] += 1
def act():
    if what == 'fchmod':
        os.fchmod(n, 0o666)
    elif what == 'proc-chmod':  # glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does this; tar sets every mode so
        os.chmod('/proc/self/fd/%d' % n, 0o666)
    elif what == 'futimens':
        os.utime(n, (1_000_000_000, 1_000_000_000))
    elif what == 'fsetxattr':
        os.setxattr(n, 'user.guard-race', b'1')
def landed():
    st = os.stat(victim)
    if what in ('fchmod', 'proc-chmod'):
        return stat.S_IMODE(st.st_mode) == 0o666
    if what == 'futimens':
        return int(st.st_mtime) == 1_000_000_000
    try:
        return os.getxattr(victim, 'user.guard-race') == b'1'
    except OSError:
        return False
import stat
t = threading.Thread(target=swapper, daemon=True)
t.start()
tries = 0
while tries < 200_000:
    tries += 1
    try:
        act()
    except OSError:
        pass
    if patience == 0 and tries % 16 == 0 and landed():
        print('RACED', flush=True)
        break
    if patience and tries >= patience and swaps[0] >= 300:
        break
stop = True
t.join()
print('DONE', tries, flush=True)
"""


POLICY = """version: 1
name: fd-races
extends: [coding-agent]
rules:
  - id: shared-data-readable
    allow: [read]
    paths: ["{dir}/**"]
"""


@pytest.fixture
def victim(world):
    """A file the agent may read but not change, outside the home (whose read grants are read-only
    mounts, which refuse any change whatever the supervisor lets through): shared data on the root file
    system, which a policy lets it read. Only root can make a directory there, and as root this is every
    system file (/etc/passwd is readable and root's own)."""
    if not ROOT:
        pytest.skip("needs root: a readable file on a writable mount outside the home and /tmp (which "
                    "only root can create here); as nobody the system's files are not its own anyway")
    top = Path(tempfile.mkdtemp(prefix="guard-test-fd-races-", dir="/var/lib"))
    path = top / "notes.txt"
    path.write_text("shared\n")
    path.chmod(0o600)
    os.utime(path, (1_600_000_000, 1_600_000_000))
    policy = world.root / "policies" / "fd-races.yaml"
    policy.parent.mkdir(exist_ok=True)
    policy.write_text(POLICY.format(dir=top))
    try:
        yield path, policy
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("what", ["fchmod", "proc-chmod", "futimens", "fsetxattr"])
def test_a_descriptor_flipped_under_an_attribute_change_never_reaches_another_file(world, what, victim):
    victim, policy = victim
    bare_victim = world.scratch / f"fdrace-{what}-bare-victim"
    bare_victim.write_text("x\n")
    bare_victim.chmod(0o600)
    bare_mine = world.scratch / f"fdrace-{what}-bare-mine"
    bare_mine.write_text("mine\n")
    bare = world.bare_run([*world.py(RACE), str(bare_victim), str(bare_mine), what, "0"], timeout=120)
    if what == "fsetxattr" and "RACED" not in bare.stdout:
        pytest.skip(f"user extended attributes do not work here even bare: {bare.stderr.strip()[-200:]}")
    assert "RACED" in bare.stdout, bare

    before = victim.stat()
    mine = world.ws / f"fdrace-{what}-mine"
    mine.write_text("mine\n")
    probe = world.guard_run(world.sh(f'cat "{victim}" > /dev/null && echo READABLE'), policy=policy)
    assert "READABLE" in probe.stdout, ("the victim must be readable inside for the attack to mean anything",
                                        probe)
    run = world.guard_run([*world.py(RACE), str(victim), str(mine), what, "3000"], policy=policy, timeout=180)
    assert "DONE" in run.stdout, run
    after = victim.stat()
    assert stat.S_IMODE(after.st_mode) == 0o600, run
    assert int(after.st_mtime) == int(before.st_mtime), run
    try:
        assert os.getxattr(victim, "user.guard-race") != b"1", run
    except OSError:
        pass
