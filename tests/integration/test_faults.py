"""Fault injection: nothing acts unrecorded when the daemon or `guard run` is killed, stopped or restarted.

Each test runs a real `guard run` whose agent creates numbered files as fast as it can, disturbs the
daemon or `guard run` itself mid-run with a real signal, lets the daemon come back, and then counts: every
file on disk must have an allowed `write` decision of the session in the trail (0 unrecorded actions),
the session must end in the trail saying how, and `guard audit verify` must exit 0 (or 3 for an unsealed
tail, never 1). Every process started is stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from support.daemon import GUARD, daemon_answers, wait_until

from guard.audit.segments import list_segments
from guard.spool import list_spools

# The agent's work, paced to last at least PACE_S whatever the machine's speed: a fault must find it still
# writing, past the pause threshold (the compiled fast path writes 12,000 files in well under a second).
WRITER = r"""
import os, sys, time
out, n, pace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
start = time.monotonic()
for i in range(n):
    with open(os.path.join(out, f"f{i:06d}"), "w"):
        pass
    ahead = start + pace * (i + 1) / n - time.monotonic()
    if ahead > 0.005:
        time.sleep(ahead)
print("done", flush=True)
"""
FILES = 12_000  # notified write-opens: many records in flight when the fault comes
PACE_S = 6.0  # at least this long, so that a 2 s pause threshold is crossed mid-run
STARTED = 300  # files on disk before the fault is injected


@dataclass
class Run:
    """One `guard run` of the writer workload, and every daemon pid seen, for cleanup by pid."""

    home: Path
    out: Path
    proc: subprocess.Popen[bytes]
    stderr: Path
    daemons: set[int] = field(default_factory=set)

    def files(self) -> int:
        return len(os.listdir(self.out))

    def daemon_pid(self) -> int:
        def answer() -> int | None:
            try:
                pid = int((self.home / "daemon.pid").read_text().strip() or 0)
            except (OSError, ValueError):
                return None
            return pid if pid and daemon_answers(self.home) else None

        pid: int = wait_until(answer, timeout=30, what="a daemon answering")
        self.daemons.add(pid)
        return pid

    def wait(self, timeout: float = 90) -> int:
        return self.proc.wait(timeout=timeout)

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")


@pytest.fixture
def writer_run(isolated_home: Path, guard_home: Path, tmp_path: Path) -> Iterator[Any]:
    runs: list[Run] = []

    def start(**env: str) -> Run:
        project = isolated_home / "project"
        out = project / "out"
        out.mkdir(parents=True)
        script = project / "writer.py"  # in the workspace: the session's /tmp is its own
        script.write_text(WRITER)
        stderr = tmp_path / "guard-run.err"
        with open(stderr, "wb") as err:
            argv = [*GUARD, "run", "--", "/usr/bin/python3", str(script), str(out), str(FILES), str(PACE_S)]
            proc = subprocess.Popen(argv, cwd=project, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err)
        run = Run(guard_home, out, proc, stderr)
        runs.append(run)
        wait_until(lambda: proc.poll() is not None or run.files() >= STARTED, timeout=60,
                   what=f"the agent to create {STARTED} files")
        assert proc.poll() is None, f"guard run ended early ({proc.returncode}): {run.err()}"
        run.daemon_pid()
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=30)
        with contextlib.suppress(OSError, ValueError):
            run.daemons.add(int((guard_home / "daemon.pid").read_text().strip()))
        for pid in run.daemons:
            _stop_daemon_pid(pid)


def _stop_daemon_pid(pid: int) -> None:
    """Continue (it may be stopped), terminate, then kill: only if the pid is still a guard daemon."""
    try:
        process = psutil.Process(pid)
        if "daemon" not in process.cmdline():
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=20)
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    except psutil.NoSuchProcess:
        pass


def trail(home: Path) -> list[dict[str, Any]]:
    records = []
    for seg in list_segments(home / "log"):
        for line in seg.path.read_bytes().split(b"\n"):
            if line:
                with contextlib.suppress(orjson.JSONDecodeError):  # a torn tail is verify's business
                    records.append(orjson.loads(line))
    return records


def settle_and_count(run: Run) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Let the daemon take every spool, then: no file without its record; -> (the session's end, records)."""
    run.daemon_pid()  # a daemon answers (guard run started it again, or it was continued)
    wait_until(lambda: not list(list_spools(run.home)), timeout=60, what="every spool to be ingested")
    records = trail(run.home)
    starts = [r for r in records if r.get("type") == "session" and r.get("event") == "start"]
    assert len(starts) == 1, starts
    session = starts[0]["session"]
    mine = [r for r in records if r.get("session") == session]
    written = {r["action"]["target"] for r in mine
               if r["type"] == "decision" and r["action"]["op"] == "write"
               and r["decision"]["verdict"] == "allow" and not r["decision"].get("audit_only")}
    on_disk = {str(run.out / name) for name in os.listdir(run.out)}
    unrecorded = sorted(on_disk - written)
    assert not unrecorded, f"{len(unrecorded)} of {len(on_disk)} files have no record, e.g. {unrecorded[:3]}"
    spooled = [r["spool"] for r in mine if "spool" in r]
    assert len(spooled) == len(set(spooled)), "a spooled record was ingested twice"
    ends = [r for r in mine if r["type"] == "session" and r["event"] == "end"]
    assert len(ends) == 1, ends
    for pid in list(run.daemons):  # verify reads a quiet trail: stop the daemon first
        _stop_daemon_pid(pid)
    verify = subprocess.run([*GUARD, "audit", "verify", "--json"], capture_output=True, text=True, timeout=120)
    assert verify.returncode in (0, 3), verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["status"] in ("valid", "unsealed")
    return ends[0], mine


