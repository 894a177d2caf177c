"""The guard's egress proxy: the sandbox's only way out.

One asyncio handler serves any stream (a TCP listener inside the sandbox's network namespace, a unix socket,
a test socket). The first byte picks the protocol: 0x05 is SOCKS5, anything else is HTTP (CONNECT tunnels and
absolute-form plain-HTTP forwarding). Every destination goes through the same steps, in this order:

1. normalize the host (IP literals canonical, names lower-case, numeric tricks refused);
2. resolve it once: the static host map first, then DNS in the executor;
3. decide `connect host:port` with the resolved addresses (the policy's name, port and CIDR rules);
4. refuse special-purpose addresses (private, loopback, link-local, metadata, ...) unless the host map names
   the address or the policy grants it when asked about the address itself;
5. connect to one of the vetted addresses, never resolving again (no DNS rebinding between check and use).

Every connection, refused ones included, ends in one `connection` record handed to `record`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from guard.errors import GuardError
from guard.integrations.channel import HOOK_PATH
from guard.model import Action, Decision, Op, Verdict
from guard.net.errors import (
    BadDestination,
    BadRequest,
    ConnectFailed,
    Denied,
    NetError,
    RequestTimeout,
    ResolveFailed,
    UnsupportedAddressType,
    UnsupportedCommand,
)
from guard.net.records import ConnectionRecord, elapsed_ms
from guard.net.relay import CHUNK as _CHUNK
from guard.net.relay import pump
from guard.net.resolve import (
    CLOUD_METADATA,
    Resolver,
    check_host_map,
    format_target,
    normalize_host,
    parse_ip,
    resolve,
    special_range,
    system_resolver,
)

log = logging.getLogger(__name__)

Decide = Callable[[Action], Awaitable[Decision]]
Record = Callable[[dict[str, Any]], None]

MAX_HEAD = 16 * 1024
MAX_HOOK_BODY = 2 << 20
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"})
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SOCKS_OK = b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"

RULE_BAD_REQUEST = "guard:bad-request"
RULE_SPECIAL_ADDRESS = "guard:special-address"
RULE_NO_DECISION = "guard:no-decision"
RULE_UNREACHABLE = "guard:unreachable"
RULE_BUSY = "guard:busy"


@dataclass(slots=True)
class _Conn:
    """Mutable per-connection state, frozen into a ConnectionRecord at the end."""

    client: str
    protocol: str = "unknown"
    host: str | None = None
    port: int | None = None
    addresses: tuple[str, ...] = ()
    address: str | None = None
    decision: Decision | None = None
    refused_by_decision: bool = False  # a decision `decide` returned (and so recorded) refused it
    counts: list[int] = field(default_factory=lambda: [0, 0])
    answered: bool = False  # the client already got its protocol's final answer


class Proxy:
    """Decides and relays proxied connections; see the module docstring for the order of checks.

    `decide` is awaited for every destination (the daemon may hold it while a person approves an `ask`);
    a decision that is not an enforced allow refuses the connection, and so does an exception from `decide`
    (fail closed). `record` receives one `connection` record per client connection. `refused` receives
    the proxy's own refusals of a destination (a special-purpose address, no decision): a refusal no
    decision made, which the session records and counts as a denied action like any other.

    `cidr_grant(address, port, host)` says whether the policy grants `host` at a special-purpose address by
    CIDR (see
    guard.net.grants.policy_cidr_grant); without it such addresses are reachable only through `host_map`.
    Cloud metadata addresses need the CIDR grant even when `host_map` names them.
    """

    def __init__(self, decide: Decide, record: Record, *, host_map: Mapping[str, str] | None = None,
                 resolver: Resolver = system_resolver, connect_timeout: float = 10.0,
                 head_timeout: float = 30.0, max_connections: int = 1024,
                 cidr_grant: Callable[[str, int, str], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 hooks: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 refused: Callable[[Action, Decision], None] | None = None) -> None:
        self._hooks = hooks
        self._refused_fn = refused
        self._decide_fn = decide
        self._record_fn = record
        self._host_map = check_host_map(host_map or {})
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._head_timeout = head_timeout
        self._max_connections = max_connections
        self._active = 0
        self._clock = clock
        self._cidr_grant = cidr_grant
        # The event loop holds tasks weakly, and a stream's protocol holds its reader weakly: once the
        # client's transport stops polling (EOF both ways), nothing else keeps a relaying connection alive.
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def active(self) -> int:
        """Client connections being served right now."""
        return self._active

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                     client: str | None = None) -> None:
        """Serve one client connection to the end; usable directly as an asyncio.start_server callback."""
        conn = _Conn(client=client or _peer_name(writer))
        started = self._clock()
        error: NetError | None = None
        if self._active >= self._max_connections:
            error = Denied(f"proxy busy: {self._active} connections open", rule_id=RULE_BUSY)
            writer.close()
            self._emit(conn, error, started)
            return
        self._active += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                async with asyncio.timeout(self._head_timeout):
                    first = await reader.read(1)
            except TimeoutError:
                raise RequestTimeout("no request within the time limit") from None
            if not first:
                raise BadRequest("client closed before sending a request")
            if first == b"\x05":
                conn.protocol = "socks5"
                await self._socks(first, reader, writer, conn)
            else:
                await self._http(first, reader, writer, conn)
        except NetError as exc:
            error = exc
            await _reply_error(writer, conn, exc)
        except (OSError, asyncio.IncompleteReadError) as exc:
            error = BadRequest(f"client connection lost: {exc.__class__.__name__}")
        finally:
            self._active -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            self._emit(conn, error, started)

    async def aclose(self) -> None:
        """End every connection being served (each still gets its record); for session shutdown, after
        the servers feeding this proxy are closed."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- decisions -------------------------------------------------------------------------------------

    async def _decide(self, action: Action) -> Decision:
        try:
            return await self._decide_fn(action)
        except Exception as exc:  # fail closed: no answer is a refusal
            log.warning("decide failed for %s: %r", action, exc)
            return Decision(Verdict.DENY, RULE_NO_DECISION, f"no decision could be made ({exc}); fail closed")

    async def vet(self, host: str, port: int, conn: _Conn | None = None) -> tuple[str, ...]:
        """Decide `connect host:port`; return the addresses that may be connected to, in order, or raise
        Denied / ResolveFailed. `host` must already be normalized.

        A name that needs DNS is decided twice: first by name alone, so a refused name never reaches a
        resolver (a DNS query is itself a way out: `secret.attacker.example`), then with its addresses, so
        CIDR rules judge what it resolved to.
        """
        conn = conn if conn is not None else _Conn(client="")
        conn.host, conn.port = host, port
        target = format_target(host, port)
        if parse_ip(host) is None and host not in self._host_map:
            self._require(await self._decide(Action(op=Op.CONNECT, target=target)), target, conn)
        resolution = await resolve(host, host_map=self._host_map, resolver=self._resolver)
        conn.addresses = resolution.addresses
        decision = await self._decide(Action(op=Op.CONNECT, target=target, addresses=resolution.addresses))
        self._require(decision, target, conn)
        vetted: list[str] = []
        refused: list[str] = []
        for address in resolution.addresses:
            what = special_range(address)
            if what is None or (resolution.source == "map" and what != CLOUD_METADATA):
                vetted.append(address)  # the static map names it: the policy author means it
                continue
            if self._cidr_grant is None or not self._cidr_grant(address, port, host):
                refused.append(f"{address} ({what})")
                continue
            if resolution.source == "literal":
                grant = decision  # the policy was just asked about this very address
            else:  # the name at this one address: a rule's hosts and cidrs must both hold
                grant = await self._decide(Action(op=Op.CONNECT, target=target, addresses=(address,)))
            if grant.enforced is Verdict.ALLOW:
                vetted.append(address)
            else:
                conn.refused_by_decision = conn.refused_by_decision or grant.rule_id != RULE_NO_DECISION
                refused.append(f"{address} ({what})")
        if not vetted:
            what = "is" if resolution.source == "literal" else "resolves to"
            raise Denied(f"{host} {what} {', '.join(refused)}, which no rule grants by CIDR",
                         rule_id=RULE_SPECIAL_ADDRESS)
        return tuple(vetted)

    @staticmethod
    def _require(decision: Decision, target: str, conn: _Conn) -> None:
        conn.decision = decision
        if decision.enforced is not Verdict.ALLOW:
            conn.refused_by_decision = decision.rule_id != RULE_NO_DECISION
            raise Denied(decision.reason or f"connect {target} is not allowed", rule_id=decision.rule_id,
                         verdict=decision.verdict.value)

    async def _open(self, addresses: tuple[str, ...], port: int, conn: _Conn
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to the first vetted address that answers, by address: nothing here resolves names."""
        loop = asyncio.get_running_loop()
        failures: list[str] = []
        for address in addresses:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await loop.sock_connect(sock, (address, port))
            except (OSError, TimeoutError) as exc:
                sock.close()
                failures.append(f"{format_target(address, port)}: {exc.__class__.__name__}"
                                f"{': ' + exc.strerror if isinstance(exc, OSError) and exc.strerror else ''}")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.address = address
            return await asyncio.open_connection(sock=sock, limit=_CHUNK)
        raise ConnectFailed(f"cannot connect to {conn.host}: {'; '.join(failures)}")

    # -- HTTP ------------------------------------------------------------------------------------------

    async def _http(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    conn: _Conn) -> None:
        head, rest = await self._read_head(first, reader)
        method, target, version, headers = _parse_head(head)
        if method == "CONNECT":
            conn.protocol = "connect"
            host, port = _split_authority(target, default_port=None)
            _check_host_header(headers, host, port)
            addresses = await self.vet(host, port, conn)
            up_reader, up_writer = await self._open(addresses, port, conn)
            writer.write(f"{version} 200 Connection established\r\n\r\n".encode())
            await self._relay(reader, writer, up_reader, up_writer, conn, rest, close_on_down_eof=False)
            return
        conn.protocol = "http"
        if target.split("?", 1)[0] == HOOK_PATH and self._hooks is not None:
            await self._hook(method, headers, rest, reader, writer, conn)
            return
        if target.startswith("/"):
            raise BadRequest("origin-form request sent to a proxy",
                             hint="send an absolute-form http:// URL, or CONNECT for TLS")
        scheme, sep, after = target.partition("://")
        if not sep or scheme.lower() != "http":
            raise UnsupportedCommand(f"only http:// URLs are forwarded, not {scheme[:20]!r}",
                                     hint="use CONNECT host:443 for https")
        cut = min((i for i in (after.find("/"), after.find("?"), after.find("#")) if i >= 0),
                  default=len(after))
        authority, path = after[:cut], after[cut:]
        host, port = _split_authority(authority, default_port=80)
        _check_host_header(headers, host, port)
        path = path.split("#", 1)[0]
        if not path.startswith("/"):
            path = "/" + path
        addresses = await self.vet(host, port, conn)
        up_reader, up_writer = await self._open(addresses, port, conn)
        forwarded = _forward_head(method, path, version, headers, host, port)
        up_writer.write(forwarded)
        await self._relay(reader, writer, up_reader, up_writer, conn, rest, close_on_down_eof=True)

    async def _hook(self, method: str, headers: list[tuple[str, str]], rest: bytes,
                    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        """An agent hook asking its session (guard.integrations.channel); recorded as intent, not as a
        connection."""
        conn.protocol = "guard-hook"
        if method != "POST":
            raise BadRequest("the hook channel takes POST")
        length = next((v for k, v in headers if k.lower() == "content-length"), "")
        if not length.isdigit() or int(length) > MAX_HOOK_BODY:
            raise BadRequest(f"the hook channel needs a Content-Length of at most {MAX_HOOK_BODY} bytes")
        body = rest
        async with asyncio.timeout(self._head_timeout):
            while len(body) < int(length):
                chunk = await reader.read(int(length) - len(body))
                if not chunk:
                    raise BadRequest("connection closed inside the hook request")
                body += chunk
        try:
            request = json.loads(body[:int(length)])
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
            loop = asyncio.get_running_loop()
            handle = self._hooks
            assert handle is not None
            answer = await loop.run_in_executor(None, handle, request)
            status, data = 200, json.dumps(answer).encode()
        except (ValueError, GuardError) as exc:
            message = exc.diagnostics() if isinstance(exc, GuardError) else str(exc)
            status, data = 400, json.dumps({"error": message}).encode()
        writer.write(f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()
        conn.answered = True

    async def _read_head(self, first: bytes, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        buf = bytearray(first)
        try:
            async with asyncio.timeout(self._head_timeout):
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        return bytes(buf[:end]), bytes(buf[end + 4:])
                    if len(buf) > MAX_HEAD:
                        raise BadRequest(f"request head longer than {MAX_HEAD} bytes")
                    chunk = await reader.read(MAX_HEAD)
                    if not chunk:
                        raise BadRequest("connection closed inside the request head")
                    buf += chunk
        except TimeoutError:
            raise RequestTimeout("request head not complete within the time limit") from None

    # -- SOCKS5 ----------------------------------------------------------------------------------------

    async def _socks(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     conn: _Conn) -> None:
        try:
            async with asyncio.timeout(self._head_timeout):
                (count,) = await reader.readexactly(1)
                methods = await reader.readexactly(count)
                if 0x00 not in methods:
                    writer.write(b"\x05\xff")
                    conn.answered = True
                    raise BadRequest("SOCKS5 client offers no 'no authentication' method")
                writer.write(b"\x05\x00")
                version, command, _reserved, atyp = await reader.readexactly(4)
                if version != 5:
                    raise BadRequest(f"SOCKS5 request with version {version}")
                if command != 1:
                    raise UnsupportedCommand(f"SOCKS5 command {command} (only CONNECT, 1, is supported)")
                if atyp == 1:
                    raw_host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
                elif atyp == 4:
                    raw_host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
                elif atyp == 3:
                    (length,) = await reader.readexactly(1)
                    name = await reader.readexactly(length)
                    try:
                        raw_host = name.decode("ascii")
                    except UnicodeDecodeError:
                        raise BadDestination("SOCKS5 domain name is not ASCII") from None
                else:
                    raise UnsupportedAddressType(f"SOCKS5 address type {atyp}")
                port = int.from_bytes(await reader.readexactly(2), "big")
        except TimeoutError:
            raise RequestTimeout("SOCKS5 request not complete within the time limit") from None
        if port == 0:
            raise BadDestination("SOCKS5 request for port 0")
        host = normalize_host(raw_host)
        conn.host, conn.port = host, port
        addresses = await self.vet(host, port, conn)
        up_reader, up_writer = await self._open(addresses, port, conn)
        writer.write(_SOCKS_OK)
        await self._relay(reader, writer, up_reader, up_writer, conn, b"", close_on_down_eof=False)

    # -- relay -----------------------------------------------------------------------------------------

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter, conn: _Conn,
                     early: bytes, *, close_on_down_eof: bool) -> None:
        """Copy both ways until both sides are done; a failure on either side ends both."""
        if early:
            up_writer.write(early)
            conn.counts[0] += len(early)
        up = asyncio.ensure_future(pump(reader, up_writer, conn.counts, 0))
        down = asyncio.ensure_future(pump(up_reader, writer, conn.counts, 1))
        try:
            pending = {up, down}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed = any(t.exception() is not None for t in done)
                if failed or (close_on_down_eof and down in done):
                    break
        finally:
            for task in (up, down):
                task.cancel()
            for task in (up, down):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            up_writer.close()

    # -- records ---------------------------------------------------------------------------------------

    def _emit(self, conn: _Conn, error: NetError | None, started: float) -> None:
        if conn.protocol == "guard-hook" and error is None:
            return  # recorded by the session as the agent's stated intent
        decision = conn.decision
        audit_only = False
        if isinstance(error, Denied):
            verdict, rule_id, reason = error.verdict, error.rule_id, error.message
        elif decision is not None:  # allowed, then it failed (or not): the policy's answer stands
            verdict, rule_id, reason = decision.verdict.value, decision.rule_id, decision.reason
            audit_only = decision.audit_only
        else:
            verdict, reason = "deny", error.message if error is not None else "no request"
            rule_id = RULE_UNREACHABLE if isinstance(error, ResolveFailed) else RULE_BAD_REQUEST
        rec = ConnectionRecord(
            protocol=conn.protocol, client=conn.client, verdict=verdict, rule_id=rule_id, reason=reason,
            host=conn.host, port=conn.port, addresses=conn.addresses, address=conn.address,
            bytes_up=conn.counts[0], bytes_down=conn.counts[1],
            duration_ms=elapsed_ms(started, self._clock()),
            audit_only=audit_only, error=error.message if error is not None else None)
        if (verdict == "deny" and not conn.refused_by_decision and self._refused_fn is not None
                and conn.host is not None and conn.port is not None):
            # the proxy refused on its own: that refusal is the connection's decision
            target = format_target(conn.host, conn.port)
            action = Action(op=Op.CONNECT, target=target, addresses=conn.addresses)
            try:
                self._refused_fn(action, Decision(Verdict.DENY, rule_id, reason))
            except Exception:
                log.exception("recording a refusal failed")
        try:
            self._record_fn(rec.to_dict())
        except Exception:
            log.exception("recording a connection failed")


async def _reply_error(writer: asyncio.StreamWriter, conn: _Conn, exc: NetError) -> None:
    """Tell the client why, in its protocol; never raise from here."""
    if conn.answered:
        return
    try:
        if conn.protocol == "socks5":
            writer.write(b"\x05" + bytes([exc.socks_reply]) + _SOCKS_OK[2:])
        else:
            status = exc.http_status
            target = format_target(conn.host, conn.port) if conn.host and conn.port else "request"
            body = f"guard: {target}: {exc.message}\n"
            if isinstance(exc, Denied):
                rule = exc.rule_id or "default"
                body = (f"guard: connect {target} denied by rule {rule}: {exc.message} (this is the "
                        "engineer's guard policy, not a network failure: do not retry it or work around it; "
                        "use an allowed destination or ask the user)\n")
            head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                    "Content-Type: text/plain; charset=utf-8",
                    f"Content-Length: {len(body.encode())}",
                    "Connection: close"]
            if isinstance(exc, Denied):
                head.append(f"X-Guard-Rule: {_header_safe(exc.rule_id or 'default')}")
            writer.write(("\r\n".join(head) + "\r\n\r\n" + body).encode())
        async with asyncio.timeout(5):
            await writer.drain()
    except (OSError, TimeoutError):
        pass


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed",
            408: "Request Timeout", 502: "Bad Gateway"}


def _header_safe(text: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200]


def _peer_name(writer: asyncio.StreamWriter) -> str:
    sock = writer.get_extra_info("socket")
    peer = writer.get_extra_info("peername")
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            pid, uid, gid = (int.from_bytes(creds[i:i + 4], "little") for i in (0, 4, 8))
            return f"unix:pid={pid},uid={uid},gid={gid}"
        except OSError:
            return "unix"
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_target(str(peer[0]), int(peer[1]))
    return str(peer)


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Request line and headers, strictly: anything odd is a 400, never a guess."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest("request head is not text") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(f"bad request line {lines[0][:100]!r}")
    method, target, version = parts
    if not method or set(method) - _TOKEN:
        raise BadRequest(f"bad method {method[:40]!r}")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(f"unsupported HTTP version {version[:20]!r}")
    if not target or any(c <= " " or c == "\x7f" for c in target):
        raise BadRequest("bad request target")
    headers: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.partition(":")
        if not sep or not name or set(name) - _TOKEN:
            raise BadRequest(f"bad header on line {number} of the request head")
        value = value.strip(" \t")
        if any(c in "\r\n\0" for c in value):
            raise BadRequest(f"bad header value on line {number} of the request head")
        headers.append((name, value))
    return method, target, version, headers


def _split_authority(authority: str, *, default_port: int | None) -> tuple[str, int]:
    """`host[:port]` or `[v6][:port]` -> (normalized host, port)."""
    if "@" in authority:
        raise BadDestination("credentials in the request target are not allowed")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise BadDestination(f"bad authority {authority[:80]!r}")
        host_text, rest = authority[:end + 1], authority[end + 1:]
        if rest and not rest.startswith(":"):
            raise BadDestination(f"bad authority {authority[:80]!r}")
        port_text = rest[1:] if rest else None
    elif ":" in authority:
        host_text, _, port_text = authority.rpartition(":")
    else:
        host_text, port_text = authority, None
    if port_text is None:
        if default_port is None:
            raise BadDestination(f"CONNECT target {authority[:80]!r} has no port")
        port = default_port
    elif port_text.isdigit() and len(port_text) <= 5 and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise BadDestination(f"bad port in {authority[:80]!r}")
    return normalize_host(host_text), port


def _check_host_header(headers: list[tuple[str, str]], host: str, port: int) -> None:
    """A Host header naming anything but the request-line destination is refused: the proxy connects to
    what it decided, and an origin must not be told it is serving another name (no confused deputy).
    A Host header without a port stands for the target's port."""
    values = [v for n, v in headers if n.lower() == "host"]
    if not values:
        return
    if len(values) > 1:
        raise BadRequest("more than one Host header")
    try:
        h_host, h_port = _split_authority(values[0], default_port=port)
    except BadRequest:
        raise BadRequest(f"bad Host header {values[0][:80]!r}") from None
    if (h_host, h_port) != (host, port):
        raise BadRequest(f"Host header {values[0][:80]!r} differs from the request target "
                         f"{format_target(host, port)}")


def _forward_head(method: str, path: str, version: str, headers: list[tuple[str, str]], host: str,
                  port: int) -> bytes:
    """Origin-form request head without hop-by-hop or Proxy-* headers, one request per connection."""
    listed = {t.strip().lower() for n, v in headers if n.lower() == "connection" for t in v.split(",")}
    host_value = format_target(host, port) if port != 80 else (f"[{host}]" if ":" in host else host)
    out = [f"{method} {path} {version}", f"Host: {host_value}"]
    for name, value in headers:
        low = name.lower()
        if low == "host" or low in _HOP_BY_HOP or low in listed or low.startswith("proxy-"):
            continue
        out.append(f"{name}: {value}")
    out.append("Connection: close")
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
