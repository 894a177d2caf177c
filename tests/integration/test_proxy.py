"""The bridge across a real network namespace.

A child process enters new user and network namespaces (only `lo`, brought up), creates a listener on
127.0.0.1 there and hands it to this process over a socketpair (SCM_RIGHTS), as guard's sandbox launcher
does. This process serves the listener with the proxy. Clients inside the namespace then reach an allowed
loopback server of the host only through the proxy, are refused a denied one, and cannot reach the host's
loopback or any other network directly. Run as root and as the unprivileged user `nobody`.

The last test does the same through guard's own launcher (guard.sandbox.launch.spawn with
`inner_listen_ports`), a real Policy deciding both the sandbox plan and the proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from guard.model import Action, Decision, Verdict
from guard.net import Proxy, agent_proxy_env, serve_bridge

pytestmark = pytest.mark.userns

CHILD_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

CHILD = r"""
import ctypes, fcntl, json, os, socket, struct, subprocess, sys

chan = socket.socket(fileno=int(sys.argv[1]))
origin_port = int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.getuid(), os.getgid()
if libc.unshare(0x10000000 | 0x40000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNET
    chan.sendall(json.dumps({"unshare_errno": ctypes.get_errno()}).encode())
    sys.exit(3)
with open("/proc/self/setgroups", "w") as f:
    f.write("deny")
with open("/proc/self/uid_map", "w") as f:
    f.write(f"0 {uid} 1")
with open("/proc/self/gid_map", "w") as f:
    f.write(f"0 {gid} 1")
ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifr = struct.pack("16sh", b"lo", 0)
flags = struct.unpack("16sh", fcntl.ioctl(ctl, 0x8913, ifr))[1]          # SIOCGIFFLAGS
fcntl.ioctl(ctl, 0x8914, struct.pack("16sh", b"lo", flags | 1))         # SIOCSIFFLAGS |= IFF_UP
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.bind(("127.0.0.1", 0))
lst.listen(16)
socket.send_fds(chan, [str(lst.getsockname()[1]).encode()], [lst.fileno()])
lst.close()
env = json.loads(chan.recv(65536).decode())

def direct(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(5)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as exc:
        return f"errno {exc.errno}"
    finally:
        s.close()

def curl(url, env):
    p = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", url], env=env, capture_output=True,
                       text=True, timeout=30)
    return [p.returncode, p.stdout, p.stderr]

socks_env = {k: v for k, v in env.items() if k.lower() in ("all_proxy", "no_proxy", "path")}
out = {
    "direct_origin": direct("127.0.0.1", origin_port),
    "direct_public": direct("1.1.1.1", 80),
    "direct_public6": direct("2606:4700:4700::1111", 80),
    "allowed": curl(f"http://allowed.test:{origin_port}/x", env),
    "denied": curl(f"http://denied.test:{origin_port}/x", env),
    "socks_allowed": curl(f"http://allowed.test:{origin_port}/s", socks_env),
    "literal": curl(f"http://127.0.0.1:{origin_port}/x", {**env, "NO_PROXY": "", "no_proxy": ""}),
}
chan.sendall(json.dumps(out).encode())
"""


async def decide(action: Action) -> Decision:
    """Allow exactly allowed.test on any port; everything else falls to the default deny."""
    host, _ = action.host_port()
    if host == "allowed.test":
        return Decision(Verdict.ALLOW, "net.allowed", "the stand-in host is allowed")
    return Decision(Verdict.DENY, None, f"no rule allows connect {action.target}")


async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1]
        body = b"origin says hi to " + path
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def scenario(user: int | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    origin_server = await asyncio.start_server(origin, "127.0.0.1", 0)
    origin_port = origin_server.sockets[0].getsockname()[1]
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = await asyncio.create_subprocess_exec(
        CHILD_PYTHON, "-c", CHILD, str(child.fileno()), str(origin_port), pass_fds=[child.fileno()],
        user=user, group=user, env={"PATH": os.environ["PATH"]}, cwd="/")
    child.close()
    server = None
    try:
        loop = asyncio.get_running_loop()
        parent.setblocking(False)
        msg, fds, _, _ = await asyncio.wait_for(loop.run_in_executor(None, _recv_fds, parent), 30)
        if not fds:
            pytest.skip(f"could not create the namespace here: {msg.decode(errors='replace')}")
        listener = socket.socket(fileno=fds[0])
        assert listener.getsockname() == ("127.0.0.1", int(msg))
        proxy = Proxy(decide, records.append, host_map={"allowed.test": "127.0.0.1"})
        server = await serve_bridge(listener, proxy)
        env = {**agent_proxy_env(int(msg)), "PATH": os.environ["PATH"]}
        await loop.sock_sendall(parent, json.dumps(env).encode())
        data = b""
        async with asyncio.timeout(90):
            while chunk := await loop.sock_recv(parent, 65536):
                data += chunk
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await settled(proxy)
        return json.loads(data), records
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if server is not None:
            server.close()
            await server.wait_closed()
        origin_server.close()
        await origin_server.wait_closed()
        parent.close()


async def settled(proxy: Proxy) -> None:
    """Every connection has ended and been recorded (the client may finish before the proxy does)."""
    async with asyncio.timeout(30):
        while proxy.active:
            await asyncio.sleep(0.01)


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int], int, Any]:
    sock.setblocking(True)
    sock.settimeout(30)
    try:
        return socket.recv_fds(sock, 1024, 1)
    finally:
        sock.setblocking(False)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("user", [None, 65534], ids=["as-root-or-self", "as-nobody"])
def test_netns_client_reaches_the_host_only_through_the_bridge(user: int | None) -> None:
    if user is not None and os.geteuid() != 0:
        pytest.skip("switching to nobody needs root")
    out, records = asyncio.run(scenario(user))
    refused = {f"errno {e}" for e in (111, 101, 113)}  # ECONNREFUSED, ENETUNREACH, EHOSTUNREACH
    assert out["direct_origin"] == "errno 111"  # the namespace's own loopback has nothing there
    assert out["direct_public"] in refused and out["direct_public6"] in refused
    code, body, err = out["allowed"]
    assert code == 0 and body.endswith("\n200") and "origin says hi to /x" in body, err
    code, body, err = out["denied"]
    assert body.endswith("\n403") and "denied by rule default" in body
    code, body, err = out["socks_allowed"]
    assert code == 0 and "origin says hi to /s" in body, err
    code, body, _ = out["literal"]
    assert body.endswith("\n403")  # an IP literal is decided as the IP: loopback is not granted
    seen = sorted((r["protocol"], r["host"], r["verdict"]) for r in records)
    assert seen == [("http", "127.0.0.1", "deny"), ("http", "allowed.test", "allow"),
                    ("http", "denied.test", "deny"), ("socks5", "allowed.test", "allow")]
    for rec in records:
        client = rec["client"].rsplit(":", 1)[0]
        assert ipaddress.ip_address(client).is_loopback  # a peer inside the sandbox's namespace


# -- the same through guard's own sandbox launcher ---------------------------------------------------------


def _sandbox_ready() -> str | None:
    try:
        from guard.sandbox import _syscalls as sc
        from guard.sandbox import namespaces
    except ImportError as exc:  # pragma: no cover - the sandbox layer is part of the tree
        return f"guard.sandbox unavailable: {exc}"
    if sc.landlock_abi() == 0:
        return "Landlock is not available on this kernel"
    return namespaces.probe()


POLICY = """\
version: 1
name: proxy-through-sandbox
defaults: {file: deny, network: deny, process: allow}
network:
  hosts: {allowed.test: 127.0.0.1}
rules:
  - id: system
    allow: [read, exec]
    paths: [/usr/**, /bin/**, /lib/**, /lib64/**, /etc/**]
    reason: programs and their libraries
  - id: devices
    allow: [read, write]
    paths: [/dev/null]
    reason: curl writes to /dev/null
  - id: workspace
    allow: [read, write, exec]
    paths: ["${workspace}/**"]
    reason: the test's workspace
  - id: stand-in
    allow: [connect]
    hosts: [allowed.test]
    reason: the allowed host stand-in
  - id: loopback
    allow: [connect]
    hosts: [127.0.0.1]
    reason: inside the sandbox, loopback is the sandbox's own
"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_sandboxed_agent_reaches_the_host_only_through_the_launchers_listener(tmp_path: Path) -> None:
    problem = _sandbox_ready()
    if problem is not None:
        pytest.skip(problem)
    from guard.net.grants import policy_cidr_grant
    from guard.policy import load_policy
    from guard.sandbox import _syscalls as sc
    from guard.sandbox.launch import spawn
    from guard.sandbox.plan import build_plan
    from guard.sandbox.scan import scan_launch_facts

    ws, home = tmp_path / "ws", tmp_path / "home"
    ws.mkdir()
    home.mkdir()
    (tmp_path / "policy.yaml").write_text(POLICY)
    policy = load_policy(tmp_path / "policy.yaml", workspace=ws, home=home)
    facts = scan_launch_facts(policy, workspace=ws, protected=[], home=home)
    plan = build_plan(policy, facts, workspace=ws, protected=[], abi=sc.landlock_abi())
    records: list[dict[str, Any]] = []

    async def policy_decide(action: Action) -> Decision:
        return policy.decide(action)

    async def go() -> str:
        origin_server = await asyncio.start_server(origin, "127.0.0.1", 0)
        origin_port = origin_server.sockets[0].getsockname()[1]
        inner_port = 3128
        env = {**agent_proxy_env(inner_port), "PATH": "/usr/bin:/bin", "LC_ALL": "C"}
        script = (f"exec >{ws}/out.txt 2>&1\n"
                  f"curl -sS -w '\\n%{{http_code}}\\n' http://allowed.test:{origin_port}/in\n"
                  f"curl -sS -w '\\n%{{http_code}}\\n' http://denied.test:{origin_port}/in\n"
                  f"curl -sS -w '\\n%{{http_code}}\\n' --noproxy '' http://127.0.0.1:{origin_port}/in\n"
                  f"curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:{origin_port}/direct; echo direct=$?\n")
        sp = spawn(plan, ["/bin/sh", "-c", script], env=env, cwd=ws, seccomp=None,
                   inner_listen_ports=[inner_port])
        server = None
        try:
            [listener] = sp.inner_listeners
            proxy = Proxy(policy_decide, records.append, host_map=policy.host_map,
                          cidr_grant=policy_cidr_grant(policy))
            server = await serve_bridge(listener, proxy)
            sp.start()
            loop = asyncio.get_running_loop()
            rc = await asyncio.wait_for(loop.run_in_executor(None, sp.wait), 90)
            assert rc == 0
            await settled(proxy)
        finally:
            sp.kill()
            if server is not None:
                server.close()
                await server.wait_closed()
            sp.close()
            origin_server.close()
            await origin_server.wait_closed()
        return (ws / "out.txt").read_text()

    out = asyncio.run(go())
    lines = [line for line in out.splitlines() if line]
    assert lines[0:2] == ["origin says hi to /in", "200"], out
    assert "denied by rule default" in lines[2] and lines[3] == "403", out
    assert "guard:special-address" in lines[4] and lines[5] == "403", out
    assert lines[6].startswith("curl: (7)") and lines[7] == "direct=7", out
    assert sorted((r["host"], r["verdict"]) for r in records) == [
        ("127.0.0.1", "deny"), ("allowed.test", "allow"), ("denied.test", "deny")]
