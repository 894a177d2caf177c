"""The blocking client `guard run` and the CLI use to talk to the daemon.

`guard run` asks the daemon about every notified syscall, so a client keeps one connection open and adds
no thread hand-off on the fast path: whichever calling thread is waiting reads the socket for everyone
(leader/follower) and hands other threads their replies by id. A supervisor blocked on an `ask` therefore
never stops the network relay's decisions on the same connection.

Every connection starts with a handshake: a `hello` that every protocol version answers, so a client never
works with a daemon of another guard version (`DaemonVersionError` names both and how to stop the old one).

Failures are `DaemonError`s; a caller enforcing a policy must treat any of them as deny (fail closed).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from guard import __version__
from guard.daemon import protocol as p
from guard.errors import DaemonError, ProtocolError
from guard.home import ensure_private_dir, guard_home, socket_path
from guard.model import Action, Decision

DEFAULT_TIMEOUT = 30.0
READY_WAIT = 120.0  # seconds a starting daemon may take to recover its trail before callers give up
_spawned: list[subprocess.Popen[bytes]] = []  # keep handles so they are reaped, not reported as leaks


class DaemonReplyError(DaemonError):
    """The daemon answered with an error; `code` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, hint=_HINTS.get(code))
        self.code = code


_HINTS = {
    p.FORBIDDEN: "only the user who runs the daemon (or root) may talk to it",
    p.NOT_FOUND: "`guard approvals` lists pending requests; `guard daemon status` lists sessions",
    p.SHUTTING_DOWN: "start it again with `guard daemon start`",
    p.AUDIT_FAILED: "free space on (or repair) the disk holding $GUARD_HOME/log, then `guard daemon start`; "
                    "see $GUARD_HOME/daemon.log",
}


class DaemonNotRunning(DaemonError):
    """Nothing listens on the socket."""


class DaemonVersionError(DaemonError):
    """The daemon speaks another protocol (it is another guard version): nothing may run against it."""

    def __init__(self, *, daemon_version: str, daemon_protocol: int, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"the running guard daemon ({who}) is guard {daemon_version} speaking protocol "
            f"{daemon_protocol}, but this is guard {__version__} speaking protocol {p.VERSION}; they "
            "cannot work together, so nothing was started: stop it with `guard daemon stop`, then try again",
            hint="`guard daemon stop` ends its sessions and seals its trail; the new daemon then starts on "
                 "its own")
        self.daemon_version = daemon_version
        self.daemon_protocol = daemon_protocol
        self.pid = pid


class _Slot:
    __slots__ = ("reply",)

    def __init__(self) -> None:
        self.reply: dict[str, Any] | None = None


