"""The environment that points an agent's tools at the guard's proxy inside its sandbox.

A pure function with a module of its own: `guard run` builds the agent's environment from it before any
proxy exists.
"""

from __future__ import annotations

import ipaddress

from guard.errors import UsageError

_OWN_NO_PROXY = ("localhost", "127.0.0.1")


def agent_proxy_env(port: int, host: str = "127.0.0.1", *,
                    user_no_proxy: str | None = None) -> dict[str, str]:
    """Environment that sends curl, pip, git, npm, Python and Node traffic through the proxy.

    `ALL_PROXY` uses `socks5h://` so tools that take it resolve names at the proxy (remote DNS): the
    sandbox has no resolver of its own. Loopback stays local for the agent's own dev servers (and for the
    host loopback ports the policy grants, which the sandbox relays on the same numbers).

    The user's own `NO_PROXY` is kept where it is safe and useful: its loopback entries (with or without a
    port). Any other entry would send the connection past the proxy into a network namespace that has only
    loopback: never a way out, only a confusing failure, so those go through the proxy and its decision.
    """
    if not 0 < port < 65536:
        raise UsageError(f"proxy port {port} is out of range 1-65535")
    entries = list(_OWN_NO_PROXY)
    for raw in (user_no_proxy or "").split(","):
        item = raw.strip()
        if item and item not in entries and _is_loopback(item):
            entries.append(item)
    http = f"http://{host}:{port}"
    env = {"HTTP_PROXY": http, "HTTPS_PROXY": http, "ALL_PROXY": f"socks5h://{host}:{port}",
           "NO_PROXY": ",".join(entries)}
    env.update({name.lower(): value for name, value in env.items()})
    return env


def _is_loopback(entry: str) -> bool:
    """localhost, *.localhost, 127.0.0.0/8, ::1, each optionally with :PORT (or as a CIDR inside them)."""
    name = entry.lower().lstrip(".")
    if name.startswith("[") and "]" in name:
        name = name[1:name.index("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_network(name, strict=False).subnet_of(
            ipaddress.ip_network("127.0.0.0/8" if ":" not in name else "::1/128"))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False
