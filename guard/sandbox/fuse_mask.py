"""Masks that report: a read-denied credential (`~/.ssh`, `~/.aws/credentials`, a `.env`) is covered by a
FUSE mount the guard answers, so every attempt to reach it leaves a record with its rule.

Why FUSE: Landlock and mount masks refuse such reads in the kernel, silently (no unprivileged channel
reports a Landlock denial), and notifying every read-only open would roughly double file-heavy work. A FUSE
file system can be mounted by an unprivileged user namespace over exactly the denied names; the kernel then
asks the guard about each lookup, open and listing beneath them, with the caller's pid, and nothing else
costs anything. The guard answers as the plain masks did (a directory refuses every name in it with
EACCES, "Permission denied", and so does a file outside the grants; a denied file inside a grant reads as
empty) and records a READ of the path, decided by the policy (the `credentials` rule). If `guard run` is
gone, the connection is dead and every access fails (ENOTCONN): closed, never open. Where FUSE is missing
(no /dev/fuse, a kernel without it), the plan's fallback mask is applied and such reads stay unrecorded,
as before. Cost: nothing for any other path; about 100 us (Python) per access to a masked name.

`mount_mask` runs in the sandbox's init (inside the namespaces, before any agent process); `MaskServer`
runs in `guard run` with the descriptors the init sends back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import struct
import threading
from collections.abc import Callable, Sequence

from guard.model import Action, Op

log = logging.getLogger(__name__)

_IN = struct.Struct("=IIQQIIIHH")  # fuse_in_header
_OUT = struct.Struct("=IiQ")  # fuse_out_header
_INIT, _LOOKUP, _FORGET, _GETATTR, _OPEN, _STATFS, _OPENDIR, _ACCESS = 26, 1, 2, 3, 14, 17, 27, 34
_READ, _RELEASE, _FLUSH = 15, 18, 25
_FOPEN_DIRECT_IO = 1 << 0
_INTERRUPT, _DESTROY, _BATCH_FORGET = 36, 38, 42
_NO_REPLY = (_FORGET, _BATCH_FORGET, _INTERRUPT)
_BUFFER = 1 << 17
MAX_RECORDED = 4096  # distinct (path, pid) pairs recorded per session; more are refused unrecorded
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8


def mount_mask(path: str, shape: str) -> int:
    """Mount a FUSE file system over `path` (a directory or a file); returns its /dev/fuse descriptor.
    Raises OSError when this host cannot (no /dev/fuse, FUSE not allowed in a user namespace)."""
    from guard.sandbox import _syscalls as sc

    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        mode = stat.S_IFDIR if shape == "dir" else stat.S_IFREG
        opts = f"fd={fd},rootmode={mode:o},user_id={os.geteuid()},group_id={os.getegid()}"
        sc.mount("guard-mask", path, "fuse", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _attr(shape: str) -> bytes:
    """fuse_attr_out for the mask's root, as the plain masks looked: a directory of mode 0 (nothing to
    list, every name in it refused), a file of mode 0, an empty read-only file; no cache."""
    mode = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "empty": stat.S_IFREG | 0o444}[shape]
    attr = struct.pack("=QQQQQQIIIIIIIIII", 1, 0, 0, 0, 0, 0, 0, 0, 0, mode, 2 if shape == "dir" else 1,
                       os.geteuid(), os.getegid(), 0, 4096, 0)
    return struct.pack("=QII", 0, 0, 0) + attr


_INIT_OUT = struct.pack("=IIIIHHIIHHI", 7, 31, 0, 0, 0, 0, 4096, 1, 0, 0, 0) + b"\0" * 28
_STATFS_OUT = struct.pack("=QQQQQIIII", 0, 0, 0, 0, 0, 4096, 255, 4096, 0) + b"\0" * 24


class MaskServer:
    """Answers the FUSE masks of one sandbox; `decide` records (and decides) each READ it reports."""

    def __init__(self, masks: Sequence[tuple[int, str, str]], decide: Callable[[Action], object]) -> None:
        """`masks`: (descriptor, path, shape): "dir", "file" (both refuse with EACCES) or "empty"."""
        self._masks = {fd: (path, shape) for fd, path, shape in masks}
        self._decide = decide
        self._seen: set[tuple[str, int]] = set()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self.thread = threading.Thread(target=self._serve, name="guard-masks", daemon=True)

    def stop(self) -> None:
        """Stop serving and close every descriptor (once: a second call does nothing)."""
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        for fd in (*self._masks, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._masks = {}
        self._wake_r = self._wake_w = -1

    def _serve(self) -> None:
        poller = select.poll()
        for fd in self._masks:
            poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            for fd, events in poller.poll():
                if fd == self._wake_r:
                    return
                if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                    poller.unregister(fd)
                    continue
                try:
                    self._one(fd)
                except OSError as exc:
                    if exc.errno in (errno.ENODEV, errno.EBADF):  # the mount is gone (the sandbox ended)
                        poller.unregister(fd)
                    elif exc.errno not in (errno.EAGAIN, errno.EINTR, errno.ENOENT):
                        log.warning("fuse mask %s: %s", self._masks.get(fd, ("?",))[0], exc)
                except Exception:
                    log.exception("fuse mask: request failed")

    def _one(self, fd: int) -> None:
        data = os.read(fd, _BUFFER)
        if len(data) < _IN.size:
            return
        length, op, unique, node, _uid, _gid, pid, _, _ = _IN.unpack_from(data)
        body = data[_IN.size:length]
        root, shape = self._masks[fd]
        if op in _NO_REPLY:
            return
        if op == _INIT:
            self._reply(fd, unique, body=_INIT_OUT)
        elif op == _GETATTR:
            self._reply(fd, unique, body=_attr(shape))
        elif op == _STATFS:
            self._reply(fd, unique, body=_STATFS_OUT)
        elif op == _LOOKUP:
            name = os.fsdecode(body.split(b"\0", 1)[0])
            self._record(f"{root}/{name}" if node == 1 else root, pid)
            self._reply(fd, unique, errno.EACCES)
        elif op == _OPEN and shape == "empty":
            # a denied file inside a grant reads as empty, as its plain mask did (tools that read `.env` if
            # present keep working, with nothing in it); the attempt is recorded
            self._record(root, pid)
            self._reply(fd, unique, body=struct.pack("=QII", 0, _FOPEN_DIRECT_IO, 0))
        elif op in (_READ, _RELEASE, _FLUSH) and shape == "empty":
            self._reply(fd, unique)  # no bytes: end of file
        elif op == _ACCESS and shape == "empty":
            self._reply(fd, unique)
        elif op in (_OPEN, _OPENDIR, _ACCESS):
            self._record(root, pid)
            self._reply(fd, unique, errno.EACCES)
        elif op == _DESTROY:
            self._reply(fd, unique)
        else:
            self._reply(fd, unique, errno.ENOSYS)

    @staticmethod
    def _reply(fd: int, unique: int, err: int = 0, body: bytes = b"") -> None:
        os.write(fd, _OUT.pack(_OUT.size + len(body), -err, unique) + body)

    def _record(self, path: str, pid: int) -> None:
        key = (path, pid)
        if key in self._seen or len(self._seen) >= MAX_RECORDED:
            return
        self._seen.add(key)
        try:
            self._decide(Action(Op.READ, path))
        except Exception:
            log.exception("fuse mask: recording a read of %s failed", path)
