"""Copying bytes between two asyncio streams: the one relay every tunnel uses (the proxy's CONNECT and
SOCKS tunnels, the unix-socket bridge, ports published with `guard run --publish`)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

CHUNK = 256 * 1024


async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, counts: list[int] | None = None,
               index: int = 0) -> None:
    """Copy until EOF, counting bytes into `counts[index]`, then pass the half-close on: HTTP clients
    and servers rely on it to say they are done sending."""
    while data := await src.read(CHUNK):
        dst.write(data)
        if counts is not None:
            counts[index] += len(data)
        await dst.drain()
    if dst.can_write_eof() and not dst.is_closing():
        with contextlib.suppress(OSError):
            dst.write_eof()
