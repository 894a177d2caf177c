"""Apply a SandboxPlan in a child, in the one order that is safe, and hand the parent what it must serve.

Process shape (pids as the supervisor sees them):

    supervisor (guard run) ─ fork ─▶ relay ── unshare(user, mount, pid, ipc, net, uts), maps ids
                                      └ fork ─▶ init (pid 1 inside): masks, /proc, lo, listeners
                                                 └ fork ─▶ agent: caps dropped, no_new_privs, Landlock,
                                                           seccomp, go-ahead, chdir, execve

Every link has PDEATHSIG=SIGKILL and checks its parent survived the fork, and the init is pid 1 of its
namespace, so when the supervisor dies the whole tree dies (fail closed). The relay and the init ignore
terminal-generated signals: the agent shares the engineer's foreground process group, so Ctrl-C and
window resizes reach it directly, and it keeps its terminal. Until exec, every failure travels to the
supervisor over a SOCK_SEQPACKET socketpair with a precise reason, and spawn raises SandboxError; nothing
ever runs unsandboxed.

Published ports (`guard run --publish`) need connections *into* the sandbox's network namespace, and a
socket belongs to the namespace it was created in. So the init, which lives there, is also the connector:
it keeps a second socketpair with the supervisor and, on each request, connects to 127.0.0.1:PORT (only
the ports named at spawn) and hands the connected socket back over SCM_RIGHTS. The init is outside the
agent's Landlock domain, so the signal scope keeps the agent from killing it, and the agent never holds
the connector socket. When the init is gone, the connector is closed and every request fails (closed).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard.errors import SandboxError
from guard.sandbox import _syscalls as sc
from guard.sandbox import landlock, mounts, namespaces
from guard.sandbox.fuse_mask import MaskServer
from guard.sandbox.plan import SandboxPlan
from guard.sandbox.report import EnforcementReport, Protection, State

if TYPE_CHECKING:
    from guard.model import Action
    from guard.sandbox.seccomp import SeccompSpec

SETUP_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0  # a connect to the agent's loopback server that takes longer is given up
_GO = b"G"
_MAPPED = b"M"
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_TTY_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


@dataclass
class SandboxedProcess:
    """The running sandbox as the supervisor sees it.

    `pid` is the relay (our direct child: waiting on it yields the agent's status); `init_pid` is the
    sandbox's pid 1 seen from outside. The agent is held before exec until `start()`: start serving
    `listener_fd` first, or the agent's first execve waits on a supervisor that is not there.
    """

    pid: int
    init_pid: int
    listener_fd: int | None
    inner_listeners: list[socket.socket]
    report: EnforcementReport
    _control: socket.socket | None = field(default=None, repr=False)
    # FUSE masks over read-denied names: (descriptor, path, shape), served by the guard
    watched_masks: list[tuple[int, str, str]] = field(default_factory=list, repr=False)
    _mask_server: MaskServer | None = field(default=None, repr=False)
    _status: int | None = field(default=None, repr=False)
    _connector: socket.socket | None = field(default=None, repr=False)
    _connector_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def connect_inner(self, port: int) -> socket.socket:
        """A TCP socket connected to 127.0.0.1:`port` inside the sandbox's network namespace, made by the
        sandbox's init; only ports given to spawn as `publish_ports`. Thread-safe; blocks up to
        CONNECT_TIMEOUT. Raises SandboxError when the init refuses, the connect fails or the init is gone."""
        with self._connector_lock:
            conn = self._connector
            if conn is None:
                raise SandboxError(f"cannot reach 127.0.0.1:{port} in the sandbox: no connector "
                                   "(nothing published, or the sandbox has ended)")
            try:
                conn.settimeout(CONNECT_TIMEOUT + 5)
                conn.send(json.dumps({"port": port}).encode())
                data, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
            except OSError as exc:
                self._close_connector()
                raise SandboxError(f"the sandbox's connector failed: {exc.strerror or exc}") from None
            if not data:
                for fd in fds:
                    os.close(fd)
                self._close_connector()
                raise SandboxError("the sandbox's init is gone: published ports are closed")
            try:
                reply = json.loads(data)
            except ValueError:
                reply = {"ok": False, "error": "malformed reply"}
            if not reply.get("ok") or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                raise SandboxError(f"cannot connect to 127.0.0.1:{port} in the sandbox: {reply.get('error')}")
            return socket.socket(fileno=fds[0])

    def _close_connector(self) -> None:
        if self._connector is not None:
            self._connector.close()
            self._connector = None

    def serve_masks(self, decide: Callable[[Action], object]) -> MaskServer | None:
        """Start answering the FUSE masks (guard.sandbox.fuse_mask), recording each read through
        `decide`; the caller stops the returned server after the session. None: there are none."""
        if not self.watched_masks or self._mask_server is not None:
            return None
        self._mask_server = MaskServer(self.watched_masks, decide)
        self.watched_masks = []  # the server owns the descriptors now
        self._mask_server.thread.start()
        return self._mask_server

    def start(self) -> None:
        """Release the agent: it chdirs and execs. FUSE masks nobody serves yet are answered from here on
        (refused, unrecorded): unanswered, any access to a masked name would hang."""
        if self._control is None:
            raise SandboxError("sandbox already started")
        self.serve_masks(lambda _action: None)
        try:
            self._control.send(_GO)
        except OSError as exc:
            raise SandboxError(f"sandbox died before start: {exc.strerror}") from None
        finally:
            self._control.close()
            self._control = None

    release = start  # the name guard.runner uses

    def poll(self) -> int | None:
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._shell_status()

    def wait(self) -> int:
        """Exit status as a shell reports it: the code, or 128+signal."""
        if self._status is None:
            _, status = os.waitpid(self.pid, 0)
            self._status = os.waitstatus_to_exitcode(status)
        shell = self._shell_status()
        assert shell is not None
        return shell

    def _shell_status(self) -> int | None:
        if self._status is None:
            return None
        return 128 - self._status if self._status < 0 else self._status

    def kill(self) -> None:
        """Kill the whole tree: SIGKILL to the namespace's init takes every process in it down."""
        if self._status is None:
            for pid in (self.init_pid, self.pid):
                if pid > 0:  # never 0 or -1: those would signal our own process group or everyone
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Release the supervisor-side descriptors (after the session)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._mask_server is not None:
            self._mask_server.stop()
            self._mask_server = None
        for fd, _, _ in self.watched_masks:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.watched_masks = []
        for s in self.inner_listeners:
            s.close()
        with self._connector_lock:
            self._close_connector()
        if self.listener_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.listener_fd)
            self.listener_fd = None


