"""The thin ctypes/ioctl layer for seccomp: installing a filter and the user-notification ioctls.

Every struct layout and request number here is from linux/seccomp.h; they are the same on x86_64
and aarch64 (both little-endian, both LP64). Nothing in this module decides anything.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from dataclasses import dataclass

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SEND = 1 << 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

_NR_SECCOMP = {"x86_64": 317, "aarch64": 277}

# struct seccomp_notif: id, pid, flags, then struct seccomp_data (nr, arch, ip, args[6]).
_NOTIF = struct.Struct("=QIIiIQ6Q")
_RESP = struct.Struct("=QqiI")  # struct seccomp_notif_resp: id, val, error, flags
_ADDFD = struct.Struct("=QIIII")  # struct seccomp_notif_addfd: id, flags, srcfd, newfd, newfd_flags
_U64 = struct.Struct("=Q")


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


_IOW, _IOWR = 1, 3
IOCTL_NOTIF_RECV = _ioc(_IOWR, 0, _NOTIF.size)
IOCTL_NOTIF_SEND = _ioc(_IOWR, 1, _RESP.size)
IOCTL_NOTIF_ID_VALID = _ioc(_IOW, 2, 8)
IOCTL_NOTIF_ADDFD = _ioc(_IOW, 3, _ADDFD.size)
IOCTL_NOTIF_SET_FLAGS = _ioc(_IOW, 4, 8)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def machine() -> str:
    """The host architecture as seccomp tables name it ("x86_64", "aarch64")."""
    name = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)


def set_no_new_privs() -> None:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def no_new_privs() -> bool:
    return bool(_libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)


def seccomp_set_filter(program: bytes, flags: int) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, prog); returns the syscall's result (a listener fd or 0)."""
    arch = machine()
    if arch not in _NR_SECCOMP:
        raise OSError(errno.ENOSYS, f"seccomp: unsupported architecture {arch}")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    ret = _libc.syscall(ctypes.c_long(_NR_SECCOMP[arch]), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                        ctypes.c_long(flags), ctypes.byref(prog))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SET_MODE_FILTER, {flags:#x}): {os.strerror(err)}")
    return int(ret)


@dataclass(frozen=True, slots=True)
class Notif:
    """One received notification: which task, which syscall, with which raw arguments."""

    id: int
    pid: int
    nr: int
    arch: int
    args: tuple[int, int, int, int, int, int]


NOTIF_SIZE = _NOTIF.size
_ZERO_NOTIF = bytes(_NOTIF.size)


def notif_recv(fd: int, buf: bytearray | None = None) -> Notif:
    """Receive one notification, into `buf` (NOTIF_SIZE bytes, reused by the caller) when given."""
    if buf is None:
        buf = bytearray(_NOTIF.size)
    else:
        buf[:] = _ZERO_NOTIF  # the kernel insists the buffer is zeroed
    fcntl.ioctl(fd, IOCTL_NOTIF_RECV, buf, True)
    return notif_from_bytes(bytes(buf))


def notif_from_bytes(raw: bytes) -> Notif:
    """A notification the compiled core received (the same struct seccomp_notif bytes)."""
    nid, pid, _flags, nr, arch, _ip, *args = _NOTIF.unpack(raw)
    a0, a1, a2, a3, a4, a5 = args
    return Notif(id=nid, pid=pid, nr=nr, arch=arch, args=(a0, a1, a2, a3, a4, a5))


def notif_send(fd: int, nid: int, *, val: int = 0, error: int = 0, cont: bool = False) -> None:
    """Reply: `error` is a positive errno (sent negated), `val` the syscall's return value (when the
    supervisor performed it), or `cont` to let the kernel run the syscall."""
    flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE if cont else 0
    buf = bytearray(_RESP.pack(nid, val, -error, flags))
    fcntl.ioctl(fd, IOCTL_NOTIF_SEND, buf, True)


def notif_id_valid(fd: int, nid: int) -> bool:
    try:
        fcntl.ioctl(fd, IOCTL_NOTIF_ID_VALID, bytearray(_U64.pack(nid)), True)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def notif_addfd_send(fd: int, nid: int, srcfd: int, *, cloexec: bool) -> int:
    """Install `srcfd` in the notifying process and make it the syscall's return value, atomically."""
    buf = bytearray(_ADDFD.pack(nid, SECCOMP_ADDFD_FLAG_SEND, srcfd, 0, os.O_CLOEXEC if cloexec else 0))
    return int(fcntl.ioctl(fd, IOCTL_NOTIF_ADDFD, buf, True))


def notif_set_sync_wakeup(fd: int) -> bool:
    """Ask for same-CPU wake-ups (kernel 6.6+); False when the kernel does not know the flag."""
    try:
        fcntl.ioctl(fd, IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTTY):
            return False
        raise
    return True


_OPEN_HOW = struct.Struct("=QQQ")
_NR_OPENAT2 = 437  # the same number on every architecture


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2) with `struct open_how {flags, mode=0, resolve}`; raises OSError like os.open."""
    how = ctypes.create_string_buffer(_OPEN_HOW.pack(flags, 0, resolve), _OPEN_HOW.size)
    ret = _libc.syscall(ctypes.c_long(_NR_OPENAT2), ctypes.c_long(dirfd), ctypes.c_char_p(os.fsencode(path)),
                        ctypes.c_void_p(ctypes.addressof(how)), ctypes.c_long(_OPEN_HOW.size))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(ret)


_NR_PIDFD_GETFD = 438  # the same number on every architecture
_NR_SETFSUID = {"x86_64": 122, "aarch64": 151}
_NR_SETFSGID = {"x86_64": 123, "aarch64": 152}
_NR_CAPGET = {"x86_64": 125, "aarch64": 90}
_NR_CAPSET = {"x86_64": 126, "aarch64": 91}
_CAP_V3 = 0x20080522
_MACHINE = machine()
_CAP_HEADER = struct.Struct("=Ii")
_CAP_DATA = struct.Struct("=6I")  # two {effective, permitted, inheritable}


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """A duplicate of `targetfd` of the process behind `pidfd` (same open file description), close-on-exec."""
    ret = _libc.syscall(ctypes.c_long(_NR_PIDFD_GETFD), ctypes.c_long(pidfd), ctypes.c_long(targetfd),
                        ctypes.c_long(0))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd({targetfd}): {os.strerror(err)}")
    return int(ret)


def _raw(table: dict[str, int], *args: object) -> int:
    ret = _libc.syscall(ctypes.c_long(table[_MACHINE]), *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


def setfsuid(uid: int) -> int:
    """Set this THREAD's file-system uid (the raw syscall is per thread); returns the previous one."""
    return _raw(_NR_SETFSUID, ctypes.c_long(uid))


