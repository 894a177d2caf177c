"""Real sockets on loopback for the proxy tests: a small real rule-based decider, an echo server, a tiny
HTTP origin, and a proxy served on 127.0.0.1:0. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from guard.model import Action, Decision, Verdict
from guard.net import Proxy

TIMEOUT = 10.0


@dataclass
class Rules:
    """A small rule engine with the policy's combination (deny > ask > allow > default deny).

    Each rule is (rule_id, verdict, pattern, ports): pattern is an exact host, `*.suffix` (names below the
    suffix only), or a CIDR that matches an IP target or any resolved address.
    """

    rules: Sequence[tuple[str, str, str, Sequence[int] | None]]
    asked: list[Action] = field(default_factory=list)

    async def __call__(self, action: Action) -> Decision:
        self.asked.append(action)
        host, port = action.host_port()
        best: tuple[int, str, str] | None = None
        for rule_id, verdict, pattern, ports in self.rules:
            if ports is not None and port not in ports:
                continue
            if not self._matches(pattern, host, action.addresses):
                continue
            strength = Verdict(verdict).strength
            if best is None or strength > best[0]:
                best = (strength, rule_id, verdict)
        if best is None:
            return Decision(Verdict.DENY, None, f"no rule allows connect {action.target}")
        return Decision(Verdict(best[2]), best[1], f"rule {best[1]} says {best[2]}")

    @staticmethod
    def _matches(pattern: str, host: str, addresses: Sequence[str]) -> bool:
        if "/" in pattern:
            net = ipaddress.ip_network(pattern)
            candidates = [host, *addresses]
            for text in candidates:
                try:
                    if ipaddress.ip_address(text) in net:
                        return True
                except ValueError:
                    continue
            return False
        if pattern.startswith("*."):
            return host.endswith(pattern[1:]) and host != pattern[2:]
        return host == pattern


class Recorder(list[dict[str, Any]]):
    def __call__(self, record: dict[str, Any]) -> None:
        self.append(record)


@contextlib.asynccontextmanager
async def echo_server(host: str = "127.0.0.1") -> AsyncIterator[tuple[int, list[str]]]:
    """Echoes every byte back; yields its port and the peers it has seen."""
    peers: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(str(writer.get_extra_info("peername")))
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def http_origin(body: bytes = b"hello from origin\n") -> AsyncIterator[tuple[int, list[bytes]]]:
    """Answers any request with `body` and closes; yields its port and the raw request heads received."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def serving(proxy: Proxy) -> AsyncIterator[int]:
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """A whole HTTP response from a connection the server closes."""
    data = await asyncio.wait_for(reader.read(-1), TIMEOUT)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


@dataclass
class Kit:
    Rules = Rules
    Recorder = Recorder
    echo_server = staticmethod(echo_server)
    http_origin = staticmethod(http_origin)
    serving = staticmethod(serving)
    read_response = staticmethod(read_response)
    TIMEOUT = TIMEOUT


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
