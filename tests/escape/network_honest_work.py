"""Honest network work must pass through the guard unchanged: pip from an index, git clone, curl.

Stand-ins on the host's loopback play the allowed hosts: a PEP 503 simple index serving a real wheel made
here, a dumb-HTTP git repository (`git update-server-info`), a plain file. The policy allows their names on
their port and `--resolve` pins the names to 127.0.0.1, as an engineer would for an air-gapped mirror. The
tools are the system's, configured only by the proxy variables guard run sets. Every connection, allowed
or refused, must be in the session's records, and the trail must verify with the public key alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from support import network_escape

pytestmark = pytest.mark.timeout(120)


H = network_escape
PKG, VERSION = "guardprobe", "1.0"
WHEEL = f"{PKG}-{VERSION}-py3-none-any.whl"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(dest: Path) -> Path:
    """A minimal, valid pure-Python wheel (PEP 427): one module, METADATA, WHEEL and RECORD."""
    dist = f"{PKG}-{VERSION}.dist-info"
    files = {
        f"{PKG}/__init__.py": b"ANSWER = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VERSION}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: guard-escape-suite\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    record += f"{dist}/RECORD,,\n"
    path = dest / WHEEL
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", record)
    return path


def build_index(root: Path) -> str:
    """A PEP 503 simple index under root/simple with the wheel; returns the wheel's sha256."""
    files = root / "files"
    files.mkdir(parents=True)
    wheel = build_wheel(files)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    simple = root / "simple"
    (simple / PKG).mkdir(parents=True)
    (simple / "index.html").write_text(f'<!DOCTYPE html><html><body><a href="{PKG}/">{PKG}</a></body></html>\n')
    (simple / PKG / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="../../files/{WHEEL}#sha256={digest}">{WHEEL}</a></body></html>\n')
    return digest


def build_repo(root: Path, env: dict[str, str]) -> str:
    """A bare repository served over dumb HTTP; returns the commit id of its one commit."""
    work = root / "src-repo"
    work.mkdir()

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    (work / "README.md").write_text("cloned through the guard\n")
    git("add", "README.md")
    git("-c", "user.name=Stand In", "-c", "user.email=stand.in@example.invalid", "commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    git("clone", "-q", "--bare", str(work), str(root / "repo.git"), cwd=root)
    git("update-server-info", cwd=root / "repo.git")
    return head


class Hosts:
    def __init__(self, world) -> None:
        if shutil.which("git") is None:
            pytest.skip("git is not installed")
        self.world = world
        self.www = world.root / "honest-www"
        self.www.mkdir()
        self.digest = build_index(self.www)
        self.head = build_repo(self.www, world.env)
        (self.www / "hello.txt").write_text("hello through the guard\n")
        self.server = H.HttpServer(self.www)
        self.port = self.server.port
        self.policy = H.write_policy(world.root / "network-honest.yaml", [
            {"id": "index-standin", "allow": ["connect"], "hosts": ["allowed-index.test"], "ports": [self.port]},
            {"id": "git-standin", "allow": ["connect"], "hosts": ["git.allowed.test"], "ports": [self.port]},
            {"id": "web-standin", "allow": ["connect"], "hosts": ["allowed.test"], "ports": [self.port]},
        ], name="network-honest", settings={"ask_timeout": 5})  # an unanswered ask fails in 5 s, not 60
        self.resolve = H.resolve_args({n: "127.0.0.1" for n in
                                       ("allowed-index.test", "git.allowed.test", "allowed.test", "denied.test")})

    def run(self, argv, **kw):
        return self.world.guard_run(argv, policy=self.policy, extra_args=self.resolve, **kw)

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def hosts(world):
    h = Hosts(world)
    try:
        yield h
    finally:
        h.close()


def _allowed_records(world, session, host, port, rule):
    recs = [r for r in H.connections(world, session) if r["host"] == host]
    assert recs, f"no connection record for {host}: {H.connections(world, session)}"
    for r in recs:
        assert (r["port"], r["verdict"], r["rule_id"], r["address"]) == (port, "allow", rule, "127.0.0.1"), r
        assert r["bytes_down"] > 0 and r["duration_ms"] >= 0, r
    return recs


def _pip(index: str, dest: str, trusted: str) -> list[str]:
    return ["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input",
            "--index-url", index, "--trusted-host", trusted, "-d", dest, PKG]


def test_pip_download_from_allowed_index(world, hosts):
    bare = world.bare_run(_pip(f"http://127.0.0.1:{hosts.port}/simple/", "dl-bare", f"127.0.0.1:{hosts.port}"))
    assert bare.returncode == 0 and (world.ws / "dl-bare" / WHEEL).exists(), bare
    host = "allowed-index.test"
    run = hosts.run(_pip(f"http://{host}:{hosts.port}/simple/", "dl", f"{host}:{hosts.port}"))
    assert run.returncode == 0, run
    wheel = world.ws / "dl" / WHEEL
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == hosts.digest
    recs = _allowed_records(world, run.session, host, hosts.port, "index-standin")
    assert len(recs) >= 2, recs  # the project page and the wheel (one request per proxied connection)
    # bytes are counted, not guessed: at least the wheel itself came down
    assert sum(r["bytes_down"] for r in recs) >= wheel.stat().st_size, recs


def _clone(world, hosts, dest: str, *options: str, approve: bool = False):
    """Clone from the stand-in; with `approve`, answer the session's asks to write the new repository's
    .git/config as the engineer would with `guard approve` (coding-agent asks for that file)."""
    host = "git.allowed.test"
    argv = world.guard_run_argv(["git", "clone", "-q", *options, f"http://{host}:{hosts.port}/repo.git", dest],
                                policy=hosts.policy, extra_args=hosts.resolve)
    proc = subprocess.Popen(argv, env={**world.env, "GIT_TERMINAL_PROMPT": "0"}, cwd=world.ws, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    world.track(proc.pid)
    config = str(world.ws / dest / ".git" / "config")
    approved: set[str] = set()
    deadline = time.monotonic() + 60
    while approve and proc.poll() is None and time.monotonic() < deadline:
        listing = world.guard("approvals", "--json", check=False).stdout or "{}"
        for item in json.loads(listing).get("approvals", []):
            if item["action"].get("target") == config and item["approval"] not in approved:
                world.guard("approve", item["approval"])
                approved.add(item["approval"])
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    run = _Run(argv, proc.returncode, out, err)
    assert run.returncode == 0, run
    assert (world.ws / dest / "README.md").read_text() == "cloned through the guard\n"
    head = subprocess.run(["git", "-C", str(world.ws / dest), "rev-parse", "HEAD"], capture_output=True,
                          text=True, env=world.env, check=True).stdout.strip()
    assert head == hosts.head
    _allowed_records(world, run.session, host, hosts.port, "git-standin")


class _Run:
    """A guard run started with Popen (so the test can answer its asks meanwhile)."""

    def __init__(self, argv, returncode, stdout, stderr):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        self.summary = next((json.loads(line) for line in reversed(stderr.splitlines())
                             if line.startswith("{")), None)

    @property
    def session(self) -> str:
        assert self.summary is not None, self.stderr
        return str(self.summary["session"])

    def __repr__(self) -> str:
        err = "\n".join(line for line in self.stderr.splitlines() if not line.startswith("guard: warning:"))
        return f"\nargv={self.argv!r} rc={self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{err}\n"


def test_git_clone_over_the_proxy(world, hosts):
    """The network half of a clone: git's dumb-HTTP fetches through the proxy, the engineer approving the
    new repository's .git/config. `--template=` leaves out the sample hooks git would otherwise copy into
    .git/hooks, which coding-agent refuses (see the next test)."""
    bare = world.bare_run(["git", "clone", "-q", f"http://127.0.0.1:{hosts.port}/repo.git", "clone-bare"],
                          env={"GIT_TERMINAL_PROMPT": "0"})
    assert bare.returncode == 0, bare
    _clone(world, hosts, "clone-approved", "--template=", approve=True)


def test_git_clone_plain(world, hosts):
    """`git clone` exactly as an agent types it, nobody at the keyboard."""
    _clone(world, hosts, "clone")


def test_curl_allowed_name_and_refused_name(world, hosts):
    """curl as is, through the proxy variables: the allowed name answers, the refused one gets a 403 with
    the rule, and both connections are in the trail."""
    bare = world.bare_run(["curl", "-sS", "--noproxy", "*", f"http://127.0.0.1:{hosts.port}/hello.txt"])
    assert bare.stdout == "hello through the guard\n", bare
    run = hosts.run(world.sh(f"curl -sS http://allowed.test:{hosts.port}/hello.txt; "
                             f"curl -sS -o /dev/null -w 'denied %{{http_code}}\\n' "
                             f"http://denied.test:{hosts.port}/hello.txt; "
                             f"curl -sS -o /dev/null -w 'tls %{{http_code}}\\n' "
                             f"https://denied.test:{hosts.port}/hello.txt"))
    assert run.stdout.startswith("hello through the guard\n"), run
    assert "denied 403" in run.stdout, run
    assert "tls 403" in run.stdout or "CONNECT tunnel failed, response 403" in run.stderr, run
    _allowed_records(world, run.session, "allowed.test", hosts.port, "web-standin")
    refused = [r for r in H.connections(world, run.session) if r["host"] == "denied.test"]
    assert sorted(r["protocol"] for r in refused) == ["connect", "http"], refused
    for r in refused:
        assert (r["port"], r["verdict"], r["address"]) == (hosts.port, "deny", None), r
    assert len(hosts.server.requests) >= 1


def test_every_connection_recorded_and_trail_verifies(world, hosts):
    """After the daemon stops, the whole trail verifies with only the exported public key."""
    before = {r["host"] for r in _all_connections(world)}
    assert {"allowed-index.test", "git.allowed.test", "allowed.test", "denied.test"} <= before, before
    world.guard("daemon", "stop")
    world.check_trail()


def _all_connections(world):
    out = world.guard("audit", "show", "--json").stdout
    return [r for r in (json.loads(line) for line in out.splitlines() if line.strip())
            if r.get("type") == "connection"]