def spawn(plan: SandboxPlan, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
          seccomp: SeccompSpec | None, inner_listen_ports: Sequence[int] = (),
          publish_ports: Sequence[int] = ()) -> SandboxedProcess:
    """Start `argv` in the sandbox described by `plan` and return once it waits for `start()`.

    `seccomp=None` runs without the decision tier (the report says so); otherwise the spec is installed
    last, after Landlock, and its listener fd is handed back. `publish_ports` are the ports
    `SandboxedProcess.connect_inner` may reach inside (see the module docstring).
    """
    if not argv:
        raise SandboxError("nothing to run: empty command")
    for port in publish_ports:
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise SandboxError(f"cannot publish port {port!r}: ports are 1-65535")
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn_parent: socket.socket | None = None
    conn_child: socket.socket | None = None
    if publish_ports:
        conn_parent, conn_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    supervisor_pid = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the relay; never returns
        code = 125
        try:
            parent_sock.close()
            if conn_parent is not None:
                conn_parent.close()
            code = _relay(plan, list(argv), dict(env), str(cwd), seccomp, tuple(inner_listen_ports),
                          child_sock, supervisor_pid, conn_child, frozenset(publish_ports))
        except BaseException as exc:  # report, then die: never fall back into the caller's code
            _send_error(child_sock, "relay", exc)
        os._exit(code)
    child_sock.close()
    if conn_child is not None:
        conn_child.close()
    try:
        proc = _receive(parent_sock, pid, plan, seccomp, len(inner_listen_ports))
        proc._connector = conn_parent
        return proc
    except BaseException:
        if conn_parent is not None:
            conn_parent.close()
        parent_sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise


def _seccomp_protections(seccomp: SeccompSpec | None, listener: bool) -> list[Protection]:
    filt = (Protection("syscall filter (seccomp)", State.FULLY,
                       "foreign arches, x32, io_uring, ptrace, bpf, mount, keyctl and friends refused")
            if seccomp is not None else
            Protection("syscall filter (seccomp)", State.NOT, "no seccomp spec given"))
    name = "decision tier (seccomp user notification)"
    if listener:
        tier = Protection(name, State.FULLY, "execs and write-opens are decided by the supervisor")
    else:
        tier = Protection(name, State.NOT, "no notification listener: execs and write-opens are not decided")
    return [filt, tier]


def _receive(sock: socket.socket, pid: int, plan: SandboxPlan, seccomp: SeccompSpec | None,
             n_listeners: int) -> SandboxedProcess:
    want_listener = seccomp is not None and bool(getattr(seccomp, "notify", True))
    init_pid = 0
    listeners: list[socket.socket] = []
    vanished: list[str] = []
    memfd: dict[str, Any] = {"enforced": False, "why": "not reported by the sandbox init"}
    ready = False
    listener_fd: int | None = None
    watched: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + SETUP_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise SandboxError(f"sandbox setup did not finish within {SETUP_TIMEOUT:g} s")
            data, fds, _flags, _addr = socket.recv_fds(sock, 65536, 8)
            if not data:
                _, status = os.waitpid(pid, 0)
                raise SandboxError(f"sandbox setup died without a reason "
                                   f"(status {os.waitstatus_to_exitcode(status)})")
            msg: dict[str, Any] = json.loads(data)
            kind = msg.get("t")
            if kind == "error":
                for fd in fds:
                    os.close(fd)
                raise SandboxError(f"sandbox setup failed in {msg.get('stage')}: {msg.get('message')}",
                                   hint=msg.get("hint"))
            if kind == "init":
                init_pid = int(msg["pid"])
                if init_pid <= 0:
                    raise SandboxError(f"the relay reported an impossible init pid {init_pid}")
            elif kind == "memfd":
                memfd = msg
            elif kind == "idmap":
                if int(msg.get("pid", -1)) != pid:
                    raise SandboxError(f"the relay asked to map ids of another process: {msg!r}")
                namespaces.write_identity_maps(pid)
                sock.send(_MAPPED)
            elif kind == "vanished":
                vanished.extend(str(p) for p in msg.get("paths", []))
            elif kind == "watched":
                masks = msg.get("masks", [])
                if len(masks) != len(fds):
                    for fd in fds:
                        os.close(fd)
                    raise SandboxError(f"the sandbox sent {len(fds)} mask descriptor(s) for "
                                       f"{len(masks)} mask(s)")
                watched.extend((fd, str(p), str(d)) for fd, (p, d) in zip(fds, masks, strict=True))
            elif kind == "listener":
                listeners.extend(socket.socket(fileno=fd) for fd in fds)
            elif kind == "ready":
                ready = True
                listener_fd = fds[0] if fds else None
                if want_listener and listener_fd is None:
                    raise SandboxError("seccomp filter installed but no listener fd was received")
            else:
                raise SandboxError(f"unexpected message from the sandbox: {msg!r}")
            # the relay's "init" and the agent's "ready" race each other: wait for both
            if ready and init_pid > 0:
                break
        if len(listeners) != n_listeners:
            raise SandboxError(f"expected {n_listeners} inner listener(s), got {len(listeners)}")
        extra = _seccomp_protections(seccomp, listener_fd is not None)
        extra.append(Protection("exec: anonymous files (memfd) never executable",
                                State.FULLY if memfd.get("enforced") else State.NOT,
                                f"vm.memfd_noexec=2 in the sandbox's pid namespace ({memfd.get('why')})",
                                required=False))
        if vanished:
            extra.append(Protection("files: masks skipped (path gone between scan and launch)",
                                    State.PARTLY, ", ".join(vanished), required=False))
        report = plan.report.with_protections(extra)
        return SandboxedProcess(pid, init_pid, listener_fd, listeners, report, _control=sock,
                                watched_masks=watched)
    except BaseException:
        for fd, _, _ in watched:
            os.close(fd)
        for s in listeners:
            s.close()
        if listener_fd is not None:
            os.close(listener_fd)
        raise


