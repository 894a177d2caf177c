"""Hostile input against a live daemon: whatever a peer sends, the daemon answers the next valid hello.

One daemon serves the whole module (hypothesis runs many examples); after every example a fresh
connection must get its hello answered, replies must be well-formed, and no reply may be an internal
error (that would be a daemon bug the fuzzer found). At the end the trail it wrote must verify.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import Keyring, verify_log
from guard.daemon import protocol as p
from guard.daemon.client import DaemonClient, DaemonNotRunning
from guard.home import log_dir, socket_path

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HELLO_ID = "fuzz-hello"


@pytest.fixture(scope="module")
def daemon_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("fuzz") / "guard-home"
    home.mkdir(mode=0o700)
    with open(home / "test-daemon.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "guard", "daemon", "run"], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "GUARD_HOME": str(home)})
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with DaemonClient.connect(home) as client:
                    client.hello()
                break
            except DaemonNotRunning:
                assert proc.poll() is None, (home / "test-daemon.log").read_text()
                assert time.monotonic() < deadline, "daemon did not start"
                time.sleep(0.02)
        yield home
        assert proc.poll() is None, "the daemon died during fuzzing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        report = verify_log(log_dir(home), Keyring(home).root().public)
        assert not report.tampered and report.findings_total == 0 and report.unsealed == 0
        log_text = (home / "test-daemon.log").read_text()
        assert "Traceback" not in log_text, log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def connect(home: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.connect(str(socket_path(home)))
    return sock


def read_until_hello(sock: socket.socket) -> tuple[list[dict[str, Any]], bool]:
    """Replies up to and including the hello's; bool: whether the hello was answered (False on close)."""
    replies: list[dict[str, Any]] = []
    buffer = b""
    while True:
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            reply = p.parse_reply(line)
            replies.append(reply)
            if reply.get("id") == HELLO_ID and reply["ok"]:
                return replies, True
        chunk = sock.recv(1 << 16)
        if not chunk:
            return replies, False
        buffer += chunk


def check_replies(replies: list[dict[str, Any]]) -> None:
    for reply in replies:
        if not reply["ok"]:
            error = reply["error"]
            assert isinstance(error["message"], str) and error["message"]
            assert error["code"] != p.INTERNAL, error
            assert error["code"] in {p.BAD_JSON, p.BAD_REQUEST, p.BAD_VERSION, p.UNKNOWN_OP, p.TOO_LARGE,
                                     p.NOT_FOUND, p.POLICY, p.BUSY}, error


def fresh_hello_works(home: Path) -> None:
    with connect(home) as sock:
        sock.sendall(p.request_line(HELLO_ID, "hello", {}))
        replies, answered = read_until_hello(sock)
    assert answered and replies[-1]["result"]["protocol"] == p.VERSION


def send_then_hello(home: Path, payload: bytes) -> None:
    """Junk lines, then a hello on the same connection: every line gets an answer, the hello last."""
    with connect(home) as sock:
        sock.sendall(payload + b"\n" + p.request_line(HELLO_ID, "hello", {}))
        replies, answered = read_until_hello(sock)
    check_replies(replies)
    assert answered, replies
    fresh_hello_works(home)


@FUZZ
@given(raw=st.binary(max_size=4096))
def test_random_bytes(daemon_home: Path, raw: bytes) -> None:
    send_then_hello(daemon_home, raw)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)


@FUZZ
@given(value=_json)
def test_random_json(daemon_home: Path, value: Any) -> None:
    send_then_hello(daemon_home, orjson.dumps(value))


_OPS = sorted(set(p.OPS) - {"shutdown"})  # a valid shutdown would (correctly) stop the daemon under test
_FIELDS = ["session", "action", "policy", "workspace", "argv", "cwd", "pid", "event", "summary", "exit_status",
           "approval", "verdict", "by", "extra"]


@FUZZ
@given(version=st.sampled_from([1, 1, 1, 0, 2, "1", None, True]),
       request_id=st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=200),
                            st.none(), st.booleans(), st.lists(st.integers(), max_size=2)),
       op=st.one_of(st.sampled_from(_OPS), st.text(max_size=20), st.integers()),
       fields=st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6))
def test_random_requests(daemon_home: Path, version: Any, request_id: Any, op: Any,
                         fields: dict[str, Any]) -> None:
    message = {**fields, "v": version, "id": request_id, "op": op}
    send_then_hello(daemon_home, json.dumps(message).encode())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.integers(min_value=-16, max_value=300_000), newline=st.booleans(),
       filler=st.sampled_from([b"a", b"{", b"\x00", b" ", b"\xff"]))
def test_huge_lines(daemon_home: Path, extra: int, newline: bool, filler: bytes) -> None:
    size = p.MAX_LINE + extra
    with connect(daemon_home) as sock:
        try:
            sock.sendall(filler * size + (b"\n" if newline else b""))
            if not newline:
                sock.sendall(b"\n")  # small lines are then answered; oversized ones have closed us already
            sock.sendall(p.request_line(HELLO_ID, "hello", {}))
            replies, answered = read_until_hello(sock)
        except (BrokenPipeError, ConnectionResetError):
            replies, answered = [], False
    check_replies(replies)
    if size > p.MAX_LINE:
        assert not answered
        assert any(r["error"]["code"] == p.TOO_LARGE for r in replies if not r["ok"]) or not replies
    else:
        assert answered
    fresh_hello_works(daemon_home)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=200), op=st.sampled_from(_OPS))
def test_half_lines_then_disconnect(daemon_home: Path, cut: int, op: str) -> None:
    line = p.request_line(7, op, {"session": "s" * 50, "action": {"op": "read", "target": "/x"}})
    with connect(daemon_home) as sock:
        sock.sendall(line[:cut])
    fresh_hello_works(daemon_home)


def hello_from_another_process(home: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "guard", "daemon", "status", "--json"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "GUARD_HOME": str(home)}, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def test_many_idle_connections_do_not_lock_out_a_new_client(daemon_home: Path) -> None:
    socks = [connect(daemon_home) for _ in range(100)]
    try:
        for sock in socks[::2]:
            try:
                sock.sendall(b'{"v": 2, "id": 1, "op": "hel')  # half a line, then silence
            except OSError:  # refused: past this process's connection cap
                pass
        assert hello_from_another_process(daemon_home)["running"]
    finally:
        for sock in socks:
            sock.close()
    fresh_hello_works(daemon_home)


def test_connection_cap_refuses_with_busy_then_recovers(daemon_home: Path) -> None:
    socks: list[socket.socket] = []
    try:
        busy: dict[str, Any] | None = None
        for _ in range(200):  # bounded: the cap per process is 32
            sock = connect(daemon_home)
            socks.append(sock)
            sock.sendall(p.request_line(HELLO_ID, "hello", {}))
            replies, answered = read_until_hello(sock)
            if not answered:
                busy = replies[0]
                break
        assert busy is not None and busy["error"]["code"] == p.BUSY
        assert "per process" in busy["error"]["message"]
        assert len(socks) == 33
        assert hello_from_another_process(daemon_home)["running"]  # the cap is this process's alone
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the daemon notices the closed connections asynchronously
        try:
            fresh_hello_works(daemon_home)
            break
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
