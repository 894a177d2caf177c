"""The daemon as a real subprocess on a temporary GUARD_HOME, with the real policy engine and audit writer.

Every test that writes to the trail ends by stopping the daemon gracefully and verifying the trail with
only the public key, the way an auditor would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.daemon import wait_until

from guard.audit import Keyring, verify_log
from guard.daemon import protocol as p
from guard.daemon.client import DaemonClient, DaemonNotRunning, DaemonReplyError, ensure_running
from guard.errors import DaemonError
from guard.home import log_dir, socket_path
from guard.model import Action, Op, Verdict

POLICY = """\
version: 1
name: daemon-test
settings:
  ask_timeout: {ask_timeout}
defaults:
  file: deny
  network: deny
  process: deny
rules:
  - id: workspace
    allow: [read, write]
    paths: ["${{workspace}}/**"]
  - id: push-asks
    ask: [run]
    commands: ["git push ..."]
  - id: git
    allow: [run]
    commands: ["git ..."]
"""


class Daemon:
    """One `python -m guard daemon run` subprocess, killed by pid in teardown."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = open(self.home / "test-daemon.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "guard", "daemon", "run"], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "GUARD_HOME": str(self.home)})
        finally:
            log.close()
        wait_until(self._answers, what="the daemon's socket")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"daemon exited with {self.proc.returncode}: {self.log()}")
        try:
            with DaemonClient.connect(self.home, timeout=5) as client:
                client.hello()
            return True
        except DaemonNotRunning:
            return False

    def client(self) -> DaemonClient:
        return DaemonClient.connect(self.home, timeout=10)

    def stop(self) -> int:
        """Graceful stop (SIGTERM) -> exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return (self.home / "test-daemon.log").read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def daemon(guard_home: Path) -> Iterator[Daemon]:
    running = Daemon(guard_home).start()
    try:
        yield running
    finally:
        running.kill()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def write_policy(path: Path, *, ask_timeout: float = 30) -> Path:
    path.write_text(POLICY.format(ask_timeout=ask_timeout))
    return path


def records(home: Path) -> list[dict[str, Any]]:
    out = []
    for segment in sorted(log_dir(home).glob("seg-*.jsonl")):
        for line in segment.read_bytes().splitlines():
            if line.strip():
                out.append(orjson.loads(line))
    return out


def verified(home: Path) -> Any:
    """The trail verifies, both through the API and as an auditor runs it (`guard audit verify`)."""
    report = verify_log(log_dir(home), Keyring(home).root().public)
    assert not report.tampered, report.first_break
    assert report.findings_total == 0, report.findings
    cli = subprocess.run([sys.executable, "-m", "guard", "audit", "verify"], capture_output=True, text=True,
                         env={**os.environ, "GUARD_HOME": str(home)}, timeout=60)
    assert cli.returncode == 0 and cli.stdout.startswith("VALID"), cli.stdout + cli.stderr
    return report


def test_round_trip_is_recorded_and_verifies(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    with daemon.client() as client:
        hello = client.hello()
        assert hello["protocol"] == p.VERSION and hello["peer"]["uid"] == os.geteuid()
        opened = client.open_session(policy, workspace, argv=["agent", "--fast"], cwd=workspace, pid=4242)
        session = opened["session"]
        assert opened["policy"]["name"] == "daemon-test"
        assert opened["policy"]["sources"] == [str(policy)]
        assert opened["policy"]["ask_timeout"] == 30
        allowed = client.decide(session, Action(Op.WRITE, str(workspace / "main.py")))
        denied = client.decide(session, Action(Op.READ, "/etc/shadow"))
        assert (allowed.verdict, allowed.rule_id) == (Verdict.ALLOW, "workspace")
        assert denied.verdict is Verdict.DENY
        seq = client.record(session, {"type": "connection", "protocol": "connect", "host": "example.com",
                                      "port": 443, "bytes_up": 3, "bytes_down": 10, "verdict": "allow"})
        [listed] = client.status()["sessions"]
        assert listed["session"] == session and listed["counts"] == {"allowed": 1, "denied": 1, "asked": 0}
        closed = client.close_session(session, exit_status=0, summary={"note": "done"})
        assert closed["counts"] == {"allowed": 1, "denied": 1, "asked": 0}
        assert client.status()["sessions"] == []
    assert daemon.stop() == 0
    report = verified(daemon.home)
    assert report.unsealed == 0
    mine = [r for r in records(daemon.home) if r.get("session") == session]
    assert [r["type"] for r in mine] == ["session", "decision", "decision", "connection", "session"]
    start, end = mine[0], mine[-1]
    assert start["event"] == "start" and start["argv"] == ["agent", "--fast"] and start["pid"] == 4242
    assert start["policy"] == "daemon-test" and start["sources_hash"].startswith("sha256:")
    assert end["event"] == "end" and end["status"] == "closed" and end["exit_status"] == 0
    assert end["summary"] == {"note": "done"}
    assert mine[3]["seq"] == seq and mine[3]["bytes_down"] == 10 and mine[3]["host"] == "example.com"


def test_socket_and_state_are_private(daemon: Daemon) -> None:
    sock = socket_path(daemon.home)
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.home.stat().st_mode) == 0o700
    assert daemon.proc is not None
    assert (daemon.home / "daemon.pid").read_text().strip() == str(daemon.proc.pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_graceful_stop_removes_socket_and_pid_file(daemon: Daemon, sig: signal.Signals) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(sig)
    assert daemon.proc.wait(timeout=20) == 0
    assert not socket_path(daemon.home).exists()
    assert not (daemon.home / "daemon.pid").exists()
    kinds = [(r.get("type"), r.get("event")) for r in records(daemon.home)]
    assert ("session", "daemon_start") in kinds and ("session", "daemon_stop") in kinds
    assert verified(daemon.home).unsealed == 0


def test_a_second_daemon_refuses_to_start(daemon: Daemon) -> None:
    second = subprocess.run([sys.executable, "-m", "guard", "daemon", "run"], capture_output=True, text=True,
                            env={**os.environ, "GUARD_HOME": str(daemon.home)}, timeout=30)
    assert second.returncode != 0
    assert "already running" in second.stderr
    with daemon.client() as client:
        assert client.hello()["pid"] == daemon.proc.pid  # type: ignore[union-attr]


def test_stale_socket_of_a_killed_daemon_is_replaced_and_the_chain_continues(guard_home: Path,
                                                                            workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    first = Daemon(guard_home).start()
    try:
        with first.client() as client:
            session = client.open_session(policy, workspace)["session"]
            client.decide(session, Action(Op.WRITE, str(workspace / "a")))
        # a crash may lose the unsealed tail (by design); wait for the tick to seal what we wrote
        wait_until(lambda: any(r.get("session") == session and r["type"] == "decision"
                               for r in records(guard_home)), what="the decision to be sealed")
        first.kill()  # SIGKILL: no cleanup, the socket stays behind
        assert stat.S_ISSOCK(socket_path(guard_home).lstat().st_mode)
        with pytest.raises(DaemonNotRunning):
            DaemonClient.connect(guard_home)
        second = Daemon(guard_home).start()
        try:
            with second.client() as client:
                again = client.open_session(policy, workspace)["session"]
                client.decide(again, Action(Op.WRITE, str(workspace / "b")))
                client.close_session(again, exit_status=0)
            assert second.stop() == 0
        finally:
            second.kill()
    finally:
        first.kill()
    report = verified(guard_home)
    assert report.unsealed == 0
    starts = [r for r in records(guard_home) if r.get("event") == "daemon_start"]
    assert len(starts) == 2
    sessions = {r.get("session") for r in records(guard_home)}
    assert {session, again} <= sessions


def test_restart_continues_the_same_chain(guard_home: Path, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")

    def one_run() -> Any:
        running = Daemon(guard_home).start()
        try:
            with running.client() as client:
                session = client.open_session(policy, workspace)["session"]
                client.decide(session, Action(Op.READ, str(workspace / "x")))
                client.close_session(session, exit_status=0)
            assert running.stop() == 0
        finally:
            running.kill()
        return verified(guard_home)

    first = one_run()
    second = one_run()
    assert second.origin == first.origin
    assert second.leaves > first.leaves
    assert second.unsealed == 0
    seqs = [r["seq"] for r in records(guard_home)]
    assert seqs == list(range(len(seqs)))


def test_idle_log_gets_sealed_without_a_stop(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    with daemon.client() as client:
        session = client.open_session(policy, workspace)["session"]
        client.decide(session, Action(Op.READ, str(workspace / "x")))
        # nothing else happens; the 250 ms tick must seal what was written
        wait_until(lambda: verify_log(log_dir(daemon.home), Keyring(daemon.home).root().public).unsealed == 0
                   and verify_log(log_dir(daemon.home), Keyring(daemon.home).root().public).leaves >= 4,
                   what="an idle checkpoint")


def test_ask_then_approve_from_a_second_client_allows(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=30)
    with daemon.client() as agent, daemon.client() as human:
        session = agent.open_session(policy, workspace)["session"]
        result: dict[str, Any] = {}
        asker = threading.Thread(target=lambda: result.update(
            decision=agent.decide(session, Action(Op.RUN, "git push origin", argv=("git", "push", "origin")))))
        asker.start()
        try:
            [pending] = wait_until(human.approvals, what="a pending approval")
            assert pending["session"] == session and pending["action"]["target"] == "git push origin"
            assert pending["rule_id"] == "push-asks" and pending["timeout_s"] == 30
            answered = human.approve(pending["approval"], by="alice")
            assert answered == {"approval": pending["approval"], "verdict": "allow", "by": "alice"}
            with pytest.raises(DaemonReplyError) as again:
                human.deny(pending["approval"])
            assert again.value.code == p.NOT_FOUND
        finally:
            asker.join(timeout=30)
        decision = result["decision"]
        assert (decision.verdict, decision.rule_id) == (Verdict.ALLOW, "push-asks")
        assert "alice" in decision.reason
        assert human.approvals() == []
        assert agent.close_session(session)["counts"] == {"allowed": 1, "denied": 0, "asked": 1}
    assert daemon.stop() == 0
    verified(daemon.home)
    [approval] = [r for r in records(daemon.home) if r["type"] == "approval"]
    assert approval["verdict"] == "allow" and approval["by"] == "alice" and approval["uid"] == os.geteuid()
    assert approval["approval"] == pending["approval"] and approval["waited_ms"] >= 0
    [asked] = [r for r in records(daemon.home) if r["type"] == "decision"]
    assert asked["decision"]["verdict"] == "ask"


def test_ask_without_an_answer_times_out_as_deny(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=1)
    with daemon.client() as client:
        session = client.open_session(policy, workspace)["session"]
        decision = client.decide(session, Action(Op.RUN, "git push", argv=("git", "push")))
        assert decision.verdict is Verdict.DENY
        assert decision.reason == "no answer within 1 s"
        assert client.approvals() == []
        client.close_session(session)
    assert daemon.stop() == 0
    verified(daemon.home)
    [approval] = [r for r in records(daemon.home) if r["type"] == "approval"]
    assert approval["verdict"] == "deny" and approval["by"] == "timeout" and approval["waited_ms"] >= 1000


def test_the_cli_lists_and_denies_approvals(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=30)
    env = {**os.environ, "GUARD_HOME": str(daemon.home)}
    with daemon.client() as agent:
        session = agent.open_session(policy, workspace)["session"]
        result: dict[str, Any] = {}
        asker = threading.Thread(target=lambda: result.update(
            decision=agent.decide(session, Action(Op.RUN, "git push", argv=("git", "push")))))
        asker.start()
        try:
            wait_until(agent.approvals, what="a pending approval")
            listed = subprocess.run([sys.executable, "-m", "guard", "approvals", "--json"], env=env,
                                    capture_output=True, text=True, timeout=30)
            assert listed.returncode == 0, listed.stderr
            [pending] = orjson.loads(listed.stdout)["approvals"]
            table = subprocess.run([sys.executable, "-m", "guard", "approvals"], env=env,
                                   capture_output=True, text=True, timeout=30)
            assert pending["approval"] in table.stdout and "git push" in table.stdout
            denied = subprocess.run([sys.executable, "-m", "guard", "deny", pending["approval"]], env=env,
                                    capture_output=True, text=True, timeout=30)
            assert denied.returncode == 0, denied.stderr
            assert f"denied {pending['approval']}" in denied.stdout
            unknown = subprocess.run([sys.executable, "-m", "guard", "approve", "nope"], env=env,
                                     capture_output=True, text=True, timeout=30)
            assert unknown.returncode == 1 and "no pending approval 'nope'" in unknown.stderr
        finally:
            asker.join(timeout=30)
        assert result["decision"].verdict is Verdict.DENY


def test_a_waiting_ask_does_not_block_other_threads_on_the_same_client(daemon: Daemon,
                                                                      workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=30)
    with daemon.client() as client, daemon.client() as human:
        session = client.open_session(policy, workspace)["session"]
        result: dict[str, Any] = {}
        asker = threading.Thread(target=lambda: result.update(
            decision=client.decide(session, Action(Op.RUN, "git push", argv=("git", "push")))))
        asker.start()
        try:
            [pending] = wait_until(human.approvals, what="a pending approval")
            # the asker's thread is blocked reading this connection; other threads still get answers
            for i in range(50):
                decision = client.decide(session, Action(Op.WRITE, str(workspace / f"f{i}")))
                assert decision.verdict is Verdict.ALLOW
            assert "decision" not in result  # the ask is still waiting
            human.approve(pending["approval"])
        finally:
            asker.join(timeout=30)
        assert result["decision"].verdict is Verdict.ALLOW


def test_concurrent_threads_get_their_own_replies(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    with daemon.client() as client:
        session = client.open_session(policy, workspace)["session"]
        failures: list[str] = []

        def worker(n: int) -> None:
            for i in range(100):
                inside = (n + i) % 2 == 0
                target = str(workspace / f"{n}-{i}") if inside else f"/etc/{n}-{i}"
                decision = client.decide(session, Action(Op.WRITE, target))
                if decision.verdict is not (Verdict.ALLOW if inside else Verdict.DENY):
                    failures.append(f"{target}: {decision}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert failures == []
        assert client.status()["sessions"][0]["counts"] == {"allowed": 200, "denied": 200, "asked": 0}


CLIENT = """
import sys, time
from pathlib import Path
from guard.daemon.client import DaemonClient
from guard.model import Action, Op
client = DaemonClient.connect(Path(sys.argv[1]))
session = client.open_session(sys.argv[2], sys.argv[3], argv=["rogue"])["session"]
print(session, flush=True)
client.decide(session, Action(Op.RUN, "git push", argv=("git", "push")))  # waits for a human: killed here
"""


def test_sigkill_of_a_client_closes_its_session_as_lost(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=60)
    child = subprocess.Popen([sys.executable, "-c", CLIENT, str(daemon.home), str(policy), str(workspace)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        session = child.stdout.readline().strip()
        with daemon.client() as client:
            wait_until(client.approvals, what="the client's ask")
            child.kill()
            child.wait(timeout=10)
            wait_until(lambda: not client.status()["sessions"], what="the lost session to close")
            assert client.approvals() == []
            assert client.hello()["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    assert daemon.stop() == 0
    verified(daemon.home)
    end = [r for r in records(daemon.home) if r.get("session") == session and r.get("event") == "end"]
    assert len(end) == 1 and end[0]["status"] == "lost"
    [approval] = [r for r in records(daemon.home) if r["type"] == "approval"]
    assert approval["verdict"] == "deny" and approval["by"] == "daemon"


def test_hot_reload_applies_good_edits_and_keeps_the_last_good_policy(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    action = Action(Op.RUN, "git status", argv=("git", "status"))
    with daemon.client() as client:
        session = client.open_session(policy, workspace)["session"]
        assert client.decide(session, action).verdict is Verdict.ALLOW
        # a good edit: git status now denied (rename-over, as editors save)
        tmp = policy.with_name(".policy.yaml.new")
        tmp.write_text(policy.read_text() + "  - id: no-status\n    deny: [run]\n    commands: [\"git status\"]\n")
        os.replace(tmp, policy)
        wait_until(lambda: client.decide(session, action).verdict is Verdict.DENY, what="the reload")
        # a bad edit: keep deciding with the last good policy
        policy.write_text(policy.read_text() + "  - id: broken\n    allow: [fly]\n    paths: [\"/x\"]\n")
        [listed] = wait_until(lambda: [s for s in client.status()["sessions"] if s["reload_error"]],
                              what="the failed reload")
        assert "policy.yaml:" in listed["reload_error"] and "fly" in listed["reload_error"]
        assert client.decide(session, action).verdict is Verdict.DENY
        assert client.decide(session, Action(Op.WRITE, str(workspace / "a"))).verdict is Verdict.ALLOW
        client.close_session(session)
    assert daemon.stop() == 0
    verified(daemon.home)
    events = [r for r in records(daemon.home) if r.get("session") == session and r["type"] == "session"]
    whats = [e["event"] for e in events]
    assert whats[0] == "start" and whats[-1] == "end"
    assert "policy_reload" in whats and "policy_reload_failed" in whats
    failed = next(e for e in events if e["event"] == "policy_reload_failed")
    assert failed["file"] == str(policy) and f"{policy}:" in failed["error"]


def test_bad_policy_at_open_is_a_policy_error_with_its_location(daemon: Daemon, workspace: Path) -> None:
    bad = workspace.parent / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nrules:\n  - id: x\n    allow: [fly]\n    paths: ['/x']\n")
    with daemon.client() as client:
        with pytest.raises(DaemonReplyError) as info:
            client.open_session(bad, workspace)
        assert info.value.code == p.POLICY
        assert f"{bad}:5" in info.value.message
        with pytest.raises(DaemonReplyError) as missing:
            client.decide("nosuch", Action(Op.READ, "/x"))
        assert missing.value.code == p.NOT_FOUND


def test_a_stalled_half_line_does_not_block_other_clients(daemon: Daemon) -> None:
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(str(socket_path(daemon.home)))
    try:
        stalled.sendall(b'{"v": 1, "id": 1, "op": "hel')
        with daemon.client() as client:
            for _ in range(20):
                assert client.hello()["protocol"] == p.VERSION
    finally:
        stalled.close()


def test_record_rejects_daemon_owned_types(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    with daemon.client() as client:
        session = client.open_session(policy, workspace)["session"]
        with pytest.raises(DaemonReplyError) as info:
            client.record(session, {"type": "session", "event": "end"})
        assert info.value.code == p.BAD_REQUEST and "event.type" in info.value.message


@pytest.fixture
def reachable_daemon() -> Iterator[Daemon]:
    """A daemon whose home's ancestors other uids can traverse (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="guard-peer-test-"))
    os.chmod(root, 0o711)
    running = Daemon(root / "home").start()
    try:
        yield running
    finally:
        running.kill()
        shutil.rmtree(root)