def _send(sock: socket.socket, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [json.dumps(msg).encode()], list(fds))


def _send_error(sock: socket.socket, stage: str, exc: BaseException) -> None:
    text = exc.message if isinstance(exc, SandboxError) else f"{type(exc).__name__}: {exc}"
    hint = exc.hint if isinstance(exc, SandboxError) else None
    with contextlib.suppress(OSError):
        _send(sock, {"t": "error", "stage": stage, "message": text, "hint": hint})


def _parent_gone_guard(expected_ppid: int) -> None:
    if os.getppid() != expected_ppid:
        raise SandboxError("the supervisor died during setup")


# --- relay (outside pid namespace, inside the others) -------------------------------------------------
def _relay(plan: SandboxPlan, argv: list[str], env: dict[str, str], cwd: str, seccomp: SeccompSpec | None,
           ports: tuple[int, ...], sock: socket.socket, supervisor_pid: int,
           connector: socket.socket | None, published: frozenset[int]) -> int:  # pragma: no cover
    sc.set_pdeathsig(signal.SIGKILL)
    _parent_gone_guard(supervisor_pid)
    for sig in _TTY_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)

    def mapped_from_outside() -> None:  # root: the supervisor maps every id (a range needs a parent)
        _send(sock, {"t": "idmap", "pid": os.getpid()})
        if sock.recv(1) != _MAPPED:
            raise SandboxError("the supervisor did not map the sandbox's user ids")

    as_root = os.geteuid() == 0 and os.getegid() == 0
    namespaces.enter(os.geteuid(), os.getegid(), map_ids=mapped_from_outside if as_root else None)
    keep = [sock.fileno()] + ([connector.fileno()] if connector is not None else [])
    _close_stray_fds(keep)  # the supervisor's daemon connection and files are not ours to hold
    alive_r, alive_w = os.pipe()  # the init's way to check the relay survived its fork
    child = os.fork()
    if child == 0:
        code = 125
        try:
            os.close(alive_w)
            code = _init(plan, argv, env, cwd, seccomp, ports, sock, alive_r, connector, published)
        except BaseException as exc:
            _send_error(sock, "init", exc)
        os._exit(code)
    os.close(alive_r)
    if connector is not None:
        connector.close()  # only the init serves it
    _send(sock, {"t": "init", "pid": child})
    sock.close()

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except ChildProcessError:
            return 125
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


