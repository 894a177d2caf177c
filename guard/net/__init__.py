"""guard.net: the sandbox's only way out, an egress proxy that decides every connection by policy.

Public API: `Proxy` (serve any asyncio stream), `serve_bridge` (a listener from inside the sandbox's
netns), `serve_unix` (a pathname unix socket), `agent_proxy_env` (the environment for the agent),
`policy_cidr_grant` (which special-purpose addresses a policy opens at the proxy). See docs/network.md.

The names are loaded on first use (PEP 562), and asyncio only where a loop runs: `guard run` imports
this package at every launch, and asyncio's import was ~10 ms of it, paid even by commands that never
open a connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guard.lazy import lazy_names

if TYPE_CHECKING:
    from guard.net.bridge import agent_proxy_env, serve_bridge, serve_relay_to_unix, serve_unix
    from guard.net.grants import policy_cidr_grant
    from guard.net.proxy import Proxy
    from guard.net.records import ConnectionRecord
    from guard.net.resolve import Resolution, normalize_host, special_range

_WHERE = {
    "agent_proxy_env": "bridge", "serve_bridge": "bridge", "serve_relay_to_unix": "bridge",
    "serve_unix": "bridge", "policy_cidr_grant": "grants", "Proxy": "proxy", "ConnectionRecord": "records",
    "Resolution": "resolve", "normalize_host": "resolve", "special_range": "resolve",
}

__all__ = ["ConnectionRecord", "Proxy", "Resolution", "agent_proxy_env", "normalize_host",
           "policy_cidr_grant", "serve_bridge", "serve_relay_to_unix", "serve_unix", "special_range"]


__getattr__, __dir__ = lazy_names("guard.net", _WHERE)
