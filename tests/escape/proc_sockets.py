"""The engineer's own services on path-named unix sockets: a tmux server on a custom socket (type into
the engineer's shells), git's credential-cache daemon (hands out a token), an ssh-agent (signs with the
engineer's keys). They sit in places the agent may write (/tmp, ~/.cache), so a deny list of known
names never covered them: a path-named socket the session did not create itself is refused unless a
rule grants it by path, race-free, and every attempt is recorded. A server the session starts itself
stays reachable.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from support.realworld import running_services

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def services(world):
    with running_services(world.real) as svc:
        yield svc


def _need(services, name: str):
    if name not in services.sockets:
        pytest.skip(services.missing.get(name, f"{name} did not start"))
    return services.sockets[name]


def _refused(world, run, sock) -> None:
    """Refused by the decision tier (recorded), or out of the sandbox's sight altogether: the host's /tmp
    is private to a session and credential directories are hidden, so the socket may not exist inside."""
    refused = [t for o, t, v in world.decisions(run.session) if o == "write" and v in ("deny", "ask")]
    if str(sock) in refused:
        return
    probe = world.guard_run(world.py(f"import os; os.stat({str(sock)!r})"))
    assert probe.returncode != 0 and ("FileNotFoundError" in probe.stderr or "PermissionError" in probe.stderr), \
        f"{sock} is visible in the sandbox, yet its connect left no refusal: {run!r} {probe!r}"


def test_type_into_the_engineers_tmux(world, services):
    """`tmux -S sock send-keys` runs a command in the engineer's shell, outside any sandbox."""
    sock = _need(services, "tmux")
    bare_marker, marker, after = (world.root / f"tmux-{n}.marker" for n in ("bare", "guarded", "after"))

    def send(mark, runner):
        return runner(["tmux", "-S", str(sock), "send-keys", "-t", "eng", f"echo PWNED > {mark}", "Enter"])

    bare = send(bare_marker, world.bare_run)
    assert world.wait_until(bare_marker.exists), f"bare send-keys did not reach the shell: {bare!r}"
    run = send(marker, world.guard_run)
    assert run.returncode != 0, run
    # the shell runs what it is sent in order: once a later bare command has run, the guarded one never will
    send(after, world.bare_run)
    assert world.wait_until(after.exists)
    assert not marker.exists(), f"the agent typed into the engineer's tmux: {run!r}"
    _refused(world, run, sock)


def test_read_a_token_from_the_git_credential_cache(world, services):
    sock = _need(services, "credential-cache")
    token = world.real.secrets["credential_cache"]
    argv = ["git", "credential-cache", f"--socket={sock}", "get"]
    query = "protocol=https\nhost=git.example.invalid\n\n"
    bare = world.bare_run(argv, input=query)
    assert token in bare.stdout, bare
    run = world.guard_run(argv, input=query)
    assert token not in run.stdout and token not in run.stderr, run
    _refused(world, run, sock)


def test_sign_with_the_engineers_ssh_agent(world, services):
    sock = _need(services, "ssh-agent")
    argv = ["sh", "-c", f"SSH_AUTH_SOCK={sock} ssh-add -l"]
    bare = world.bare_run(argv)
    assert bare.returncode == 0 and "guard-test" in bare.stdout, bare
    run = world.guard_run(argv)
    assert run.returncode != 0 and "guard-test" not in run.stdout, run
    _refused(world, run, sock)


@contextmanager
def _editor_listener(world):
    """A listener the agent can see and write (an editor's or a language server's, in the workspace) but
    did not create; yields the socket's path and the list of what reached it."""
    import socket
    import threading

    sock_path = world.ws / ".editor-ipc.sock"
    sock_path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(64)
    server.settimeout(0.5)
    got: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                got.append(conn.recv(64))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock_path, got
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        sock_path.unlink(missing_ok=True)