# --- init: pid 1 of the sandbox -------------------------------------------------------------------------
def _close_stray_fds(keep: Sequence[int]) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _init(plan: SandboxPlan, argv: list[str], env: dict[str, str], cwd: str, seccomp: SeccompSpec | None,
          ports: tuple[int, ...], sock: socket.socket, alive_r: int, connector: socket.socket | None,
          published: frozenset[int]) -> int:  # pragma: no cover
    sc.set_pdeathsig(signal.SIGKILL)
    if select.select([alive_r], [], [], 0)[0]:  # EOF: the relay died before PDEATHSIG was armed
        raise SandboxError("the relay died during setup")
    os.close(alive_r)
    _close_stray_fds([sock.fileno()] + ([connector.fileno()] if connector is not None else []))
    sc.sethostname(plan.hostname)
    mounts.make_private()
    watched: list[tuple[int, str, str]] = []
    vanished = mounts.apply_masks(plan.mounts, watched)
    if vanished:
        _send(sock, {"t": "vanished", "paths": vanished})
    for i in range(0, len(watched), 8):  # FUSE masks: the guard answers them (guard.sandbox.fuse_mask)
        batch = watched[i:i + 8]
        _send(sock, {"t": "watched", "masks": [[p, d] for _, p, d in batch]}, [fd for fd, _, _ in batch])
        for fd, _, _ in batch:
            os.close(fd)
    # held (open, never read) for the whole session: locked ptys keeping the terminals' numbers free
    _held_ptys = mounts.private_devpts(mounts.session_terminals()) if plan.private_pts else []
    mounts.mount_proc_and_sys()
    _send(sock, {"t": "memfd", **_memfd_noexec()})
    sc.loopback_up()
    for port in ports:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lsock.bind(("127.0.0.1", port))
            lsock.listen(128)
        except OSError as exc:
            raise SandboxError(f"inner listener 127.0.0.1:{port}: {exc.strerror}") from None
        _send(sock, {"t": "listener", "port": port}, [lsock.fileno()])
        lsock.close()
    agent = os.fork()
    if agent == 0:
        code = 125
        try:
            if connector is not None:
                connector.close()  # the agent must never ask the init for connections
            _agent(plan, argv, env, cwd, seccomp, sock)
        except BaseException as exc:
            _send_error(sock, "agent", exc)
        os._exit(code)
    sock.close()
    if connector is not None:  # started after the fork: the agent is never forked from a threaded process
        threading.Thread(target=_serve_connector, args=(connector, published), name="guard-connector",
                         daemon=True).start()

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signum)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    while True:  # reap every orphan; leave with the agent's status (the kernel then kills the rest)
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 125
        if pid == agent and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _serve_connector(conn: socket.socket, published: frozenset[int]) -> None:  # pragma: no cover - init
    """In the init: connect to a published port on request and hand the socket to the supervisor. One
    request at a time (loopback connects answer at once); ends when the supervisor closes its end."""
    while True:
        try:
            data = conn.recv(4096)
        except OSError:
            return
        if not data:
            return
        try:
            port = int(json.loads(data)["port"])
        except (ValueError, KeyError, TypeError):
            port = -1
        reply: dict[str, Any] = {"ok": False}
        fds: list[int] = []
        out = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if port not in published:
                reply["error"] = f"port {port} is not published"
            else:
                out.settimeout(CONNECT_TIMEOUT)
                try:
                    out.connect(("127.0.0.1", port))
                    out.setblocking(True)
                    reply = {"ok": True}
                    fds = [out.fileno()]
                except OSError as exc:
                    reply["error"] = exc.strerror or str(exc)
            try:
                _send(conn, reply, fds)
            except OSError:
                return
        finally:
            out.close()


_MEMFD_NOEXEC = "/proc/sys/vm/memfd_noexec"


def _memfd_noexec() -> dict[str, Any]:
    """vm.memfd_noexec = 2 for the sandbox's pid namespace (per namespace since 6.3; it can only be
    raised, and children inherit it): no memfd the agent creates can ever be made executable, so its
    code cannot be fexecve'd. Best effort: the report says whether it holds."""
    try:
        with open(_MEMFD_NOEXEC, "w") as f:
            f.write("2\n")
        with open(_MEMFD_NOEXEC) as f:
            value = f.read().strip()
    except OSError as exc:
        why = "not on this kernel (needs 6.3)" if isinstance(exc, FileNotFoundError) else exc.strerror
        return {"enforced": False, "why": f"{_MEMFD_NOEXEC}: {why}"}
    return {"enforced": value == "2", "why": f"{_MEMFD_NOEXEC} = {value}"}


# --- the agent, up to exec ------------------------------------------------------------------------------
def _without_socket_files(rules: landlock.LandlockPlan) -> landlock.LandlockPlan:
    """The rules with MAKE_SOCK granted nowhere. With a supervisor, every socket file of the session is
    made by it (bind of a path, mknod of a socket: decided, then performed), so the kernel's own path to
    one is needed by nothing honest; refusing it there closes the window in which a thread swaps a unix
    socket onto a descriptor the supervisor saw as another family's and lets the kernel bind it."""
    from dataclasses import replace

    return replace(rules, grants=tuple(replace(g, access=g.access & ~sc.ACCESS_FS_MAKE_SOCK)
                                       for g in rules.grants))


