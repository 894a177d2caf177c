"""Under `guard run` the session's own terminal keeps its name, and it is the only terminal of the user the
agent can reach (the sandbox has a devpts instance of its own; tests/escape/fs_terminals.py attacks it)."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest
from support.daemon import GUARD

PY = "/usr/bin/python3"


def _ctty() -> None:  # pragma: no cover - runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`guard run` with a fresh pty as its controlling terminal (as in test_run_tty.py)."""

    def __init__(self, argv: list[str], *, cwd: Path) -> None:
        self.master, self.slave = os.openpty()
        self.out = b""
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     start_new_session=True, preexec_fn=_ctty, close_fds=True)

    def _read(self, timeout: float) -> bool:
        if not select.select([self.master], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return False
        self.out += chunk
        return bool(chunk)

    def expect(self, needle: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {needle!r}; terminal shows: {self.out[-2000:]!r}")
            self._read(0.2)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"guard run did not exit; terminal shows: {self.out[-2000:]!r}")
            self._read(0.05)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def ws(tmp_path: Path, guard_daemon: subprocess.Popen[bytes]) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def test_own_terminal_keeps_its_name_and_other_terminals_are_gone(ws: Path) -> None:
    other_master, other_slave = os.openpty()
    other = os.ttyname(other_slave)
    script = ("import os, sys\n"
              "name = os.ttyname(0)\n"
              "fd = os.open(name, os.O_RDWR | os.O_NOCTTY)\n"  # the own terminal, reopened by its name
              "os.write(fd, b'reopened-by-name\\n')\n"
              f"try:\n    os.open({other!r}, os.O_RDWR | os.O_NOCTTY); print('OTHER-OPENED')\n"
              "except OSError as exc:\n    print('OTHER-REFUSED', exc.errno)\n"
              "print('NAME', name)\n")
    t = Terminal([*GUARD, "run", "--", PY, "-c", script], cwd=ws)
    try:
        own = os.ttyname(t.slave)
        t.expect(rb"reopened-by-name")
        t.expect(rb"OTHER-REFUSED")
        t.expect(rb"NAME " + own.encode())
        assert b"OTHER-OPENED" not in t.out
        assert t.wait() == 0
    finally:
        t.close()
        os.close(other_master)
        os.close(other_slave)