def setfsgid(gid: int) -> int:
    return _raw(_NR_SETFSGID, ctypes.c_long(gid))


def thread_caps() -> bytes:
    """This thread's capability sets (capget v3), as the bytes capset takes back."""
    header = ctypes.create_string_buffer(_CAP_HEADER.pack(_CAP_V3, 0), _CAP_HEADER.size)
    data = ctypes.create_string_buffer(_CAP_DATA.size)
    _raw(_NR_CAPGET, header, data)
    return bytes(data.raw)


def effective_caps(caps: bytes) -> int:
    eff0, _p0, _i0, eff1, _p1, _i1 = _CAP_DATA.unpack(caps)
    return int(eff0) | (int(eff1) << 32)


def set_thread_caps(caps: bytes) -> None:
    """capset on this thread only (pid 0 means the calling thread)."""
    header = ctypes.create_string_buffer(_CAP_HEADER.pack(_CAP_V3, 0), _CAP_HEADER.size)
    data = ctypes.create_string_buffer(caps, _CAP_DATA.size)
    _raw(_NR_CAPSET, header, data)


def without_effective(caps: bytes) -> bytes:
    """The same sets with nothing effective (permitted kept, so they can be raised again)."""
    _e0, p0, i0, _e1, p1, i1 = _CAP_DATA.unpack(caps)
    return _CAP_DATA.pack(0, p0, i0, 0, p1, i1)


_NR_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}


def renameat2(olddirfd: int, oldname: str, newdirfd: int, newname: str, flags: int) -> None:
    """renameat2(2) (RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT), which os.rename lacks."""
    _raw(_NR_RENAMEAT2, ctypes.c_int(olddirfd), ctypes.c_char_p(os.fsencode(oldname)), ctypes.c_int(newdirfd),
         ctypes.c_char_p(os.fsencode(newname)), ctypes.c_uint(flags))
