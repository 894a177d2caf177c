"""The daemon: one asyncio process per user that owns the audit writer, sessions, approvals and reloads.

Lifecycle follows uvicorn's shape: take the pid-file lock, replace a stale socket, bind 0600 (before the
trail is recovered, so clients connect at once and wait for readiness instead of timing out), open the
audit writer, serve until a signal or a `shutdown` request, then shut down gracefully (refuse new work,
answer pending approvals with deny, mark open sessions, wait a bounded time, cancel the rest), seal the log
and remove the socket in `finally`. Every connection is checked with SO_PEERCRED before a single byte of it
is parsed.

Acknowledged means stored: a reply goes out only after the records its request made are written to the
log file (write(2), so the death of any process keeps them; fdatasync at each checkpoint). When the trail
cannot be written (disk full, I/O error) the daemon fails closed: the request gets `audit_failed`, every
connection is told why, and the daemon exits so that nothing acts unrecorded; the next start recovers the
trail once there is room.

Robustness rules for hostile peers: lines are capped (MAX_LINE), a started line must finish within
`line_timeout`, replies never wait on a slow reader (a peer that lets its receive buffer fill up past
`max_buffered` is dropped), in-flight requests per connection are capped. Connections are limited per peer
process, and when the table is full the longest-idle connection that owns nothing makes room, so idle
connections (however many, from whichever user) cannot lock a session out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import pwd
import signal
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard import __version__
from guard.daemon import protocol as p
from guard.daemon.approvals import Answer, Approvals, Pending
from guard.daemon.ingest import SpoolIngest
from guard.daemon.reload import PolicyWatcher
from guard.daemon.sessions import Session, SessionTable, sources_hash
from guard.errors import DaemonError, GuardError
from guard.home import bind_private_socket, ensure_private_dir, log_dir, socket_path
from guard.model import Action, Decision, Verdict

log = logging.getLogger(__name__)

_REFUSAL_LINGER = 1.0  # seconds a refused connection stays half-open so the peer can read why
DAEMON_SESSION = "daemon"  # the session id under which the daemon records its own lifecycle


def pid_path(home: Path) -> Path:
    return home / "daemon.pid"


def log_path(home: Path) -> Path:
    return home / "daemon.log"


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 256  # when full, the longest-idle connection owning nothing makes room
    max_per_peer: int = 32  # connections one peer process may hold
    max_inflight: int = 64  # concurrent requests on one connection (asks waiting for a human count)
    line_timeout: float = 10.0  # seconds to finish a line once its first byte arrived
    idle_timeout: float = 60.0  # without a request, for connections that own no session and watch nothing
    max_buffered: int = 8 << 20  # bytes of unread replies before a peer is dropped
    shutdown_timeout: float = 5.0
    tick_interval: float = 0.25


@dataclass(eq=False)
class _Conn:
    number: int
    transport: asyncio.Transport
    uid: int
    pid: int
    last_active: float  # monotonic: the last byte received
    lost: asyncio.Future[None]
    last_request: float = 0.0  # monotonic: the last request (blank lines do not count)
    buffer: bytearray = field(default_factory=bytearray)
    scanned: int = 0  # bytes of `buffer` known to hold no newline
    line_started: float | None = None
    sessions: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    watching: bool = False
    closed: bool = False

    def send(self, data: bytes, limits: Limits) -> None:
        if self.closed:
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > limits.max_buffered:
            log.warning("connection %d (pid %d) does not read its replies: dropping it",
                        self.number, self.pid)
            self.closed = True
            self.transport.abort()

    def close(self) -> None:
        """Close after what was written is flushed."""
        if not self.closed:
            self.closed = True
            self.transport.close()


class _Protocol(asyncio.Protocol):
    """Per-connection glue: requests are parsed and answered in the same callback that received them."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._conn = self._daemon._accept(transport)

    def data_received(self, data: bytes) -> None:
        if self._conn is not None and not self._conn.closed:
            self._daemon._received(self._conn, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._daemon._lost(self._conn)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process on the other end, as the kernel recorded them at connect()."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


class Daemon:
    """The service. `run()` is the foreground entry point; `serve()` the coroutine behind it."""

    def __init__(self, home: Path, *, limits: Limits | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.home = home
        self.limits = limits or Limits()
        self.now = now
        self.socket = socket_path(home)
        self.sessions = SessionTable()
        self.approvals = Approvals()
        self._conns: dict[int, _Conn] = {}
        self._next_conn = 0
        self._started = now()
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._audit: Any = None
        self._ready: asyncio.Event | None = None
        self._startup_error: GuardError | None = None
        self._audit_error: GuardError | None = None
        self._tick_error: str | None = None
        self._early: list[tuple[str, dict[str, Any]]] = []  # daemon records made before the trail opened
        self._spools: SpoolIngest | None = None
        self._watcher: PolicyWatcher | None = None
        self._reloading: set[asyncio.Task[None]] = set()

    # ---- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve in the foreground until SIGINT/SIGTERM or a `shutdown` request."""
        asyncio.run(self.serve(handle_signals=threading.current_thread() is threading.main_thread()))

    def request_shutdown(self) -> None:
        """First call: graceful shutdown. A second call (a second Ctrl-C) cancels whatever is left."""
        if self._stopping:
            for conn in list(self._conns.values()):
                for task in list(conn.tasks):
                    task.cancel()
                conn.closed = True
                conn.transport.abort()
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    async def serve(self, *, handle_signals: bool = False,
                    ready: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        if self._stopping:
            self._stop.set()
        ensure_private_dir(self.home)
        lock_fd = _acquire_pid_lock(pid_path(self.home))
        _raise_fd_limit()
        restore: dict[int, Any] = {}
        server: asyncio.AbstractServer | None = None
        ticker: asyncio.Task[None] | None = None
        bound = False
        try:
            _clear_stale_socket(self.socket)
            listener = bind_private_socket(self.socket, 512)
            bound = True
            server = await loop.create_unix_server(lambda: _Protocol(self), sock=listener)
            if handle_signals:
                restore = _capture_signals(loop, self.request_shutdown)
            log.info("guard daemon %s (protocol %d) bound %s (pid %d); opening the audit trail",
                     __version__, p.VERSION, self.socket, os.getpid())
            try:
                self._audit = await asyncio.to_thread(self._open_trail)
                self._record_daemon("daemon_start", pid=os.getpid(), version=__version__, protocol=p.VERSION)
                for what, extra in self._early:
                    self._record_daemon(what, **extra)
                self._early.clear()
                self._audit.flush()  # a disk still full shows here, as a start failure
            except Exception as exc:
                # the clients already waiting hear why, then the daemon exits non-zero
                error = exc if isinstance(exc, GuardError) else DaemonError(
                    f"opening the audit trail failed: {type(exc).__name__}: {exc}")
                self._startup_error = error
                log.error("cannot start: %s", error.diagnostics())
                self._ready.set()
                await self._shutdown(server)
                if self._audit is not None:
                    with contextlib.suppress(GuardError):
                        self._audit.close()
                raise error from None
            try:
                self._spools = SpoolIngest(self.home, self._audit)
                self._finish_abandoned_spools()  # sessions whose guard run died while we were away
                self._watcher = PolicyWatcher(loop, self._on_policy_change)
                self._watcher.start()
                ticker = asyncio.create_task(self._tick_forever())
                self._ready.set()
                log.info("guard daemon %s listening on %s (pid %d)", __version__, self.socket, os.getpid())
                if ready is not None:
                    ready()
                await self._stop.wait()
                log.info("shutting down")
                await self._shutdown(server)
            except GuardError as exc:
                self._fail_audit(exc)
                await self._shutdown(server)
            finally:
                if ticker is not None:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ticker
                if self._watcher is not None:
                    self._watcher.stop()
                for task in list(self._reloading):
                    task.cancel()
                if self._reloading:
                    await asyncio.wait(list(self._reloading), timeout=self.limits.shutdown_timeout)
                with contextlib.suppress(GuardError):
                    self._record_daemon("daemon_stop", pid=os.getpid())
                try:
                    self._audit.close()
                except GuardError as exc:
                    self._fail_audit(exc)
        finally:
            if server is not None:
                server.close()
            _restore_signals(loop, restore)
            if bound:  # never remove a socket some other process answers on
                with contextlib.suppress(FileNotFoundError):
                    self.socket.unlink()
            with contextlib.suppress(FileNotFoundError):
                pid_path(self.home).unlink()
            os.close(lock_fd)
        if self._audit_error is not None:  # the process exits non-zero: nothing may act unrecorded
            raise self._audit_error

    def _open_trail(self) -> Any:
        """Keys and writer (runs in a thread: recovering the trail must not stall the socket)."""
        from guard.audit import AuditWriter

        self._ensure_keys()
        writer = AuditWriter(self.home, now=self.now).open()
        log.info("audit trail open: %s", getattr(writer, "replayed", None))
        recovery = getattr(writer, "recovery", None)
        if recovery:
            log.warning("audit trail recovered: %s", recovery)
        return writer

    @property
    def ready(self) -> bool:
        return self._ready is not None and self._ready.is_set() and self._startup_error is None

    def _fail_audit(self, exc: GuardError) -> None:
        """The trail cannot be written: refuse every record from now on, tell every peer why, and stop."""
        if self._audit_error is not None:
            return
        self._audit_error = exc
        log.error("audit trail failed, refusing all records and stopping: %s", exc.diagnostics())
        message = p.error_reply(None, p.AUDIT_FAILED, f"the guard daemon cannot record: {exc.diagnostics()}")
        for conn in list(self._conns.values()):
            if conn.sessions or conn.watching:
                conn.send(message, self.limits)
        self.request_shutdown()

    def _ensure_keys(self) -> None:
        """Create the keyring on first start, so `guard run` needs no set-up step.

        Only when there is no log yet: keys that vanished under an existing trail are an incident for
        `guard keys`, not something to paper over with a fresh root key the auditors never pinned.
        """
        from guard.audit import Keyring

        keyring = Keyring(self.home)
        if keyring.exists():
            return
        trail = log_dir(self.home)
        if trail.exists() and any(trail.iterdir()):
            return  # AuditWriter.open() reports the missing keys with its own remedy
        root = keyring.init(now=self.now())
        log.info("created a new keyring in %s (root key %s)", keyring.dir, root.name)

    async def _shutdown(self, server: asyncio.AbstractServer) -> None:
        server.close()
        self.approvals.answer_all(session=None, answer=Answer(Verdict.DENY, "daemon", os.getuid(),
                                                              "the daemon is shutting down"), now=self.now())
        self.approvals.close_watchers()
        inflight = [t for c in self._conns.values() for t in c.tasks]
        if inflight:
            await asyncio.wait(inflight, timeout=self.limits.shutdown_timeout)
        for session in list(self.sessions):
            try:
                self._leave(session, status="interrupted", reason="the daemon stopped")
            except GuardError as exc:  # the trail failed: the session's end cannot be recorded
                log.error("session %s: its end is not recorded: %s", session.id, exc.message)
        conns = list(self._conns.values())
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([c.lost for c in conns], timeout=self.limits.shutdown_timeout)
        for conn in conns:
            if not conn.lost.done():
                conn.transport.abort()

    async def _tick_forever(self) -> None:
        """Seal due checkpoints and sweep connections; any failure is reported and fails the trail closed."""
        while True:
            await asyncio.sleep(self.limits.tick_interval)
            try:
                self._audit.tick()
            except GuardError as exc:
                self._fail_audit(exc)
                return
            except Exception as exc:  # a bug in sealing: the trail's state is unknown, so stop recording
                log.exception("audit checkpoint failed")
                self._tick_error = f"{type(exc).__name__}: {exc}"
                self._fail_audit(DaemonError(f"sealing the audit trail failed: {self._tick_error}",
                                             hint="see the daemon log; `guard audit verify` checks it"))
                return
            try:
                self._sweep(time.monotonic())
            except Exception:
                log.exception("connection sweep failed")
            try:
                self._finish_abandoned_spools()
            except GuardError as exc:
                self._fail_audit(exc)
                return
            except Exception:
                log.exception("finishing abandoned spools failed")

    def _sweep(self, now: float) -> None:
        """Close connections that stall mid-line or idle (no request) without a reason to stay."""
        for conn in list(self._conns.values()):
            if conn.line_started is not None and now - conn.line_started > self.limits.line_timeout:
                conn.send(p.error_reply(None, p.BAD_REQUEST,
                                        f"line not finished within {self.limits.line_timeout:g} s: closing"),
                          self.limits)
                conn.close()
            elif self._idle(conn) and now - conn.last_request > self.limits.idle_timeout:
                conn.close()

    @staticmethod
    def _idle(conn: _Conn) -> bool:
        return not (conn.buffer or conn.sessions or conn.watching or conn.tasks)

    # ---- connections -----------------------------------------------------------------------------

    def _accept(self, transport: asyncio.Transport) -> _Conn | None:
        try:
            pid, uid, _gid = peer_credentials(transport.get_extra_info("socket"))
        except OSError:  # the peer is already gone
            transport.abort()
            return None
        self._next_conn += 1
        now = time.monotonic()
        conn = _Conn(self._next_conn, transport, uid=uid, pid=pid, last_active=now, last_request=now,
                     lost=asyncio.get_running_loop().create_future())
        refusal = self._refusal(conn)
        if refusal is not None:
            # Say why, end our side, and drain (not read) what the peer sends for a moment: closing with
            # its request unread would reset the connection and could swallow the explanation.
            code, message = refusal
            conn.send(p.error_reply(None, code, message), self.limits)
            if transport.can_write_eof():
                transport.write_eof()
            conn.closed = True
            asyncio.get_running_loop().call_later(_REFUSAL_LINGER, transport.close)
            return conn
        self._conns[conn.number] = conn
        return conn

    def _lost(self, conn: _Conn) -> None:
        conn.closed = True
        self._conns.pop(conn.number, None)
        for request in list(conn.tasks):
            request.cancel()
        for session_id in list(conn.sessions):
            try:
                self._leave(self.sessions.get(session_id), status="lost",
                            reason="the client's connection dropped")
            except p.RequestError:
                pass
            except GuardError as exc:
                log.error("session %s: its end is not recorded: %s", session_id, exc.message)
        if not conn.lost.done():
            conn.lost.set_result(None)

    def _refusal(self, conn: _Conn) -> tuple[str, str] | None:
        me = os.geteuid()
        if conn.uid not in (me, 0):
            log.warning("refused peer uid %d pid %d", conn.uid, conn.pid)
            with contextlib.suppress(GuardError):
                self._record_daemon("peer_refused", uid=conn.uid, pid=conn.pid)
            return p.FORBIDDEN, (f"peer credentials: uid {conn.uid} (pid {conn.pid}) may not use this "
                                 f"daemon; only uid {me} or root may")
        if self._stopping:
            return p.SHUTTING_DOWN, "the daemon is shutting down"
        mine = sum(1 for c in self._conns.values() if c.pid == conn.pid)
        if mine >= self.limits.max_per_peer:
            return p.BUSY, (f"pid {conn.pid} already holds {mine} connections (limit "
                            f"{self.limits.max_per_peer} per process); close idle ones")
        if len(self._conns) >= self.limits.max_connections and not self._evict_idle():
            return p.BUSY, (f"too many busy connections (limit {self.limits.max_connections}), each owning "
                            "a session, a watch or a request")
        return None

    def _evict_idle(self) -> bool:
        """Close an idle connection owning nothing to make room; False if none. The victim belongs to the
        process holding the most connections (then: idle longest), so a flood evicts its own first and a
        `guard run` that has just connected, with its one connection, goes last."""
        idle = [c for c in self._conns.values() if self._idle(c) and not c.closed]
        if not idle:
            return False
        held: dict[int, int] = {}
        for c in self._conns.values():
            held[c.pid] = held.get(c.pid, 0) + 1
        victim = min(idle, key=lambda c: (-held[c.pid], c.last_request))
        victim.send(p.error_reply(None, p.BUSY, "closing an idle connection to make room for a new one"),
                    self.limits)
        victim.close()
        self._conns.pop(victim.number, None)
        return True

    def _received(self, conn: _Conn, data: bytes) -> None:
        conn.last_active = time.monotonic()
        buffer = conn.buffer
        buffer += data
        completed = False
        while not conn.closed:
            newline = buffer.find(b"\n", conn.scanned)
            if newline < 0:
                conn.scanned = len(buffer)
                break
            line = bytes(buffer[:newline])
            del buffer[:newline + 1]
            conn.scanned = 0
            completed = True
            if len(line) > p.MAX_LINE:
                self._too_large(conn, len(line))
                return
            if line.strip():
                conn.last_request = conn.last_active
                self._dispatch(conn, line)
        if not buffer:
            conn.line_started = None
        elif completed or conn.line_started is None:
            conn.line_started = conn.last_active
        if len(buffer) > p.MAX_LINE:
            self._too_large(conn, len(buffer))

    def _too_large(self, conn: _Conn, size: int) -> None:
        conn.send(p.error_reply(None, p.TOO_LARGE,
                                f"line of {size}+ bytes exceeds the limit of {p.MAX_LINE}: closing"),
                  self.limits)
        conn.buffer.clear()
        conn.close()

    def _dispatch(self, conn: _Conn, line: bytes) -> None:
        try:
            request = p.parse_request(line)
        except p.RequestError as exc:
            conn.send(p.error_reply(exc.request_id, exc.code, exc.message), self.limits)
            return
        if len(conn.tasks) >= self.limits.max_inflight:
            conn.send(p.error_reply(request.id, p.BUSY,
                                    f"too many requests in flight (limit {self.limits.max_inflight})"),
                      self.limits)
            return
        if self._audit_error is not None and request.op not in _ANYTIME_OPS:
            conn.send(p.error_reply(request.id, p.AUDIT_FAILED, "the guard daemon cannot record: "
                                    f"{self._audit_error.diagnostics()}"), self.limits)
            return
        try:
            if not self.ready and request.op not in _ANYTIME_OPS:
                outcome: dict[str, Any] | Coroutine[Any, Any, Any] = self._when_ready(conn, request)
            else:
                outcome = self._handle(conn, request)
                if isinstance(outcome, dict) and request.op not in _ANYTIME_OPS:
                    self._stored()
        except p.RequestError as exc:
            conn.send(p.error_reply(request.id, exc.code, exc.message), self.limits)
            return
        except GuardError as exc:
            conn.send(self._guard_error_reply(request, exc), self.limits)
            return
        except Exception as exc:  # a bug: answer, log it, keep serving everyone else
            log.exception("op %s failed", request.op)
            conn.send(p.error_reply(request.id, p.INTERNAL, f"{type(exc).__name__}: {exc}"), self.limits)
            return
        if isinstance(outcome, dict):
            conn.send(p.ok_reply(request.id, outcome), self.limits)
            return
        task = asyncio.create_task(self._finish(conn, request, outcome))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _finish(self, conn: _Conn, request: p.Request,
                      outcome: Awaitable[dict[str, Any] | None]) -> None:
        try:
            result = await outcome
            self._stored()
        except p.RequestError as exc:
            conn.send(p.error_reply(request.id, exc.code, exc.message), self.limits)
        except GuardError as exc:
            conn.send(self._guard_error_reply(request, exc), self.limits)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("op %s failed", request.op)
            conn.send(p.error_reply(request.id, p.INTERNAL, f"{type(exc).__name__}: {exc}"), self.limits)
        else:
            if result is not None:
                conn.send(p.ok_reply(request.id, result), self.limits)

    async def _when_ready(self, conn: _Conn, request: p.Request) -> dict[str, Any] | None:
        """A request that arrived while the trail was still being recovered: handled once it is open."""
        assert self._ready is not None
        await self._ready.wait()
        if self._startup_error is not None:
            raise p.RequestError(p.AUDIT_FAILED, "the guard daemon could not start: "
                                 f"{self._startup_error.diagnostics()}")
        outcome = self._handle(conn, request)
        if isinstance(outcome, dict):
            return outcome
        result: dict[str, Any] | None = await outcome
        return result

    def _stored(self) -> None:
        """Write what the request recorded before its reply goes out (an acknowledgement means stored)."""
        if self._audit is not None:
            self._audit.flush()

    def _guard_error_reply(self, request: p.Request, exc: GuardError) -> bytes:
        from guard.audit.writer import AuditWriteError

        if isinstance(exc, AuditWriteError) or exc is self._audit_error:
            self._fail_audit(exc)
            return p.error_reply(request.id, p.AUDIT_FAILED,
                                 f"the guard daemon cannot record: {exc.diagnostics()}")
        return p.error_reply(request.id, p.INTERNAL, exc.diagnostics())

    # ---- operations ------------------------------------------------------------------------------

    def _handle(self, conn: _Conn, request: p.Request) -> dict[str, Any] | Coroutine[Any, Any, Any]:
        """Answer at once (a dict) or hand back a coroutine for ops that wait (policy load, asks)."""
        args = request.args
        op = request.op
        if op == "decide":
            return self._decide(self.sessions.get(args["session"]), args["action"], args.get("decision"))
        if op == "hello":
            client = args.get("client") or {}
            if args.get("v") != p.VERSION:
                log.warning("pid %d speaks protocol %r (guard %s); this daemon speaks %d", conn.pid,
                            args.get("v"), str(client.get("version", "?"))[:32], p.VERSION)
            return {"daemon": "guard", "version": __version__, "protocol": p.VERSION, "pid": os.getpid(),
                    "peer": {"uid": conn.uid, "pid": conn.pid}, "ready": self.ready,
                    "state": self._state()}
        if op == "status":
            return self._status()
        if op == "ready":
            return {"ready": True}
        if op == "session.open":
            return self._open_session(conn, args)
        if op == "record":
            return self._record(self.sessions.get(args["session"]), args["event"])
        if op == "record.batch":
            return self._record_batch(self.sessions.get(args["session"]), args["events"])
        if op == "spool.ingest":
            return self._spool_ingest(self.sessions.get(args["session"]))
        if op == "session.close":
            session = self.sessions.get(args["session"])
            self._end_session(session, status="closed", exit_status=args["exit_status"],
                              summary=args["summary"])
            return {"session": session.id, "counts": session.counts.to_dict()}
        if op == "approvals.list":
            return {"approvals": self.approvals.list(self.now())}
        if op == "approvals.decide":
            return self._approve(conn, args["approval"], args["verdict"], args["by"])
        if op == "approvals.watch":
            return self._watch(conn, request)
        if op == "shutdown":
            asyncio.get_running_loop().call_soon(self.request_shutdown)
            return {"stopping": True, "pid": os.getpid()}
        raise p.RequestError(p.UNKNOWN_OP, f"field 'op': unknown operation {op!r}")

    def _state(self) -> str:
        if self._audit_error is not None or self._startup_error is not None:
            return "failed"
        if not self.ready:
            return "starting"
        return "stopping" if self._stopping else "running"

    def _audit_view(self) -> dict[str, Any]:
        error = self._audit_error or self._startup_error
        view: dict[str, Any] = {"error": None if error is None else error.diagnostics()}
        if self._audit is not None:
            view.update(size=self._audit.size, sealed=self._audit.sealed_size,
                        recovery=getattr(self._audit, "recovery", None),
                        replayed=getattr(self._audit, "replayed", None))
        return view

    def _status(self) -> dict[str, Any]:
        now = self.now()
        return {"pid": os.getpid(), "version": __version__, "protocol": p.VERSION, "state": self._state(),
                "audit": self._audit_view(), "uptime_s": round(now - self._started, 3),
                "home": str(self.home), "socket": str(self.socket),
                "sessions": [s.view(now) for s in self.sessions], "approvals": len(self.approvals),
                "connections": len(self._conns),
                "watched_policy_files": sorted(self._watcher.watched()) if self._watcher else []}

    async def _open_session(self, conn: _Conn, args: Mapping[str, Any]) -> dict[str, Any]:
        from guard.audit import session_event
        from guard.policy_cache import load_policy_cached

        workspace = Path(args["workspace"])
        env = args.get("env")
        try:  # the same compiled-policy cache as guard run's, checked against every input at each use
            policy = await asyncio.to_thread(load_policy_cached, args["policy"], workspace=workspace,
                                             env=os.environ if env is None else env, home=self.home)
        except GuardError as exc:
            raise p.RequestError(p.POLICY, exc.diagnostics()) from None
        if conn.closed:
            raise p.RequestError(p.SHUTTING_DOWN, "the connection closed while the policy loaded")
        if self._stopping:
            raise p.RequestError(p.SHUTTING_DOWN, "the daemon is shutting down")
        resume = args.get("resume")
        if resume is not None:
            self._take_over(resume)
        session = Session(id=resume or self.sessions.new_id(), policy_ref=args["policy"], workspace=workspace,
                          argv=args["argv"], cwd=args["cwd"], pid=args["pid"], policy=policy,
                          sources_hash=sources_hash(policy.sources), started=self.now(), owner=conn.number,
                          peer_uid=conn.uid, env=args.get("env"))
        seq = self._audit.append(session_event(
            session.id, "start" if resume is None else "resume", argv=list(session.argv),
            workspace=str(workspace), cwd=session.cwd,
            pid=session.pid, uid=conn.uid, policy=policy.name, policy_ref=session.policy_ref,
            policy_mode=policy.mode, sources=[str(s) for s in policy.sources],
            sources_hash=session.sources_hash))
        if resume is None and self._spools is not None:
            self._spools.opened(session.id, seq)
        self.sessions.add(session)
        conn.sessions.add(session.id)
        self._rewatch()
        return {"session": session.id, "policy": session.policy_view()}

    def _decide(self, session: Session, action: Action,
                given: Decision | None = None) -> dict[str, Any] | Coroutine[Any, Any, Any]:
        """One decision, made once: a session's own `ask` (`given`) is held as it is; without one (a client
        that decides nothing itself) the daemon decides with the session's policy."""
        from guard.audit import decision_event

        decision = given if given is not None else session.policy.decide(action)
        self._audit.append(decision_event(session.id, action, decision))
        if decision.enforced is Verdict.ASK:
            session.counts.asked += 1
            return self._ask(session, action, decision)
        _count(session, decision.enforced)
        self._audit.tick()  # in the trail's file before the answer lets the action happen
        return {"decision": decision.to_dict()}

    async def _ask(self, session: Session, action: Action, decision: Decision) -> dict[str, Any]:
        timeout = float(session.policy.ask_timeout)
        pending = self.approvals.create(session=session.id, policy=session.policy.name, action=action,
                                        decision=decision, now=self.now(), timeout=timeout)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except asyncio.CancelledError:
            # the asking connection went away: the request can no longer be answered to anyone
            if not pending.future.done():
                pending.future.set_result(Answer(Verdict.DENY, "daemon", None, "the asking client went away"))
            self._finish_ask(session, pending)
            raise
        if not pending.future.done():
            pending.future.set_result(Answer(Verdict.DENY, "timeout", None,
                                             f"no answer within {timeout:g} s"))
        final, approval = self._finish_ask(session, pending)
        self._audit.tick()  # the approval is in the trail's file before the answer lets the action happen
        return {"decision": final.to_dict(), "approval": approval}

    def _finish_ask(self, session: Session, pending: Pending) -> tuple[Decision, dict[str, Any]]:
        from guard.audit.events import ms

        answer = pending.future.result()
        now = self.now()
        waited = ms(now - pending.created)
        self.approvals.finish(pending, answer, now)
        final = Decision(answer.verdict, pending.decision.rule_id, answer.reason)
        _count(session, answer.verdict)
        approval = {"approval": pending.id, "verdict": answer.verdict.value, "by": answer.by,
                    "uid": answer.uid, "waited_ms": waited}
        self._audit.append({"type": "approval", "session": session.id, "action": pending.action.to_dict(),
                            "rule_id": pending.decision.rule_id, "reason": answer.reason, **approval})
        return final, approval

    def _approve(self, conn: _Conn, approval_id: str, verdict: Verdict, by: str) -> dict[str, Any]:
        name = _user_name(conn.uid)
        who = f"{by} (uid {conn.uid})" if by else f"{name} (uid {conn.uid})"
        word = "approved" if verdict is Verdict.ALLOW else "denied"
        self.approvals.answer(approval_id, Answer(verdict, by or name, conn.uid, f"{word} by {who}"))
        return {"approval": approval_id, "verdict": verdict.value, "by": by or name}

    def _watch(self, conn: _Conn, request: p.Request) -> Coroutine[Any, Any, None]:
        queue = self.approvals.watch()
        conn.watching = True
        conn.send(p.ok_reply(request.id, {"watching": True, "approvals": self.approvals.list(self.now())}),
                  self.limits)

        async def pump() -> None:
            try:
                while (message := await queue.get()) is not None:
                    push = {"v": p.VERSION, "id": request.id, "ok": True, **message}
                    conn.send(p.encode(push), self.limits)
            finally:
                self.approvals.unwatch(queue)
                conn.watching = False
        return pump()

    def _record(self, session: Session, event: dict[str, Any]) -> dict[str, Any]:
        from guard.audit import decision_event

        kind, fields = p.parse_record_event(event)
        if kind == "decision":
            record = decision_event(session.id, fields["action"], fields["decision"], source="client")
            _count(session, fields["decision"].enforced)
        else:
            record = {"type": kind, "session": session.id, **fields}
        return {"seq": self._audit.append(record)}

    def _record_batch(self, session: Session, events: list[dict[str, Any]]) -> dict[str, Any]:
        """All or nothing: every event is validated (naming its index) before any is appended."""
        from guard.audit import decision_event

        parsed = []
        for i, event in enumerate(events):
            try:
                parsed.append(p.parse_record_event(event))
            except p.RequestError as exc:
                raise p.RequestError(exc.code, f"events[{i}]: {exc}") from None
        seqs = []
        for kind, fields in parsed:
            if kind == "decision":
                record = decision_event(session.id, fields["action"], fields["decision"], source="client")
                _count(session, fields["decision"].enforced)
            else:
                record = {"type": kind, "session": session.id, **fields}
            seqs.append(self._audit.append(record))
        return {"count": len(seqs), "first_seq": seqs[0], "last_seq": seqs[-1]}

    # ---- session spools (guard.daemon.ingest) -----------------------------------------------------

    def _spool_ingest(self, session: Session) -> dict[str, Any]:
        """The live path: the session's new spool lines into the trail; the reply acknowledges them."""
        assert self._spools is not None
        result = self._spools.ingest(session.id)
        for verdict in result.verdicts:
            _count(session, verdict)
        if result.damaged is not None:  # recorded in the trail; the session cannot go on recording
            raise p.RequestError(p.INTERNAL, f"the session's spool is damaged: {result.damaged}")
        return {"acked": result.acked, "more": result.more}

    def _drain_spool(self, session: Session) -> dict[str, Any] | None:
        """Everything the session spooled, into the trail; -> its end marker, if it wrote one."""
        if self._spools is None or not self._spools.has_spool(session.id):
            return None
        while True:
            result = self._spools.ingest(session.id)
            for verdict in result.verdicts:
                _count(session, verdict)
            if not result.more or result.damaged is not None:
                return result.end

    def _leave(self, session: Session, *, status: str, reason: str) -> None:
        """The session's connection is gone (or we stop): end it, unless its guard run lives on and will
        resume with the next daemon; then the trail says it was detached, and its spool keeps recording."""
        from guard.audit import session_event

        if self._spools is None or not self._spools.has_spool(session.id):
            self._end_session(session, status=status, reason=reason)
            return
        if not self._spools.writer_alive(session.id):
            self._end_session(session, status=status,
                              reason=f"guard run died or could not write its end marker ({reason})")
            return
        self._drain_spool(session)
        self.sessions.remove(session.id)
        conn = self._conns.get(session.owner)
        if conn is not None:
            conn.sessions.discard(session.id)
        self.approvals.answer_all(session=session.id, answer=Answer(
            Verdict.DENY, "daemon", None, f"the session was detached ({status})"), now=self.now())
        self._audit.append(session_event(session.id, "detached", status=status, reason=reason,
                                         counts=session.counts.to_dict()))
        self._audit.seal()
        self._spools.forget(session.id)
        self._rewatch()

    def _take_over(self, session_id: str) -> None:
        """`session.open` with `resume`: only a session whose spool is held by a live guard run."""
        if self._spools is None or not self._spools.has_spool(session_id) \
                or not self._spools.writer_alive(session_id):
            raise p.RequestError(p.NOT_FOUND,
                                 f"field 'resume': no live spool for session {session_id[:64]!r}")
        if session_id in {s.id for s in self.sessions}:  # its old connection has not been noticed gone yet
            old = self.sessions.remove(session_id)
            conn = self._conns.get(old.owner)
            if conn is not None:
                conn.sessions.discard(session_id)
            self._spools.forget(session_id)

    def _finish_abandoned_spools(self) -> None:
        """End, in the trail, every session whose guard run died with records left in its spool; delete
        the spools of ended sessions once the trail is synced."""
        if self._spools is None:
            return
        self._spools.reap()
        try:
            abandoned = self._spools.abandoned({s.id for s in self.sessions})
        except OSError as exc:
            log.error("cannot list the session spools: %s", exc)
            return
        for session_id in abandoned:
            try:
                fields = self._spools.finish_abandoned(session_id)
            except Exception:  # one damaged spool must not stop the others, nor the daemon
                log.exception("session %s: could not ingest its spool; it stays for another try", session_id)
                continue
            log.info("session %s: ingested its spool after guard run ended (%s)", session_id,
                     fields["status"])

    def _end_session(self, session: Session, *, status: str, reason: str | None = None,
                     exit_status: int | None = None, summary: dict[str, Any] | None = None) -> None:
        from guard.audit import session_event
        from guard.audit.events import ms

        marker = self._drain_spool(session) or {}
        if marker and summary is None:  # guard run wrote its end, then lost us
            exit_status = marker.get("exit_status") if isinstance(marker.get("exit_status"), int) else None
            summary = marker.get("summary") if isinstance(marker.get("summary"), dict) else None
        if isinstance(marker.get("status"), str) and marker["status"] != "closed":
            status = marker["status"]  # how guard run ended it: stopped (could not record), terminated
            if isinstance(marker.get("reason"), str):
                reason = marker["reason"]
        elif reason is None and isinstance(marker.get("reason"), str):
            reason = marker["reason"]
        if status == "closed" and summary is not None and isinstance(summary.get("recording_failed"), str):
            status, reason = "stopped", summary["recording_failed"]  # its spool broke: no end marker
        self.sessions.remove(session.id)
        conn = self._conns.get(session.owner)
        if conn is not None:
            conn.sessions.discard(session.id)
        self.approvals.answer_all(session=session.id, answer=Answer(
            Verdict.DENY, "daemon", None, f"the session ended ({status})"), now=self.now())
        extra: dict[str, Any] = {"status": status, "counts": session.counts.to_dict(),
                                 "duration_ms": ms(self.now() - session.started)}
        if reason is not None:
            extra["reason"] = reason
        if exit_status is not None:
            extra["exit_status"] = exit_status
        if summary is not None:
            extra["summary"] = summary
        self._audit.append(session_event(session.id, "end", **extra))
        self._audit.seal()  # a finished session's trail verifies at once, not at the next tick
        if self._spools is not None:
            self._spools.finish(session.id)  # synced: only now may the spool go
        self._rewatch()

    # ---- policy reload ---------------------------------------------------------------------------

    def _rewatch(self) -> None:
        if self._watcher is not None:
            self._watcher.watch(self.sessions.watched_paths())

    def _on_policy_change(self, path: Path) -> None:
        task = asyncio.get_running_loop().create_task(self._reload(path))
        self._reloading.add(task)
        task.add_done_callback(self._reloading.discard)

    async def _reload(self, path: Path) -> None:
        from guard.audit import session_event
        from guard.policy import load_policy

        for session in self.sessions.using_source(path):
            try:
                policy = await asyncio.to_thread(load_policy, session.policy_ref, workspace=session.workspace,
                                                 env=session.env)
            except Exception as exc:  # any failure keeps the last good policy; a GuardError says where
                error = exc.diagnostics() if isinstance(exc, GuardError) else f"{type(exc).__name__}: {exc}"
                log.warning("session %s keeps its policy: %s", session.id, error)
                session.reload_error = error
                if session.id in {s.id for s in self.sessions}:
                    self._audit.append(session_event(session.id, "policy_reload_failed", file=str(path),
                                                     error=error, kept=session.sources_hash))
                continue
            digest = sources_hash(policy.sources)
            session.reload_error = None
            if digest == session.sources_hash or session.id not in {s.id for s in self.sessions}:
                continue
            session.policy = policy
            session.sources_hash = digest
            self._audit.append(session_event(session.id, "policy_reload", file=str(path), policy=policy.name,
                                             sources=[str(s) for s in policy.sources], sources_hash=digest))
            log.info("session %s reloaded its policy after a change to %s", session.id, path)
        self._rewatch()

    def _record_daemon(self, what: str, **extra: Any) -> None:
        from guard.audit import session_event

        if self._audit is not None:
            self._audit.append(session_event(DAEMON_SESSION, what, **extra))
        elif len(self._early) < 1000:  # e.g. a peer refused while the trail was still being recovered
            self._early.append((what, extra))


_ANYTIME_OPS = frozenset({"hello", "status", "shutdown"})  # answered before the trail is open, too


def _raise_fd_limit() -> None:
    """Connections are file descriptors: use the hard limit, so the per-peer caps bind before EMFILE does."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536,
                                                        hard))


def _count(session: Session, verdict: Verdict) -> None:
    if verdict is Verdict.ALLOW:
        session.counts.allowed += 1
    else:
        session.counts.denied += 1


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _acquire_pid_lock(path: Path) -> int:
    """Hold an exclusive flock on the pid file for the daemon's lifetime: one daemon per GUARD_HOME."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DaemonError(f"a guard daemon is already running for {path.parent} (pid {holder})",
                          hint="`guard daemon status` shows it; `guard daemon stop` stops it") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse to touch one that answers or is not a socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    import stat

    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{path} exists and is not a socket", hint="move it away and start again")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise DaemonError(f"cannot probe the existing socket {path}: {exc.strerror}") from None
        log.info("removing a stale socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        raise DaemonError(f"another process answers on {path}", hint="`guard daemon stop` it first")
    finally:
        probe.close()


def _capture_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> dict[int, Any]:
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.getsignal(sig)
        loop.add_signal_handler(sig, handler)
    return previous


def _restore_signals(loop: asyncio.AbstractEventLoop, previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        loop.remove_signal_handler(sig)
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
