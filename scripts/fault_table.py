"""Re-measure the fault table of issue 8: busy writer sessions, one fault, files on disk vs the trail.

Each scenario starts SESSIONS `guard run`s whose agents create numbered files, injects the fault once 300
files per session exist, waits for every `guard run` and for the daemon to take every spool, then counts
files without an allowed `write` record of their session, and runs `guard audit verify`. Everything lives
in a scratch directory with its own HOME and GUARD_HOME; daemons are stopped by pid at the end.

    python scripts/fault_table.py                # every scenario once
    python scripts/fault_table.py kill-daemon kill-daemon stop-daemon
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

GUARD = [sys.executable, "-m", "guard"]
WRITER = ("import os, sys\nout, n = sys.argv[1], int(sys.argv[2])\nfor i in range(n):\n"
          "    open(os.path.join(out, f'f{i:06d}'), 'w').close()\n")
SCENARIOS = ("kill-daemon", "stop-daemon", "sigstop-daemon-30s", "sigstop-daemon-past-stop", "kill-guard-run")


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def _daemon_pid(home: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int((home / "daemon.pid").read_text().strip() or 0)
        if pid and psutil.pid_exists(pid):
            return pid
    return None


def _trail(home: Path) -> list[dict[str, Any]]:
    records = []
    for seg in sorted((home / "log").glob("seg-*.jsonl")):
        for line in seg.read_bytes().split(b"\n"):
            with contextlib.suppress(orjson.JSONDecodeError):
                if line:
                    records.append(orjson.loads(line))
    return records


def scenario(fault: str, sessions: int, files: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="guard-faults-"))
    home = root / "guard-home"
    env = {**os.environ, "GUARD_HOME": str(home), "HOME": str(root / "home")}
    if fault == "sigstop-daemon-past-stop":
        env.update(GUARD_RECORD_PAUSE_AFTER="2", GUARD_RECORD_STOP_AFTER="5")
    procs: list[subprocess.Popen[bytes]] = []
    outs: list[Path] = []
    daemons: set[int] = set()
    try:
        for i in range(sessions):
            project = root / "home" / f"project{i}"
            out = project / "out"
            out.mkdir(parents=True)
            outs.append(out)
            (project / "writer.py").write_text(WRITER)  # in the workspace: the sandbox's /tmp is its own
            argv = ["/usr/bin/python3", str(project / "writer.py"), str(out), str(files)]
            procs.append(subprocess.Popen([*GUARD, "run", "--", *argv], cwd=project, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: sum(len(os.listdir(o)) for o in outs) >= 300 * sessions, 120, "the agents to start")
        pid = _wait(lambda: _daemon_pid(home), 30, "the daemon")
        daemons.add(pid)
        rss_before = [psutil.Process(p.pid).memory_info().rss >> 20 for p in procs]
        rss_stopped: list[int] = []
        if fault == "kill-daemon":
            os.kill(pid, signal.SIGKILL)
        elif fault == "stop-daemon":
            subprocess.run([*GUARD, "daemon", "stop"], env=env, capture_output=True, timeout=60, check=False)
        elif fault.startswith("sigstop-daemon"):
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(30)  # the fault itself: the daemon stays stopped this long
                alive = [p for p in procs if p.poll() is None]
                rss_stopped = [psutil.Process(p.pid).memory_info().rss >> 20 for p in alive]
            finally:
                os.kill(pid, signal.SIGCONT)
        elif fault == "kill-guard-run":
            for proc in procs:
                proc.kill()
        for proc in procs:
            proc.wait(timeout=300)
        daemons.add(_wait(lambda: _daemon_pid(home), 30, "a daemon after the fault"))
        _wait(lambda: not list((home / "spool").glob("*.jsonl")), 60, "every spool to be ingested")
        for pid in daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        _wait(lambda: not any(psutil.pid_exists(p) for p in daemons), 30, "the daemons to stop")
        records = _trail(home)
        written = {r["action"]["target"] for r in records if r.get("type") == "decision"
                   and r["action"]["op"] == "write" and r["decision"]["verdict"] == "allow"}
        on_disk = {str(o / name) for o in outs for name in os.listdir(o)}
        verify = subprocess.run([*GUARD, "audit", "verify", "--json"], env=env, capture_output=True,
                                text=True, timeout=300, check=False)
        return {"fault": fault, "files": len(on_disk), "unrecorded": len(on_disk - written),
                "exits": [p.returncode for p in procs],
                "ends": [r.get("status") for r in records if r.get("type") == "session"
                         and r.get("event") == "end" and r.get("session") != "daemon"],
                "verify_exit": verify.returncode, "rss_mb_before": rss_before,
                "rss_mb_while_stopped": rss_stopped}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for pid in daemons:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                process.send_signal(signal.SIGCONT)
                process.kill()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("faults", nargs="*", metavar="FAULT",
                    help=f"scenarios (default: all): {', '.join(SCENARIOS)}")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--files", type=int, default=8000, help="files each agent creates")
    args = ap.parse_args()
    unknown = sorted(set(args.faults) - set(SCENARIOS))
    if unknown:  # argparse's `choices` rejects an empty list of nargs="*" on Python 3.11
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    for fault in args.faults or SCENARIOS:
        print(json.dumps(scenario(fault, args.sessions, args.files)), flush=True)


if __name__ == "__main__":
    main()
