"""The session's /tmp, /var/tmp and /dev/shm are its own (a fresh tmpfs each): what other programs keep in the
host's /tmp is out of reach, and what the agent leaves there never reaches the host.

The host keeps live things in /tmp: tmux and editor sockets, ssh-agent sockets, Kerberos ticket caches. An
agent that can run what it builds in /tmp (honest work: `gcc -o /tmp/x`) must not, through the same
place, reach those or plant files for the engineer's programs to pick up later. Each attack works bare.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid

import pytest

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def _listener(path: str, answer: bytes):
    """A unix socket server in the host's /tmp (what `tmux -S` or an editor leaves there)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        srv.close()
        t.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def test_host_socket_in_tmp_is_unreachable(world):
    secret = f"TMUX-SESSION-{uuid.uuid4().hex}"
    path = str(world.root / f"tmux-{uuid.uuid4().hex[:8]}")
    attack = world.py(
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.connect({path!r})\n"
        "print(s.recv(200).decode())\n")
    with _listener(path, secret.encode()):
        assert secret in world.bare_run(attack).stdout
        run = world.guard_run(attack)
    assert run.returncode != 0 and secret not in run.stdout, run
    assert "FileNotFoundError" in run.stderr, run  # the host's /tmp is simply not there


def test_kerberos_ticket_cache_in_tmp_is_unreadable(world):
    cache = world.real.krb5_cache
    attack = world.sh(f'cat "{cache}"')
    assert world.real.secrets["krb5"] in world.bare_run(attack).stdout
    run = world.guard_run(attack)
    assert run.returncode != 0 and world.real.secrets["krb5"] not in run.stdout, run


def test_file_left_in_tmp_never_reaches_the_host(world):
    """A planted /tmp file (a fake `tmux` socket path, a script the engineer's cron runs, a file another
    user's program trusts) must not outlive the session."""
    name = f"/tmp/guard-planted-{uuid.uuid4().hex}"
    attack = world.sh(f'printf "#!/bin/sh\\necho PLANTED\\n" > "{name}-$T" && chmod +x "{name}-$T" && '
                      f'"{name}-$T"')
    try:
        bare = world.bare_run(attack, env={"T": "bare"})
        assert "PLANTED" in bare.stdout and os.path.exists(f"{name}-bare")
        run = world.guard_run(attack, env={"T": "guarded"})
        assert run.returncode == 0 and "PLANTED" in run.stdout, run  # honest inside: it builds and runs
        assert not os.path.exists(f"{name}-guarded"), "a file written to the session's /tmp reached the host"
    finally:
        for suffix in ("bare", "guarded"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{name}-{suffix}")


def test_binary_planted_in_host_tmp_before_launch_is_not_there(world):
    planted = world.root / f"planted-{uuid.uuid4().hex[:8]}"
    planted.write_text("#!/bin/sh\necho RAN-HOST-TMP\n")
    planted.chmod(0o755)
    attack = [str(planted)]
    assert "RAN-HOST-TMP" in world.bare_run(attack).stdout
    run = world.guard_run(world.sh(f'"{planted}"'))
    assert run.returncode == 127 and "RAN-HOST-TMP" not in run.stdout, run


def test_shared_memory_is_the_sessions_own(world):
    """A POSIX shared-memory object of another program (/dev/shm) is not visible; the session's own work."""
    name = f"guard-host-{uuid.uuid4().hex[:8]}"
    host = f"/dev/shm/{name}"
    if not os.path.isdir("/dev/shm"):
        pytest.skip("this host has no /dev/shm")
    with open(host, "w") as f:
        f.write("HOST-SHM-SECRET")
    try:
        attack = world.sh(f'cat "{host}"')
        assert "HOST-SHM-SECRET" in world.bare_run(attack).stdout
        run = world.guard_run(attack)
        assert run.returncode != 0 and "HOST-SHM-SECRET" not in run.stdout, run
    finally:
        os.unlink(host)


def test_zz_trail_verifies(world):
    world.check_trail()