def test_sigkill_of_the_daemon_loses_nothing_and_the_session_goes_on(writer_run: Any) -> None:
    run: Run = writer_run()
    os.kill(run.daemon_pid(), signal.SIGKILL)
    assert run.wait() == 0, run.err()
    assert run.files() == FILES
    end, mine = settle_and_count(run)
    assert end["status"] == "closed" and end["exit_status"] == 0
    assert "resume" in [r["event"] for r in mine if r["type"] == "session"]
    assert "reconnected to the daemon" in run.err()


def test_guard_daemon_stop_mid_session_loses_nothing(writer_run: Any) -> None:
    run: Run = writer_run()
    stop = subprocess.run([*GUARD, "daemon", "stop"], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert run.wait() == 0, run.err()
    assert run.files() == FILES
    end, mine = settle_and_count(run)
    assert end["status"] == "closed" and end["exit_status"] == 0
    events = [r["event"] for r in mine if r["type"] == "session"]
    assert "detached" in events and "resume" in events, events


def test_a_stopped_daemon_pauses_the_agent_until_it_answers_again(writer_run: Any) -> None:
    run: Run = writer_run(GUARD_RECORD_PAUSE_AFTER="2", GUARD_RECORD_STOP_AFTER="600")
    pid = run.daemon_pid()
    before = psutil.Process(run.proc.pid).memory_info().rss
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: "the agent is paused" in run.err(), timeout=60, what="guard run to pause the agent")
        wait_until(lambda: _writer_paused(run), timeout=30,
                   what="the agent's process to be stopped (SIGSTOP), or held with the stop pending")
        grown = psutil.Process(run.proc.pid).memory_info().rss - before
    finally:
        os.kill(pid, signal.SIGCONT)
    assert grown < 16 << 20, f"guard run grew by {grown >> 20} MB while the daemon was stopped"
    assert run.wait() == 0, run.err()
    assert "acknowledges records again" in run.err() and run.files() == FILES
    end, mine = settle_and_count(run)
    assert end["status"] == "closed", end
    events = [r["event"] for r in mine if r["type"] == "session"]
    assert "paused" in events and "resumed" in events, events


def test_a_daemon_stopped_past_every_timeout_stops_the_agent_and_the_trail_says_so(writer_run: Any) -> None:
    run: Run = writer_run(GUARD_RECORD_PAUSE_AFTER="1", GUARD_RECORD_STOP_AFTER="3")
    pid = run.daemon_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        status = run.wait()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert status != 0 and run.files() < FILES, (status, run.files())
    err = run.err()
    assert "the agent is paused" in err and "the agent was stopped" in err, err
    end, mine = settle_and_count(run)
    assert end["status"] == "stopped" and "acknowledged no record" in end["reason"], end
    events = [r["event"] for r in mine if r["type"] == "session"]
    assert "paused" in events and "stalled" in events, events


