"""Re-measure the fault table of issue 8: busy writer sessions, one fault, files on disk vs the trail.

Each scenario starts SESSIONS `guard run`s whose agents create numbered files, injects the fault once 300
files per session exist, waits for every `guard run` and for the daemon to take every spool, then counts
files without an allowed `write` record of their session, checks the trail's seqs are 0..n-1 (none reused
or skipped), and runs `guard audit verify` (exit 0 valid, 3 unsealed tail; 1 would be TAMPERED).
Everything lives in a scratch directory with its own HOME and GUARD_HOME; processes are stopped by pid.

The faults, one per row of the issue's table:
  kill-daemon               SIGKILL the daemon mid-session (run it 10 times for the issue's x10)
  stop-daemon               `guard daemon stop` (SIGTERM, the upgrade step) mid-session
  kill-guard-run            SIGKILL every `guard run`
  sigstop-daemon-30s        SIGSTOP the daemon for 30 s (the agents pause, then go on)
  sigstop-daemon-past-stop  the same past GUARD_RECORD_STOP_AFTER=5 s (the sandboxes are stopped)
  full-disk                 GUARD_HOME on a 2 MiB tmpfs filled mid-session (root only), then space returns
  large-trail-restart       a trail of --trail-records (2.5 M) records, the daemon restarted mid-session
  old-daemon                a daemon of protocol 1 answers: every `guard run` must refuse (125) before
                            anything runs; stopped, the next runs work
  idle-connections          1,000 idle connections to the daemon, then the sessions
  non-utf8                  file names and an argv word that are not UTF-8, and a denied write to ~/.bashrc

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from guard.home import socket_path  # noqa: E402
from guard.text import as_bytes  # noqa: E402

GUARD = [sys.executable, "-m", "guard"]
WRITER = ("import os, sys\nout, n = sys.argv[1], int(sys.argv[2])\nfor i in range(n):\n"
          "    open(os.path.join(out, f'f{i:06d}'), 'w').close()\n")
# names that are not UTF-8, and the repro: a denied append to ~/.bashrc after them
WRITER_BYTES = ("import os, sys\nout, n = os.fsencode(sys.argv[1]), int(sys.argv[2])\nfor i in range(n):\n"
                "    open(os.path.join(out, b'f%06d\\xff\\xfe' % i), 'w').close()\n"
                "try:\n    open(os.path.expanduser('~/.bashrc'), 'a')\nexcept OSError:\n    pass\n")
SCENARIOS = ("kill-daemon", "stop-daemon", "kill-guard-run", "sigstop-daemon-30s", "sigstop-daemon-past-stop",
             "full-disk", "large-trail-restart", "old-daemon", "idle-connections", "non-utf8")
IDLER = """
import socket, sys
path, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b'{"v": 2, "id": 1, "op": "hello"}\\n')
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


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


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _ready(env: dict[str, str]) -> bool:
    done = subprocess.run([*GUARD, "daemon", "status"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    return done.returncode == 0 and "running" in done.stdout


def _trail(home: Path) -> list[dict[str, Any]]:
    records = []
    for seg in sorted((home / "log").glob("seg-*.jsonl")):
        for line in seg.read_bytes().split(b"\n"):
            with contextlib.suppress(orjson.JSONDecodeError):
                if line:
                    records.append(orjson.loads(line))
    return records


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True,
                   capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where: Path, leave: int) -> Path:
    st = os.statvfs(where)
    filler = where / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))
    return filler


def _big_trail(home: Path, n: int) -> None:
    from guard.audit import AuditWriter, Keyring

    Keyring(home).init(now=time.time())
    sample = {"type": "session", "session": "filler", "event": "note", "n": 1}
    with AuditWriter(home, sync=False) as w:
        for _ in range(n):
            w.append(sample)


