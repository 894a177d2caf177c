"""`guard run --publish PORT`: the agent's dev server reachable from the host's loopback, and only then.

The real CLI in a subprocess, the real daemon and kernel: the agent serves HTTP on 127.0.0.1:PORT inside
its own network namespace; the test, on the host, fetches from 127.0.0.1:PORT. The connector underneath
(the sandbox's init making sockets inside the namespace) is also driven directly through `spawn`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from support.daemon import GUARD, wait_until

from guard.errors import SandboxError
from guard.sandbox import _syscalls as sc
from guard.sandbox import namespaces

ABI = sc.landlock_abi()
NS_PROBLEM = namespaces.probe()
pytestmark = [
    pytest.mark.skipif(ABI == 0, reason="Landlock is not available on this kernel"),
    pytest.mark.skipif(NS_PROBLEM is not None, reason=f"cannot create the sandbox namespaces: {NS_PROBLEM}"),
]


POLICY = """\
version: 1
name: publish-test
extends: [base]
defaults: {{file: deny, network: deny, process: allow}}
rules:
  - id: workspace
    allow: [read, write, exec]
    paths: ["${{workspace}}/**"]
  - id: dev-server
    allow: [listen]
    hosts: [127.0.0.1]
    ports: [{port}]
"""

# The agent: a dev server on 127.0.0.1:PORT (http.server, as `python3 -m http.server` runs it) that
# says when it listens and stops when the test says so.
SERVER = """\
import http.server, os, sys, threading, time
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
open("ready", "w").close()
while not os.path.exists("stop"):
    time.sleep(0.05)
srv.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def setup(tmp_path: Path, guard_daemon: subprocess.Popen[bytes]) -> tuple[Path, Path, int]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "server.py").write_text(SERVER)
    (ws / "hello.txt").write_text("hello from the sandbox\n")
    port = free_port()
    policy = tmp_path / "publish.yaml"
    policy.write_text(POLICY.format(port=port))
    return ws, policy, port


def start_agent(ws: Path, policy: Path, port: int, *publish: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*GUARD, "run", "-p", str(policy), *publish, "--", "/usr/bin/python3", "server.py",
                             str(port)], cwd=ws, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (ws / "ready").exists() or proc.poll() is not None, what="the agent's server")
    except BaseException:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    assert proc.poll() is None, proc.communicate(timeout=30)
    return proc


def stop_agent(ws: Path, proc: subprocess.Popen[str]) -> str:
    (ws / "stop").touch()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err, err
    return err


def fetch(port: int) -> bytes | None:
    """The file, or None while the published port does not reach a server yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=10) as r:
            return bytes(r.read())
    except (ConnectionError, urllib.error.URLError, OSError):
        return None


def test_published_port_reaches_the_agents_server_and_is_recorded(setup: tuple[Path, Path, int]) -> None:
    ws, policy, port = setup
    proc = start_agent(ws, policy, port, "--publish", str(port))
    held: socket.socket | None = None
    try:
        body = wait_until(lambda: fetch(port), what="the published server")
        assert body == b"hello from the sandbox\n"
        held = socket.create_connection(("127.0.0.1", port), timeout=10)  # still open when the session ends
        held.sendall(b"GET /")
    finally:
        err = stop_agent(ws, proc)
        if held is not None:
            held.close()
    session = err.rsplit("guard: session ", 1)[1].split()[0]
    shown = subprocess.run([*GUARD, "audit", "show", "--session", session, "--json"], capture_output=True,
                           text=True, timeout=60, check=True)
    events = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    published = [e for e in events if e.get("type") == "connection" and e.get("protocol") == "publish"]
    assert published, shown.stdout
    ok = [e for e in published if e["verdict"] == "allow" and e["bytes_down"] > 0]
    assert ok and ok[0]["port"] == port and ok[0]["rule_id"] == "dev-server", published
    assert ok[0]["client"].startswith("127.0.0.1:") and ok[0]["bytes_up"] > 0
    listen = [e for e in events if e.get("type") == "decision" and e.get("action", {}).get("op") == "listen"]
    assert listen and listen[0]["decision"]["verdict"] == "allow", events
    verified = subprocess.run([*GUARD, "audit", "verify"], capture_output=True, text=True, timeout=60,
                              check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_without_publish_the_server_is_not_reachable_from_the_host(setup: tuple[Path, Path, int]) -> None:
    ws, policy, port = setup
    proc = start_agent(ws, policy, port)
    try:
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        stop_agent(ws, proc)


def test_publish_refuses_a_port_the_policy_does_not_grant(setup: tuple[Path, Path, int]) -> None:
    ws, policy, port = setup
    other = port + 1 if port < 65535 else port - 1  # the policy grants `port` only
    res = subprocess.run([*GUARD, "run", "-p", str(policy), "--publish", str(other), "--", "/bin/true"], cwd=ws,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 125, res.stderr
    assert f"--publish {other}: the policy does not let the agent listen on port {other}" in res.stderr


def test_publish_refuses_a_port_taken_on_the_host(setup: tuple[Path, Path, int]) -> None:
    ws, policy, port = setup
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        res = subprocess.run([*GUARD, "run", "-p", str(policy), "--publish", str(port), "--", "/bin/true"],
                             cwd=ws, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 125, res.stderr
    assert f"cannot listen on 127.0.0.1:{port} on this host" in res.stderr
    assert not (ws / "ready").exists()


# --- the connector underneath ------------------------------------------------------------------------------
def test_connector_reaches_only_published_ports_and_fails_closed(tmp_path: Path) -> None:
    from guard.sandbox.launch import spawn
    from guard.sandbox.plan import build_plan
    from guard.sandbox.scan import scan_launch_facts

    from .test_launch import ENV, make_tree

    tree = make_tree(tmp_path / "t")
    pol = tree.policy()
    facts = scan_launch_facts(pol, workspace=tree.ws, protected=[tree.gh], home=tree.home)
    plan = build_plan(pol, facts, workspace=tree.ws, protected=[tree.gh], abi=ABI)
    script = ("import os, socket, sys, time\n"
              "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(4)\n"
              "open('port', 'w').write(str(s.getsockname()[1]))\n"
              "c, _ = s.accept(); c.sendall(b'inside ' + c.recv(16)); c.close()\n"
              "while not os.path.exists('stop'): time.sleep(0.05)\n")
    (tree.ws / "srv.py").write_text(script)
    # the agent binds an ephemeral port (port 0 stays bindable under the listen allowlist); publish it
    # and a second port nothing listens on
    sp = spawn(plan, ["/usr/bin/python3", "srv.py"], env=ENV, cwd=tree.ws, seccomp=None,
               publish_ports=list(range(32768, 61000)))
    try:
        sp.start()
        port = int(wait_until(lambda: (tree.ws / "port").exists() and (tree.ws / "port").read_text(),
                              what="the agent's port"))
        with sp.connect_inner(port) as inner:
            inner.sendall(b"hello")
            assert inner.recv(64) == b"inside hello"
        with pytest.raises(SandboxError, match="refused"):
            sp.connect_inner(port + 1 if port < 60999 else port - 1)
        with pytest.raises(SandboxError, match="not published"):
            sp.connect_inner(22)
        (tree.ws / "stop").touch()
        assert sp.wait() == 0
        with pytest.raises(SandboxError):  # the init is gone: nothing more gets in
            sp.connect_inner(port)
    finally:
        sp.kill()
        sp.close()
