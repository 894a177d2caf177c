#!/usr/bin/env python3
"""Throughput, connection rate and added latency of guard's egress proxy versus a direct loopback
connection, measured in the same run (not a test: no pass/fail, ratios printed).

Three paths to one loopback HTTP server (its own process):
  direct   client -> server
  session  client -> proxy (serve_bridge, in its own process, like a session's supervisor) -> server
  daemon   client -> relay (serve_relay_to_unix) -> unix socket -> proxy (serve_unix) -> server
           (what a proxy living in the daemon costs: one extra hop)

Throughput: N parallel clients each download --big-mib MiB several times (through a CONNECT tunnel when
proxied). Connection rate: N parallel clients each make requests on fresh connections (absolute-form
plain-HTTP forward when proxied). Latency: one client, sequential small requests, the paths interleaved;
p50 difference in ms. Each measure is repeated --repeat times, paths interleaved, and the median kept.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guard.model import Action, Decision, Verdict
from guard.net import Proxy, serve_bridge, serve_relay_to_unix, serve_unix

NAME = "bench.test"


# -- server and proxies (child processes) ------------------------------------------------------------


def _server(conn: Any, big: int) -> None:
    payload = b"x" * big
    small = b"ok"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = payload if head.startswith(b"GET /big") else small
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        conn.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def _allow(action: Action) -> Decision:
    return Decision(Verdict.ALLOW, "bench.allow", "benchmark")


def _proxy(conn: Any, mode: str, unix_path: str) -> None:
    async def main() -> None:
        proxy = Proxy(_allow, lambda record: None, host_map={NAME: "127.0.0.1"}, max_connections=4096)
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1024)
        if mode == "session":
            await serve_bridge(lsock, proxy)
        else:
            await serve_unix(unix_path, proxy)
            await serve_relay_to_unix(lsock, unix_path)
        conn.send(lsock.getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _relay_only(conn: Any, unix_path: str) -> None:
    async def main() -> None:
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1024)
        await serve_relay_to_unix(lsock, unix_path)
        conn.send(lsock.getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _proxy_unix(conn: Any, unix_path: str) -> None:
    async def main() -> None:
        proxy = Proxy(_allow, lambda record: None, host_map={NAME: "127.0.0.1"}, max_connections=4096)
        await serve_unix(unix_path, proxy)
        conn.send(0)
        await asyncio.Event().wait()

    asyncio.run(main())


def _start(target: Callable[..., None], *args: Any) -> tuple[mp.process.BaseProcess, int]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    if not parent.poll(30):
        raise SystemExit(f"{target.__name__} did not start")
    return proc, parent.recv()


# -- clients -----------------------------------------------------------------------------------------


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP response with Content-Length; returns body bytes."""
    view = memoryview(buf)
    got = 0
    head_end = -1
    while head_end < 0:
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("closed in head")
        got += n
        head_end = bytes(view[:got]).find(b"\r\n\r\n")
    head = bytes(view[:head_end]).decode("latin-1")
    length = int(next(line.split(":")[1] for line in head.split("\r\n")
                      if line.lower().startswith("content-length")))
    body = got - head_end - 4
    while body < length:
        n = sock.recv_into(view, min(len(buf), length - body))
        if not n:
            raise ConnectionError("closed in body")
        body += n
    return body


