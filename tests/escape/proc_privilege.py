"""Privilege: sudo/su and setuid binaries, terminal input injection (TIOCSTI) on the controlling terminal.

`guard run` here runs under a pseudo-terminal this test creates, as an engineer's interactive shell
would, so the agent really has a controlling terminal to attack.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import time

import pytest

pytestmark = pytest.mark.timeout(120)


def test_no_new_privs_inside(world):
    attack = world.sh("grep NoNewPrivs /proc/self/status")
    assert "NoNewPrivs:\t0" in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert "NoNewPrivs:\t1" in run.stdout, run


def test_su_is_refused_and_recorded(world):
    su = shutil.which("su", path="/usr/bin:/bin")
    if su is None:
        pytest.skip("su is not installed")
    attack = ["su", "-c", "id"]
    if os.geteuid() == 0:
        assert "uid=0" in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert run.returncode == 126 and "uid=" not in run.stdout, run
    world.assert_denied(run, "run", "su -c id")


def test_su_renamed_gains_nothing(world):
    """A symlink with another name dodges a rule on the command name; no_new_privs must still hold."""
    su = shutil.which("su", path="/usr/bin:/bin")
    if su is None:
        pytest.skip("su is not installed")
    (world.ws / "notsu").symlink_to(su)
    attack = world.sh("./notsu -c 'grep -E \"^(Uid|CapEff)\" /proc/self/status' root")
    run = world.guard_run(attack)
    inside_uid = world.guard_run(world.sh('grep -E "^(Uid|CapEff)" /proc/self/status')).stdout
    assert run.stdout.strip() in ("", inside_uid.strip()), f"su changed the identity: {run!r} vs {inside_uid}"
    assert "CapEff:\t0000000000000000" in inside_uid, inside_uid


def _under_pty(argv: list[str], env: dict[str, str], cwd: str, timeout: float = 60) -> tuple[int, str]:
    """Run argv with a new pseudo-terminal as its controlling terminal; return (status, everything printed)."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(master)
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


TIOCSTI = (
    "import errno, fcntl, os, sys, termios\n"
    "fd = os.open('/dev/tty', os.O_RDWR)\n"
    "try:\n"
    "    for ch in b'id\\n':\n"
    "        fcntl.ioctl(fd, termios.TIOCSTI, bytes([ch]))\n"
    "    print('STI-OK')\n"
    "except OSError as e:\n"
    "    print('STI-ERR', errno.errorcode[e.errno])\n"
    "print('TTY', os.isatty(0), flush=True)\n"
)


def test_tiocsti_on_the_controlling_terminal_refused(world):
    _bare_status, bare_out = _under_pty(["/usr/bin/python3", "-I", "-c", TIOCSTI], world.env, str(world.ws))
    if "STI-OK" not in bare_out:
        pytest.skip(f"TIOCSTI does not work here even bare (dev.tty.legacy_tiocsti=0?): {bare_out.strip()}")
    argv = world.guard_run_argv(["/usr/bin/python3", "-I", "-c", TIOCSTI])
    status, out = _under_pty(argv, world.env, str(world.ws))
    assert "STI-ERR EPERM" in out and "STI-OK" not in out, out
    assert "TTY True" in out, f"the agent must keep its terminal: {out}"
    assert status == 0, out


def test_zz_trail_verifies(world):
    world.check_trail()
