"""Interactive agents keep their terminal under `guard run`, and cannot type into it.

Each test gives `guard run` a real pseudo-terminal as its controlling terminal (a new session, the pty
slave on 0/1/2, the window size set on the master) and reads the master with bounded select waits.
Inside the sandbox only system binaries run (/bin/sh, /usr/bin/python3), which the base policy grants.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support.daemon import GUARD
from support.realworld import RealHome

PY = "/usr/bin/python3"

POLICY = """\
version: 1
name: tty-test
extends: [base]
defaults: {file: deny, network: deny, process: allow}
rules:
  - id: workspace
    allow: [read, write, exec]
    paths: ["${workspace}/**"]
"""

# Tries to push a command into the terminal's input queue, as an agent escaping to the engineer's shell would.
TIOCSTI_SCRIPT = r"""
import errno, fcntl, termios
done = 0
try:
    for ch in b"echo PWNED\n":
        fcntl.ioctl(0, termios.TIOCSTI, bytes([ch]))
        done += 1
    print("INJECTED", done, flush=True)
except OSError as exc:
    print("REFUSED", errno.errorcode.get(exc.errno, exc.errno), done, flush=True)
"""


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _ctty() -> None:  # pragma: no cover - runs in the child between fork and exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """One command with a fresh pty as its controlling terminal; the test holds the master (and the slave)."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, rows: int = 31, cols: int = 97) -> None:
        self.master, self.slave = os.openpty()
        set_winsize(self.master, rows, cols)
        self.out = b""
        self.proc = subprocess.Popen(list(argv), cwd=cwd, stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, start_new_session=True, preexec_fn=_ctty,
                                     close_fds=True)

    def _read_some(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return False
            raise
        self.out += chunk
        return bool(chunk)

    def expect(self, pattern: bytes, timeout: float = 30.0) -> re.Match[bytes]:
        """Wait (bounded) until the output so far matches `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.out)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out waiting for {pattern!r}; terminal shows: {self.out[-2000:]!r}")
            self._read_some(min(left, 0.2))

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status of `guard run` itself (negative: it died of a signal), draining the output."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() >= deadline:
                pytest.fail(f"guard run did not exit; terminal shows: {self.out[-2000:]!r}")
            self._read_some(0.05)
        while self._read_some(0.05):
            pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def ws(isolated_home: Path, guard_daemon: subprocess.Popen[bytes]) -> Path:
    """The workspace where engineers keep it: ~/src/proj, an existing repository in a realistic home."""
    return RealHome(isolated_home.parent).build().ws


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "tty-test.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for t in opened:
        t.close()


def guarded(policy: Path | str, *argv: str) -> list[str]:
    return [*GUARD, "run", "-p", str(policy), "--", *argv]


def test_agent_sees_a_tty_of_the_size_set(ws: Path, policy: Path, terminals: list[Terminal]) -> None:
    script = "import os; print('TTY', os.isatty(0), os.isatty(1), os.isatty(2), tuple(os.get_terminal_size()))"
    t = Terminal(guarded(policy, PY, "-c", script), cwd=ws, rows=31, cols=97)
    terminals.append(t)
    t.expect(rb"TTY True True True \(97, 31\)")
    assert t.wait() == 0


def test_agent_sees_a_tty_under_the_default_policy(ws: Path, terminals: list[Terminal]) -> None:
    script = "import os; print('TTY', os.isatty(0), tuple(os.get_terminal_size()), os.ttyname(0))"
    t = Terminal([*GUARD, "run", "--", PY, "-c", script], cwd=ws, rows=24, cols=132)
    terminals.append(t)
    t.expect(rb"TTY True \(132, 24\) /dev/pts/\d+")
    assert t.wait() == 0


def test_dev_tty_is_the_agents_own_terminal(ws: Path, policy: Path, terminals: list[Terminal]) -> None:
    script = "import os; fd = os.open('/dev/tty', os.O_RDWR); os.write(fd, b'via-dev-tty\\n')"
    t = Terminal(guarded(policy, PY, "-c", script), cwd=ws)
    terminals.append(t)
    t.expect(rb"via-dev-tty")
    assert t.wait() == 0


def test_resize_reaches_the_agent(ws: Path, policy: Path, terminals: list[Terminal]) -> None:
    script = (
        "import os, signal, sys, time\n"
        "def on_winch(*_):\n"
        "    # os.write, not print: the signal may land while print('READY') is still flushing\n"
        "    os.write(1, f'WINCH {tuple(os.get_terminal_size())}\\n'.encode()); os._exit(0)\n"
        "signal.signal(signal.SIGWINCH, on_winch)\n"
        "print('READY', tuple(os.get_terminal_size()), flush=True)\n"
        "time.sleep(60)\n"
        "print('NO-WINCH', flush=True)\n"
    )
    t = Terminal(guarded(policy, PY, "-c", script), cwd=ws, rows=25, cols=80)
    terminals.append(t)
    t.expect(rb"READY \(80, 25\)")
    set_winsize(t.master, 40, 120)  # the kernel sends SIGWINCH to the terminal's foreground group
    t.expect(rb"WINCH \(120, 40\)")
    assert t.wait() == 0


def test_resize_reaches_a_shell_trap(ws: Path, policy: Path, terminals: list[Terminal]) -> None:
    script = "trap 'stty size; exit 0' WINCH; echo READY; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"
    t = Terminal(guarded(policy, "/bin/sh", "-c", script), cwd=ws, rows=25, cols=80)
    terminals.append(t)
    t.expect(rb"READY")
    set_winsize(t.master, 50, 150)
    t.expect(rb"50 150")
    assert t.wait() == 0


@pytest.mark.parametrize("agent", [
    ["/bin/sh", "-c", "echo READY; exec sleep 30"],
    [PY, "-c", "print('READY', flush=True)\nwhile True: pass"],
], ids=["sleep", "python-loop"])
def test_ctrl_c_interrupts_the_agent_and_guard_run_exits_130(ws: Path, policy: Path, terminals: list[Terminal],
                                                             agent: list[str]) -> None:
    t = Terminal(guarded(policy, *agent), cwd=ws)
    terminals.append(t)
    t.expect(rb"READY")
    t.write(b"\x03")
    status = t.wait(timeout=20)
    assert status == 130, f"guard run status {status}; terminal: {t.out[-2000:]!r}"
    # guard run did not die of the SIGINT itself: it lived to close the session and print its summary.
    assert re.search(rb"guard: session [0-9a-f]+ exited 130", t.out), t.out[-2000:]
    assert not re.search(rb'File "[^"]*/guard/', t.out), "guard run's own traceback"


def test_ctrl_c_handled_by_the_agent_leaves_guard_run_running(ws: Path, policy: Path,
                                                              terminals: list[Terminal]) -> None:
    script = ("import signal, sys, time\n"
              "hits = []\n"
              "signal.signal(signal.SIGINT, lambda *_: hits.append(1))\n"
              "print('READY', flush=True)\n"
              "while len(hits) < 2: time.sleep(0.01)\n"
              "print('TWO-INTS', flush=True)\n"
              "sys.exit(3)\n")
    t = Terminal(guarded(policy, PY, "-c", script), cwd=ws)
    terminals.append(t)
    t.expect(rb"READY")
    t.write(b"\x03")
    time.sleep(0.2)  # two distinct interrupts, not one coalesced signal (ordering only, nothing is timed)
    t.write(b"\x03")
    t.expect(rb"TWO-INTS")
    assert t.wait() == 3


def test_colours_and_escape_sequences_pass_through_unchanged(ws: Path, policy: Path,
                                                             terminals: list[Terminal]) -> None:
    seq = b"\x1b[31mRED\x1b[0m \x1b[1;38;5;208mORANGE\x1b[0m \x1b[2K\x1b[10;5H\x1b]0;title\x07END"
    script = f"import sys; sys.stdout.buffer.write({seq!r}); sys.stdout.flush()"
    t = Terminal(guarded(policy, PY, "-c", script), cwd=ws)
    terminals.append(t)
    t.expect(re.escape(seq))
    assert t.wait() == 0


def test_keyboard_input_reaches_the_agent(ws: Path, policy: Path, terminals: list[Terminal]) -> None:
    script = "import sys; print('READY', flush=True); line = sys.stdin.readline(); print('GOT', line.strip()[::-1])"
    t = Terminal(guarded(policy, PY, "-c", script), cwd=ws)
    terminals.append(t)
    t.expect(rb"READY")
    t.write(b"hello\n")
    t.expect(rb"GOT olleh")
    assert t.wait() == 0


def _input_queue(slave: int) -> int:
    buf = fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def test_tiocsti_works_bare(tmp_path: Path, terminals: list[Terminal]) -> None:
    """The control: without the guard the same script does inject (else the next test proves nothing)."""
    t = Terminal([PY, "-c", TIOCSTI_SCRIPT], cwd=tmp_path)
    terminals.append(t)
    t.expect(rb"INJECTED|REFUSED")
    t.wait()
    if b"REFUSED" in t.out:
        pytest.skip(f"this host refuses TIOCSTI even bare: {t.out!r}")
    assert b"INJECTED 11" in t.out
    assert _input_queue(t.slave) > 0 or b"echo PWNED" in t.out


def test_tiocsti_is_refused_and_nothing_is_injected(ws: Path, policy: Path, terminals: list[Terminal]) -> None:
    t = Terminal(guarded(policy, PY, "-c", TIOCSTI_SCRIPT), cwd=ws)
    terminals.append(t)
    t.expect(rb"INJECTED \d+|REFUSED \w+ \d+")
    assert t.wait() == 0
    assert re.search(rb"REFUSED (EPERM|EIO|EACCES) 0", t.out), t.out[-2000:]
    assert b"INJECTED" not in t.out
    assert b"echo PWNED" not in t.out, "an injected line would be echoed by the terminal"
    assert _input_queue(t.slave) == 0, "something sits in the terminal's input queue"


def test_tiocsti_on_dev_tty_is_refused_too(ws: Path, policy: Path, terminals: list[Terminal]) -> None:
    script = TIOCSTI_SCRIPT.replace("import errno, fcntl, termios",
                                    "import errno, fcntl, os, termios\nfd = os.open('/dev/tty', os.O_RDWR)"
                                    ).replace("ioctl(0,", "ioctl(fd,")
    t = Terminal(guarded(policy, PY, "-c", script), cwd=ws)
    terminals.append(t)
    t.expect(rb"INJECTED \d+|REFUSED \w+ \d+")
    t.wait()
    assert re.search(rb"REFUSED (EPERM|EIO|EACCES) 0", t.out), t.out[-2000:]
    assert _input_queue(t.slave) == 0