def _writer_paused(run: Run) -> bool:
    """Stopped, or held in a notification the supervisor has not answered (the filter's waits are
    killable only, so a stop is delivered when the answer comes) with SIGSTOP pending: either way it
    makes no progress. The compiled fast path fills the record window within a second, so the writer
    is usually held when the pause comes."""
    if _writer_state(run) == psutil.STATUS_STOPPED:
        return True
    pid = _writer_pid(run)
    if pid is None:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    pending = 0
    for line in status.splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            pending |= int(line.split()[1], 16)
    return bool(pending & (1 << (signal.SIGSTOP - 1)))


def _writer_pid(run: Run) -> int | None:
    for child in psutil.Process(run.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            argv = child.cmdline()
            if argv[:1] == ["/usr/bin/python3"] and argv[1:2] and argv[1].endswith("writer.py"):
                return child.pid
    return None


def _writer_state(run: Run) -> str | None:
    """The state of the agent's writer process (inside the sandbox, seen from here)."""
    for child in psutil.Process(run.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            argv = child.cmdline()
            if argv[:1] == ["/usr/bin/python3"] and argv[1:2] and argv[1].endswith("writer.py"):
                return str(child.status())  # not guard run's own processes, whose argv holds the command
    return None


def test_sigkill_of_guard_run_loses_nothing_and_the_daemon_ends_the_session(writer_run: Any) -> None:
    run: Run = writer_run()
    run.proc.kill()
    run.wait()
    end, _mine = settle_and_count(run)
    assert end["status"] == "lost" and "guard run died" in end["reason"], end
    assert run.files() < FILES


def test_sigterm_to_guard_run_reaches_the_agent_and_the_session_ends_terminated(writer_run: Any) -> None:
    run: Run = writer_run()
    run.proc.send_signal(signal.SIGTERM)
    status = run.wait()
    assert status == 128 + signal.SIGTERM, (status, run.err())  # the agent died of the forwarded SIGTERM
    end, _mine = settle_and_count(run)
    assert end["status"] == "terminated" and "SIGTERM" in end["reason"], end
    assert end["exit_status"] == 128 + signal.SIGTERM


@pytest.fixture
def full_spool_disk(guard_home: Path) -> Iterator[Path]:
    """$GUARD_HOME/spool on a 64 KiB tmpfs: the session's spool fills up after a couple of hundred records."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs this suite as root too)")
    spool = guard_home / "spool"
    spool.mkdir(parents=True, mode=0o700)
    guard_home.chmod(0o700)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(spool)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield spool
    finally:
        subprocess.run(["umount", "-l", str(spool)], capture_output=True, timeout=30, check=False)


def test_a_full_disk_under_the_spool_denies_and_stops_the_agent_and_loses_nothing(
        isolated_home: Path, guard_home: Path, tmp_path: Path, full_spool_disk: Path) -> None:
    project = isolated_home / "project"
    out = project / "out"
    out.mkdir(parents=True)
    script = project / "writer.py"  # in the workspace: the session's /tmp is its own
    script.write_text(WRITER)
    argv = [*GUARD, "run", "--", "/usr/bin/python3", str(script), str(out), str(FILES), str(PACE_S)]
    proc = subprocess.Popen(argv, cwd=project, env=dict(os.environ), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = Run(guard_home, out, proc, tmp_path / "unused")
    try:
        _, err_bytes = proc.communicate(timeout=120)
        err = err_bytes.decode(errors="replace")
        assert proc.returncode != 0 and run.files() < FILES, (proc.returncode, run.files(), err)
        # ENOSPC, or a short write when the last bytes of the disk are taken: both stop the sandbox
        assert "a record could not be written" in err, err
        assert "No space left" in err or "written only in part" in err, err
        end, _mine = settle_and_count(run)
        assert end["status"] == "stopped" and "could not be written" in end["reason"], end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        with contextlib.suppress(OSError, ValueError):
            _stop_daemon_pid(int((guard_home / "daemon.pid").read_text().strip()))
