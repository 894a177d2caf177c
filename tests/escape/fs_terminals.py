"""Other terminals of the same user (issue class: the engineer's other shells, tmux panes, editors).

The test opens a pseudo-terminal pair outside, as the engineer's other terminal, and the attack opens its
slave by name (/dev/pts/N): it could read type-ahead (a password), print a fake sudo prompt, or resize it
(a SIGWINCH to a job outside). Bare it works; under guard the sandbox has a devpts instance of its own, so
that name does not lead to the engineer's terminal.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import uuid

import pytest

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def _other_terminal():
    master, slave = os.openpty()
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def _drain_until(master: int, sentinel: bytes, timeout: float = 15.0) -> bytes:
    """What the terminal received, up to the sentinel (bounded wait)."""
    got = b""
    deadline = time.monotonic() + timeout
    while sentinel not in got and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            got += os.read(master, 65536)
    assert sentinel in got, f"the terminal never showed the sentinel: {got!r}"
    return got


def _attack(name: str, marker: str) -> list[str]:
    return ["python3", "-I", "-c",
            "import fcntl, struct, termios, sys\n"
            f"fd = open({name!r}, 'r+b', buffering=0)\n"
            f"fd.write(b'[sudo] password for eng: {marker}\\n')\n"
            "fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', 7, 7, 0, 0))\n"
            "print('OPENED-OTHER-TERMINAL')\n"]


def _size(master: int) -> tuple[int, int]:
    import fcntl
    import struct
    import termios
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def test_another_terminal_of_the_user_is_unreachable(world):
    with _other_terminal() as (master, name):
        marker = f"FAKE-PROMPT-{uuid.uuid4().hex[:8]}"
        bare = world.bare_run(_attack(name, marker))
        assert "OPENED-OTHER-TERMINAL" in bare.stdout, bare
        assert _size(master) == (7, 7)
        os.write(os.open(name, os.O_WRONLY | os.O_NOCTTY), b"SENTINEL-1\n")
        assert marker.encode() in _drain_until(master, b"SENTINEL-1")

    with _other_terminal() as (master, name):
        marker = f"FAKE-PROMPT-{uuid.uuid4().hex[:8]}"
        before = _size(master)
        run = world.guard_run(_attack(name, marker))
        assert run.returncode != 0 and "OPENED-OTHER-TERMINAL" not in run.stdout, run
        fd = os.open(name, os.O_WRONLY | os.O_NOCTTY)
        os.write(fd, b"SENTINEL-2\n")
        os.close(fd)
        assert marker.encode() not in _drain_until(master, b"SENTINEL-2")
        assert _size(master) == before


def test_listing_dev_pts_shows_none_of_the_users_terminals(world):
    with _other_terminal() as (_master, name):
        run = world.guard_run(world.sh("ls /dev/pts"))
        assert run.returncode == 0, run
        assert os.path.basename(name) not in run.stdout.split(), run


def test_ptys_the_agent_creates_work(world):
    """`script`, tmux and node-pty make ptys of their own inside: /dev/ptmx reaches the sandbox's instance."""
    work = world.py(
        "import os, pty\n"
        "m, s = os.openpty()\n"
        "name = os.ttyname(s)\n"
        "fd = os.open(name, os.O_RDWR | os.O_NOCTTY)\n"
        "os.write(fd, b'own-pty\\n')\n"
        "print('PTY-OK', name.startswith('/dev/pts/'), os.read(m, 100))\n")
    run = world.guard_run(work)
    assert run.returncode == 0 and "PTY-OK True" in run.stdout and "own-pty" in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()
