"""The bridge entrypoints and the agent environment, driven by the tools agents really use: curl, Python
urllib and git (smart HTTP through `git http-backend`), each a real subprocess on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import http.server
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.errors import UsageError
from guard.net import Proxy, agent_proxy_env, serve_bridge, serve_relay_to_unix, serve_unix

T = 30.0


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(90):
            await coro_fn()
    asyncio.run(bounded())


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


async def tool(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[int, str, str]:
    """Run a client with exactly `env` (plus PATH/HOME), bounded in time."""
    full = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **env}
    proc = await asyncio.create_subprocess_exec(*argv, env=full, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), T)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


# -- origins -------------------------------------------------------------------------------------------


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _GitCGI(http.server.BaseHTTPRequestHandler):
    """Smart HTTP by running `git http-backend` as a CGI program."""

    root = ""

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {"GIT_PROJECT_ROOT": self.root, "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                             timeout=30).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(sep)
        status = 200
        headers = []
        for line in head.decode().splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def threaded(server: http.server.HTTPServer) -> Iterator[int]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "allowed.test")])
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("allowed.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextlib.contextmanager
def tls_origin(tmp: Path) -> Iterator[int]:
    cert, key = self_signed(tmp)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with threaded(server) as port:
        yield port


# -- tests ---------------------------------------------------------------------------------------------


def test_agent_proxy_env() -> None:
    env = agent_proxy_env(3128)
    assert env == {
        "HTTP_PROXY": "http://127.0.0.1:3128", "http_proxy": "http://127.0.0.1:3128",
        "HTTPS_PROXY": "http://127.0.0.1:3128", "https_proxy": "http://127.0.0.1:3128",
        "ALL_PROXY": "socks5h://127.0.0.1:3128", "all_proxy": "socks5h://127.0.0.1:3128",
        "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1",
    }
    with pytest.raises(UsageError, match="out of range"):
        agent_proxy_env(0)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_honours_the_env_for_http_https_and_socks5h(kit: Any, tmp_path: Path) -> None:
    rules = kit.Rules([("net.allowed", "allow", "allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        with threaded(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)) as web, \
                tls_origin(tmp_path) as tls:
            proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"})
            lsock = listener()
            server = await serve_bridge(lsock, proxy)
            env = agent_proxy_env(lsock.getsockname()[1])
            try:
                code, out, err = await tool(["curl", "-sS", f"http://allowed.test:{web}/plain"], env)
                assert (code, out) == (0, "hello /plain\n"), err
                code, out, err = await tool(["curl", "-sS", "-k", f"https://allowed.test:{tls}/tls"], env)
                assert (code, out) == (0, "hello /tls\n"), err
                socks_only = {k: v for k, v in env.items() if k.lower() in ("all_proxy", "no_proxy")}
                code, out, err = await tool(["curl", "-sS", f"http://allowed.test:{web}/socks"], socks_only)
                assert (code, out) == (0, "hello /socks\n"), err
                code, out, err = await tool(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                             f"http://denied.test:{web}/"], env)
                assert out == "403"
                code, out, err = await tool(["curl", "-sS", "-k", f"https://denied.test:{tls}/"], env)
                assert code != 0 and "403" in err
                await kit.until(lambda: proxy.active == 0)
            finally:
                server.close()
                await server.wait_closed()
        by_protocol = {(r["protocol"], r["host"], r["verdict"]) for r in records}
        assert by_protocol == {("http", "allowed.test", "allow"), ("connect", "allowed.test", "allow"),
                               ("socks5", "allowed.test", "allow"), ("http", "denied.test", "deny"),
                               ("connect", "denied.test", "deny")}
        assert all(r["bytes_down"] > 0 for r in records if r["verdict"] == "allow")

    run(go)


def test_python_urllib_honours_the_env(kit: Any, tmp_path: Path) -> None:
    rules = kit.Rules([("net.allowed", "allow", "allowed.test", None)])
    records = kit.Recorder()
    script = ("import ssl, sys, urllib.request\n"
              "ctx = ssl._create_unverified_context()\n"
              "for url in sys.argv[1:]:\n"
              "    try:\n"
              "        print(urllib.request.urlopen(url, context=ctx, timeout=20).read().decode().strip())\n"
              "    except Exception as exc:\n"
              "        print('error', exc)\n")

    async def go() -> None:
        with threaded(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)) as web, \
                tls_origin(tmp_path) as tls:
            lsock = listener()
            proxy = Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"})
            server = await serve_bridge(lsock, proxy)
            try:
                code, out, err = await tool(
                    [sys.executable, "-c", script, f"http://allowed.test:{web}/a",
                     f"https://allowed.test:{tls}/b", f"http://denied.test:{web}/c"],
                    agent_proxy_env(lsock.getsockname()[1]))
                await kit.until(lambda: proxy.active == 0)
            finally:
                server.close()
                await server.wait_closed()
        assert code == 0, err
        lines = out.splitlines()
        assert lines[:2] == ["hello /a", "hello /b"]
        assert lines[2].startswith("error") and "403" in lines[2]
        assert {(r["protocol"], r["verdict"]) for r in records} == {("http", "allow"), ("connect", "allow"),
                                                                     ("http", "deny")}

    run(go)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_clone_over_smart_http_through_the_proxy(kit: Any, tmp_path: Path) -> None:
    root = tmp_path / "srv"
    work = tmp_path / "work"
    root.mkdir()
    genv = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=genv)
    (work / "README").write_text("through the guard\n")
    subprocess.run(["git", "-C", str(work), "add", "README"], check=True, env=genv)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "one"], check=True, env=genv)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "repo.git")], check=True, env=genv)
    handler = type("Handler", (_GitCGI,), {"root": str(root)})
    rules = kit.Rules([("net.git", "allow", "git.allowed.test", None)])
    records = kit.Recorder()

    async def go() -> None:
        with threaded(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as web:
            lsock = listener()
            proxy = Proxy(rules, records, host_map={"git.allowed.test": "127.0.0.1"})
            server = await serve_bridge(lsock, proxy)
            env = {**agent_proxy_env(lsock.getsockname()[1]), "GIT_TERMINAL_PROMPT": "0"}
            try:
                code, out, err = await tool(["git", "ls-remote", f"http://git.allowed.test:{web}/repo.git"], env)
                assert code == 0 and "refs/heads/main" in out, err
                code, out, err = await tool(["git", "clone", "-q", f"http://git.allowed.test:{web}/repo.git",
                                             str(tmp_path / "clone")], env)
                assert code == 0, err
                code, out, err = await tool(["git", "ls-remote", f"http://other.test:{web}/repo.git"], env)
                assert code != 0 and "403" in err
                await kit.until(lambda: proxy.active == 0)
            finally:
                server.close()
                await server.wait_closed()
        assert (tmp_path / "clone" / "README").read_text() == "through the guard\n"
        allowed = [r for r in records if r["verdict"] == "allow"]
        assert len(allowed) >= 3 and all(r["host"] == "git.allowed.test" for r in allowed)
        assert sum(r["bytes_down"] for r in allowed) > 0 and any(r["bytes_up"] > 0 for r in allowed)
        assert [r["host"] for r in records if r["verdict"] == "deny"] == ["other.test"]

    run(go)


def test_serve_unix_is_private_and_names_the_peer(kit: Any, tmp_path: Path) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()
    path = tmp_path / "proxy.sock"

    async def go() -> None:
        async with kit.echo_server() as (echo_port, _):
            server = await serve_unix(path, Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"}))
            try:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
                reader, writer = await asyncio.open_unix_connection(str(path))
                writer.write(f"CONNECT allowed.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)).startswith(b"HTTP/1.1 200")
                writer.write(b"abc")
                assert await asyncio.wait_for(reader.readexactly(3), T) == b"abc"
                writer.close()
                await kit.until(lambda: bool(records))
            finally:
                server.close()
                await server.wait_closed()
        assert records[0]["client"] == f"unix:pid={os.getpid()},uid={os.getuid()},gid={os.getgid()}"

    run(go)
    # a stale socket of ours is replaced; a regular file is not ours to remove
    run(lambda: _serve_and_close(path, kit))
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(UsageError, match="not a socket of ours"):
        run(lambda: _serve_and_close(path, kit))
    assert path.read_text() == "not a socket"


async def _serve_and_close(path: Path, kit: Any) -> None:
    server = await serve_unix(path, Proxy(kit.Rules([]), kit.Recorder()))
    server.close()
    await server.wait_closed()


def test_relay_to_unix_proxy(kit: Any, tmp_path: Path) -> None:
    rules = kit.Rules([("net.a", "allow", "allowed.test", None)])
    records = kit.Recorder()
    path = tmp_path / "proxy.sock"

    async def go() -> None:
        async with kit.echo_server() as (echo_port, _):
            unix = await serve_unix(path, Proxy(rules, records, host_map={"allowed.test": "127.0.0.1"}))
            lsock = listener()
            relay = await serve_relay_to_unix(lsock, path)
            try:
                reader, writer = await asyncio.open_connection(*lsock.getsockname())
                writer.write(f"CONNECT allowed.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
                assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)).startswith(b"HTTP/1.1 200")
                writer.write(b"x" * 100000)
                assert await asyncio.wait_for(reader.readexactly(100000), T) == b"x" * 100000
                writer.close()
                reader, writer = await asyncio.open_connection(*lsock.getsockname())
                writer.write(f"CONNECT denied.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
                status, _, _ = await kit.read_response(reader)
                writer.close()
                assert status == 403
            finally:
                for server in (relay, unix):
                    server.close()
                    await server.wait_closed()

    run(go)


def test_bridge_refuses_a_socket_that_is_not_listening() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(UsageError, match="not listening"):
            run(lambda: serve_bridge(sock, Proxy(_never, print)))  # type: ignore[arg-type,return-value]
        with pytest.raises(UsageError, match="stream socket"):
            run(lambda: serve_bridge(udp, Proxy(_never, print)))  # type: ignore[arg-type,return-value]
    finally:
        sock.close()
        udp.close()


async def _never(action: Any) -> Any:
    raise AssertionError("not reached")
