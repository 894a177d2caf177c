"""Host loopback services the policy grants (a local model server, a package index on 127.0.0.1).

Inside the sandbox `127.0.0.1` is the sandbox's own loopback (its dev servers and tests), and `NO_PROXY`
keeps it there, so a client pointed at `http://127.0.0.1:11434` never reaches the host's server. For each
port an enforced `allow connect` rule grants on the host's loopback *by CIDR* (`cidrs: [127.0.0.1/32]`,
`ports: [11434]`, the same rule the proxy honours), the sandbox's init listens on that port inside, and
this thread relays each connection to the host's 127.0.0.1:PORT, every one decided and recorded. A
refusal at that moment (an `ask` answered no) is answered at once with an HTTP 403 that says why.

`loopback_warnings` tells the engineer at launch when a variable of theirs points at the host's loopback
on a port the policy does not grant: inside, nothing listens there, and the client would retry in silence.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from guard.model import Action, Decision, Op, Verdict
from guard.net.grants import CidrGrant
from guard.net.relay import pump
from guard.net.threads import RelayThread

if TYPE_CHECKING:
    import asyncio

MAX_FORWARDS = 64
MAX_CONNECTIONS = 64


def granted_loopback_ports(policy: Any, cidr_grant: CidrGrant, *,
                           skip: Sequence[int] = ()) -> tuple[int, ...]:
    """Ports of the host's 127.0.0.1 that the policy's CIDR allow rules name explicitly (at most
    MAX_FORWARDS), each confirmed by the proxy's own grant check."""
    loopback = ipaddress.ip_address("127.0.0.1")
    ports: set[int] = set()
    for rule in getattr(policy, "rules", ()):
        if (rule.verdict is not Verdict.ALLOW or Op.CONNECT not in rule.ops or not rule.cidrs
                or not rule.ports):
            continue
        if not any(loopback.version == net.version and loopback in net for net in rule.cidrs):
            continue
        for r in rule.ports:
            if r.high - r.low < MAX_FORWARDS:
                ports.update(range(r.low, r.high + 1))
    return tuple(sorted(p for p in ports if p not in skip and cidr_grant("127.0.0.1", p, "")))[:MAX_FORWARDS]


_URL_PORT = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::(\d{1,5}))?",
                       re.IGNORECASE)


_URL_NAMES = ("_URL", "_HOST", "_BASE", "_ENDPOINT", "_API_BASE")


def loopback_warnings(env: Mapping[str, str], forwarded: Sequence[int], own: Sequence[int]) -> list[str]:
    """One line per variable that points at the host's loopback on a port nothing serves inside."""
    out = []
    for name in sorted(env):
        if not name.endswith(_URL_NAMES) or name.startswith("GUARD"):
            continue
        m = _URL_PORT.match(env[name].strip())
        if m is None or m.group(1) is None:
            continue
        port = int(m.group(1))
        if port in forwarded or port in own:
            continue
        out.append(f"{name} points at 127.0.0.1:{port}, which inside the sandbox is its own loopback "
                   f"(nothing listens there); to reach the host's server, grant it: a connect rule with "
                   f"cidrs: [127.0.0.1/32] and ports: [{port}]")
    return out


def _refusal(decision: Decision, port: int) -> bytes:
    body = (f"guard: connection to the host's 127.0.0.1:{port} refused by policy rule "
            f"{decision.rule_id or '(default)'}: {decision.reason}\n").encode()
    return (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"
            b"X-Guard-Rule: " + (decision.rule_id or "default").encode() + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class ForwardThread(RelayThread):
    """Relays the inner listeners (one per granted port, inside the sandbox) to the host's loopback."""

    NAME = "guard-forward"

    def __init__(self, listeners: Mapping[int, socket.socket], *, decide: Callable[[Action], Decision],
                 record: Callable[[dict[str, Any]], None],
                 refused: Callable[[Action, Decision], None] | None = None) -> None:
        self._listeners = dict(listeners)
        self._decide = decide
        self._record = record
        self._refused = refused  # its own refusals (no decision refused them), recorded as decisions
        super().__init__()

    def _servers(self) -> list[tuple[socket.socket, Callable[..., Any]]]:
        return [(sock, functools.partial(self._serve, port)) for port, sock in self._listeners.items()]

    async def _serve(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        from guard.net.records import ConnectionRecord, elapsed_ms

        task = asyncio.current_task()
        assert task is not None
        self._live.add(task)
        started = time.monotonic()
        counts = [0, 0]
        error: str | None = None
        decision: Decision | None = None
        out_writer: asyncio.StreamWriter | None = None
        try:
            if len(self._live) > MAX_CONNECTIONS:
                error = f"more than {MAX_CONNECTIONS} forwarded connections at once"
                return
            action = Action(Op.CONNECT, f"127.0.0.1:{port}", addresses=("127.0.0.1",))
            decision = await asyncio.get_running_loop().run_in_executor(None, self._decide, action)
            if decision.enforced is not Verdict.ALLOW:
                writer.write(_refusal(decision, port))
                await writer.drain()
                return
            out_reader, out_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(pump(reader, out_writer, counts, 0), pump(out_reader, writer, counts, 1))
        except (OSError, asyncio.IncompleteReadError) as exc:
            error = str(exc) or type(exc).__name__
            if out_writer is None:  # the host's server is not there: say so rather than hang up
                writer.write(_refusal(Decision(Verdict.DENY, "guard:forward",
                                               f"nothing answers on the host: {error}"), port))
        except asyncio.CancelledError:
            error = "the session ended"
        finally:
            self._live.discard(task)
            for w in (writer, out_writer):
                if w is not None:
                    w.close()
            allowed = decision is not None and decision.enforced is Verdict.ALLOW and out_writer is not None
            own = not allowed and (decision is None or error is not None)  # refused here, by no decision
            if own and self._refused is not None:
                self._refused(Action(Op.CONNECT, f"127.0.0.1:{port}", addresses=("127.0.0.1",)),
                              Decision(Verdict.DENY, "guard:forward", error or ""))
            self._record(ConnectionRecord(
                protocol="forward", client="sandbox", host="127.0.0.1", port=port, addresses=("127.0.0.1",),
                address="127.0.0.1" if allowed else None,
                verdict=decision.verdict.value if decision is not None and (allowed or error is None)
                else Verdict.DENY.value,
                rule_id=decision.rule_id if decision is not None and error is None else "guard:forward",
                reason=(decision.reason if decision is not None and error is None else (error or "")),
                bytes_up=counts[0], bytes_down=counts[1], duration_ms=elapsed_ms(started, time.monotonic()),
                audit_only=bool(decision and decision.audit_only), error=error).to_dict())
