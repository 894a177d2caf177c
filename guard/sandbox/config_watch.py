"""In-place writes of agent config that can start programs, judged on content once written.

A save by temp file and rename is judged by the supervisor before it happens (agent_config). An in-place
write (open O_TRUNC, write, close) cannot be: its bytes arrive after the open that the supervisor decides,
and Claude Code writes `~/.claude.json` in place at every start, so asking at the open would stall every
honest session (and an earlier attempt to do that broke the interactive agent). So each such file that the
policy lets the agent write but not change what it starts (`write PATH` allowed, `write PATH#programs` not)
is watched from outside the sandbox (inotify on its directory, which sees writes through the sandbox's
binds too): when a write is closed, its program-starting entries are compared with the last accepted ones.
Unchanged, it is the new baseline. Changed, the previous content is put back at once (in place, so binds
of the file stay valid), further write-opens of the file are decided as writes to `PATH#programs` while the
question is open, and the change is decided as a write to `PATH#programs` (the policy asks a human); an
approved change is written back. The session's end checks every watched file once more.

What is left: between the agent's close and the restore (a few milliseconds), the file holds the new
entries; a Claude Code the engineer starts outside the sandbox in that instant reads them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import struct
import threading
from collections.abc import Callable, Sequence

from guard.model import Action, Decision, Op, Verdict
from guard.sandbox.agent_config import program_change, programs_target, read_config, watched

log = logging.getLogger(__name__)

# Agent config files in the home that can start programs (relative to HOME); the policy decides which are
# watched (those written without an ask).
HOME_CONFIGS = (".claude.json", ".claude/settings.json", ".claude/settings.local.json", ".codex/config.toml",
                ".gemini/settings.json", ".cursor/mcp.json", ".cursor/cli-config.json")

_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("=iIII")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def _read(path: str) -> bytes | None:
    try:
        return read_config(path)
    except OSError:
        return None


def _write_in_place(path: str, data: bytes) -> None:
    """Rewrite the existing file (same inode: a bind of it in the sandbox keeps showing it)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


class ConfigWatch:
    """Watches the given files; `redirect` turns a write of one whose change is being decided into a
    write of its `#programs` name. `decide` records and answers (the session's decider)."""

    def __init__(self, paths: Sequence[str], decide: Callable[[Action], Decision],
                 warn: Callable[[str], None]) -> None:
        self._paths = tuple(dict.fromkeys(paths))
        self._decide = decide
        self._warn = warn
        self._lock = threading.Lock()
        self._base: dict[str, bytes | None] = {p: _read(p) for p in self._paths}
        self._pending: set[str] = set()
        self._dirs: dict[int, str] = {}
        self._fd = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    @classmethod
    def for_policy(cls, home: str, check: Callable[[Action], Decision], decide: Callable[[Action], Decision],
                   warn: Callable[[str], None]) -> ConfigWatch | None:
        """The agent config files the policy lets the agent write but not change what they start."""
        paths = []
        for rel in HOME_CONFIGS:
            path = os.path.join(home, rel)
            if watched(path) is None:
                continue
            if (check(Action(Op.WRITE, path)).enforced is Verdict.ALLOW
                    and check(Action(Op.WRITE, programs_target(path))).enforced is not Verdict.ALLOW):
                paths.append(path)
        return cls(paths, decide, warn) if paths else None

    def start(self) -> None:
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        for directory in dict.fromkeys(os.path.dirname(p) for p in self._paths):
            wd = _libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CLOSE_WRITE | _IN_MOVED_TO)
            if wd < 0:  # a directory missing at launch: its file is judged at the end only
                continue
            self._dirs[wd] = directory
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._loop, name="guard-config-watch", daemon=True)
        self._thread.start()

    def redirect(self, action: Action) -> Action:
        """While a change of a watched file is being decided, a write of it is a write of what it starts."""
        if action.op is Op.WRITE and action.target in self._pending:
            return Action(Op.WRITE, programs_target(action.target), pid=action.pid)
        return action

    def stop(self) -> None:
        """Stop watching, then judge every file once more (what was written just before the end)."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=120)
            self._thread = None
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1
        for path in self._paths:
            self._judge(path, renamed=False)

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._fd in ready:
                for path, renamed in self._events():
                    self._judge(path, renamed=renamed)
            if self._wake_r in ready:
                return

    def _events(self) -> list[tuple[str, bool]]:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return []
        out: list[tuple[str, bool]] = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _IN_Q_OVERFLOW:
                out.extend((p, False) for p in self._paths)
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            path = os.path.join(directory, os.fsdecode(name))
            if path in self._base:
                out.append((path, bool(mask & _IN_MOVED_TO)))
        return list(dict.fromkeys(out))

    def _judge(self, path: str, *, renamed: bool) -> None:
        """Compare what the file now starts with the last accepted content; put back and decide a change."""
        try:
            new = _read(path)
            with self._lock:
                base = self._base[path]
            if new is None or new == base:
                return
            # a rename onto the file was judged by the supervisor before it happened
            if renamed or program_change(path, base, new) is None:
                with self._lock:
                    self._base[path] = new
                return
            self._pending.add(path)
            try:
                _write_in_place(path, base if base is not None else b"{}\n")
                decision = self._decide(Action(Op.WRITE, programs_target(path)))
                if decision.enforced is Verdict.ALLOW:
                    with self._lock:
                        self._base[path] = new
                    _write_in_place(path, new)
                else:
                    self._warn(f"guard: {path}: a write added or changed what it starts (MCP servers, "
                               f"hooks); refused ({decision.rule_id}), its previous content is back")
            finally:
                self._pending.discard(path)
        except OSError as exc:
            log.warning("config watch: %s: %s", path, exc)
