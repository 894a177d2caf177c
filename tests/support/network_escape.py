"""Servers and probes shared by the network escape suite (network_*.py); no tests live here.

The targets are real servers on the host's loopback (threads of the pytest process, so there is no process
to leak): a token-serving HTTP server, a TCP sink, a UDP sink and unix-socket listeners. Each remembers what
reached it, so an attack is judged by what arrived on the host, not only by what the agent printed.

The network_* files import this by path (the escape directory is not a package).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PROXY = ("127.0.0.1", 3128)  # guard.runner.PROXY_PORT, inside the sandbox's namespace


class _Thread:
    """An accept/recv loop on a background thread, stopped by close()."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        raise AssertionError("subclass must define _loop")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class StreamSink(_Thread):
    """A stream listener (TCP v4/v6, pathname or abstract unix) that greets every client with a token and
    keeps what each client sent."""

    def __init__(self, family: int, address: Any, *, proto: int = 0) -> None:
        super().__init__()
        self.token = "HOST-SECRET-" + secrets.token_hex(8)
        self.sock = socket.socket(family, socket.SOCK_STREAM, proto)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(64)
        self.address = self.sock.getsockname()
        self.received: list[bytes] = []
        self.accepted = 0
        self.start()

    @property
    def port(self) -> int:
        return int(self.address[1])

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            conn, _ = self.sock.accept()
            self.accepted += 1
            with conn:
                conn.settimeout(1.0)
                with contextlib.suppress(OSError):
                    conn.sendall(self.token.encode() + b"\n")
                data = b""
                with contextlib.suppress(OSError):
                    while chunk := conn.recv(4096):
                        data += chunk
                self.received.append(data)

    def close(self) -> None:
        super().close()
        self.sock.close()
        if self.sock.family == socket.AF_UNIX and isinstance(self.address, str) and self.address:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)


class UdpSink(_Thread):
    """A UDP socket that keeps every datagram (a DNS resolver stand-in: queries must not arrive)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = int(self.sock.getsockname()[1])
        self.received: list[bytes] = []
        self.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if ready:
                data, _ = self.sock.recvfrom(65535)
                self.received.append(data)

    def close(self) -> None:
        super().close()
        self.sock.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(self.requestline)  # type: ignore[attr-defined]


class HttpServer:
    """Serves `root` over plain HTTP on the host's loopback and keeps every request line."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        handler = lambda *a, **kw: _QuietHandler(*a, directory=str(root), **kw)  # noqa: E731
        cls = http.server.ThreadingHTTPServer
        if ":" in host:
            cls = type("V6Server", (http.server.ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self.server = cls((host, 0), handler)
        self.server.requests = []  # type: ignore[attr-defined]
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[str]:
        return list(self.server.requests)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def serving(*servers: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for s in servers:
            s.close()


def write_policy(path: Path, rules: list[dict[str, Any]], *, name: str = "network-escape",
                 settings: dict[str, Any] | None = None) -> Path:
    """A policy extending the shipped coding-agent with `rules` (JSON is YAML)."""
    doc: dict[str, Any] = {"version": 1, "name": name, "extends": ["coding-agent"], "rules": rules}
    if settings:
        doc["settings"] = settings
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def resolve_args(mapping: dict[str, str]) -> list[str]:
    out: list[str] = []
    for name, address in mapping.items():
        out += ["--resolve", f"{name}:{address}"]
    return out


def connections(world: Any, session: str) -> list[dict[str, Any]]:
    """The proxy's `connection` records of one session, from `guard audit show --json`."""
    return [r for r in world.records(session) if r.get("type") == "connection"]


def connect_decisions(world: Any, session: str) -> list[dict[str, Any]]:
    """The daemon's `decision` records for `connect` in one session (action and decision)."""
    return [r for r in world.records(session)
            if r.get("type") == "decision" and r["action"].get("op") == "connect"]


def one_connection(world: Any, session: str, host: str, port: int) -> dict[str, Any]:
    recs = [r for r in connections(world, session) if r.get("host") == host and r.get("port") == port]
    assert len(recs) == 1, f"expected one connection record for {host}:{port}, got {connections(world, session)}"
    return recs[0]


# Python run inside the sandbox (by the system interpreter, -I) to speak to the proxy by hand.
PROXY_CLIENT = r"""
import os, socket, struct, sys
PROXY = ("127.0.0.1", 3128)
def talk(data, expect_close=True):
    s = socket.create_connection(PROXY, timeout=10)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except socket.timeout:
        pass
    s.close()
    return out
def http(head, body=b""):
    return talk(head.encode() + body)
def socks(atyp, addr, port, payload=b""):
    s = socket.create_connection(PROXY, timeout=10)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00" + bytes([atyp]) + addr + struct.pack(">H", port))
    reply = s.recv(10)
    rest = b""
    if reply[1:2] == b"\x00":
        s.sendall(payload)
        try:
            while chunk := s.recv(65536):
                rest += chunk
        except socket.timeout:
            pass
    s.close()
    return reply, rest
def show(label, data):
    sys.stdout.write(label + " " + repr(data) + "\n")
    sys.stdout.flush()
"""
