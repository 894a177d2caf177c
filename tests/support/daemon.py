"""A daemon of the test's own, and bounded waiting: shared by the tests that drive `guard run` for real."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from guard.daemon.client import DaemonClient, DaemonNotRunning

GUARD = [sys.executable, "-m", "guard"]


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition",
               interval: float = 0.02) -> Any:
    """Poll a condition, bounded: its first truthy value, or the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


def daemon_answers(home: Path) -> bool:
    try:
        with DaemonClient.connect(home, timeout=5) as client:
            client.hello()
        return True
    except DaemonNotRunning:
        return False


@contextmanager
def running_daemon(home: Path, env: Mapping[str, str] | None = None,
                   answering: Callable[[Path], bool] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`guard daemon run` as our own child (its output in `home/daemon.log`), answering before we go on,
    stopped (then killed) by pid after. `env`: the daemon's whole environment (default: ours);
    `answering`: when it counts as up (default: a client of this version can talk to it)."""
    up = answering or daemon_answers
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = open(home / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([*GUARD, "daemon", "run"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=None if env is None else dict(env))
    finally:
        log.close()
    try:
        wait_until(lambda: proc.poll() is not None or up(home), what="the daemon")
        assert proc.poll() is None, (f"daemon exited with {proc.returncode}: "
                                     f"{(home / 'daemon.log').read_text(errors='replace')[-2000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        stop_other_daemons_on(home)


def stop_other_daemons_on(home: Path) -> None:
    """Stop, by pid, every `guard daemon run` whose GUARD_HOME is `home` (one a `guard run` started on its own
    after ours stopped, say on a full disk): a test leaves no process behind. Only processes whose environment
    names this very home are touched."""
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "daemon" not in cmdline or "run" not in cmdline:
            continue
        try:
            if process.environ().get("GUARD_HOME") != str(home):
                continue
            process.terminate()
            try:
                process.wait(timeout=20)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def stop_daemon_of(home: Path) -> None:
    """Stop a daemon `guard run` started on its own (we hold no Popen for it): by the pid it reports."""
    try:
        with DaemonClient.connect(home, timeout=5) as client:
            pid = int(client.hello()["pid"])
    except DaemonNotRunning:
        return
    subprocess.run([*GUARD, "daemon", "stop"], capture_output=True, timeout=30, check=False)
    if psutil.pid_exists(pid):
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
