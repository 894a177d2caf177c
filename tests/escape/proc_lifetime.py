"""The agent's process tree must not outlive or overwhelm the guard: a bounded fork bomb, and a
double-forked daemon that survives the SIGKILL of `guard run` (fail closed: the tree dies with it).

Leftovers are found from outside by a token in their command line (inner pids mean nothing outside the
sandbox's pid namespace); the token travels in the environment so only the intended process carries it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.timeout(120)

BOMB = (
    "import os, sys, time\n"
    "n = int(sys.argv[2])\n"
    "made = 0\n"
    "for _ in range(n):\n"
    "    try:\n"
    "        pid = os.fork()\n"
    "    except OSError:\n"
    "        break\n"
    "    if pid == 0:\n"
    "        null = os.open('/dev/null', os.O_RDWR)\n"
    "        os.dup2(null, 1); os.dup2(null, 2)\n"
    "        time.sleep(1000)\n"
    "        os._exit(0)\n"
    "    made += 1\n"
    "print('FORKED', made, flush=True)\n"
)


def _kill_all(world, token: str) -> None:
    for pid in world.pids_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_fork_bomb_is_contained_and_dies_with_the_sandbox(world):
    token = "bomb-" + world.ssh_secret[-12:]
    bare = world.bare_run(["python3", "-I", "-c", BOMB, token, "20"])
    try:
        assert "FORKED 20" in bare.stdout, bare
        assert len(world.pids_with(token)) == 20, "bare: the children outlive their parent"
    finally:
        _kill_all(world, token)
    assert world.wait_until(lambda: not world.pids_with(token), timeout=10)
    token = "bomb-guarded-" + world.ssh_secret[-12:]
    try:
        run = world.guard_run(["python3", "-I", "-c", BOMB, token, "2000"], timeout=90)
        assert run.summary is not None and run.returncode == 0 and "FORKED" in run.stdout, run
        assert world.wait_until(lambda: not world.pids_with(token), timeout=20), \
            f"{len(world.pids_with(token))} children outlived the sandbox"
    finally:
        _kill_all(world, token)


DAEMONIZE = (
    'setsid nohup python3 -I -c "import os, sys, time; '
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(1000)\" "
    '"sleeper-$MARK.pid" "$MARK" >/dev/null 2>&1 < /dev/null &\n'
    'sleep 1000\n'
)


def _start(world, argv, token):
    proc = subprocess.Popen(argv, env={**world.env, "MARK": token}, cwd=world.ws, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    world.track(proc.pid)
    pidfile = world.ws / f"sleeper-{token}.pid"
    assert world.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30), \
        "the attack never reported its sleeper"
    assert world.wait_until(lambda: world.pids_with(token), timeout=10)
    return proc, world.pids_with(token)


def test_daemonized_process_does_not_outlive_a_killed_guard(world):
    token = "outlive-" + world.ssh_secret[-12:]
    proc, sleepers = _start(world, ["/bin/sh", "-c", DAEMONIZE], token + "-bare")
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.2)
        assert all(world.pid_alive(p) for p in sleepers), "bare: the daemonized sleeper survives its parent"
    finally:
        _kill_all(world, token + "-bare")
    guarded = token + "-guarded"
    proc, sleepers = _start(world, world.guard_run_argv(["/bin/sh", "-c", DAEMONIZE]), guarded)
    try:
        assert int((world.ws / f"sleeper-{guarded}.pid").read_text()) != sleepers[0], \
            "the sleeper's pid inside differs from outside: it runs in the sandbox's pid namespace"
        proc.send_signal(signal.SIGKILL)  # the guard run process only, not its group
        proc.wait()
        assert world.wait_until(lambda: not any(world.pid_alive(p) for p in sleepers), timeout=15), \
            f"sleepers {sleepers} outlived the SIGKILLed guard"
    finally:
        _kill_all(world, guarded)


def test_zz_trail_verifies(world):
    world.check_trail()