def test_a_foreign_listener_in_the_workspace_is_refused_by_the_decision_tier(world):
    """The kernel tier lets a connect to a socket in the workspace through, so this is the supervisor's
    decision alone."""
    attack = world.py("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                      "s.sendall(b'OPEN-FILE /etc/shadow')")
    with _editor_listener(world) as (sock_path, got):
        bare = world.bare_run([*attack, str(sock_path)])
        assert bare.returncode == 0 and world.wait_until(lambda: bool(got)), bare
        got.clear()
        run = world.guard_run([*attack, str(sock_path)])
        assert run.returncode != 0 and not got, run
        world.assert_denied(run, "write", sock_path)


# One thread connects over and over with one address buffer while another rewrites it: the first byte
# of the name between NUL (abstract: no path to judge) and the path's, or the family between AF_INET and
# AF_UNIX. Whatever the supervisor passes on to the kernel, the kernel reads again.
_FLIPPING_CONNECT = """
import ctypes, socket, struct, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
path, how = sys.argv[1].encode(), sys.argv[2]
address = struct.pack("<H", socket.AF_UNIX) + path + b"\\0"
buf = ctypes.create_string_buffer(address, len(address))
if how == "abstract":
    offset, values = 2, (b"\\0", path[:1])
else:
    offset, values = 0, (struct.pack("<H", socket.AF_INET), struct.pack("<H", socket.AF_UNIX))
stop = threading.Event()
def flip():
    i = 0
    while not stop.is_set():
        ctypes.memmove(ctypes.addressof(buf) + offset, values[i % 2], len(values[i % 2]))
        i += 1
threading.Thread(target=flip, daemon=True).start()
for i in range(3000):
    with socket.socket(socket.AF_UNIX) as s:
        if libc.connect(s.fileno(), ctypes.addressof(buf), len(address)) == 0:
            s.sendall(b"OPEN-FILE /etc/shadow")
            print("REACHED after", i + 1)
            sys.exit(0)
stop.set()
print("never reached")
sys.exit(1)
"""


@pytest.mark.parametrize("how", ["abstract", "family"])
def test_rewriting_the_address_after_the_supervisor_read_it_reaches_nothing(world, how):
    """The address is read once: an abstract name or another family used to be passed on to the kernel
    undecided (CONTINUE), and a second thread turning it into the listener's path in time was connected."""
    attack = world.py(_FLIPPING_CONNECT)
    with _editor_listener(world) as (sock_path, got):
        bare = world.bare_run([*attack, str(sock_path), how])
        assert bare.returncode == 0 and "REACHED" in bare.stdout and world.wait_until(lambda: bool(got)), bare
        got.clear()
        run = world.guard_run([*attack, str(sock_path), how])
        assert run.returncode != 0 and "never reached" in run.stdout and not got, run
        world.assert_denied(run, "write", sock_path)


# One thread binds or connects descriptor N with a unix socket's path over and over; another keeps
# dup2()ing a unix socket and a TCP socket onto N. A look at N that finds the TCP socket and lets the call
# go on to the kernel, which looks N up again, has the kernel bind or connect the unix one.
_SWAPPING_DESCRIPTOR = """
import ctypes, os, socket, struct, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.bind.argtypes = libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
path, call = sys.argv[1], sys.argv[2]
address = struct.pack("<H", socket.AF_UNIX) + path.encode() + b"\\0"
buf = ctypes.create_string_buffer(address, len(address))
tcp = socket.socket()
target = os.dup(tcp.fileno())
def swap():
    while True:
        unix = socket.socket(socket.AF_UNIX)
        os.dup2(unix.fileno(), target)
        unix.close()
        os.dup2(tcp.fileno(), target)
threading.Thread(target=swap, daemon=True).start()
for i in range(3000):
    # connected (the listener sees the connection), or bound (the name is there)
    if getattr(libc, call)(target, ctypes.addressof(buf), len(address)) == 0 and (
            call == "connect" or os.path.exists(path)):
        print("DONE after", i + 1)
        sys.exit(0)
print("never done")
sys.exit(1)
"""


def test_a_unix_socket_swapped_onto_a_tcp_descriptor_connects_nowhere(world):
    """The supervisor connects the very socket it took from the agent, with the address it read: a
    unix socket swapped onto the descriptor after its look is never connected by the kernel."""
    attack = world.py(_SWAPPING_DESCRIPTOR)
    with _editor_listener(world) as (sock_path, got):
        bare = world.bare_run([*attack, str(sock_path), "connect"])
        assert bare.returncode == 0 and "DONE" in bare.stdout and world.wait_until(lambda: bool(got)), bare
        got.clear()
        run = world.guard_run([*attack, str(sock_path), "connect"])
        assert run.returncode != 0 and "never done" in run.stdout and not got, run
        world.assert_denied(run, "write", sock_path)


def test_a_unix_socket_swapped_onto_a_tcp_descriptor_binds_no_protected_name(world):
    """A TCP socket's bind goes on to the kernel (Landlock's port rules judge it). A second thread that
    dup2()s a unix socket onto the descriptor in that window, the address a protected path, had the
    kernel make a socket file there, no rule asked; Landlock now grants the kernel's own MAKE_SOCK
    nowhere (the supervisor makes every socket file the session binds)."""
    # a name a rule denies on a writable mount: only the decision tier (and Landlock) stand in the way
    hook = world.ws / "deploy-hook"
    hook.unlink(missing_ok=True)
    policy = world.root / "policies" / "deny-deploy-hook.yaml"
    policy.write_text("version: 1\nname: deny-deploy-hook\nextends: [coding-agent]\nrules:\n"
                      f"  - id: deploy-hook\n    deny: [write]\n    paths: ['{hook}']\n"
                      "    reason: the deploy script runs it\n")
    attack = world.py(_SWAPPING_DESCRIPTOR)
    try:
        bare = world.bare_run([*attack, str(hook), "bind"])
        assert bare.returncode == 0 and "DONE" in bare.stdout and hook.exists(), bare
        hook.unlink()
        run = world.guard_run([*attack, str(hook), "bind"], policy=policy)
        assert run.returncode != 0 and "never done" in run.stdout and not hook.exists(), run
    finally:
        hook.unlink(missing_ok=True)


def test_a_socket_the_session_binds_itself_is_reachable(world):
    """Honest work: a test server, a language server, a tmux the agent starts for itself."""
    code = ("import os, socket\n"
            "srv = socket.socket(socket.AF_UNIX); srv.bind('own.sock'); srv.listen(1)\n"
            "cli = socket.socket(socket.AF_UNIX); cli.connect(os.path.abspath('own.sock'))\n"
            "conn, _ = srv.accept(); cli.sendall(b'hi'); print(conn.recv(2).decode() + '-OWN-OK')\n"
            "os.unlink('own.sock')\n")
    run = world.guard_run(world.py(code))
    assert "hi-OWN-OK" in run.stdout, run


def test_a_rule_can_grant_one_socket_by_path(world, services):
    """The way to give an agent the engineer's ssh-agent on purpose: an allow rule naming that socket (a
    broad write grant such as /tmp/** is not one). The other sockets stay refused."""
    sock = _need(services, "ssh-agent")
    policy = world.root / "policies" / "grant-agent.yaml"
    policy.write_text("version: 1\nname: grant-agent\nextends: [coding-agent]\nrules:\n"
                      f"  - id: my-agent\n    allow: [write]\n    paths: ['{sock}']\n"
                      "    reason: this agent signs commits\n")
    run = world.guard_run(["sh", "-c", f"SSH_AUTH_SOCK={sock} ssh-add -l"], policy=policy)
    assert run.returncode == 0 and "guard-test" in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()
