"""guard.net: the sandbox's only way out, an egress proxy that decides every connection by policy.

Public API: `Proxy` (serve any asyncio stream), `serve_bridge` (a listener from inside the sandbox's
netns), `serve_unix` (a pathname unix socket), `agent_proxy_env` (the environment for the agent),
`policy_cidr_grant` (which special-purpose addresses a policy opens at the proxy). See docs/network.md.
"""

from guard.net.bridge import agent_proxy_env, serve_bridge, serve_relay_to_unix, serve_unix
from guard.net.grants import policy_cidr_grant
from guard.net.proxy import Proxy
from guard.net.records import ConnectionRecord
from guard.net.resolve import Resolution, normalize_host, special_range

__all__ = ["ConnectionRecord", "Proxy", "Resolution", "agent_proxy_env", "normalize_host",
           "policy_cidr_grant", "serve_bridge", "serve_relay_to_unix", "serve_unix", "special_range"]
