"""Where the proxy meets the sandbox: listeners created inside the sandbox's network namespace, a pathname
unix socket for a proxy that lives in another process, and the environment that points tools at it.

The sandbox creates `127.0.0.1:PORT` listening sockets inside its own namespace and hands them out over
SCM_RIGHTS; the guard accepts on them here. The accepted connections live in the sandbox's namespace but the
process serving them does not, so no helper runs inside the sandbox for the agent to kill, and the proxy's
own outbound connections use the host's network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from pathlib import Path
from typing import Any

from guard.errors import UsageError
from guard.home import bind_private_socket
from guard.net.proxy import Proxy
from guard.net.proxy_env import agent_proxy_env
from guard.net.relay import CHUNK as _RELAY_CHUNK
from guard.net.relay import pump

__all__ = ["agent_proxy_env", "serve_bridge", "serve_relay_to_unix", "serve_unix"]


async def serve_bridge(listener: socket.socket, proxy: Proxy) -> asyncio.Server:
    """Serve every connection accepted on `listener` (typically inside the sandbox's netns) with `proxy`,
    in this process: no extra hop. The caller owns the returned server (close() and wait_closed())."""
    _check_listener(listener, (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX))
    listener.setblocking(False)
    return await asyncio.start_server(proxy.handle, sock=listener, limit=_RELAY_CHUNK)


async def serve_unix(path: Path | str, proxy: Proxy) -> asyncio.Server:
    """Serve `proxy` on a pathname unix socket, mode 0600, for a proxy kept in a long-lived process (the
    daemon). A stale socket file of ours is replaced; anything else at `path` is refused."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            raise UsageError(f"{path} exists and is not a socket of ours",
                             hint="remove it or pick another path")
        path.unlink()
    sock = bind_private_socket(path, 512)
    return await asyncio.start_server(proxy.handle, sock=sock, limit=_RELAY_CHUNK)


async def serve_relay_to_unix(listener: socket.socket, path: Path | str) -> asyncio.Server:
    """Relay every connection accepted on `listener` to a proxy on the unix socket `path`, byte for byte.

    This is the extra hop an in-daemon proxy needs (the listener is received by the session's supervisor,
    the proxy runs in the daemon); guard uses `serve_bridge` per session instead, see docs/network.md.
    """
    _check_listener(listener, (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX))
    listener.setblocking(False)
    target = str(path)
    live: set[asyncio.Task[Any]] = set()  # strong references: the loop and the streams hold tasks weakly

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            live.add(task)
            task.add_done_callback(live.discard)
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(target, limit=_RELAY_CHUNK)
        except OSError:
            writer.close()
            return
        tasks = [asyncio.ensure_future(pump(reader, up_writer)),
                 asyncio.ensure_future(pump(up_reader, writer))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            up_writer.close()
            writer.close()

    return await asyncio.start_server(relay, sock=listener, limit=_RELAY_CHUNK)


def _check_listener(listener: socket.socket, families: tuple[int, ...]) -> None:
    if listener.type != socket.SOCK_STREAM or listener.family not in families:
        raise UsageError(f"bridge listener must be a stream socket, got {listener!r}")
    accepting = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if not accepting:
        raise UsageError("bridge listener is not listening", hint="call listen() before handing it over")