def scenario(fault: str, sessions: int, files: int, trail_records: int) -> dict[str, Any]:
    if fault == "full-disk" and os.geteuid() != 0:
        return {"fault": fault, "skipped": "mounting a small tmpfs needs root"}
    root = Path(tempfile.mkdtemp(prefix="guard-faults-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        home = root / "guard-home"
        if fault == "full-disk":
            home = stack.enter_context(_tmpfs(root / "fs", "2m")) / "home"
        row = _scenario(fault, root, home, sessions, files, trail_records, stack)
    return row


def _scenario(fault: str, root: Path, home: Path, sessions: int, files: int, trail_records: int,
              stack: contextlib.ExitStack) -> dict[str, Any]:
    env = {**os.environ, "GUARD_HOME": str(home), "HOME": str(root / "home")}
    if fault == "sigstop-daemon-past-stop":
        env.update(GUARD_RECORD_PAUSE_AFTER="2", GUARD_RECORD_STOP_AFTER="5")
    procs: list[subprocess.Popen[bytes]] = []
    outs: list[Path] = []
    daemons: set[int] = set()
    extra: dict[str, Any] = {}
    idlers: list[subprocess.Popen[str]] = []
    own_daemons: list[subprocess.Popen[bytes]] = []  # started here: reaped here, or they stay zombies

    def cleanup() -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        for idler in idlers:
            idler.kill()
            idler.wait(timeout=30)
        for pid in daemons | {p for p in [_daemon_pid(home)] if p}:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                process.send_signal(signal.SIGCONT)
                process.kill()
    stack.callback(cleanup)

    def start_sessions(writer: str = WRITER, argv_extra: tuple[bytes, ...] = ()) -> None:
        for i in range(sessions):
            project = root / "home" / f"project{i}"
            out = project / "out"
            out.mkdir(parents=True, exist_ok=True)
            outs.append(out)
            (project / "writer.py").write_text(writer)  # in the workspace: the sandbox's /tmp is its own
            argv: list[str | bytes] = ["/usr/bin/python3", str(project / "writer.py"), str(out), str(files),
                                       *argv_extra]
            procs.append(subprocess.Popen([*GUARD, "run", "--", *argv], cwd=project, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    if fault == "large-trail-restart":
        t = time.monotonic()
        _big_trail(home, trail_records)
        extra["trail_records"] = trail_records
        extra["trail_fill_s"] = round(time.monotonic() - t, 1)
    if fault in ("old-daemon", "idle-connections"):
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        daemon_env = {**env, "GUARD_TEST_DAEMON_PROTOCOL": "1"} if fault == "old-daemon" else env
        log = open(home / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
        daemon = subprocess.Popen([*GUARD, "daemon", "run"], stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=daemon_env)
        log.close()
        daemons.add(daemon.pid)
        own_daemons.append(daemon)
        _wait(lambda: socket_path(home).exists(), 60, "the daemon's socket")
        if fault == "old-daemon":
            start_sessions()
            for proc in procs:
                proc.wait(timeout=120)
            extra["refused_exits"] = [p.returncode for p in procs]
            extra["refused_files"] = sum(len(os.listdir(o)) for o in outs)
            extra["sessions_opened_by_old"] = len([r for r in _trail(home) if r.get("event") == "start"])
            subprocess.run([*GUARD, "daemon", "stop"], env=env, capture_output=True, timeout=60, check=False)
            daemon.wait(timeout=60)
            procs.clear()
            outs.clear()
        else:
            sock = socket_path(home)
            for _ in range(40):  # 40 processes x 25 idle connections
                idlers.append(subprocess.Popen([sys.executable, "-c", IDLER, str(sock), "25"],
                                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            extra["idle_connections"] = sum(1 for idler in idlers if idler.stdout is not None
                                            and idler.stdout.readline() == "ready\n") * 25
    if fault == "non-utf8":
        start_sessions(WRITER_BYTES, (b"argv-\xff",))
    else:
        start_sessions()
    _wait(lambda: sum(len(os.listdir(o)) for o in outs) >= 300 * sessions, 120, "the agents to start")
    pid = _wait(lambda: _daemon_pid(home), 30, "the daemon")
    daemons.add(pid)
    rss_before = [psutil.Process(p.pid).memory_info().rss >> 20 for p in procs]
    rss_stopped: list[int] = []
    if fault == "kill-daemon":
        os.kill(pid, signal.SIGKILL)
    elif fault in ("stop-daemon", "large-trail-restart"):
        subprocess.run([*GUARD, "daemon", "stop"], env=env, capture_output=True, timeout=60, check=False)
        if fault == "large-trail-restart":  # the sessions bring a daemon back; how long until it serves
            t = time.monotonic()
            _wait(lambda: _daemon_pid(home) not in (None, pid), 120, "a new daemon")
            started = time.monotonic()
            _wait(lambda: _ready(env), 300, "the new daemon to be ready")
            extra["new_daemon_after_s"] = round(started - t, 2)  # the sessions' reconnect backoff
            extra["new_daemon_ready_in_s"] = round(time.monotonic() - started, 2)  # its restart cost
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
    elif fault == "full-disk":
        filler = _fill(home.parent, leave=64 << 10)
    for proc in procs:
        proc.wait(timeout=600)
    if fault == "full-disk":  # space returns: a daemon must start on the trail and take the spools
        filler.unlink()
        if _daemon_pid(home) is None:
            subprocess.run([*GUARD, "daemon", "start"], env=env, capture_output=True, timeout=120,
                           check=False)
        extra["daemon_back"] = _daemon_pid(home) is not None
    daemons.add(_wait(lambda: _daemon_pid(home), 60, "a daemon after the fault"))
    _wait(lambda: not list((home / "spool").glob("*.jsonl")), 120, "every spool to be ingested")
    for idler in idlers:  # the idle peers go first: a stopping daemon waits for its connections
        idler.kill()
        idler.wait(timeout=30)
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _wait(lambda: not any(_alive(p) for p in daemons), 60, "the daemons to stop")
    for daemon in own_daemons:
        daemon.wait(timeout=10)
    records = _trail(home)
    written = {(r["session"], as_bytes(r["action"]["target"])) for r in records if r.get("type") == "decision"
               and r["action"]["op"] == "write" and r["decision"]["verdict"] == "allow"}
    written_paths = {path for _, path in written}
    on_disk = {os.path.join(os.fsencode(o), name) for o in outs for name in os.listdir(os.fsencode(o))}
    seqs = [r.get("seq") for r in records]
    verify = subprocess.run([*GUARD, "audit", "verify", "--json"], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    row = {"fault": fault, "files": len(on_disk), "unrecorded": len(on_disk - written_paths),
           "exits": [p.returncode for p in procs],
           "ends": [r.get("status") for r in records if r.get("type") == "session"
                    and r.get("event") == "end" and r.get("session") != "daemon"],
           "end_reasons": sorted({str(r.get("reason")) for r in records if r.get("type") == "session"
                                  and r.get("event") == "end" and r.get("reason")}),
           "seqs_contiguous": seqs == list(range(len(seqs))), "verify_exit": verify.returncode,
           "rss_mb_before": rss_before, "rss_mb_while_stopped": rss_stopped, **extra}
    if fault == "non-utf8":
        row["bashrc_denials_recorded"] = len([r for r in records if r.get("type") == "decision"
                                              and as_bytes(r["action"]["target"]).endswith(b"/.bashrc")
                                              and r["decision"]["verdict"] == "deny"])
        row["argv_recorded"] = any(b"argv-\xff" in as_bytes(a) for r in records if r.get("event") == "start"
                                   for a in r.get("argv", ()))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("faults", nargs="*", metavar="FAULT",
                    help=f"scenarios (default: all): {', '.join(SCENARIOS)}")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--files", type=int, default=8000, help="files each agent creates")
    ap.add_argument("--trail-records", type=int, default=2_500_000, help="for large-trail-restart")
    args = ap.parse_args()
    unknown = sorted(set(args.faults) - set(SCENARIOS))
    if unknown:  # argparse's `choices` rejects an empty list of nargs="*" on Python 3.11
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    for fault in args.faults or SCENARIOS:
        try:
            row = scenario(fault, args.sessions, args.files, args.trail_records)
        except (SystemExit, Exception) as exc:  # one scenario's failure is its row, the others still run
            row = {"fault": fault, "failed": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
