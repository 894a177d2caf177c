"""The agent against the guard itself: signal, trace or read the supervisor and the daemon, talk to the
daemon's socket, and read or rewrite the policy, the keys and the log.

The `guard run` process exports its own pid as $GUARD_PID before it execs (a shell wrapper: `exec` keeps
the pid), so the attack knows exactly whom to hit; the daemon's pid comes from `guard daemon status`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from support.attacks import SYSCALL

pytestmark = pytest.mark.timeout(120)

EXPORT_PID = ["/bin/sh", "-c", 'GUARD_PID=$$; export GUARD_PID; exec "$@"', "guard-wrapper"]



def _daemon_pid(world) -> int:
    status = world.daemon_status()
    if not status.get("running"):
        world.guard("daemon", "start")
        status = world.daemon_status()
    assert status.get("running"), status
    return int(status["pid"])


@pytest.fixture
def sleeper(world):
    """A sacrificial process outside: proves each attack works bare without hurting the real guard."""
    proc = subprocess.Popen(["sleep", "120"], env=world.env)
    world.track(proc.pid)
    yield proc
    proc.kill()
    proc.wait()


def test_kill_the_guard_run_process(world, sleeper):
    attack = world.sh('kill -9 "$TARGET" && echo KILLED')
    bare = world.bare_run(attack, env={"TARGET": str(sleeper.pid)})
    assert "KILLED" in bare.stdout and sleeper.wait(timeout=10) == -9, bare
    run = world.guard_run(world.sh('kill -9 "$GUARD_PID" && echo KILLED; kill -9 "$PPID"; exit 7'),
                          prefix=EXPORT_PID)
    assert run.returncode == 7 and "KILLED" not in run.stdout, run
    assert run.summary is not None and run.summary["exit_status"] == 7, "the guard must live to report"


def test_kill_the_daemon(world, sleeper):
    pid = _daemon_pid(world)
    attack = world.sh('kill -9 "$TARGET" && echo KILLED; kill -TERM "$TARGET"; exit 0')
    bare = world.bare_run(attack, env={"TARGET": str(sleeper.pid)})
    assert "KILLED" in bare.stdout, bare
    run = world.guard_run(attack, env={"TARGET": str(pid)})
    assert "KILLED" not in run.stdout, run
    assert world.pid_alive(pid) and _daemon_pid(world) == pid


def test_ptrace_the_guard_and_the_daemon(world, sleeper):
    attack = world.py(SYSCALL + "for pid in os.environ['TARGETS'].split():\n"
                      "    if call(101, 16, int(pid), 0, 0) == 0:\n"
                      "        os.waitpid(int(pid), 0); call(101, 17, int(pid), 0, 0)\n")
    bare = world.bare_run(attack, env={"TARGETS": str(sleeper.pid)})
    assert bare.stdout.startswith("OK 0"), bare
    daemon = _daemon_pid(world)
    run = world.guard_run(world.py(SYSCALL + "for pid in (os.environ['GUARD_PID'], os.environ['DAEMON']):\n"
                                   "    call(101, 16, int(pid), 0, 0)\n"),
                          env={"DAEMON": str(daemon)}, prefix=EXPORT_PID)
    assert run.stdout.split("\n")[:2] == ["ERR EPERM", "ERR EPERM"], run


def _first_readable_mapping(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            addrs, perms = line.split()[:2]
            if perms.startswith("r"):
                lo, hi = (int(x, 16) for x in addrs.split("-"))
                return lo, min(64, hi - lo)
    raise AssertionError(f"no readable mapping in /proc/{pid}/maps")


def test_process_vm_readv_of_the_daemon(world):
    pid = _daemon_pid(world)
    addr, size = _first_readable_mapping(pid)
    attack = world.py(
        SYSCALL +
        "class iov(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        f"buf = ctypes.create_string_buffer({size})\n"
        f"local, remote = iov(ctypes.addressof(buf), {size}), iov({addr}, {size})\n"
        f"call(310, {pid}, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)\n")
    bare = world.bare_run(attack)
    assert bare.stdout.strip() == f"OK {size}", bare
    run = world.guard_run(attack)
    assert run.stdout.strip() == "ERR EPERM", run


def test_connect_to_the_daemon_socket(world):
    _daemon_pid(world)
    attack = world.py(
        "import os, socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.connect(os.environ['GH'] + '/daemon.sock')\n"
        "s.sendall(b'{\"v\": 1, \"id\": 1, \"op\": \"hello\"}\\n')\n"
        "print('REPLY', s.recv(4096).decode())\n")
    bare = world.bare_run(attack, env={"GH": str(world.gh)})
    assert '"ok": true' in bare.stdout.replace('"ok":true', '"ok": true'), bare
    run = world.guard_run(attack, env={"GH": str(world.gh)})
    assert run.returncode != 0 and "REPLY" not in run.stdout, run
    assert "FileNotFoundError" in run.stderr or "PermissionError" in run.stderr, run


def _guard_files(world) -> list[str]:
    """The lasting files of $GUARD_HOME; session spools come and go (test_forge_or_drop_records_in_the_session_spool)."""
    return sorted(os.path.join(d, f) for d, _, files in os.walk(world.gh) for f in files
                  if not f.endswith(".sock") and os.path.basename(d) != "spool")


def _digest(paths: list[str]) -> dict[str, str]:
    out = {}
    for p in paths:
        with open(p, "rb") as f:
            out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_read_and_rewrite_keys_and_log(world):
    """Everything in $GUARD_HOME: keys, log segments, checkpoints. Neither listed, read nor written."""
    _daemon_pid(world)
    files = _guard_files(world)
    assert any("key" in f for f in files) and any("log" in f for f in files), files
    attack = world.sh('ls -R "$GH"; for f in $FILES; do head -c 64 "$f" | od -c | head -1; '
                      'echo "$MARK" >> "$f" && echo "WROTE $f"; done; rm -r "$GH/log" && echo REMOVED')
    before = _digest(files)
    mark = "TAMPERED-" + world.ssh_secret[-10:]  # via the environment, so the recorded argv never holds it
    run = world.guard_run(attack, env={"GH": str(world.gh), "FILES": " ".join(files), "MARK": mark})
    assert "WROTE" not in run.stdout and "REMOVED" not in run.stdout, run
    for f in files:
        assert os.path.basename(f) not in run.stdout, f"{f} is visible inside: {run.stdout}"
    after = _digest(files)
    assert {f: after[f] for f in files if "log" not in f} == {f: before[f] for f in files if "log" not in f}
    for f in files:  # the log grows (this session), but never by the attacker's bytes
        with open(f, "rb") as fh:
            assert mark.encode() not in fh.read()
    # and the attack is real: the same loop run bare rewrites a copy of the tree
    copy = world.root / "gh-copy"
    subprocess.run(["cp", "-a", str(world.gh), str(copy)], check=True)
    copied = [f.replace(str(world.gh), str(copy), 1) for f in files]
    bare = world.bare_run(attack, env={"GH": str(copy), "FILES": " ".join(copied), "MARK": mark})
    assert bare.stdout.count("WROTE") == len(files) and "REMOVED" in bare.stdout, bare


def test_forge_or_drop_records_in_the_session_spool(world):
    """The session's spool holds records the daemon has not signed yet: an agent that could append to it
    would forge decisions, and one that could truncate or remove it would drop them before they are signed."""
    forged = "/forged-" + world.ssh_secret[-10:]
    line = json.dumps({"type": "decision", "action": {"op": "write", "target": forged},
                       "decision": {"verdict": "allow"}, "n": 999})
    attack = world.sh('for f in "$GH"/spool/*.jsonl; do echo "$LINE" >> "$f" && echo "WROTE $f"; '
                      ': > "$f" && echo "TRUNCATED $f"; rm "$f" && echo "REMOVED $f"; done')
    run = world.guard_run(attack, env={"GH": str(world.gh), "LINE": line})
    assert "WROTE" not in run.stdout and "TRUNCATED" not in run.stdout and "REMOVED" not in run.stdout, run
    records = world.records(run.session)
    assert forged not in str(records) and records[-1]["event"] == "end", records[-1]
    # and the attack is real: bare, against a live-looking spool in a copy of the state directory
    copy = world.root / "gh-spool-copy"
    (copy / "spool").mkdir(parents=True)
    (copy / "spool" / "0123456789.jsonl").write_text('{"type":"decision","n":1}\n')
    bare = world.bare_run(attack, env={"GH": str(copy), "LINE": line})
    assert all(word in bare.stdout for word in ("WROTE", "TRUNCATED", "REMOVED")), bare


def test_read_and_rewrite_the_policy(world):
    original = world.fast_ask.read_text()
    attack = world.sh('cat "$POLICY"; printf "rules: []\\nmode: audit\\n" >> "$POLICY" && echo WROTE')
    bare = world.bare_run(attack, env={"POLICY": str(world.fast_ask)})
    assert "WROTE" in bare.stdout and "ask_timeout" in bare.stdout, bare
    world.fast_ask.write_text(original)
    run = world.guard_run(attack, policy=world.fast_ask, env={"POLICY": str(world.fast_ask)})
    assert "WROTE" not in run.stdout and "ask_timeout" not in run.stdout, run
    assert world.fast_ask.read_text() == original


def test_zz_trail_verifies(world):
    world.check_trail()
    assert sys.executable  # the trail above was written by this interpreter's guard
