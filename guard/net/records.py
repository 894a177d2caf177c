"""The `connection` record: one per client connection to the proxy, allowed or not.

The proxy fills it in as the connection goes (destination, decision, address used, bytes) and hands the
finished record to its `record` callback, which the daemon appends to the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """What happened on one proxied connection.

    `host` is the name (or IP literal) the client asked for, `address` the one address actually connected
    to (None when no connection was made), `rule_id` the deciding rule (a `guard:` id for the proxy's own
    refusals: bad request, special-purpose address, unreachable). `bytes_up` flows client -> destination.
    """

    protocol: str  # "connect" | "http" | "socks5" | "unknown"
    client: str
    verdict: str  # "allow" | "deny" | "ask"
    rule_id: str | None
    reason: str
    host: str | None = None
    port: int | None = None
    addresses: tuple[str, ...] = ()
    address: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    duration_ms: int = 0  # the trail holds no floats (docs/audit-format.md)
    audit_only: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "connection",
            "protocol": self.protocol,
            "client": self.client,
            "host": self.host,
            "port": self.port,
            "addresses": list(self.addresses),
            "address": self.address,
            "verdict": self.verdict,
            "rule_id": self.rule_id,
            "reason": self.reason,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "duration_ms": self.duration_ms,
        }
        if self.audit_only:
            out["audit_only"] = True
        if self.error is not None:
            out["error"] = self.error
        return out


def elapsed_ms(started: float, now: float) -> int:
    """A duration as the trail records it: whole milliseconds, never negative."""
    return max(0, round((now - started) * 1000))
