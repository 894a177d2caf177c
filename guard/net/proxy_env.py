"""The environment that points an agent's tools at the guard's proxy inside its sandbox.

A pure function with a module of its own: `guard run` builds the agent's environment from it before any
proxy exists.
"""

from __future__ import annotations

from guard.errors import UsageError


def agent_proxy_env(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    """Environment that sends curl, pip, git, npm, Python and Node traffic through the proxy.

    `ALL_PROXY` uses `socks5h://` so tools that take it resolve names at the proxy (remote DNS): the
    sandbox has no resolver of its own. Loopback stays local for the agent's own dev servers.
    """
    if not 0 < port < 65536:
        raise UsageError(f"proxy port {port} is out of range 1-65535")
    http = f"http://{host}:{port}"
    env = {"HTTP_PROXY": http, "HTTPS_PROXY": http, "ALL_PROXY": f"socks5h://{host}:{port}",
           "NO_PROXY": "localhost,127.0.0.1"}
    env.update({name.lower(): value for name, value in env.items()})
    return env
