"""The asyncio threads `guard run` serves the network with: the proxy on the listeners that live inside the
sandbox's network namespace, and the relay of ports published with `--publish`.

Both take only callables (decide, record, connect): what a connection is allowed and where its record
goes is the caller's business (guard.session), how bytes move is this module's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from guard.errors import SandboxError
from guard.model import Action, Decision, Op, Verdict
from guard.net.grants import CidrGrant
from guard.net.relay import pump

if TYPE_CHECKING:
    import asyncio

PUBLISH_MAX_CONNECTIONS = 64  # live connections through all published ports; more are refused and recorded


class ProxyThread:
    """Runs the proxy on the listeners that live inside the sandbox's network namespace."""

    def __init__(self, listeners: Sequence[socket.socket], *, host_map: Mapping[str, str],
                 cidr_grant: CidrGrant, decide: Callable[[Action], Decision],
                 record: Callable[[dict[str, Any]], None],
                 hooks: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 refused: Callable[[Action, Decision], None] | None = None) -> None:
        self._hooks = hooks  # the agent hooks' channel (guard.integrations.channel), served on the same port
        self._refused = refused  # the proxy's own refusals, recorded as decisions; must not block
        self._listeners = list(listeners)
        self._host_map = dict(host_map)
        self._cidr_grant = cidr_grant
        self._decide = decide
        self._record = record  # must not block: it is called on the proxy's loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._wake_r, self._wake_w = os.pipe()  # stop() before any connection: no loop was ever started
        self._wake_lock = threading.Lock()
        self._wake_closed = False
        self.thread = threading.Thread(target=self._run, name="guard-proxy", daemon=True)

    def _first_connection(self) -> bool:
        """Wait for the first connection (True) or stop() (False) before starting asyncio: a command that
        never connects never pays for the loop (its import alone was ~10 ms of every launch). Meanwhile
        connections wait in the listeners' backlog, and the first is served as soon as the loop runs."""
        fds = [sock.fileno() for sock in self._listeners]
        poller = select.poll()  # not select(): any descriptor number
        for fd in (*fds, self._wake_r):
            poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if ready.intersection(fds):
                return True
            if self._wake_r in ready:
                return False

    def _run(self) -> None:
        if not self._first_connection():
            self._ready.set()
            return
        import asyncio

        from guard.net.bridge import serve_bridge
        from guard.net.proxy import Proxy

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def decide(action: Action) -> Decision:
            # off the loop: an `ask` waits for a human, and other connections must go on meanwhile
            return await loop.run_in_executor(None, self._decide, action)

        proxy = Proxy(decide, self._record, host_map=self._host_map, cidr_grant=self._cidr_grant,
                      hooks=self._hooks, refused=self._refused)

        async def start() -> list[asyncio.Server]:
            return [await serve_bridge(sock, proxy) for sock in self._listeners]

        servers = loop.run_until_complete(start())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for server in servers:
                server.close()
            loop.run_until_complete(self._drain(proxy, servers))
            loop.close()

    @staticmethod
    async def _drain(proxy: Any, servers: list[asyncio.Server]) -> None:
        """End live connections (each still recorded), then flush records before the session closes."""
        import asyncio

        await proxy.aclose()
        await asyncio.gather(*(s.wait_closed() for s in servers), return_exceptions=True)
        await asyncio.get_running_loop().shutdown_default_executor()

    def stop(self) -> None:
        with self._wake_lock:
            if not self._wake_closed:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")
        self._ready.wait(timeout=2)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        with self._wake_lock:
            if self._ready.is_set() and not self._wake_closed:  # the thread is past its select
                self._wake_closed = True
                for fd in (self._wake_r, self._wake_w):
                    with contextlib.suppress(OSError):
                        os.close(fd)


def open_published_ports(ports: Sequence[int],
                         decide: Callable[[Action], Decision]) -> dict[int, tuple[socket.socket, Decision]]:
    """Bind 127.0.0.1:PORT on the host for each `--publish PORT`, once the policy allows `listen` on it.

    Before the sandbox starts, so a refused or taken port stops the launch (exit 125) instead of failing
    later. The decision is recorded (it goes through the session's decider) and named by every
    connection record."""
    out: dict[int, tuple[socket.socket, Decision]] = {}
    try:
        for port in dict.fromkeys(ports):
            if not 1 <= port <= 65535:
                raise SandboxError(f"--publish {port}: ports are 1-65535")
            decision = decide(Action(Op.LISTEN, f"127.0.0.1:{port}"))
            if decision.enforced is not Verdict.ALLOW:
                raise SandboxError(f"--publish {port}: the policy does not let the agent listen on port "
                                   f"{port} ({decision.verdict.value}: {decision.reason})",
                                   hint="add an allow listen rule for the port, or publish another one")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen(128)
            except OSError as exc:
                sock.close()
                raise SandboxError(f"--publish {port}: cannot listen on 127.0.0.1:{port} on this host: "
                                   f"{exc.strerror}", hint="is another server using the port?") from None
            out[port] = (sock, decision)
    except BaseException:
        for sock, _ in out.values():
            sock.close()
        raise
    return out