def _open(path: str, proxy_port: int | None, server_port: int, *, tunnel: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy_port or server_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if proxy_port and tunnel:
        sock.sendall(f"CONNECT {NAME}:{server_port} HTTP/1.1\r\nHost: {NAME}:{server_port}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("proxy closed")
            reply += chunk
        if not reply.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(reply[:100])
    return sock


def _request(path: str, proxy_port: int | None, server_port: int, *, tunnel: bool) -> bytes:
    if proxy_port and not tunnel:
        target = f"{NAME}:{server_port}"
        return f"GET http://{target}{path} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
    return f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()


def throughput(server_port: int, proxy_port: int | None, clients: int, rounds: int) -> float:
    total = [0] * clients

    def client(i: int) -> None:
        buf = bytearray(1 << 20)
        sock = _open("/big", proxy_port, server_port, tunnel=True)
        with sock:
            for _ in range(rounds):
                sock.sendall(_request("/big", proxy_port, server_port, tunnel=True))
                total[i] += _read_response(sock, buf)

    elapsed = _parallel(client, clients)
    return sum(total) / elapsed / 1e6


def conn_rate(server_port: int, proxy_port: int | None, clients: int, per_client: int) -> float:
    def client(i: int) -> None:
        buf = bytearray(65536)
        for _ in range(per_client):
            with _open("/small", proxy_port, server_port, tunnel=False) as sock:
                sock.sendall(_request("/small", proxy_port, server_port, tunnel=False))
                _read_response(sock, buf)

    elapsed = _parallel(client, clients)
    return clients * per_client / elapsed


def latencies(server_port: int, proxy_port: int | None, count: int) -> list[float]:
    buf = bytearray(65536)
    out = []
    for _ in range(count):
        start = time.perf_counter()
        with _open("/small", proxy_port, server_port, tunnel=False) as sock:
            sock.sendall(_request("/small", proxy_port, server_port, tunnel=False))
            _read_response(sock, buf)
        out.append(time.perf_counter() - start)
    return out


def _parallel(fn: Callable[[int], None], n: int) -> float:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"client failed: {errors[0]!r}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--big-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="downloads per client per round")
    parser.add_argument("--conns", type=int, default=200, help="connections per client for the rate")
    parser.add_argument("--latency-samples", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; medians are reported")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="guard-bench-net-"))
    unix_path = str(tmp / "proxy.sock")
    procs = []
    try:
        server, server_port = _start(_server, args.big_mib << 20)
        procs.append(server)
        session, session_port = _start(_proxy, "session", "")
        procs.append(session)
        daemon_proxy, _ = _start(_proxy_unix, unix_path)
        procs.append(daemon_proxy)
        relay, daemon_port = _start(_relay_only, unix_path)
        procs.append(relay)
        paths = {"direct": None, "session": session_port, "daemon": daemon_port}

        for port in paths.values():  # warm up every path
            latencies(server_port, port, 50)
        # Interleave the paths and repeat, then take medians: other work on the machine shifts all paths
        # alike within a round, so ratios stay meaningful when absolute numbers drift.
        samples: dict[str, dict[str, list[float]]] = {name: {"mb_s": [], "conn": [], "lat": []}
                                                      for name in paths}
        for _ in range(args.repeat):
            for name, port in paths.items():
                samples[name]["mb_s"].append(throughput(server_port, port, args.clients, args.rounds))
                samples[name]["conn"].append(conn_rate(server_port, port, args.clients, args.conns))
            for _ in range(args.latency_samples // args.repeat):
                for name, port in paths.items():
                    samples[name]["lat"].extend(latencies(server_port, port, 1))
        result: dict[str, Any] = {}
        for name in paths:
            mb_s = statistics.median(samples[name]["mb_s"])
            rate = statistics.median(samples[name]["conn"])
            p50 = statistics.median(samples[name]["lat"]) * 1000
            result[f"{name}_mb_s"] = round(mb_s, 1)
            result[f"{name}_conn_per_s"] = round(rate, 1)
            result[f"{name}_p50_ms"] = round(p50, 3)
            print(f"{name:8s} {mb_s:9.1f} MB/s  {rate:8.1f} conn/s  p50 {p50:.3f} ms  "
                  f"(median of {args.repeat} rounds)", flush=True)
        out = {
            "direct_mb_s": result["direct_mb_s"],
            "proxy_mb_s": result["session_mb_s"],
            "direct_conn_per_s": result["direct_conn_per_s"],
            "proxy_conn_per_s": result["session_conn_per_s"],
            "added_latency_p50_ms": round(result["session_p50_ms"] - result["direct_p50_ms"], 3),
            "throughput_ratio": round(result["session_mb_s"] / result["direct_mb_s"], 3),
            "conn_rate_ratio": round(result["session_conn_per_s"] / result["direct_conn_per_s"], 3),
            "daemon_mb_s": result["daemon_mb_s"],
            "daemon_conn_per_s": result["daemon_conn_per_s"],
            "daemon_added_latency_p50_ms": round(result["daemon_p50_ms"] - result["direct_p50_ms"], 3),
            "clients": args.clients,
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(out))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
