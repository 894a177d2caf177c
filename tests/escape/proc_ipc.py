"""Local IPC to a listener outside the sandbox: abstract unix sockets (scoped by Landlock and the network
namespace) and pathname unix sockets (ssh-agent, the session bus and docker.sock live at such paths).

The test owns the listener, so "nothing arrived" is checked where it matters: on the listener's side.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

pytestmark = pytest.mark.timeout(120)

CONNECT = (
    "import os, socket, sys\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "addr = os.environ['ADDR']\n"
    "s.connect('\\0' + addr[1:] if addr.startswith('@') else addr)\n"
    "s.sendall(os.environ['MSG'].encode())\n"
    "print('SENT')\n"
)


class Listener:
    """Accepts connections on a unix socket in a thread and keeps every byte received."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(4096):
                        self.received += chunk

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def _attack(world, address: str, label: str):
    listener = Listener(address if not address.startswith("@") else "\0" + address[1:])
    try:
        bare_msg, guarded_msg = f"BARE-{label}", f"GUARDED-{label}"
        bare = world.bare_run(world.py(CONNECT), env={"ADDR": address, "MSG": bare_msg})
        assert "SENT" in bare.stdout, bare
        assert world.wait_until(lambda: bare_msg.encode() in listener.received, timeout=5)
        run = world.guard_run(world.py(CONNECT), env={"ADDR": address, "MSG": guarded_msg})
        return run, listener, guarded_msg
    finally:
        listener.close()


def test_abstract_unix_socket_to_listener_outside(world):
    run, listener, msg = _attack(world, "@guard-escape-" + world.ssh_secret[-12:], "abstract")
    assert run.returncode != 0 and "SENT" not in run.stdout, run
    assert msg.encode() not in listener.received
    assert "ConnectionRefusedError" in run.stderr or "PermissionError" in run.stderr, run


def test_pathname_unix_socket_outside_the_grants(world):
    """A socket in the engineer's home (think ~/.ssh/agent.sock, /run/user/UID/bus): nothing grants it."""
    path = world.outside / "agent.sock"
    world.outside.mkdir(exist_ok=True)
    run, listener, msg = _attack(world, str(path), "pathname")
    assert msg.encode() not in listener.received, f"the agent reached a socket outside: {run!r}"
    assert run.returncode != 0 and "SENT" not in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()
