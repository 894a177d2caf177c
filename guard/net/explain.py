"""What the proxy would do with `connect host:port`, for `guard policy explain`.

It runs the proxy's own vetting (`Proxy.vet`): the name is decided first (a refused name is never
resolved, so explaining a denied name sends no DNS query either), then resolved through the policy's
static host map or the system resolver, decided again with its addresses, and special-purpose
addresses are refused unless a CIDR rule grants them. No connection is opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guard.model import Action, Decision
from guard.net.errors import Denied, NetError
from guard.net.grants import policy_cidr_grant
from guard.net.proxy import Proxy
from guard.net.resolve import normalize_host
from guard.policy import Policy


@dataclass(frozen=True, slots=True)
class ProxyAnswer:
    """The proxy's verdict: the addresses it would connect to, or why it would refuse."""

    host: str
    port: int
    addresses: tuple[str, ...]
    allowed: bool
    rule_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "addresses": list(self.addresses),
                "allowed": self.allowed, "rule_id": self.rule_id, "reason": self.reason}


def explain_connect(policy: Policy, host: str, port: int, *,
                    resolve: Mapping[str, str] | None = None, timeout: float = 10.0) -> ProxyAnswer:
    """Vet `host:port` exactly as the proxy would for a session running `policy` (with `--resolve` pins)."""

    async def decide(action: Action) -> Decision:
        return policy.decide(action)

    proxy = Proxy(decide, lambda _record: None, host_map={**dict(policy.host_map), **dict(resolve or {})},
                  cidr_grant=policy_cidr_grant(policy))
    name = normalize_host(host)

    async def vet() -> tuple[str, ...]:
        return await asyncio.wait_for(proxy.vet(name, port), timeout)

    try:
        addresses = asyncio.run(vet())
    except Denied as exc:
        return ProxyAnswer(name, port, (), False, exc.rule_id, str(exc))
    except (NetError, TimeoutError) as exc:
        return ProxyAnswer(name, port, (), False, None, f"{type(exc).__name__}: {exc}")
    return ProxyAnswer(name, port, addresses, True, None, f"would connect to {', '.join(addresses)}")
