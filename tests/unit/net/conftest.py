"""Real sockets on loopback for the proxy tests: a real Policy loaded from YAML, an echo server, a tiny
HTTP origin, and a proxy served on 127.0.0.1:0. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from guard.model import Action, Decision
from guard.net import Proxy
from guard.net.grants import policy_cidr_grant
from guard.policy import load_policy

TIMEOUT = 10.0


class Rules:
    """A real guard Policy, written as YAML into a temporary file and loaded with `load_policy`.

    Each rule is (rule_id, verdict, pattern, ports): a CIDR pattern becomes `cidrs`, anything else `hosts`.
    Calling the object decides like the daemon would (an awaitable), and remembers what it was asked;
    `grant` is the proxy's CIDR grant for this policy.
    """

    def __init__(self, directory: Path, rules: Sequence[tuple[str, str, str, Sequence[int] | None]],
                 *, hosts: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"version": 1, "name": "net-test", "mode": "enforce",
                                "defaults": {"file": "deny", "network": "deny", "process": "deny"},
                                "rules": []}
        for rule_id, verdict, pattern, ports in rules:
            rule: dict[str, Any] = {"id": rule_id, verdict: ["connect"],
                                    ("cidrs" if "/" in pattern else "hosts"): [pattern],
                                    "reason": f"rule {rule_id} says {verdict}"}
            if ports is not None:
                rule["ports"] = list(ports)
            body["rules"].append(rule)
        if hosts:
            body["network"] = {"hosts": hosts}
        path = Path(tempfile.mkdtemp(dir=directory)) / "policy.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        self.policy = load_policy(path, workspace=directory)
        self.grant = policy_cidr_grant(self.policy)
        self.asked: list[Action] = []

    async def __call__(self, action: Action) -> Decision:
        self.asked.append(action)
        return self.policy.decide(action)


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


async def until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    """Wait for something the proxy does after the client has seen its answer (bounded)."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(proxy: Proxy) -> AsyncIterator[int]:
    """Serve `proxy` on 127.0.0.1; on exit, wait until every connection has ended (and been recorded)."""
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
        await until(lambda: proxy.active == 0)
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


class Kit:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def Rules(self, rules: Sequence[tuple[str, str, str, Sequence[int] | None]],
              **kw: Any) -> Rules:
        return Rules(self.directory, rules, **kw)

    Recorder = Recorder
    echo_server = staticmethod(echo_server)
    http_origin = staticmethod(http_origin)
    serving = staticmethod(serving)
    until = staticmethod(until)
    read_response = staticmethod(read_response)
    TIMEOUT = TIMEOUT


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return Kit(tmp_path)