class DaemonClient:
    """One connection to the daemon; every method is safe to call from several threads at once."""

    def __init__(self, sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._sock = sock
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._cv = threading.Condition()
        self._pending: dict[int, _Slot] = {}
        self._reading = False
        self._broken: DaemonError | None = None
        self._buf = bytearray()
        self._ask_timeouts: dict[str, float] = {}
        self.daemon: dict[str, Any] = {}  # the handshake's answer: version, protocol, pid, ready, state

    @classmethod
    def connect(cls, home: Path | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                handshake: bool = True) -> DaemonClient:
        """Connect and say hello; raises DaemonNotRunning, DaemonVersionError or DaemonError."""
        path = socket_path(home if home is not None else guard_home())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise DaemonNotRunning(f"no guard daemon is listening on {path}",
                                   hint="start it with `guard daemon start`") from None
        except OSError as exc:
            sock.close()
            raise DaemonError(f"cannot connect to the guard daemon at {path}: {exc.strerror or exc}",
                              hint="is GUARD_HOME yours?") from None
        client = cls(sock, timeout=timeout)
        if handshake:
            try:
                client.handshake()
            except BaseException:
                client.close()
                raise
        return client

    def handshake(self) -> dict[str, Any]:
        """The first request: a hello any protocol version answers; refuses a daemon of another protocol."""
        me = {"version": __version__, "protocol": p.VERSION}
        reply = self.raw_request(p.VERSION, "hello", {"client": me})
        result: dict[str, Any] = reply["result"] if isinstance(reply.get("result"), dict) else {}
        if reply.get("ok") is True and result:
            if result.get("protocol") != p.VERSION or reply.get("v") != p.VERSION:
                raise DaemonVersionError(daemon_version=str(result.get("version", "?")),
                                         daemon_protocol=_int_or(result.get("protocol"), -1),
                                         pid=_int_or(result.get("pid"), None))
            self.daemon = result
            return result
        error: dict[str, Any] = reply["error"] if isinstance(reply.get("error"), dict) else {}
        theirs = reply.get("v")
        if error.get("code") == p.BAD_VERSION and type(theirs) is int and theirs != p.VERSION:
            # an older daemon that checks the envelope first: ask it, in its own protocol, who it is
            old = self.raw_request(theirs, "hello", {})
            result = old["result"] if isinstance(old.get("result"), dict) else {}
            raise DaemonVersionError(daemon_version=str(result.get("version", "?")), daemon_protocol=theirs,
                                     pid=_int_or(result.get("pid"), None))
        raise _reply_error(reply)

    def raw_request(self, version: int, op: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """One request in protocol `version`, its reply parsed leniently (any version): for the handshake and
        for stopping a daemon of another version. Not for use once other requests are in flight."""
        request_id = next(self._ids)
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(p.encode({"v": version, "id": request_id, "op": op, **fields}))
            while True:
                newline = self._buf.find(b"\n")
                if newline >= 0:
                    line = bytes(self._buf[:newline])
                    del self._buf[:newline + 1]
                    try:
                        message = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        raise DaemonError("the daemon sent a line that is not JSON") from None
                    if not isinstance(message, dict):
                        raise DaemonError("the daemon sent an unexpected message")
                    if message.get("id") in (request_id, None):
                        return message
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DaemonError(f"no reply to {op!r} from the daemon in time")
                self._sock.settimeout(remaining)
                chunk = self._sock.recv(1 << 16)
                if not chunk:
                    raise DaemonError("the daemon closed the connection")
                self._buf += chunk
        except TimeoutError:
            raise DaemonError(f"no reply to {op!r} from the daemon in time") from None
        except OSError as exc:
            raise DaemonError(f"lost the connection to the daemon: {exc}") from None

    def wait_ready(self, timeout: float = READY_WAIT) -> None:
        """Block until the daemon has recovered its trail (it answers `hello` while it still replays)."""
        if self.daemon.get("ready", True):
            return
        self.request("ready", timeout=timeout)
        self.daemon["ready"] = True

    @staticmethod
    def ensure_running(home: Path | None = None, *, wait: float = 10.0,
                       timeout: float = DEFAULT_TIMEOUT) -> DaemonClient:
        """Same as the module's `ensure_running` (both spellings appear in callers)."""
        return ensure_running(home, wait=wait, timeout=timeout)

    def close(self) -> None:
        with self._cv:
            if self._broken is None:
                self._broken = DaemonError("the client was closed")
            self._cv.notify_all()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- operations ------------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        return self.request("hello")

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def open_session(self, policy: str | Path, workspace: str | Path, *, argv: Sequence[str] = (),
                     cwd: str | Path | None = None, pid: int | None = None,
                     env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """-> {"session": id, "policy": {"name", "sources", "ask_timeout", "mode", "sources_hash"}}."""
        fields: dict[str, Any] = {"policy": str(policy), "workspace": os.path.abspath(workspace),
                                  "argv": list(argv)}
        if cwd is not None:
            fields["cwd"] = os.path.abspath(cwd)
        if pid is not None:
            fields["pid"] = pid
        if env is not None:
            fields["env"] = dict(env)
        result = self.request("session.open", fields)
        self._ask_timeouts[result["session"]] = float(result["policy"]["ask_timeout"])
        return result

    def decide(self, session: str, action: Action, asked: Decision | None = None) -> Decision:
        """The final decision; on `ask` this blocks until a human answers or the policy's timeout passes.
        `asked`: the caller's own `ask`, held as it is (the daemon does not decide again)."""
        wait = self._ask_timeouts.get(session, 60.0) + self.timeout
        fields: dict[str, Any] = {"session": session, "action": action.to_dict()}
        if asked is not None:
            fields["decision"] = asked.to_dict()
        result = self.request("decide", fields, timeout=wait)
        return Decision.from_dict(result["decision"])

    def record(self, session: str, event: Mapping[str, Any]) -> int:
        """Record an event decided elsewhere (type "connection" or "decision"); -> its sequence number."""
        return int(self.request("record", {"session": session, "event": dict(event)})["seq"])

    def record_batch(self, session: str, events: Sequence[Mapping[str, Any]]) -> int:
        """Record up to protocol.MAX_BATCH events in one round trip, all or nothing; -> how many."""
        return int(self.request("record.batch", {"session": session,
                                                 "events": [dict(e) for e in events]})["count"])

    def close_session(self, session: str, *, exit_status: int | None = None,
                      summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"session": session, "exit_status": exit_status}
        if summary is not None:
            fields["summary"] = dict(summary)
        result = self.request("session.close", fields)
        self._ask_timeouts.pop(session, None)
        return result

    def approvals(self) -> list[dict[str, Any]]:
        return list(self.request("approvals.list")["approvals"])

    def approve(self, approval: str, *, by: str = "") -> dict[str, Any]:
        return self.request("approvals.decide", {"approval": approval, "verdict": "allow", "by": by})

    def deny(self, approval: str, *, by: str = "") -> dict[str, Any]:
        return self.request("approvals.decide", {"approval": approval, "verdict": "deny", "by": by})

    def shutdown(self) -> dict[str, Any]:
        return self.request("shutdown")

    # ---- transport -------------------------------------------------------------------------------

    def request(self, op: str, fields: Mapping[str, Any] | None = None, *,
                timeout: float | None = None) -> dict[str, Any]:
        """Send one request and wait for its reply; -> the result, or DaemonReplyError."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        request_id = next(self._ids)
        slot = _Slot()
        line = p.request_line(request_id, op, fields or {})
        with self._cv:
            if self._broken is not None:
                raise self._broken
            self._pending[request_id] = slot
        try:
            try:
                with self._send_lock:
                    self._sock.sendall(line)
            except OSError as exc:
                reason = self._parting_words()
                raise self._fail(reason or DaemonError(f"lost the connection to the daemon: {exc}")) from None
            self._await(slot, deadline, op)
        finally:
            with self._cv:
                self._pending.pop(request_id, None)
        reply = slot.reply
        assert reply is not None
        if reply["ok"]:
            result = reply.get("result")
            if not isinstance(result, dict):
                raise ProtocolError(f"daemon reply to {op!r} has no result object")
            return result
        raise _reply_error(reply)

    def _await(self, slot: _Slot, deadline: float, op: str) -> None:
        with self._cv:
            while True:
                if slot.reply is not None:
                    return
                if self._broken is not None:
                    raise self._broken
                if not self._reading:
                    self._reading = True
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DaemonError(f"no reply to {op!r} from the daemon in time")
                self._cv.wait(remaining)
        try:
            self._read_until(slot, deadline, op)
        finally:
            with self._cv:
                self._reading = False
                self._cv.notify_all()

    def _read_until(self, slot: _Slot, deadline: float, op: str) -> None:
        while slot.reply is None:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                line = bytes(self._buf[:newline])
                del self._buf[:newline + 1]
                self._deliver(line)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DaemonError(f"no reply to {op!r} from the daemon in time")
            try:
                self._sock.settimeout(remaining)
                chunk = self._sock.recv(1 << 16)
            except TimeoutError:
                raise DaemonError(f"no reply to {op!r} from the daemon in time") from None
            except OSError as exc:
                raise self._fail(DaemonError(f"lost the connection to the daemon: {exc}")) from None
            if not chunk:
                raise self._fail(DaemonError("the daemon closed the connection"))
            self._buf += chunk

    def _deliver(self, line: bytes) -> None:
        try:
            message = p.parse_reply(line)
        except ProtocolError as exc:
            raise self._fail(exc) from None
        request_id = message.get("id")
        if request_id is None and not message["ok"]:
            raise self._fail(_reply_error(message))  # a connection-level refusal (peer check, busy, ...)
        with self._cv:
            slot = self._pending.get(request_id) if isinstance(request_id, int) else None
            if slot is not None and slot.reply is None:
                slot.reply = message
                self._cv.notify_all()

    def _parting_words(self) -> DaemonError | None:
        """After a failed send: the error the daemon sent before it closed (e.g. `audit_failed`), if any."""
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(1 << 16, socket.MSG_DONTWAIT):
                self._buf += chunk
        for line in bytes(self._buf).split(b"\n"):
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("id") is None and message.get("ok") is False:
                return _reply_error(message)
        return None

    def _fail(self, error: DaemonError) -> DaemonError:
        with self._cv:
            if self._broken is None:
                self._broken = error
            self._cv.notify_all()
        return self._broken


def _int_or(value: Any, default: int | None) -> Any:
    return value if type(value) is int else default


def _reply_error(reply: Mapping[str, Any]) -> DaemonReplyError:
    error = reply.get("error")
    if not isinstance(error, dict):
        return DaemonReplyError(p.INTERNAL, "daemon reply has neither result nor error")
    return DaemonReplyError(str(error.get("code", p.INTERNAL)), str(error.get("message", "")))


def watch_approvals(home: Path | None = None, *, timeout: float | None = None,
                    stop: threading.Event | None = None) -> Iterator[dict[str, Any]]:
    """Yield approval changes ({"event": "pending"|"resolved", "approval": {...}}) on a dedicated connection.

    The first item is {"event": "snapshot", "approvals": [...]}. Stops when the daemon ends the stream,
    `timeout` seconds pass without a message, or `stop` is set (noticed within half a second).
    """
    client = DaemonClient.connect(home)
    sock = client._sock
    idle = 0.0
    try:
        sock.sendall(p.request_line(1, "approvals.watch", {}))
        buffer = bytearray()
        first = True
        while stop is None or not stop.is_set():
            newline = buffer.find(b"\n")
            if newline < 0:
                wait = timeout if stop is None else min(0.5, timeout if timeout is not None else 0.5)
                sock.settimeout(wait)
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    idle += wait or 0.0
                    if stop is not None and (timeout is None or idle < timeout):
                        continue
                    return
                idle = 0.0
                if not chunk:
                    return
                buffer += chunk
                continue
            message = p.parse_reply(bytes(buffer[:newline]))
            del buffer[:newline + 1]
            if not message["ok"]:
                raise _reply_error(message)
            if first:
                first = False
                yield {"event": "snapshot", "approvals": message["result"]["approvals"]}
            else:
                yield {k: v for k, v in message.items() if k not in ("v", "id", "ok")}
    finally:
        client.close()


def spawn_daemon(home: Path) -> subprocess.Popen[bytes]:
    """Start `python -m guard daemon run` detached: own session, stdio to $GUARD_HOME/daemon.log."""
    ensure_private_dir(home)
    log_fd = os.open(home / "daemon.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "guard", "daemon", "run"], stdin=subprocess.DEVNULL,
                                stdout=log_fd, stderr=log_fd, start_new_session=True, cwd="/",
                                env={**os.environ, "GUARD_HOME": str(home)})
    finally:
        os.close(log_fd)
    _spawned.append(proc)
    return proc


def ensure_running(home: Path | None = None, *, wait: float = 10.0,
                   timeout: float = DEFAULT_TIMEOUT) -> DaemonClient:
    """A connected client, starting the daemon first when none answers (bounded wait for its socket)."""
    home = home if home is not None else guard_home()
    with contextlib.suppress(DaemonNotRunning):
        return _connected(home, timeout)
    proc = spawn_daemon(home)
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            return _connected(home, timeout)
        except DaemonNotRunning:
            pass
        status = proc.poll()
        if status is not None:
            # it may have lost a start race to another daemon, which then answers
            with contextlib.suppress(DaemonNotRunning):
                return _connected(home, timeout)
            raise DaemonError(f"the guard daemon exited at start (status {status}): {_log_tail(home)}",
                              hint=f"see {home / 'daemon.log'}")
        if time.monotonic() >= deadline:
            raise DaemonError(f"the guard daemon did not answer within {wait:g} s",
                              hint=f"see {home / 'daemon.log'}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _connected(home: Path, timeout: float) -> DaemonClient:
    """Connected, handshaken, and ready (a starting daemon is waited for, bounded by READY_WAIT)."""
    client = DaemonClient.connect(home, timeout=timeout)
    try:
        client.wait_ready()
    except DaemonError:
        client.close()
        raise
    return client


def _log_tail(home: Path, limit: int = 4000) -> str:
    """Why the daemon stopped, from its log: the last ERROR entry with its continuation lines (a hint), else
    the last line."""
    try:
        data = (home / "daemon.log").read_bytes()[-limit:]
    except OSError:
        return "(no log)"
    lines = data.decode(errors="replace").strip().splitlines()
    if not lines:
        return "(empty log)"
    errors = [i for i, line in enumerate(lines) if " ERROR " in line]
    if not errors:
        return lines[-1]
    entry = [lines[errors[-1]]]
    for line in lines[errors[-1] + 1:]:
        if not line.startswith((" ", "\t")):
            break
        entry.append(line.strip())
    return " ".join(entry)[:1000]