def _audit_grants(plan: SandboxPlan) -> landlock.LandlockPlan:  # pragma: no cover - runs in the agent
    """Audit mode: write on every top-level tree of the sandbox's root but /proc, /sys and /dev (listed
    here, at launch: the plan is pure). Write-opens are still notified, decided and recorded."""
    from dataclasses import replace

    from guard.sandbox.plan import AUDIT_MODE_RULE, AUDIT_NEVER_WRITABLE

    rights = plan.landlock.handled_fs & landlock.WRITE_RIGHTS
    extra = []
    for name in sorted(os.listdir("/")):
        path = "/" + name
        if path in AUDIT_NEVER_WRITABLE or os.path.islink(path) or not os.path.isdir(path):
            continue
        extra.append(landlock.PathGrant(path, rights, True, (AUDIT_MODE_RULE,)))
    return replace(plan.landlock, grants=(*plan.landlock.grants, *extra))


def _agent(plan: SandboxPlan, argv: list[str], env: dict[str, str], cwd: str, seccomp: SeccompSpec | None,
           sock: socket.socket) -> None:  # pragma: no cover
    sc.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != 1:
        raise SandboxError("the sandbox init died during setup")
    for sig in (*_TTY_SIGNALS, *_FORWARDED, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    sc.drop_capabilities()
    sc.set_no_new_privs()
    rules = _audit_grants(plan) if plan.audit else plan.landlock
    landlock.restrict(_without_socket_files(rules) if seccomp is not None and seccomp.notify else rules)
    try:
        os.chdir(cwd)
    except OSError as exc:
        raise SandboxError(f"cannot enter the working directory {cwd} inside the sandbox: {exc.strerror}",
                           hint="grant it in the policy, or run from the workspace") from None
    listener: int | None = None
    if seccomp is not None:
        from guard.sandbox import seccomp as seccomp_mod

        listener = seccomp_mod.install(seccomp)
    _send(sock, {"t": "ready", "seccomp": listener is not None}, [listener] if listener is not None else [])
    if listener is not None:
        os.close(listener)  # the agent must never hold its own notification listener
    go = sock.recv(1)
    if go != _GO:
        os._exit(125)  # the supervisor gave up on us: leave quietly
    sock.close()
    try:
        _execvpe(argv, env)
    except OSError as exc:
        hint = ""
        if isinstance(exc, PermissionError):  # the policy grants no exec there (or it is mounted noexec)
            hint = (" (the policy grants no exec there: run it from a granted place such as the workspace, "
                    "/usr, /opt or ~/.local/bin, or grant it with a rule `allow: [exec]` on its path; "
                    f"`guard policy explain POLICY \"exec {argv[0]}\"` shows which rule decides)")
        elif isinstance(exc, FileNotFoundError):
            hint = " (not found in the sandbox: is it on PATH, and does the policy let the sandbox read it?)"
        os.write(2, f"guard: cannot run {argv[0]}: {exc.strerror}{hint}\n".encode("utf-8", "surrogateescape"))
        os._exit(127 if isinstance(exc, FileNotFoundError) else 126)


def _execvpe(argv: list[str], env: dict[str, str]) -> None:  # pragma: no cover - runs in the agent
    """os.execvpe, but a PATH entry where the program does not exist is skipped after a stat instead of
    tried with execve: every execve of the agent is a notification the supervisor decides, and a PATH of
    ten entries made the launch of `true` ten notifications. The outcome is execvpe's: the first entry
    whose execve succeeds; on failure the first error other than "not found" (EACCES...), else the last.
    A stat error other than "not found" is left to execve to report."""
    program = argv[0]
    if os.path.dirname(program):
        os.execve(program, argv, env)  # noqa: S606 - argv as given, no shell
    saved: OSError | None = None
    last: OSError = FileNotFoundError(2, "No such file or directory", program)
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, program)
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
            continue
        except OSError:
            pass
        try:
            os.execve(path, argv, env)  # noqa: S606
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
        except OSError as exc:
            last = exc
            saved = saved or exc
    raise saved or last