class RelayThread(ABC):
    """One asyncio loop in a thread of its own, serving listeners until stop(): the lifecycle shared by the
    relays of published ports and of forwarded host-loopback ports. Subclasses say what to serve
    (`_servers`) and track each live connection in `_live`, so a stop cancels them and their handlers still
    write their records."""

    NAME = "guard-relay"

    def __init__(self) -> None:
        self._live: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.NAME, daemon=True)

    @abstractmethod
    def _servers(self) -> list[tuple[socket.socket, Callable[..., Any]]]:
        """(listening socket, connection handler) pairs to serve: each subclass says what it relays."""

    def _closed(self) -> None:  # noqa: B027 - an optional hook: most relays own nothing to release
        """After the loop has ended: release what the subclass owns."""

    def _run(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        servers: list[asyncio.Server] = []
        try:
            for sock, handler in self._servers():
                servers.append(loop.run_until_complete(asyncio.start_server(handler, sock=sock)))
            self._ready.set()
            loop.run_forever()
        finally:
            self._ready.set()
            for server in servers:
                server.close()
            loop.run_until_complete(self._drain(servers))
            loop.close()
            self._closed()

    async def _drain(self, servers: list[asyncio.Server]) -> None:
        """End live connections (each still recorded), then stop the executor."""
        import asyncio

        for task in list(self._live):
            task.cancel()
        await asyncio.gather(*self._live, *(s.wait_closed() for s in servers), return_exceptions=True)
        await asyncio.get_running_loop().shutdown_default_executor()

    def stop(self) -> None:
        self._ready.wait(timeout=2)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


class PublishThread(RelayThread):
    """Relays the host's published ports into the sandbox: each accepted connection gets a socket made
    inside the sandbox's network namespace by its init (`connect`), bytes flow both ways, and a
    `connection` record (protocol "publish") is written when it ends, refused ones included.

    Bounded (PUBLISH_MAX_CONNECTIONS live) and fail closed: when the init cannot connect or is gone, the
    client is closed and the refusal recorded.
    """

    NAME = "guard-publish"

    def __init__(self, published: Mapping[int, tuple[socket.socket, Decision]],
                 connect: Callable[[int], socket.socket], record: Callable[[dict[str, Any]], None],
                 max_connections: int = PUBLISH_MAX_CONNECTIONS) -> None:
        self._published = dict(published)
        self._connect = connect
        self._record = record
        self._max = max_connections
        super().__init__()

    def _servers(self) -> list[tuple[socket.socket, Callable[..., Any]]]:
        return [(sock, functools.partial(self._serve, port, decision))
                for port, (sock, decision) in self._published.items()]

    def _closed(self) -> None:
        for sock, _ in self._published.values():
            sock.close()

    async def _serve(self, port: int, decision: Decision, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        import asyncio

        from guard.net.records import ConnectionRecord, elapsed_ms

        task = asyncio.current_task()
        assert task is not None
        self._live.add(task)
        started = time.monotonic()
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        counts = [0, 0]  # bytes client -> agent, agent -> client
        error: str | None = None
        inner_writer: asyncio.StreamWriter | None = None
        try:
            if len(self._live) > self._max:
                error = f"more than {self._max} published connections at once"
                return
            try:
                inner = await asyncio.get_running_loop().run_in_executor(None, self._connect, port)
            except SandboxError as exc:
                error = exc.message
                return
            inner_reader, inner_writer = await asyncio.open_connection(sock=inner)
            await asyncio.gather(pump(reader, inner_writer, counts, 0), pump(inner_reader, writer, counts, 1))
        except (OSError, asyncio.IncompleteReadError) as exc:
            error = str(exc) or type(exc).__name__
        except asyncio.CancelledError:
            # the session is ending; finish normally (a cancelled handler task makes asyncio's stream
            # callback log a traceback on 3.11), the record below still says what happened
            error = "the session ended"
        finally:
            self._live.discard(task)
            for w in (writer, inner_writer):
                if w is not None:
                    w.close()
            refused = error is not None and counts == [0, 0] and inner_writer is None
            self._record(ConnectionRecord(
                protocol="publish", client=client, host="127.0.0.1", port=port,
                verdict=Verdict.DENY.value if refused else decision.verdict.value,
                rule_id="guard:publish" if refused else decision.rule_id,
                reason=error if refused and error else decision.reason,
                bytes_up=counts[0], bytes_down=counts[1], duration_ms=elapsed_ms(started, time.monotonic()),
                error=error).to_dict())
