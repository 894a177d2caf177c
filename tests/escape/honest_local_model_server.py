"""A model API or package index on the host's 127.0.0.1 (ollama, LiteLLM, a local devpi): reachable when the
policy grants it, refused at once and legibly when it does not, never a silent hang.

Inside the sandbox 127.0.0.1 is its own loopback. A connect rule that grants the host's loopback by CIDR
and port makes guard relay that port into the sandbox under the same number, so `http://127.0.0.1:PORT`
works as it does bare, with the user's NO_PROXY as it is.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import uuid

import pytest

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def _model_server(answer: str):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


def _client(url_var: str = "MODEL_BASE_URL") -> list[str]:
    return ["python3", "-I", "-c",
            "import os, urllib.request, urllib.error\n"
            f"url = os.environ[{url_var!r}] + '/v1/models'\n"
            "try:\n"
            "    print('GOT', urllib.request.urlopen(url, timeout=20).read().decode())\n"
            "except urllib.error.HTTPError as exc:\n"
            "    print('HTTP', exc.code, exc.read().decode())\n"
            "except OSError as exc:\n"
            "    print('FAILED', exc)\n"]


def _grant(world, port: int):
    path = world.root / "policies" / f"local-model-{port}.yaml"
    path.write_text("version: 1\nname: local-model\nextends: [coding-agent]\nrules:\n"
                    "  - id: local-model\n    allow: [connect]\n    cidrs: [127.0.0.1/32]\n"
                    f"    ports: [{port}]\n    reason: The engineer's local model server.\n")
    return path


def test_granted_host_loopback_server_is_reachable(world):
    answer = f"MODEL-{uuid.uuid4().hex[:8]}"
    with _model_server(answer) as port:
        env = {"MODEL_BASE_URL": f"http://127.0.0.1:{port}", "NO_PROXY": "localhost,127.0.0.1,.corp.example"}
        bare = world.bare_run(_client(), env=env)
        assert f"GOT {answer}" in bare.stdout, bare
        run = world.guard_run(_client(), policy=_grant(world, port), env=env)
    assert run.returncode == 0 and f"GOT {answer}" in run.stdout, run
    assert run.summary["denied"] == 0, run
    conns = [r for r in world.records(run.session) if r.get("type") == "connection"]
    assert any(c["protocol"] == "forward" and c["port"] == port and c["verdict"] == "allow" for c in conns), conns


def test_ungranted_host_loopback_server_is_named_at_launch_and_fails_at_once(world):
    answer = f"MODEL-{uuid.uuid4().hex[:8]}"
    with _model_server(answer) as port:
        env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"}
        run = world.guard_run(_client("ANTHROPIC_BASE_URL"), env=env)
    assert answer not in run.stdout, run
    assert "FAILED" in run.stdout, run  # refused at once by the sandbox's own loopback, not a hang
    assert f"ANTHROPIC_BASE_URL points at 127.0.0.1:{port}" in run.stderr, run
    assert f"ports: [{port}]" in run.stderr, run


def test_ungranted_host_loopback_through_the_proxy_gets_a_legible_403(world):
    """A client that sends loopback through the proxy (NO_PROXY cleared) is refused at once with a reason."""
    answer = f"MODEL-{uuid.uuid4().hex[:8]}"
    with _model_server(answer) as port:
        env = {"MODEL_BASE_URL": f"http://127.0.0.1:{port}"}
        client = ["python3", "-I", "-c",
                  "import os, socket, urllib.parse\n"
                  "proxy = urllib.parse.urlsplit(os.environ.get('HTTP_PROXY', 'http://127.0.0.1:1'))\n"
                  "s = socket.create_connection((proxy.hostname, proxy.port), timeout=20)\n"
                  "url = os.environ['MODEL_BASE_URL'] + '/v1/models'\n"
                  "host = urllib.parse.urlsplit(url).netloc\n"
                  "s.sendall(f'GET {url} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n'.encode())\n"
                  "data = b''\n"
                  "while chunk := s.recv(65536):\n"
                  "    data += chunk\n"
                  "head, _, body = data.partition(b'\\r\\n\\r\\n')\n"
                  "print('HTTP', head.split()[1].decode(), body.decode())\n"]
        run = world.guard_run(client, env=env)
    assert answer not in run.stdout, run
    assert "HTTP 403" in run.stdout and "127.0.0.1" in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()