def test_peer_with_another_uid_is_refused_by_peer_credentials(reachable_daemon: Daemon) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another uid (setresuid)")
    daemon = reachable_daemon
    sock_path = socket_path(daemon.home)
    # let uid 65534 reach the socket for this test only, so the refusal can only come from SO_PEERCRED
    os.chmod(daemon.home, 0o711)
    os.chmod(sock_path, 0o666)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, connect, report what the daemon said
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            client.connect(str(sock_path))
            client.sendall(p.request_line(1, "hello", {}))
            data = b""
            while not data.endswith(b"\n"):
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
            rest = client.recv(65536)  # the daemon closes after refusing
            os.write(write_end, data + (b"CLOSED" if rest == b"" else b"OPEN"))
        except BaseException as exc:
            os.write(write_end, f"ERROR {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        out = b""
        while chunk := os.read(read_end, 65536):
            out += chunk
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
        os.chmod(daemon.home, 0o700)
        os.chmod(sock_path, 0o600)
    assert out.endswith(b"CLOSED"), out
    reply = orjson.loads(out[:-len(b"CLOSED")])
    assert reply["ok"] is False and reply["id"] is None
    assert reply["error"]["code"] == "forbidden"
    assert "peer credentials: uid 65534" in reply["error"]["message"]
    with daemon.client() as client:
        assert client.hello()["protocol"] == p.VERSION
    assert daemon.stop() == 0
    verified(daemon.home)
    refused = [r for r in records(daemon.home) if r.get("event") == "peer_refused"]
    assert len(refused) == 1 and refused[0]["uid"] == 65534 and refused[0]["pid"] == pid


def test_cli_start_status_stop(guard_home: Path) -> None:
    env = {**os.environ, "GUARD_HOME": str(guard_home)}

    def guard(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "guard", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    down = guard("daemon", "status", "--json")
    assert down.returncode == 3 and orjson.loads(down.stdout) == {"running": False, "last_error": None}
    started = guard("daemon", "start")
    pid = int((guard_home / "daemon.pid").read_text())
    try:
        assert started.returncode == 0 and f"pid {pid}" in started.stdout
        again = guard("daemon", "start")
        assert again.returncode == 0 and f"pid {pid}" in again.stdout  # no second daemon
        status = guard("daemon", "status", "--json")
        assert status.returncode == 0
        info = orjson.loads(status.stdout)
        assert info["running"] is True and info["pid"] == pid and info["sessions"] == []
        human = guard("daemon", "status")
        assert f"pid {pid}" in human.stdout
        stopped = guard("daemon", "stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert not socket_path(guard_home).exists()
        assert guard("daemon", "stop").stdout.strip() == "guard daemon is not running"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    verified(guard_home)


def test_ensure_running_starts_a_detached_daemon_once(guard_home: Path) -> None:
    first = ensure_running(guard_home)
    pid = first.hello()["pid"]
    try:
        second = ensure_running(guard_home)
        assert second.hello()["pid"] == pid
        second.close()
        assert os.getsid(pid) == pid  # its own session: the terminal's hangup does not reach it
        assert (guard_home / "daemon.log").exists()
        first.shutdown()
        wait_until(lambda: not socket_path(guard_home).exists(), what="the daemon to stop")
    finally:
        first.close()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_requests_after_the_daemon_dies_fail_closed(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    client = daemon.client()
    try:
        session = client.open_session(policy, workspace)["session"]
        daemon.kill()
        with pytest.raises(DaemonError):
            client.decide(session, Action(Op.WRITE, str(workspace / "a")))
        with pytest.raises(DaemonError):
            client.hello()
    finally:
        client.close()


def test_watch_streams_pending_and_resolved_approvals(daemon: Daemon, workspace: Path) -> None:
    from guard.daemon.client import watch_approvals

    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=30)
    events: list[dict[str, Any]] = []
    watching = threading.Event()

    def watch() -> None:
        for event in watch_approvals(daemon.home, timeout=20):
            events.append(event)
            watching.set()
            if event["event"] == "resolved":
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert watching.wait(20)
        with daemon.client() as agent:
            session = agent.open_session(policy, workspace)["session"]
            result: dict[str, Any] = {}
            asker = threading.Thread(target=lambda: result.update(
                decision=agent.decide(session, Action(Op.RUN, "git push", argv=("git", "push")))))
            asker.start()
            try:
                [pending] = wait_until(agent.approvals, what="a pending approval")
                agent.approve(pending["approval"], by="carol")
            finally:
                asker.join(timeout=30)
    finally:
        watcher.join(timeout=30)
    assert [e["event"] for e in events] == ["snapshot", "pending", "resolved"]
    assert events[0]["approvals"] == []
    assert events[1]["approval"]["approval"] == pending["approval"]
    assert events[2]["verdict"] == "allow" and events[2]["by"] == "carol"


class InProcess:
    """A real daemon served on a background thread's event loop, for tests that need small limits."""

    def __init__(self, home: Path, limits: Any) -> None:
        from guard.daemon.server import Daemon as Service

        self.service = Service(home, limits=limits)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.service.serve(ready=self.ready.set))
        except BaseException as exc:
            self.error = exc
            self.ready.set()
        finally:
            self.loop.close()

    def __enter__(self) -> InProcess:
        self.thread.start()
        assert self.ready.wait(20) and self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.service.request_shutdown)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def raw_connect(home: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(20)
    sock.connect(str(socket_path(home)))
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_line_left_unfinished_is_answered_and_closed(guard_home: Path) -> None:
    from guard.daemon.server import Limits

    with InProcess(guard_home, Limits(line_timeout=0.3, tick_interval=0.05)):
        with raw_connect(guard_home) as sock:
            sock.sendall(b'{"v": 1, "id": 1, "op": "hel')
            reply = orjson.loads(read_all(sock))  # returns once the daemon gave up on the line
        assert reply["error"]["code"] == p.BAD_REQUEST and "not finished" in reply["error"]["message"]
        with DaemonClient.connect(guard_home) as client:
            assert client.hello()["protocol"] == p.VERSION


def test_an_idle_connection_without_a_session_is_closed(guard_home: Path) -> None:
    from guard.daemon.server import Limits

    with InProcess(guard_home, Limits(idle_timeout=0.3, tick_interval=0.05)), raw_connect(guard_home) as sock:
        assert read_all(sock) == b""  # EOF: the daemon closed it


def test_blank_lines_do_not_keep_an_idle_connection(guard_home: Path) -> None:
    from guard.daemon.server import Limits

    with InProcess(guard_home, Limits(idle_timeout=0.3, tick_interval=0.05)), raw_connect(guard_home) as sock:
        sock.settimeout(0.05)
        closed = False
        for _ in range(400):  # bounded (about 20 s); the daemon closes it after 0.3 s without a request
            try:
                sock.sendall(b"\n")
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed


def test_a_failing_ticker_is_reported_and_fails_closed(guard_home: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Fault injection: the writer's tick raises something that is not a GuardError (a bug). The daemon
    must not go on silently without checkpoints: it says so to the session and stops."""
    from guard.daemon.server import Limits

    caplog.set_level(logging.ERROR, logger="guard.daemon.server")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    policy = write_policy(tmp_path / "policy.yaml")
    daemon = InProcess(guard_home, Limits(tick_interval=0.05))
    with daemon, DaemonClient.connect(guard_home) as client:
        session = client.open_session(policy, workspace)["session"]

        def boom() -> None:
            raise RuntimeError("boom")

        daemon.service._audit.tick = boom
        with pytest.raises(DaemonError) as failure:
            for _ in range(2000):  # bounded: the next tick (50 ms) fails
                client.record(session, {"type": "decision", "action": {"op": "write", "target": str(workspace)},
                                        "decision": {"verdict": "allow", "rule_id": "workspace", "reason": "ok",
                                                     "audit_only": False}})
                daemon.thread.join(timeout=0.01)
        assert "sealing the audit trail failed: RuntimeError: boom" in failure.value.message
        daemon.thread.join(timeout=30)
    assert isinstance(daemon.error, DaemonError) and "boom" in daemon.error.message
    assert "audit checkpoint failed" in caplog.text
    report = verify_log(log_dir(guard_home), Keyring(guard_home).root().public)
    assert not report.tampered


def test_a_peer_that_never_reads_is_dropped_without_hurting_others(guard_home: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from guard.daemon.server import Limits

    caplog.set_level(logging.WARNING, logger="guard.daemon.server")

    with InProcess(guard_home, Limits(max_buffered=64 << 10)):
        hog = raw_connect(guard_home)
        try:
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            request = p.request_line(1, "status", {})
            dropped = False
            for _ in range(200_000):  # bounded: the daemon drops us long before
                try:
                    hog.sendall(request * 64)
                except (BrokenPipeError, ConnectionResetError):
                    dropped = True
                    break
            assert dropped
            assert "does not read its replies" in caplog.text
            with DaemonClient.connect(guard_home) as client:
                assert client.hello()["protocol"] == p.VERSION
        finally:
            hog.close()


def test_in_flight_requests_per_connection_are_capped(guard_home: Path, workspace: Path) -> None:
    from guard.daemon.server import Limits

    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=30)
    with InProcess(guard_home, Limits(max_inflight=3)), DaemonClient.connect(guard_home) as client:
        session = client.open_session(policy, workspace)["session"]
        ask = {"session": session, "action": {"op": "run", "target": "git push", "argv": ["git", "push"]}}
        with raw_connect(guard_home) as sock:
            # the raw connection does not own the session, so it is kept alive only by its requests
            sock.sendall(b"".join(p.request_line(i, "decide", ask) for i in range(4)))
            buffer = b""
            while b"\n" not in buffer:
                buffer += sock.recv(65536)
            reply = orjson.loads(buffer.split(b"\n")[0])
            assert reply["id"] == 3 and reply["error"]["code"] == p.BUSY
            for pending in client.approvals():
                client.deny(pending["approval"])


def test_stopping_denies_pending_asks_and_marks_open_sessions_interrupted(daemon: Daemon,
                                                                        workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml", ask_timeout=60)
    with daemon.client() as client:
        session = client.open_session(policy, workspace)["session"]
        result: dict[str, Any] = {}
        asker = threading.Thread(target=lambda: result.update(
            decision=client.decide(session, Action(Op.RUN, "git push", argv=("git", "push")))))
        asker.start()
        try:
            wait_until(client.approvals, what="a pending approval")
            assert daemon.stop() == 0
        finally:
            asker.join(timeout=30)
        assert result["decision"].verdict is Verdict.DENY
        assert result["decision"].reason == "the daemon is shutting down"
    verified(daemon.home)
    [end] = [r for r in records(daemon.home) if r.get("session") == session and r.get("event") == "end"]
    assert end["status"] == "interrupted" and end["counts"] == {"allowed": 0, "denied": 1, "asked": 1}


def test_session_policy_is_compiled_with_the_clients_variables(daemon: Daemon, workspace: Path,
                                                               tmp_path: Path) -> None:
    """The daemon's own HOME is not the client's: `~` and `${env:NAME}` must mean what they meant when
    the client built its sandbox from the same policy."""
    client_home = tmp_path / "client-home"
    policy = workspace.parent / "env-policy.yaml"
    policy.write_text(
        "version: 1\nname: env-test\n"
        "rules:\n"
        "  - {id: keys, deny: [read], paths: ['~/.ssh/**']}\n"
        "  - {id: data, allow: [read], paths: ['${env:DATA_DIR}/**']}\n")
    with daemon.client() as client:
        session = client.open_session(policy, workspace,
                                      env={"HOME": str(client_home), "DATA_DIR": "/srv/data"})["session"]
        key = client.decide(session, Action(Op.READ, str(client_home / ".ssh" / "id_rsa")))
        data = client.decide(session, Action(Op.READ, "/srv/data/x.csv"))
        assert (key.verdict, key.rule_id) == (Verdict.DENY, "keys")
        assert (data.verdict, data.rule_id) == (Verdict.ALLOW, "data")
        with pytest.raises(DaemonError, match="env"):
            client.request("session.open", {"policy": str(policy), "workspace": str(workspace),
                                            "env": {"HOME": 3}})


def test_record_batch_is_all_or_nothing_and_names_the_bad_event(daemon: Daemon, workspace: Path) -> None:
    policy = write_policy(workspace.parent / "policy.yaml")
    good = {"type": "decision", "action": {"op": "write", "target": str(workspace / "a.txt")},
            "decision": {"verdict": "allow", "rule_id": "workspace", "reason": "ok", "audit_only": False}}
    bad = {**good, "decision": {**good["decision"], "verdict": "maybe"}}
    with daemon.client() as client:
        session = client.open_session(policy, workspace)["session"]
        with pytest.raises(DaemonError, match=r"events\[1\]"):
            client.record_batch(session, [good, bad, good])
        with pytest.raises(DaemonError, match="at most 1000"):
            client.record_batch(session, [good] * 1001)
        assert client.record_batch(session, [good, good, good]) == 3
        closed = client.close_session(session, exit_status=0)
        assert closed["counts"] == {"allowed": 3, "denied": 0, "asked": 0}
    mine = [r for r in records(daemon.home) if r.get("session") == session and r["type"] == "decision"]
    assert len(mine) == 3 and all(r["source"] == "client" for r in mine)
    assert daemon.stop() == 0
    verified(daemon.home)
