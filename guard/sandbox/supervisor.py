"""The decision tier: serve seccomp user notifications from a sandboxed process tree.

The supervisor runs outside the sandbox, as the user, not under Landlock. For each notification it reads
the syscall's arguments from the task's memory, turns them into an `Action`, asks `decide`, calls
`record`, and replies. Three kinds of reply, each chosen for what it can guarantee:

- Write-opens are *performed by the supervisor*: it resolves the path itself, component by component,
  in the task's root with no symlink followed by the kernel, decides on the canonical path, opens the
  final name relative to the parent directory it already holds (O_NOFOLLOW), and injects the descriptor
  with SECCOMP_IOCTL_NOTIF_ADDFD|SEND. A thread that rewrites the path after the check changes nothing:
  the kernel never reads that path again. Because the supervisor is not confined, the decision must be
  the policy's complete answer for that path; nothing else stands behind it.
- exec, rename, link, mkdir, ... are decided and then CONTINUEd: the kernel re-reads the arguments, so a
  racing thread can swap them after the check. Landlock bounds what can actually happen there (exec
  allowlist, writable trees); this tier adds the `run`/deny/ask rules and the record of every exec.
- Everything that goes wrong replies an errno (fail closed): a decide() that raises, a path that cannot
  be resolved, a magic link we cannot vouch for. A vanished task is skipped. No exception ends the loop.

The notification id is re-validated (SECCOMP_IOCTL_NOTIF_ID_VALID) after every read of /proc, because a
task that died between RECV and the read may have had its pid reused by an unrelated process.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import posixpath
import select
import shlex
import socket
import stat
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from guard.errors import SandboxError
from guard.model import Action, Decision, Op, Verdict
from guard.sandbox import syscalls_seccomp as sc
from guard.sandbox._syscalls import CLONE_FS, unshare
from guard.sandbox.agent_config import rename_programs_action
from guard.sandbox.core import compiled
from guard.sandbox.fastpath import FastPath
from guard.sandbox.link_names import LinkMap, LinkNames
from guard.sandbox.seccomp import ARCHES, FS_IOC_FSSETXATTR, SeccompSpec

log = logging.getLogger(__name__)

# A worker thread's own fs_struct (cwd, root, umask), unshared when it starts: it then creates with the
# task's umask in effect, and the kernel applies it (or a directory's default ACL instead) as it does for
# the task. A thread without one (a FIFO open's helper) creates with the mode masked and sets it after.
_THREAD_FS = threading.local()


def _own_fs() -> None:
    """Only on a thread of its own: the main thread goes on to write guard's own files after serving."""
    if threading.current_thread() is threading.main_thread():
        return
    try:
        unshare(CLONE_FS)
    except SandboxError:
        _THREAD_FS.own = False
        return
    _THREAD_FS.own = True
    _THREAD_FS.umask = None


def _task_umask_here(umask: int) -> bool:
    """Make this thread's umask the task's when the thread has its own; -> whether it did."""
    if not getattr(_THREAD_FS, "own", False):
        return False
    if _THREAD_FS.umask != umask:
        os.umask(umask)
        _THREAD_FS.umask = umask
    return True

PATH_MAX = 4096
ARGV_MAX_ARGS = 1024
ARGV_MAX_BYTES = 128 * 1024
SYMLINK_MAX = 40
TRUNCATED_MARK = "[guard: argv truncated]"
PROC_SUPER_MAGIC = 0x9FA0

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
AT_REMOVEDIR = 0x200
O_PATH = 0o10000000
O_TMPFILE = 0o20000000 | os.O_DIRECTORY
RESOLVE_NO_XDEV, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS = 0x01, 0x02, 0x04
RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_CACHED = 0x08, 0x10, 0x20
_OPEN_HOW = struct.Struct("=QQQ")
_DIR_FLAGS = O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_STRICT = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_DEV_TTY = os.makedev(5, 0)

Decide = Callable[[Action], Decision]
Record = Callable[[Action, Decision], None]


class _Reply(Exception):
    """Raised inside a handler to answer the syscall with an errno."""

    def __init__(self, err: int) -> None:
        super().__init__(os.strerror(err))
        self.err = err


class _Unvouched(_Reply):
    """EACCES because the object is a file we cannot name in the task's view (deleted, or reached
    through a descriptor or directory from outside it): there is no path to decide on."""

    def __init__(self) -> None:
        super().__init__(errno.EACCES)


class _Gone(Exception):
    """The notification is no longer valid (task died or was interrupted): nothing to answer."""


@dataclass(frozen=True, slots=True)
class _PathArg:
    dirfd_arg: int | None  # index of the dirfd argument, None for AT_FDCWD
    path_arg: int
    follow: bool


_AT = None
# syscall -> the paths it writes (op WRITE on each), as (dirfd arg, path arg, follow final symlink).
_PATH_OPS: dict[str, tuple[_PathArg, ...]] = {
    "rename": (_PathArg(_AT, 0, False), _PathArg(_AT, 1, False)),
    "renameat": (_PathArg(0, 1, False), _PathArg(2, 3, False)),
    "renameat2": (_PathArg(0, 1, False), _PathArg(2, 3, False)),
    "link": (_PathArg(_AT, 0, False), _PathArg(_AT, 1, False)),
    "linkat": (_PathArg(0, 1, False), _PathArg(2, 3, False)),  # source follow: see _path_op
    "symlink": (_PathArg(_AT, 1, False),),
    "symlinkat": (_PathArg(1, 2, False),),
    "mkdir": (_PathArg(_AT, 0, False),),
    "mkdirat": (_PathArg(0, 1, False),),
    "mknod": (_PathArg(_AT, 0, False),),
    "mknodat": (_PathArg(0, 1, False),),
    "truncate": (_PathArg(_AT, 0, True),),
    "unlink": (_PathArg(_AT, 0, False),),
    "unlinkat": (_PathArg(0, 1, False),),
    "rmdir": (_PathArg(_AT, 0, False),),
}


@dataclass(frozen=True, slots=True)
class _AttrArg:
    """Where an attribute-changing syscall names its object: a dirfd (or the fd itself, for the f*
    calls), a path (None: the fd alone), an AT_* flags argument, and whether the final symlink is
    followed when the flags do not say AT_SYMLINK_NOFOLLOW."""

    fd_arg: int | None
    path_arg: int | None
    flags_arg: int | None
    follow: bool


# syscall -> the object whose mode, owner, times, xattrs or inode flags it changes (op WRITE on it).
_ATTR_OPS: dict[str, _AttrArg] = {
    "chmod": _AttrArg(_AT, 0, None, True),
    "fchmodat": _AttrArg(0, 1, None, True),
    "fchmodat2": _AttrArg(0, 1, 3, True),
    "chown": _AttrArg(_AT, 0, None, True),
    "lchown": _AttrArg(_AT, 0, None, False),
    "fchownat": _AttrArg(0, 1, 4, True),
    "utime": _AttrArg(_AT, 0, None, True),
    "utimes": _AttrArg(_AT, 0, None, True),
    "futimesat": _AttrArg(0, 1, None, True),
    "utimensat": _AttrArg(0, 1, 3, True),
    "setxattr": _AttrArg(_AT, 0, None, True),
    "lsetxattr": _AttrArg(_AT, 0, None, False),
    "removexattr": _AttrArg(_AT, 0, None, True),
    "lremovexattr": _AttrArg(_AT, 0, None, False),
    "setxattrat": _AttrArg(0, 1, 2, True),
    "removexattrat": _AttrArg(0, 1, 2, True),
    "file_setattr": _AttrArg(0, 1, 4, True),
    "fchmod": _AttrArg(0, None, None, True),
    "fchown": _AttrArg(0, None, None, True),
    "fsetxattr": _AttrArg(0, None, None, True),
    "fremovexattr": _AttrArg(0, None, None, True),
    "ftruncate": _AttrArg(0, None, None, True),
    "ioctl": _AttrArg(0, None, None, True),  # only the chattr ioctls reach the supervisor
}

# The rule id of decisions the supervisor makes itself, without asking the policy.
SUPERVISOR_RULE = "guard-supervisor"
_OTHER_NAMES = ("the file has other names (hard links) the policy cannot vouch for: writing through this "
                "one would write them all")
_SETID = ("a set-user-id or set-group-id file: another user (or, in a session run as root, anyone) who runs "
          "it would run as this session's user")
_CAPABILITY_XATTR = "security.capability"
RENAME_EXCHANGE = 0x2
# syscall -> which of its names (index in _PATH_OPS) it creates, and which must exist (EEXIST / ENOENT
# are answered before the policy, as the kernel would)
_CREATES: dict[str, tuple[int, ...]] = {"mkdir": (0,), "mkdirat": (0,), "mknod": (0,), "mknodat": (0,),
                                        "symlink": (0,), "symlinkat": (0,), "link": (1,), "linkat": (1,)}
_MUST_EXIST: dict[str, tuple[int, ...]] = {"rename": (0,), "renameat": (0,), "link": (0,), "linkat": (0,),
                                           "unlink": (0,), "unlinkat": (0,), "rmdir": (0,), "truncate": (0,)}
_MODE_ARG = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2}
_CHOWN_ARGS = {"chown": (1, 2), "lchown": (1, 2), "fchownat": (2, 3)}  # (uid arg, gid arg), by path
# xattr syscall -> (index of its name argument, "set" | "remove" | "at": a struct xattr_args)
_XATTR_ARGS = {"setxattr": (1, "set"), "lsetxattr": (1, "set"), "fsetxattr": (1, "set"),
               "setxattrat": (3, "at"), "removexattr": (1, "remove"), "lremovexattr": (1, "remove"),
               "fremovexattr": (1, "remove"), "removexattrat": (3, "remove")}
XATTR_NAME_MAX = 255
SENDTO_MAX = 1 << 20  # bytes of one sendto to a unix path the supervisor sends on the task's behalf
_PIDFD_THREAD = os.O_EXCL  # pidfd_open: a pidfd for this very thread (its fd table), kernel 6.9+
_FOREIGN_SOCKET = ("a unix socket this session did not create (tmux, an agent, a credential cache, an editor "
                   "listen there): grant it by path in the policy if the agent needs it")
XATTR_SIZE_MAX = 65536
TREE_WALK_MAX = 20_000  # entries under a renamed directory judged one by one, at most
TREE_WALK_S = 0.5
_SUN_PATH_OFF = 2  # struct sockaddr_un: sa_family_t, then sun_path[108]
_SOCKADDR_UN_MAX = 110
_SOCKADDR_STORAGE = 128  # the longest address the kernel copies in


# The compiled core's reader of a task's memory (one process_vm_readv, the interpreter's lock let go):
# the same bytes as the pread of /proc/<pid>/mem below (tests/integration/test_task_memory.py compares
# them); None without the core, and then the pread it is.
_read_task: Callable[[int, int, int], bytes] | None = compiled("read_task")


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class _Task:
    """Access to one notifying task through the supervisor's /proc, opened lazily, closed at the end."""

    def __init__(self, pid: int, stack: ExitStack) -> None:
        self.pid = pid
        self._stack = stack
        self._mem: int | None = None
        self._root: int | None = None
        self._root_text: str | None = None
        self._status: dict[str, str] | None = None

    def _fd(self, fd: int) -> int:
        self._stack.callback(os.close, fd)
        return fd

    def _proc(self, name: str, flags: int) -> int:
        try:
            return self._fd(os.open(f"/proc/{self.pid}/{name}", flags))
        except (ProcessLookupError, FileNotFoundError) as exc:
            raise _Gone() from exc

    # memory -----------------------------------------------------------------------------------------
    def _memfd(self) -> int:
        if self._mem is None:
            self._mem = self._proc("mem", os.O_RDONLY | os.O_CLOEXEC)
        return self._mem

    def read(self, addr: int, size: int) -> bytes:
        """Up to `size` bytes at `addr`, stopping early at an unmapped page; EFAULT if none."""
        if addr == 0:
            raise _Reply(errno.EFAULT)
        if _read_task is not None:
            try:
                got = _read_task(self.pid, addr, size)
            except ProcessLookupError as exc:
                raise _Gone() from exc
            if not got:
                raise _Reply(errno.EFAULT)
            return got
        out = bytearray()
        while len(out) < size:
            want = min(4096 - (addr + len(out)) % 4096, size - len(out))
            try:
                chunk = os.pread(self._memfd(), want, addr + len(out))
            except OSError:
                chunk = b""
            if not chunk:
                break
            out += chunk
        if not out:
            raise _Reply(errno.EFAULT)
        return bytes(out)

    def read_str(self, addr: int, limit: int) -> tuple[bytes, bool]:
        """The NUL-terminated string at `addr`, at most `limit` bytes; (text, complete)."""
        # With the core, a read may span pages (it stops where they do): up to the end of the next page.
        pages = 2 if _read_task is not None else 1
        out = bytearray()
        while len(out) < limit:
            start = addr + len(out)
            want = min(4096 * pages - start % 4096, limit - len(out))
            try:
                chunk = self.read(start, want)
            except _Reply:
                if not out:
                    raise
                raise _Reply(errno.EFAULT) from None
            nul = chunk.find(0)
            if nul >= 0:
                return bytes(out + chunk[:nul]), True
            out += chunk
        return bytes(out), False

    def read_path(self, addr: int) -> str:
        raw, complete = self.read_str(addr, PATH_MAX)
        if not complete:
            raise _Reply(errno.ENAMETOOLONG)
        return os.fsdecode(raw)

    def read_argv(self, addr: int) -> tuple[tuple[str, ...], bool]:
        """argv with bounds (ARGV_MAX_ARGS, ARGV_MAX_BYTES); (argv, truncated)."""
        args: list[str] = []
        budget = ARGV_MAX_BYTES
        if addr == 0:
            return (), False
        while len(args) < ARGV_MAX_ARGS:
            raw = self.read(addr + 8 * len(args), 8)
            if len(raw) < 8:
                raise _Reply(errno.EFAULT)
            ptr = int.from_bytes(raw, "little")
            if ptr == 0:
                return tuple(args), False
            if budget <= 0:
                return tuple(args), True
            text, complete = self.read_str(ptr, budget)
            args.append(os.fsdecode(text))
            budget -= len(text) + 1
            if not complete:
                return tuple(args), True
        raw = self.read(addr + 8 * len(args), 8)
        return tuple(args), int.from_bytes(raw[:8], "little") != 0

    # file system view -------------------------------------------------------------------------------
    def root(self) -> int:
        if self._root is None:
            self._root = self._proc("root", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root

    def root_text(self) -> str:
        if self._root_text is None:
            try:
                self._root_text = os.readlink(f"/proc/{self.pid}/root")
            except (ProcessLookupError, FileNotFoundError) as exc:
                raise _Gone() from exc
        return self._root_text

    def status(self, key: str) -> str:
        if self._status is None:
            try:
                with open(f"/proc/{self.pid}/status", encoding="utf-8", errors="replace") as fh:
                    self._status = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
            except (ProcessLookupError, FileNotFoundError) as exc:
                raise _Gone() from exc
        return self._status.get(key, "")

    def controlling_tty(self) -> int:
        """An O_PATH fd on the task's controlling terminal, found among its own open descriptors;
        ENXIO when it has none (as opening /dev/tty would fail for it)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (ProcessLookupError, FileNotFoundError) as exc:
            raise _Gone() from exc
        tty_nr = int(fields[4])
        if tty_nr == 0:
            raise _Reply(errno.ENXIO)
        want = ((tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00))
        for name in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                fd = self._fd(os.open(f"/proc/{self.pid}/fd/{name}", O_PATH | os.O_CLOEXEC))
            except OSError:
                continue
            st = os.fstat(fd)
            if stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == want:
                return fd
        raise _Reply(errno.ENXIO)

    def ns_ids(self) -> tuple[str, str]:
        """(tgid, tid) as the task's own pid namespace numbers them: what its /proc/self means."""
        tgid = self.status("NStgid").split() or [self.status("Tgid")]
        tid = self.status("NSpid").split() or [self.status("Pid")]
        return tgid[-1], tid[-1]

    def base(self, dirfd: int | None) -> int:
        """An O_PATH fd for the task's cwd (dirfd None or AT_FDCWD) or for its descriptor `dirfd`."""
        name = "cwd" if dirfd is None or dirfd == AT_FDCWD else f"fd/{dirfd}"
        try:
            return self._fd(os.open(f"/proc/{self.pid}/{name}", O_PATH | os.O_CLOEXEC))
        except FileNotFoundError as exc:
            if name == "cwd" or not os.path.exists(f"/proc/{self.pid}"):
                raise _Gone() from exc
            raise _Reply(errno.EBADF) from exc
        except ProcessLookupError as exc:
            raise _Gone() from exc

    def open_dir(self, comps: list[str]) -> int:
        """Open canonical components from the task's root in one lookup that follows no symlink."""
        if not comps:
            return self.root()
        return self._fd(sc.openat2(self.root(), "/".join(comps), _DIR_FLAGS, _STRICT | RESOLVE_IN_ROOT))

    def canonical(self, objfd: int) -> list[str] | None:
        """The components of `objfd`'s path in the task's view of the file system, or None when it has
        none we can vouch for (deleted, outside the task's root, or no longer at that path)."""
        text = os.readlink(f"/proc/self/fd/{objfd}")
        root = self.root_text()
        if not text.startswith("/"):
            return None
        if root != "/":
            if text != root and not text.startswith(root + "/"):
                return None
            text = text[len(root):] or "/"
        comps = [c for c in text.split("/") if c]
        try:
            if comps:
                found = os.stat(comps[-1], dir_fd=self.open_dir(comps[:-1]), follow_symlinks=False)
            else:
                found = os.fstat(self.root())
        except OSError:
            return None
        want = os.fstat(objfd)
        if (found.st_dev, found.st_ino) != (want.st_dev, want.st_ino):
            return None
        return comps


@dataclass(slots=True)
class _Resolved:
    """Where a path leads: the held parent directory and final name, or a held object (magic link)."""

    parent: int
    name: str  # "." when the path names a directory itself
    comps: list[str]  # canonical components of the full path
    obj: int | None = None  # an O_PATH fd of the object a /proc magic link pointed at
    anonymous: bool = False  # obj is not in the file system (pipe, socket, anon inode)
    must_be_dir: bool = False  # the path ended in "/": the final name must be (or become) a directory
    # Other names the path passed through: as the task wrote it (lexically, from its cwd or dirfd) and
    # each symlink met on the way, with the rest of the path after it. A write is judged on all of them.
    aliases: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return "/" + "/".join(self.comps)


class _Walker:
    """Resolves a path as the task would, one component at a time, never letting the kernel follow a
    symlink, and tracking the canonical path in the task's view."""

    def __init__(self, task: _Task, stack: ExitStack, *, no_symlinks: bool = False,
                 no_magic: bool = False) -> None:
        self.task = task
        self.stack = stack
        self.no_symlinks = no_symlinks
        self.no_magic = no_magic

    def _hold(self, fd: int) -> int:
        self.stack.callback(os.close, fd)
        return fd

    def resolve(self, dirfd: int | None, path: str, *, follow: bool, empty_ok: bool = False,
                beneath: bool = False, in_root: bool = False) -> _Resolved:
        """Where `path` leads, and (in `aliases`) every other name it passed through on the way."""
        self._aliases: list[str] = []
        res = self._resolve(dirfd, path, follow=follow, empty_ok=empty_ok, beneath=beneath, in_root=in_root)
        if not res.anonymous:
            res.aliases = tuple(a for a in dict.fromkeys(self._aliases) if a != res.path)
        return res

    def _alias(self, path: str) -> None:
        """Remember a name the path passed through; /proc names are not (their magic links are judged
        on the object they stand for, and /proc holds no file a rule protects)."""
        norm = posixpath.normpath(path)
        if norm.startswith("//"):
            norm = "/" + norm.lstrip("/")
        if norm != "/proc" and not norm.startswith("/proc/"):
            self._aliases.append(norm)

    def _resolve(self, dirfd: int | None, path: str, *, follow: bool, empty_ok: bool,
                 beneath: bool, in_root: bool) -> _Resolved:
        task = self.task
        if path == "":
            if not empty_ok:
                raise _Reply(errno.ENOENT)
            obj = task.base(dirfd)
            comps = task.canonical(obj)
            if comps is None:
                return _Resolved(parent=obj, name=".", comps=[], obj=obj, anonymous=True)
            return _Resolved(parent=obj, name=".", comps=comps, obj=obj)
        # floor: how far ".." may climb (the task's root, or the dirfd for BENEATH/IN_ROOT).
        base_comps: list[str] = []
        base: int | None = None
        if not path.startswith("/") or beneath or in_root:
            base = task.base(dirfd)
            if not stat.S_ISDIR(os.fstat(base).st_mode):
                raise _Reply(errno.ENOTDIR)
            found = task.canonical(base)
            if found is None:
                raise _Unvouched()
            base_comps = found
        floor = len(base_comps) if (beneath or in_root) else 0
        if not (beneath or in_root):
            self._alias(path if path.startswith("/") else "/" + "/".join([*base_comps, path]))
        if path.startswith("/"):
            if beneath:
                raise _Reply(errno.EXDEV)
            comps = list(base_comps[:floor])
        else:
            comps = list(base_comps)
        # fds[i] is the directory at comps[:i]; None until needed (reopened from the root, see _top).
        fds: list[int | None] = [task.root(), *([None] * len(comps))]
        if comps and base is not None:
            fds[-1] = base  # canonical() checked that comps lead to this very directory
        todo = [c for c in path.split("/") if c]
        must_be_dir = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
        links = 0
        if not todo:
            return _Resolved(parent=self._top(fds, comps), name=".", comps=comps)
        while todo:
            # Fast path: a run of plain directory names in one openat2 that refuses every symlink;
            # on ELOOP (a symlink in the run) fall back to one component at a time.
            run = _plain_run(todo)
            if run:
                try:
                    fd = self._hold(sc.openat2(self._top(fds, comps), "/".join(run), _DIR_FLAGS,
                                               _STRICT | RESOLVE_BENEATH))
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                else:
                    comps.extend(run)
                    fds.extend([*([None] * (len(run) - 1)), fd])
                    del todo[:len(run)]
                    continue
            name = todo.pop(0)
            last = not todo
            if name == ".":
                if last:
                    return _Resolved(parent=self._top(fds, comps), name=".", comps=comps)
                continue
            if name == "..":
                if beneath and len(comps) <= floor:
                    raise _Reply(errno.EXDEV)
                if len(comps) > floor:
                    comps.pop()
                    fds.pop()
                if last:
                    return _Resolved(parent=self._top(fds, comps), name=".", comps=comps)
                continue
            parent = self._top(fds, comps)
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                if last:  # a name to create; with a trailing "/" only mkdir may create it
                    return _Resolved(parent=parent, name=name, comps=[*comps, name], must_be_dir=must_be_dir)
                raise _Reply(errno.ENOENT) from None
            if stat.S_ISLNK(st.st_mode) and (not last or follow or must_be_dir):
                links += 1
                if links > SYMLINK_MAX or self.no_symlinks:
                    raise _Reply(errno.ELOOP)
                if not _is_procfs(parent):  # the symlink's own name, continued by the rest of the path
                    self._alias("/" + "/".join([*comps, name, *todo]))
                target = self._link_target(parent, name, comps)
                if isinstance(target, _Resolved):  # an anonymous object: no directory to go on into
                    if not last:
                        raise _Reply(errno.ENOTDIR)
                    return target
                if target.startswith("/"):
                    if beneath:
                        raise _Reply(errno.EXDEV)
                    del comps[floor:]
                    del fds[floor + 1:]
                todo = [c for c in target.split("/") if c] + todo
                if last and target.endswith("/"):
                    must_be_dir = True
                continue
            if last:
                if must_be_dir and not stat.S_ISDIR(st.st_mode):
                    raise _Reply(errno.ENOTDIR)
                return _Resolved(parent=parent, name=name, comps=[*comps, name], must_be_dir=must_be_dir)
            if not stat.S_ISDIR(st.st_mode):
                raise _Reply(errno.ENOTDIR)
            comps.append(name)
            fds.append(self._hold(os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)))
        raise AssertionError("unreachable: the loop returns on the last component")

    def _top(self, fds: list[int | None], comps: list[str]) -> int:
        """The directory at `comps`, reopened from the root (no symlinks, canonical path) if not held."""
        top = fds[-1]
        if top is None:
            top = fds[-1] = self.task.open_dir(comps)
        return top

    def _link_target(self, dirfd: int, name: str, comps: list[str]) -> str | _Resolved:
        """A symlink's text, or for a /proc magic link the object it stands for (see module doc)."""
        if not _is_procfs(dirfd):
            return os.readlink(name, dir_fd=dirfd)
        tgid, tid = self.task.ns_ids()
        if name == "self":
            return tgid
        if name == "thread-self":
            return f"{tgid}/task/{tid}"
        text = os.readlink(name, dir_fd=dirfd)
        if not text.startswith("/") and ":" not in text:
            return text  # an ordinary symlink inside procfs, e.g. mounts -> self/mounts
        if self.no_magic:
            raise _Reply(errno.ELOOP)
        if name in ("root", "cwd", "exe"):
            return self._own_link(name, comps, tgid, tid)
        own_fd_dir = (len(comps) >= 2 and comps[-1] == "fd" and comps[-2] == tgid) or (
            len(comps) >= 4 and comps[-1] == "fd" and comps[-3] == "task" and comps[-4] == tgid)
        if not own_fd_dir or not name.isdigit():
            raise _Reply(errno.EACCES)  # another process's fds, cwd/root/exe links: not vouched for
        try:
            obj = self._hold(os.open(f"/proc/{self.task.pid}/fd/{name}", O_PATH | os.O_CLOEXEC))
        except FileNotFoundError:
            raise _Reply(errno.ENOENT) from None
        canon = self.task.canonical(obj)
        if canon is None:
            st = os.fstat(obj)
            if (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)) and st.st_nlink > 0:
                # Still linked somewhere the task's view does not show: no path to decide on. With no
                # link left (O_TMPFILE, memfd, deleted) nothing on the file system is reached through it.
                raise _Unvouched()
            return _Resolved(parent=obj, name=".", comps=[], obj=obj, anonymous=True)
        return "/" + "/".join(canon)


    def _own_link(self, name: str, comps: list[str], tgid: str, tid: str) -> str:
        """The task's own `root`, `cwd` or `exe` link (/proc/self/..., /proc/thread-self/...), as the
        canonical path it stands for, so a write through /proc/self/root is decided on where it lands.
        /proc/self is the thread-group leader's (its cwd can differ from a thread that unshared
        CLONE_FS), thread-self the notifying thread's; every other process's links are refused."""
        if len(comps) >= 2 and comps[-1] == tgid:
            proc = self.task.status("Tgid")  # the leader, numbered in our pid namespace
        elif len(comps) >= 4 and comps[-1] == tid and comps[-2] == "task" and comps[-3] == tgid:
            proc = str(self.task.pid)
        else:
            raise _Reply(errno.EACCES)  # another process's cwd/root/exe: not vouched for
        if not proc.isdigit():
            raise _Gone()
        try:
            obj = self._hold(os.open(f"/proc/{proc}/{name}", O_PATH | os.O_CLOEXEC))
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise _Gone() from exc
        canon = self.task.canonical(obj)
        if canon is None:
            raise _Unvouched()  # a deleted binary, a cwd removed or outside the root: no path
        return "/" + "/".join(canon)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.fstatfs.restype = ctypes.c_int


def _plain_run(todo: list[str]) -> list[str]:
    """The leading names of `todo` that are ordinary directory names, never including the final one."""
    run: list[str] = []
    for name in todo[:-1]:
        if name in (".", ".."):
            break
        run.append(name)
    return run


def _is_procfs(fd: int) -> bool:
    """Whether `fd` lives on a procfs, whose symlinks may be magic (struct statfs starts with f_type)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.fstatfs(fd, buf) != 0:
        return False
    return int.from_bytes(buf.raw[:8], "little") == PROC_SUPER_MAGIC


class Supervisor:
    """Serves one seccomp listener. See the module docstring for what each reply guarantees.

    `decide` must return the final answer (an `ask` already resolved); anything but ALLOW (after
    audit-only downgrades: `Decision.enforced`) refuses. `record` is called once for every Action that
    reached a decision, including the DENY the supervisor substitutes when decide() fails.
    """

    def __init__(self, listener_fd: int, *, decide: Decide, record: Record,
                 spec: SeccompSpec | None = None, workers: int = 1, check: Decide | None = None,
                 sockets: Callable[[str], bool] | None = None,
                 link_names: LinkNames | LinkMap | None = None,
                 fast: FastPath | None = None) -> None:
        if workers < 1:
            raise SandboxError(f"seccomp supervisor: workers must be at least 1, not {workers}")
        self.workers = workers
        self.fd = listener_fd
        self.spec = spec or SeccompSpec()
        self._decide = decide
        self._record = record
        # A decision that records nothing, for the many paths inside a renamed directory: only those it
        # does not allow go through `decide` (and so the trail). None: every one goes through `decide`.
        self._check_only = check
        # Whether a rule grants connecting to the unix socket at this canonical path; None: none does.
        self._sockets = sockets
        # canonical target -> protected symlink names pointing at it (guard.sandbox.link_names); the map
        # may still be walked beside the agent's start: every write waits for it whole
        self._link_names = LinkNames.of(link_names)
        self._bound: set[tuple[int, int]] = set()  # (dev, ino) of the sockets this session bound
        self._bound_lock = threading.Lock()
        # Acting as the task (_as_task): our own capability sets (every worker thread starts with them and
        # gets them back after each act) and each task's fsuid/fsgid, read once per pid. No process in the
        # sandbox can change its ids (no_new_privs, no capabilities, one uid and gid mapped), so a pid
        # reused inside it has the same ones.
        self._caps = sc.thread_caps()
        self._lean_caps = sc.without_effective(self._caps)
        self._privileged = sc.effective_caps(self._caps) != 0
        self._own_ids = (os.geteuid(), os.getegid())
        self._task_ids: dict[int, tuple[int, int]] = {}
        table = ARCHES[self.spec.arch]
        self._names = table.names()
        self._file_setattr_nr = table.numbers.get("file_setattr", -1)
        self._arch = table.audit_arch
        self._closed = False
        self.sync_wakeup = sc.notif_set_sync_wakeup(listener_fd)
        self.handled = 0
        self.handled_by: Counter[str] = Counter()  # syscall -> answered in Python (GUARD_SUPERVISOR_STATS)
        # The compiled fast path (guard.sandbox.fastpath): it receives every notification, answers the
        # plain write-opens of directories the engine proved uniform, and hands the rest to _answer.
        self._fast = fast

    # loop -------------------------------------------------------------------------------------------
    def serve_forever(self, stop: threading.Event, *, poll_ms: int = 100) -> None:
        """Serve until `stop` is set or every task using the filter is gone (the listener hangs up).

        With `workers` > 1, that many threads take turns: whoever holds the receive lock polls and
        receives one notification, lets go of the lock, and answers it itself, so a notification never
        hops to another thread, and one that waits (an `ask` pending a human) holds up only its own
        thread. Only one thread polls at a time: the kernel hands each notification to one receiver
        anyway, and a receiver with nothing pending would block in RECV. `decide` must be thread-safe."""
        done = threading.Event()
        lock = threading.Lock()
        extra = [threading.Thread(target=self._worker, args=(stop, done, lock, poll_ms),
                                  name=f"guard-seccomp-{i}", daemon=True) for i in range(1, self.workers)]
        for t in extra:
            t.start()
        try:
            self._worker(stop, done, lock, poll_ms)
        finally:
            done.set()
            for t in extra:
                t.join()
            if self._fast is not None:
                self._fast.core.stop()  # its receivers, before anyone closes the listener they wait on

    def _worker(self, stop: threading.Event, done: threading.Event, lock: threading.Lock,
                poll_ms: int) -> None:
        _own_fs()
        if self._fast is not None:
            self._fast_worker(stop, done, poll_ms)
            return
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        wait_s = poll_ms / 1000
        buf = bytearray(sc.NOTIF_SIZE)
        while not (stop.is_set() or done.is_set()):
            if not lock.acquire(timeout=wait_s):
                continue
            try:
                if done.is_set():
                    return
                try:
                    events = poller.poll(poll_ms)
                except InterruptedError:
                    continue
                notif = None
                for _fd, ev in events:
                    if ev & select.POLLIN:
                        notif = self._receive(buf)
                    elif ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        done.set()
                        return
            finally:
                lock.release()
            if notif is not None:
                self._answer(notif)

    def _fast_worker(self, stop: threading.Event, done: threading.Event, poll_ms: int) -> None:
        """With the core, its own threads receive every notification and answer what they may; the
        workers take the rest from its queue (waiting there without the interpreter's lock)."""
        assert self._fast is not None
        core = self._fast.core
        while not (stop.is_set() or done.is_set()):
            try:
                raw = core.next(poll_ms)
            except OSError as exc:
                log.error("seccomp supervisor: RECV failed: %s", exc)
                continue
            if raw is None:
                continue
            if raw is False:  # the listener hung up: every task using the filter is gone
                done.set()
                return
            self.handled += 1
            self._answer(sc.notif_from_bytes(raw))

    def serve_one(self) -> None:
        """Receive and answer one notification (the caller polled the listener)."""
        notif = self._receive()
        if notif is not None:
            self._answer(notif)

    def _receive(self, buf: bytearray | None = None) -> sc.Notif | None:
        try:
            notif = sc.notif_recv(self.fd, buf)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                log.error("seccomp supervisor: RECV failed: %s", exc)
            return None  # ENOENT: the task was interrupted or died between poll and RECV
        self.handled += 1
        return notif

    def _answer(self, notif: sc.Notif) -> None:
        """Answer one notification; never raises, whatever the task or decide() does."""
        try:
            self._handle(notif)
        except _Gone:
            pass
        except Exception:
            log.exception("seccomp supervisor: failed on syscall %s of pid %d", notif.nr, notif.pid)
            try:
                self._send(notif.id, error=errno.EPERM)
            except OSError:
                log.exception("seccomp supervisor: could not refuse syscall of pid %d", notif.pid)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._fast is not None:
                self._fast.core.stop()
            os.close(self.fd)

    # replies ----------------------------------------------------------------------------------------
    def _send(self, nid: int, *, error: int = 0, cont: bool = False, val: int = 0) -> None:
        try:
            sc.notif_send(self.fd, nid, val=val, error=error, cont=cont)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def _check(self, nid: int) -> None:
        if not sc.notif_id_valid(self.fd, nid):
            raise _Gone()

    def _judge(self, actions: list[Action]) -> bool:
        """Decide and record each action; True only when every one is allowed."""
        allowed = True
        for action in actions:
            try:
                decision = self._decide(action)
            except Exception as exc:
                log.exception("seccomp supervisor: decide() failed for %s", action)
                decision = Decision(Verdict.DENY, SUPERVISOR_RULE,
                                    f"guard: decision failed, refused: {exc!r}")
            if decision.enforced is not Verdict.ALLOW:
                allowed = False
            try:
                self._record(action, decision)
            except Exception:
                log.exception("seccomp supervisor: record() failed for %s", action)
                allowed = False
        return allowed

    def _judge_names(self, res: _Resolved, pid: int, op: Op = Op.WRITE) -> bool:
        """Judge `op` on the canonical path and on every other name the path passed through; the
        strictest verdict wins. `mv .git/hooks h; ln -s h .git/hooks; echo > .git/hooks/pre-commit`
        writes a plain workspace file canonically, but `.git/hooks/pre-commit` by the name git will run;
        `~/.local/bin/ruff` is a symlink into a writable cache. An alias counts only when a rule speaks
        about it (an explicit allow, deny or ask): a name nothing mentions (a symlinked /home, say) does
        not refuse what the canonical path's grant allows. Aliases that pass are not recorded."""
        if not self._judge([Action(op=op, target=res.path, pid=pid)]):
            return False
        try:
            linked = self._linked_names(res.path)
        except SandboxError as exc:  # the map of protected symlinks is missing: fail closed, recorded
            self._record_safely(Action(op=op, target=res.path, pid=pid),
                                Decision(Verdict.DENY, SUPERVISOR_RULE, f"guard: {exc.message}, refused"))
            return False
        for alias in (*res.aliases, *linked):
            action = Action(op=op, target=alias, pid=pid)
            try:
                first = (self._check_only or self._decide)(action)
            except Exception:
                log.exception("seccomp supervisor: check() failed for %s", action)
                first = Decision(Verdict.DENY, SUPERVISOR_RULE, "guard: decision failed, refused")
            if first.rule_id is None or first.enforced is Verdict.ALLOW:
                continue
            if self._check_only is None:
                self._record_safely(action, first)
                return False
            if not self._judge([action]):
                return False
        return True

    def _linked_names(self, path: str) -> list[str]:
        """The protected names that are symlinks to `path` (or to a directory above it), found at launch
        (`link_names`): writing uv's copy of ruff is writing `~/.local/bin/ruff`, though the agent never
        used that name. Raises SandboxError when the map could not be made whole."""
        names = self._link_names.get()
        if not names:
            return []
        out: list[str] = []
        head, rest = path, ""
        while True:
            for link in names.get(head, ()):
                out.append(link + rest)
            if head in ("/", ""):
                return out
            head, tail = head.rsplit("/", 1)
            rest = f"/{tail}{rest}"
            head = head or "/"

    def _record_safely(self, action: Action, decision: Decision) -> None:
        try:
            self._record(action, decision)
        except Exception:
            log.exception("seccomp supervisor: record() failed for %s", action)

    # dispatch ---------------------------------------------------------------------------------------
    def _handle(self, n: sc.Notif) -> None:
        name = self._names.get(n.nr, "")
        self.handled_by[name] += 1
        if n.arch != self._arch:
            self._send(n.id, error=errno.EPERM)
            return
        with ExitStack() as stack:
            task = _Task(n.pid, stack)
            try:
                if name in ("execve", "execveat"):
                    self._exec(n, name, task, stack)
                elif name in ("open", "openat", "creat", "openat2"):
                    self._open(n, name, task, stack)
                elif name in _PATH_OPS:
                    self._path_op(n, name, task, stack)
                elif name in _ATTR_OPS:
                    self._attr_op(n, name, task, stack)
                elif name == "bind":
                    self._bind(n, task, stack)
                elif name in ("connect", "sendto"):
                    self._connect(n, name, task, stack)
                elif name == "umask":  # nothing to decide (see seccomp.NOTIFIED): the compiled core's cue
                    self._send(n.id, cont=True)
                else:
                    self._send(n.id, error=errno.ENOSYS)
            except _Reply as reply:
                self._send(n.id, error=reply.err)
            except ProcessLookupError as exc:
                raise _Gone() from exc
            except OSError as exc:  # our walk failed the way the task's own lookup would have
                self._check(n.id)
                self._send(n.id, error=exc.errno or errno.EACCES)

    def _exec(self, n: sc.Notif, name: str, task: _Task, stack: ExitStack) -> None:
        a = n.args
        if name == "execve":
            dirfd, path_addr, argv_addr, flags = None, a[0], a[1], 0
        else:
            dirfd, path_addr, argv_addr, flags = _s32(a[0]), a[1], a[2], _s32(a[4])
        path = task.read_path(path_addr)
        argv, truncated = task.read_argv(argv_addr)
        self._check(n.id)
        exe: str | None
        anonymous = False
        try:
            res = _Walker(task, stack).resolve(dirfd, path, follow=not flags & AT_SYMLINK_NOFOLLOW,
                                               empty_ok=bool(flags & AT_EMPTY_PATH))
            anonymous = res.anonymous
            exe = None if res.anonymous else res.path
            if res.obj is None and res.name != ".":
                os.stat(res.name, dir_fd=res.parent, follow_symlinks=False)  # raises ENOENT when absent
        except _Unvouched:
            exe, anonymous = None, True
        except (_Reply, OSError) as exc:
            err = exc.err if isinstance(exc, _Reply) else exc.errno
            if err in (errno.ENOENT, errno.ENOTDIR):
                # execvp probing each PATH entry: nothing exists there, nothing runs, nothing to decide.
                # We answer the errno ourselves, so a file created after this check is never executed.
                self._check(n.id)
                raise _Reply(err) from None
            # Our walk failed where the kernel's may not (e.g. /proc/self/exe, a magic link we do not
            # vouch for): the kernel re-resolves the path and Landlock judges the file it reaches.
            exe = None
        cwd: str | None
        try:
            comps = task.canonical(task.base(None))
            cwd = None if comps is None else "/" + "/".join(comps)
        except OSError:
            cwd = None
        self._check(n.id)
        shown = (*argv, TRUNCATED_MARK) if truncated else argv
        actions = [Action(op=Op.RUN, target=shlex.join(shown) or path, argv=shown, exe=exe or path,
                          cwd=cwd, pid=n.pid)]
        if anonymous:
            # fexecve of a memfd, a deleted file, or a descriptor from outside the sandbox's view: the
            # kernel would run it without any path for Landlock's exec right to judge.
            self._refuse(actions[0], "exec of an object with no path in the sandbox (memfd, deleted file "
                                     "or a descriptor from outside): nothing to judge it by")
            self._send(n.id, error=errno.EACCES)
            return
        if exe is not None:
            actions.append(Action(op=Op.EXEC, target=exe, exe=exe, argv=shown, cwd=cwd, pid=n.pid))
        if self._judge(actions):
            self._send(n.id, cont=True)
        else:
            self._send(n.id, error=errno.EACCES)

    def _path_op(self, n: sc.Notif, name: str, task: _Task, stack: ExitStack) -> None:
        a = n.args
        walker = _Walker(task, stack)
        targets: list[str] = []
        found: list[_Resolved] = []
        flags = _s32(a[4]) if name in ("linkat", "renameat2") else _s32(a[2]) if name == "unlinkat" else 0
        for i, spec in enumerate(_PATH_OPS[name]):
            dirfd = None if spec.dirfd_arg is None else _s32(a[spec.dirfd_arg])
            follow = spec.follow or (name == "linkat" and i == 0 and bool(flags & AT_SYMLINK_FOLLOW))
            empty_ok = name == "linkat" and i == 0 and bool(flags & AT_EMPTY_PATH)
            path = task.read_path(a[spec.path_arg])
            self._check(n.id)
            res = walker.resolve(dirfd, path, follow=follow, empty_ok=empty_ok)
            found.append(res)
            if self._fast is not None and res.obj is None and res.name != ".":
                self._fast.consider(Op.WRITE, "/" + "/".join(res.comps[:-1]), res.parent)
            if not res.anonymous:
                targets.append(res.path)
        self._check(n.id)
        self._kernel_answer(name, found, flags)
        actions = [Action(op=Op.WRITE, target=t, pid=n.pid) for t in dict.fromkeys(targets)]
        if name in ("mknod", "mknodat"):
            self._check_mknod(actions[0], n.args[1] if name == "mknod" else n.args[2])
        if name == "truncate" and not found[0].anonymous and _has_other_names(found[0]):
            self._refuse(actions[0], _OTHER_NAMES)
            raise _Reply(errno.EACCES)
        # a `.git` made, removed or moved changes which repository the paths around it lie in, and so what
        # the fast path may answer there (guard.sandbox.fastpath.FastPath.forget): forgotten before and after
        reshapes = any(res.name == ".git" for res in found)
        if reshapes and self._fast is not None:
            self._fast.forget()
        for res in found:  # each name, on every path it passed through
            if not res.anonymous and not self._judge_names(res, n.pid):
                raise _Reply(errno.EACCES)
        if name.startswith("rename") and len(found) == 2 and not (found[0].anonymous or found[1].anonymous):
            if self._judge_renamed_trees(n, found[0], found[1], exchange=bool(flags & RENAME_EXCHANGE)):
                reshapes = True
                if self._fast is not None:
                    self._fast.forget()
            # agent config that starts programs (~/.claude.json's MCP servers): judged on content
            src, dst = found
            programs = rename_programs_action((src.parent, src.name), (dst.parent, dst.name), dst.path, n.pid)
            if programs is not None and not self._judge([programs]):
                raise _Reply(errno.EACCES)
        act = self._name_op(n, name, task, found, flags)
        if reshapes and self._fast is not None:
            self._perform(n.id, task, _then(act, self._fast.forget))
        else:
            self._perform(n.id, task, act)

    def _name_op(self, n: sc.Notif, name: str, task: _Task, found: list[_Resolved],
                 flags: int) -> Callable[[], None]:
        """The change itself, on the directories the walk holds and the names it judged: performed by the
        supervisor (as the task), so a thread that rewrites a path after the check changes nothing and no
        name comes into being that was not decided. What the kernel would answer comes back as the
        syscall's result."""
        a = n.args
        src, dst = found[0], found[-1]
        follows = name in ("truncate", "link", "linkat")  # their first path may lead to an object we hold
        if not follows and any(r.name == "." or r.obj is not None for r in found):
            raise _Reply(errno.EINVAL)  # ".", or a magic link as a name: nothing the kernel would do either
        if name.startswith("rename"):
            rflags = flags if name == "renameat2" else 0
            return lambda: sc.renameat2(src.parent, src.name, dst.parent, dst.name, rflags)
        if name in ("link", "linkat"):
            if dst.obj is not None or dst.name == ".":
                raise _Reply(errno.EEXIST)
            if src.obj is not None:  # AT_EMPTY_PATH or a followed /proc/self/fd link: the object we hold
                where = f"/proc/self/fd/{src.obj}"
                return lambda: os.link(where, dst.name, dst_dir_fd=dst.parent, follow_symlinks=True)
            return lambda: os.link(src.name, dst.name, src_dir_fd=src.parent, dst_dir_fd=dst.parent,
                                   follow_symlinks=False)
        if name in ("symlink", "symlinkat"):
            text, complete = task.read_str(a[0], PATH_MAX)
            self._check(n.id)
            if not complete:
                raise _Reply(errno.ENAMETOOLONG)
            if not text:
                raise _Reply(errno.ENOENT)
            return lambda: os.symlink(text, os.fsencode(dst.name), dir_fd=dst.parent)
        if name in ("mkdir", "mkdirat"):
            mode = (a[1] if name == "mkdir" else a[2]) & 0o1777
            return lambda: self._make(task, dst, mode, directory=True)
        if name in ("mknod", "mknodat"):
            mode, dev = (a[1], a[2]) if name == "mknod" else (a[2], a[3])
            return lambda: self._make(task, dst, mode & 0xFFFFFFFF, dev=dev & 0xFFFFFFFF)
        if name in ("unlink", "rmdir", "unlinkat"):
            if name == "rmdir" or flags & AT_REMOVEDIR:
                return lambda: os.rmdir(dst.name, dir_fd=dst.parent)
            return lambda: os.unlink(dst.name, dir_fd=dst.parent)
        if name == "truncate":
            length = a[1] - (1 << 64) if a[1] & (1 << 63) else a[1]
            return lambda: _truncate_at(src, length)
        raise _Reply(errno.ENOSYS)

    def _make(self, task: _Task, dst: _Resolved, mode: int, *, directory: bool = False, dev: int = 0) -> None:
        """mkdir/mknod at the held parent, then the exact mode the task would get: its umask, not ours
        (on a worker with its own fs_struct the kernel applies it, or a default ACL, and keeps a set-group-id
        parent's bit; elsewhere the kernel applies the supervisor's process umask too, so the mode is set
        after, keeping a set-group-id directory's inherited bit)."""
        umask = int(task.status("Umask") or "022", 8)
        kernel_mode = _task_umask_here(umask)
        perms = mode & 0o1777 if kernel_mode else mode & 0o1777 & ~umask
        if directory:
            os.mkdir(dst.name, perms, dir_fd=dst.parent)
        else:
            os.mknod(dst.name, (stat.S_IFMT(mode) or stat.S_IFREG) | perms, dev, dir_fd=dst.parent)
        if kernel_mode:
            return
        fd = os.open(dst.name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst.parent)
        try:
            st = os.fstat(fd)
            keep = st.st_mode & stat.S_ISGID if stat.S_ISDIR(st.st_mode) else 0
            if stat.S_IMODE(st.st_mode) != perms | keep:
                os.chmod(f"/proc/self/fd/{fd}", perms | keep)
        finally:
            os.close(fd)

    def _kernel_answer(self, name: str, found: list[_Resolved], flags: int) -> None:
        """Where the object is visible to the task and the kernel would refuse anyway, answer what the
        kernel would (EEXIST, ENOENT), before any policy EACCES: `mkdir -p ~` or Node's recursive
        mkdir of an existing folder must see EEXIST. The walk went through the task's own root, so
        what it sees is what the task's view shows (masked trees are empty there): nothing leaks."""
        def exists(res: _Resolved) -> bool:
            return res.obj is not None or res.name == "." or _lstat_or_none(res.parent, res.name) is not None

        for i in _CREATES.get(name, ()):
            if exists(found[i]):
                raise _Reply(errno.EEXIST)
        needs = _MUST_EXIST.get(name, ())
        if name == "renameat2" and flags & RENAME_EXCHANGE:
            needs = (0, 1)
        elif name == "renameat2":
            needs = (0,)
        for i in needs:
            if not found[i].anonymous and not exists(found[i]):
                raise _Reply(errno.ENOENT)
        res = found[0]
        if name in ("unlink", "unlinkat", "rmdir", "truncate") and not res.anonymous and res.obj is None:
            there = None if res.name == "." else _lstat_or_none(res.parent, res.name)
            is_dir = res.name == "." or (there is not None and stat.S_ISDIR(there.st_mode))
            removes_dir = name == "rmdir" or (name == "unlinkat" and bool(flags & AT_REMOVEDIR))
            if removes_dir and not is_dir:
                raise _Reply(errno.ENOTDIR)
            if not removes_dir and is_dir:
                raise _Reply(errno.EISDIR)
            if removes_dir and is_dir and res.name != "." and _has_entries(res.parent, res.name):
                # git removes directories it thinks empty (`rmdir .git` after a stash): the kernel's answer
                raise _Reply(errno.ENOTEMPTY)

    def _check_mknod(self, action: Action, mode: int) -> None:
        """What mknod may create is an allowlist: regular files, FIFOs and sockets, never a device
        node, and never with set-user-id or set-group-id bits (a set-id file another user runs)."""
        kind = stat.S_IFMT(mode & 0xFFFFFFFF) or stat.S_IFREG
        if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK):
            self._refuse(action, "mknod of a device node")
            raise _Reply(errno.EPERM)
        if mode & (stat.S_ISUID | stat.S_ISGID):
            self._refuse(action, _SETID)
            raise _Reply(errno.EPERM)

    def _judge_renamed_trees(self, n: sc.Notif, src: _Resolved, dst: _Resolved, *, exchange: bool) -> bool:
        """A directory rename writes every path under both its names: `mv .git g; echo x > g/hooks/h;
        mv g .git` must not plant a hook that the `.git/hooks/**` rule refuses to write directly. Walk
        the moved tree (both, for RENAME_EXCHANGE) and decide WRITE for each entry under the old and
        the new name; raises _Reply to refuse. -> whether a moved tree holds a `.git` (it changes which
        repository paths lie in)."""
        moves = [(src, dst)] + ([(dst, src)] if exchange else [])
        deadline = time.monotonic() + TREE_WALK_S
        budget = TREE_WALK_MAX
        holds_repository = False
        for old, new in moves:
            names = _subtree(old, budget, deadline)
            if names is None:
                self._refuse(Action(op=Op.WRITE, target=old.path, pid=n.pid),
                             f"renaming a directory of more than {TREE_WALK_MAX} entries (or "
                             f"{TREE_WALK_S} s to list) cannot be judged path by path; copy it instead")
                raise _Reply(errno.EXDEV)  # mv, shutil.move, pip: copy and delete, each file judged
            budget -= len(names)
            holds_repository = holds_repository or any(".git" in rel.split("/") for rel in names)
            paths = dict.fromkeys(f"{base}/{rel}" for rel in names for base in (old.path, new.path))
            self._check(n.id)
            for path in paths:
                action = Action(op=Op.WRITE, target=path, pid=n.pid)
                if self._check_only is not None:
                    try:
                        if self._check_only(action).enforced is Verdict.ALLOW:
                            continue
                    except Exception:
                        log.exception("seccomp supervisor: check() failed for %s", action)
                if not self._judge([action]):
                    raise _Reply(errno.EACCES)
        return holds_repository

    def _attr_op(self, n: sc.Notif, name: str, task: _Task, stack: ExitStack) -> None:
        """Mode, owner, times, xattrs, inode flags, ftruncate: a WRITE of the object they change.

        Set-id bits and file capabilities are refused outright (EPERM, recorded). Mode, owner and
        xattr changes named by a path are then *performed by the supervisor* on the object it resolved
        and holds, with the task's file-system ids and no capability of ours, so a path swapped after
        the check changes nothing; by a descriptor (fchmod, fchown) the object is fixed and the
        arguments are registers, so CONTINUE is exact. Times named by a path are performed the same way
        (the times read from the task once). By a descriptor (fchmod, fchown, futimens, ftruncate, the
        chattr ioctls) the change is performed on the task's own open file, taken with pidfd_getfd: the
        descriptor table is the task's, and a thread that dup2()s another file onto the number between
        our look and the kernel's act would otherwise change that file instead (a read-only descriptor is
        enough for fchmod). Nothing is CONTINUEd."""
        spec = _ATTR_OPS[name]
        a = n.args
        fd = None if spec.fd_arg is None else _s32(a[spec.fd_arg])
        flags = 0 if spec.flags_arg is None else _s32(a[spec.flags_arg])
        path_addr = 0 if spec.path_arg is None else a[spec.path_arg]
        res: _Resolved | None = None
        if spec.path_arg is None or (path_addr == 0 and fd is not None and fd != AT_FDCWD):
            # The descriptor names the object (f* calls, utimensat(fd, NULL)): we take the task's open file
            # itself, judge it and act on it, whatever the number names by then.
            if fd is None or fd < 0:
                raise _Reply(errno.EBADF)
            obj = self._task_file(task, n, fd, stack)
            comps = task.canonical(obj)
            target = None if comps is None else "/" + "/".join(comps)
        else:
            path = task.read_path(path_addr)
            self._check(n.id)
            follow = spec.follow and not flags & AT_SYMLINK_NOFOLLOW
            res = _Walker(task, stack).resolve(fd, path, follow=follow, empty_ok=bool(flags & AT_EMPTY_PATH))
            if self._fast is not None and res.obj is None and res.name != ".":
                self._fast.consider(Op.WRITE, "/" + "/".join(res.comps[:-1]), res.parent)
            if res.obj is not None:
                obj = res.obj
            else:
                # ENOENT when missing: nothing to change, nothing to decide
                obj = os.open(res.name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=res.parent)
                stack.callback(os.close, obj)
            target = None if res.anonymous else res.path
        self._check(n.id)
        action = Action(op=Op.WRITE, target=target or f"<{name} of an object with no path>", pid=n.pid)
        st = os.fstat(obj)
        if name in _MODE_ARG:
            mode = a[_MODE_ARG[name]] & 0o7777
            if mode & stat.S_ISUID or (mode & stat.S_ISGID and not stat.S_ISDIR(st.st_mode)):
                self._refuse(action, _SETID)
                raise _Reply(errno.EPERM)
        xname = value = None
        xflags = 0
        bad_args: _Reply | None = None  # answered after the policy's refusal, which comes first
        if name in _XATTR_ARGS:
            try:
                xname, value, xflags = self._xattr_args(task, name, a)
            except _Reply as exc:
                bad_args = exc
            self._check(n.id)
            if xname == _CAPABILITY_XATTR and _XATTR_ARGS[name][1] != "remove":
                self._refuse(action, "setting file capabilities (security.capability): the file would run "
                                     "with privileges outside the sandbox")
                raise _Reply(errno.EPERM)
        if target is None:
            if os.readlink(f"/proc/self/fd/{obj}").startswith("/") and st.st_nlink > 0:
                raise _Unvouched()  # still linked somewhere the task's view does not show
        elif res is not None:
            if not self._judge_names(res, n.pid):
                raise _Reply(errno.EACCES)
        elif not self._judge([action]):
            raise _Reply(errno.EACCES)
        if bad_args is not None:
            raise bad_args
        if res is None and name not in _XATTR_ARGS:
            self._perform(n.id, task, self._by_descriptor(n, name, task, obj))
            return
        if name in _MODE_ARG:
            if stat.S_ISLNK(st.st_mode):
                raise _Reply(errno.EOPNOTSUPP)  # what fchmodat2(AT_SYMLINK_NOFOLLOW) answers for a symlink
            self._perform(n.id, task, lambda: os.chmod(f"/proc/self/fd/{obj}", a[_MODE_ARG[name]] & 0o7777))
        elif name in _CHOWN_ARGS:
            ui, gi = _CHOWN_ARGS[name]
            self._perform(n.id, task, lambda: _fchown_empty(obj, a[ui] & 0xFFFFFFFF, a[gi] & 0xFFFFFFFF))
        elif xname is not None:
            where = f"/proc/self/fd/{obj}"
            if value is None:
                self._perform(n.id, task, lambda: os.removexattr(where, xname))
            else:
                self._perform(n.id, task, lambda: os.setxattr(where, xname, value, xflags))
        elif name in _TIMES_ARG and res is not None:
            times = _times_arg(task, name, a)
            self._check(n.id)
            self._perform(n.id, task, lambda: _utimens_empty(obj, times))
        elif name == "file_setattr":
            size = a[3]
            if size > _FILE_ATTR_MAX:
                raise _Reply(errno.E2BIG)
            attr = task.read(a[2], size) if size else b""  # read once: a thread rewriting it changes nothing
            if len(attr) < size:
                raise _Reply(errno.EFAULT)
            self._check(n.id)
            self._perform(n.id, task, lambda: _file_setattr_empty(obj, attr, self._file_setattr_nr))
        else:
            self._send(n.id, cont=True)

    def _task_file(self, task: _Task, n: sc.Notif, fd: int, stack: ExitStack) -> int:
        """Our own descriptor for the task's descriptor `fd`: the same open file description (pidfd_getfd),
        so what is judged is what is changed, and its open mode is the task's (fchmod of an O_PATH
        descriptor, ftruncate of a read-only one, fail as they would)."""
        ours = _task_fd(task, n, fd)
        stack.callback(os.close, ours)
        return ours

    def _by_descriptor(self, n: sc.Notif, name: str, task: _Task, ours: int) -> Callable[[], None]:
        """The change a descriptor call asks for, on our duplicate of the task's open file (see _attr_op);
        memory arguments are read from the task once."""
        a = n.args
        if name == "fchmod":
            return lambda: os.fchmod(ours, a[1] & 0o7777)
        if name == "fchown":
            uid, gid = (-1 if v & 0xFFFFFFFF == 0xFFFFFFFF else v & 0xFFFFFFFF for v in (a[1], a[2]))
            return lambda: os.fchown(ours, uid, gid)
        if name == "ftruncate":
            length = a[1] - (1 << 64) if a[1] & (1 << 63) else a[1]
            return lambda: os.ftruncate(ours, length)
        if name in _TIMES_ARG:  # utimensat(fd, NULL, times, 0), futimesat(fd, NULL, times)
            if name == "utimensat" and a[3] & 0xFFFFFFFF:
                raise _Reply(errno.EINVAL)  # no flags without a path, as the kernel answers
            times = _times_arg(task, name, a)
            self._check(n.id)
            return lambda: _futimens(ours, times)
        if name == "ioctl":  # FS_IOC_(32_)SETFLAGS take an int, FS_IOC_FSSETXATTR a struct fsxattr
            cmd = a[1] & 0xFFFFFFFF
            size = _FSXATTR_SIZE if cmd == FS_IOC_FSSETXATTR else 4
            arg = task.read(a[2], size)
            self._check(n.id)
            if len(arg) < size:
                raise _Reply(errno.EFAULT)
            return lambda: _ioctl_bytes(ours, cmd, arg)
        raise _Reply(errno.ENOSYS)

    def _xattr_args(self, task: _Task, name: str, a: tuple[int, ...]) -> tuple[str, bytes | None, int]:
        """(name, value or None for a removal, flags) of an xattr syscall, read from the task once."""
        name_arg, kind = _XATTR_ARGS[name]
        raw, complete = task.read_str(a[name_arg], XATTR_NAME_MAX + 1)
        if not complete or not raw:
            raise _Reply(errno.ERANGE)
        xname = os.fsdecode(raw)
        if kind == "remove":
            return xname, None, 0
        if kind == "at":  # struct xattr_args {u64 value; u32 size; u32 flags}
            if (a[5] & 0xFFFFFFFF) < 16:
                raise _Reply(errno.EINVAL)
            ptr, size, xflags = struct.unpack("=QII", task.read(a[4], 16)[:16].ljust(16, b"\0"))
        else:
            ptr, size, xflags = a[name_arg + 1], a[name_arg + 2] & 0xFFFFFFFF, a[name_arg + 3] & 0xFFFFFFFF
        if size > XATTR_SIZE_MAX:
            raise _Reply(errno.E2BIG)
        value = task.read(ptr, size) if size else b""
        if len(value) < size:
            raise _Reply(errno.EFAULT)
        return xname, value, xflags

    def _perform(self, nid: int, task: _Task, act: Callable[[], None]) -> None:
        """Do the change ourselves, as the task, and answer with its result."""
        with self._as_task(task):
            try:
                act()
            except OSError as exc:
                self._send(nid, error=exc.errno or errno.EACCES)
                return
        self._send(nid)

    @contextmanager
    def _as_task(self, task: _Task) -> Iterator[None]:
        """Act with the task's file-system uid and gid and none of our capabilities, on this thread only
        (setfsuid and capset are per thread): as root, the supervisor must not write a file the task
        could not, chown what the task could not, or pass DAC checks the task would fail."""
        ids = self._task_ids.get(task.pid)
        if ids is None:
            uids, gids = task.status("Uid").split(), task.status("Gid").split()
            if len(uids) != 4 or len(gids) != 4:
                raise _Gone()
            ids = self._task_ids[task.pid] = (int(uids[3]), int(gids[3]))
        same = ids == self._own_ids
        if same and not self._privileged:
            yield  # the common case: guard run by the user, who is the task's user, holding no capability
            return
        old_gid = old_uid = -1
        if not same:
            old_gid = sc.setfsgid(ids[1])
            old_uid = sc.setfsuid(ids[0])
        try:
            if self._privileged:
                sc.set_thread_caps(self._lean_caps)
            yield
        finally:
            if not same:
                sc.setfsuid(old_uid)
                sc.setfsgid(old_gid)
            if self._privileged:
                sc.set_thread_caps(self._caps)

    def _socket_address(self, n: sc.Notif, task: _Task, fd: int, addr: int, size: int,
                        stack: ExitStack) -> tuple[socket.socket, bytes] | None:
        """For connect, sendto and bind: the task's socket `fd` (ours, taken with pidfd_getfd) and the
        address it passed, read once. None when the address holds at most a family, which is all the
        kernel would read: such a call may go on to the kernel (CONTINUE) whatever the descriptor holds
        by then, since no socket of any family is named by so little.

        Nothing else goes on to the kernel: after a CONTINUE it reads the task's address again, and
        looks the descriptor up again, so a second thread that rewrote the address after our read (an
        abstract name whose first byte becomes a path's, a family that becomes AF_UNIX, an empty name
        that becomes one) or dup2()ed a unix socket onto the number after our look had the kernel reach
        any listener on the file system, undecided. The call is made on the socket we hold, with the
        bytes we read."""
        size &= 0xFFFFFFFF
        if addr == 0 or size <= _SUN_PATH_OFF:
            return None
        sock = self._task_socket(task, n, fd, stack)
        if size > _SOCKADDR_STORAGE or (sock.family == socket.AF_UNIX and size > _SOCKADDR_UN_MAX):
            raise _Reply(errno.EINVAL)  # what move_addr_to_kernel and unix_validate_addr answer
        raw = task.read(addr, size)
        self._check(n.id)
        if len(raw) < size:
            raise _Reply(errno.EFAULT)
        return sock, raw

    @staticmethod
    def _sun_path(raw: bytes) -> str | None:
        """The path a unix address read from the task names; None for an abstract one, one whose family
        is not AF_UNIX (the kernel refuses it, or disconnects a datagram socket for AF_UNSPEC), or an
        empty name: those are passed to the kernel as read (`_raw_socket_call`), never as the task's."""
        if int.from_bytes(raw[:_SUN_PATH_OFF], "little") != socket.AF_UNIX or raw[_SUN_PATH_OFF] == 0:
            return None
        return os.fsdecode(raw[_SUN_PATH_OFF:].split(b"\0", 1)[0])

    def _raw_socket_call(self, n: sc.Notif, task: _Task, call: str, sock: socket.socket, raw: bytes,
                         data: bytes = b"", flags: int = 0) -> None:
        """connect, bind or sendto the task's socket with the address bytes we read, as the task, and
        answer with the result: an address on a socket of another family (judged by the socket's own
        network namespace, the sandbox's), an abstract name (looked up there too), a family the kernel
        refuses, AF_UNSPEC. Our copy cannot change under us, nor can the socket we hold."""
        self._check(n.id)
        addr = ctypes.create_string_buffer(raw, len(raw))
        with self._as_task(task):
            if call == "sendto":
                rc = _libc.sendto(sock.fileno(), data, len(data), flags, addr, len(raw))
            else:
                rc = getattr(_libc, call)(sock.fileno(), addr, len(raw))
            err = ctypes.get_errno() if rc < 0 else 0
        if err:
            self._send(n.id, error=err)
        else:
            self._send(n.id, val=rc if call == "sendto" else 0)

    def _task_socket(self, task: _Task, n: sc.Notif, fd: int, stack: ExitStack) -> socket.socket:
        """Our own descriptor for the task's socket `fd` (the same open file description), taken with
        pidfd_getfd: what we bind or connect, the task holds."""
        ours = _task_fd(task, n, fd)
        self._check(n.id)
        try:
            sock = socket.socket(fileno=ours)
        except OSError as exc:
            os.close(ours)
            raise _Reply(errno.ENOTSOCK) from exc
        stack.callback(sock.close)  # ours only: the task keeps its own descriptor
        return sock

    def _bind(self, n: sc.Notif, task: _Task, stack: ExitStack) -> None:
        """bind(2) of a pathname unix socket creates a name on the file system: decided like any create
        on every name the path passes through, recorded, then *performed by the supervisor* on the
        parent directory it holds (so a rewritten address after the check binds nothing else), as the
        task, with the task's umask. The socket's inode is remembered: connecting to a socket the
        session created itself needs no rule. Any other address on a unix socket is bound as read."""
        a = n.args
        found = self._socket_address(n, task, _s32(a[0]), a[1], a[2], stack)
        if found is None:
            self._send(n.id, cont=True)
            return
        sock, raw = found
        if sock.family != socket.AF_UNIX:
            # Landlock's port rules judge binds of the task's own, so those go on to the kernel. A unix
            # socket swapped onto the number meanwhile, its address a path, is refused by Landlock too:
            # MAKE_SOCK is never granted while a supervisor makes the session's socket files itself.
            self._send(n.id, cont=True)
            return
        path = self._sun_path(raw)
        if path is None:
            self._raw_socket_call(n, task, "bind", sock, raw)
            return
        res = _Walker(task, stack).resolve(None, path, follow=False)
        self._check(n.id)
        if res.anonymous or res.obj is not None or res.name == "." or res.must_be_dir:
            raise _Reply(errno.EADDRINUSE)
        if _lstat_or_none(res.parent, res.name) is not None:
            raise _Reply(errno.EADDRINUSE)  # what the kernel answers, before the policy
        if not self._judge_names(res, n.pid):
            raise _Reply(errno.EACCES)
        where = f"/proc/self/fd/{res.parent}/{res.name}"
        if len(os.fsencode(where)) >= _SOCKADDR_UN_MAX - _SUN_PATH_OFF:
            raise _Reply(errno.ENAMETOOLONG)
        umask = int(task.status("Umask") or "022", 8)
        with self._as_task(task):
            try:
                kernel_mode = _task_umask_here(umask)  # bind makes the name with the thread's umask
                sock.bind(where)
                if not kernel_mode:
                    os.chmod(res.name, 0o777 & ~umask, dir_fd=res.parent, follow_symlinks=False)
                st = os.stat(res.name, dir_fd=res.parent, follow_symlinks=False)
            except OSError as exc:
                self._send(n.id, error=exc.errno or errno.EACCES)
                return
        with self._bound_lock:
            self._bound.add((st.st_dev, st.st_ino))
        self._send(n.id)

    def _connect(self, n: sc.Notif, name: str, task: _Task, stack: ExitStack) -> None:
        """connect (and sendto with an address) on a unix socket.

        Default deny: only a socket this session bound itself, or one a rule grants by path (`sockets`),
        may be reached; the policy's deny and ask rules on every name of the path still apply. Race-free
        like write-opens: the address is read once, the supervisor resolves it, holds the socket's inode
        and connects the task's own socket (taken with pidfd_getfd) to that inode through
        /proc/self/fd, as the task; the kernel never reads the task's address again. Every other
        address, on a unix socket (abstract, malformed) or a socket of another family, is passed to the
        kernel as read, on the socket we hold (`_raw_socket_call`): undecided, the sandbox's own network
        namespace judges it."""
        a = n.args
        addr, size = (a[1], a[2]) if name == "connect" else (a[4], a[5])
        found = self._socket_address(n, task, _s32(a[0]), addr, size, stack)
        if found is None:
            self._send(n.id, cont=True)
            return
        sock, raw = found
        data = b""
        if name == "sendto":
            length = a[2]
            if length > SENDTO_MAX:
                if sock.type != socket.SOCK_STREAM:
                    raise _Reply(errno.EMSGSIZE)  # a datagram is sent whole or not at all
                length = SENDTO_MAX  # a stream takes part of it, as send(2) may; the caller sends the rest
            data = task.read(a[1], length) if length else b""
            if len(data) < length:
                raise _Reply(errno.EFAULT)
        path = self._sun_path(raw) if sock.family == socket.AF_UNIX else None
        if path is None:
            self._raw_socket_call(n, task, name, sock, raw, data, _s32(a[3]))
            return
        res = _Walker(task, stack).resolve(None, path, follow=True)
        self._check(n.id)
        action = Action(op=Op.WRITE, target=res.path, pid=n.pid)
        if res.anonymous:
            self._refuse(action, "connect to a socket with no path in the sandbox's view")
            raise _Reply(errno.EACCES)
        if res.obj is not None:
            obj = res.obj
        else:  # ENOENT: no socket, nothing to judge
            obj = os.open(res.name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=res.parent)
            stack.callback(os.close, obj)
        st = os.fstat(obj)
        if not stat.S_ISSOCK(st.st_mode):
            raise _Reply(errno.ECONNREFUSED)  # what the kernel answers for a path that is not a socket
        if not self._judge_names(res, n.pid):
            raise _Reply(errno.EACCES)
        with self._bound_lock:
            ours = (st.st_dev, st.st_ino) in self._bound
        if not ours and not (self._sockets is not None and self._sockets(res.path)):
            self._refuse(action, _FOREIGN_SOCKET)
            raise _Reply(errno.EACCES)
        where = f"/proc/self/fd/{obj}"
        if name == "connect":
            self._perform(n.id, task, lambda: sock.connect(where))
            return
        self._check(n.id)
        with self._as_task(task):
            try:
                sent = sock.sendto(data, a[3] & 0xFFFFFFFF, where)
            except OSError as exc:
                self._send(n.id, error=exc.errno or errno.EACCES)
                return
        self._send(n.id, val=sent)

    def _refuse(self, action: Action, reason: str) -> None:
        """Record a DENY the supervisor makes itself, without asking the policy."""
        try:
            self._record(action, Decision(Verdict.DENY, SUPERVISOR_RULE, f"guard: refused: {reason}"))
        except Exception:
            log.exception("seccomp supervisor: record() failed for %s", action)

    def _open(self, n: sc.Notif, name: str, task: _Task, stack: ExitStack) -> None:
        a = n.args
        resolve = 0
        if name == "openat":
            dirfd, path_addr, flags, mode = _s32(a[0]), a[1], a[2] & 0xFFFFFFFF, a[3] & 0o7777
        elif name == "open":
            dirfd, path_addr, flags, mode = None, a[0], a[1] & 0xFFFFFFFF, a[2] & 0o7777
        elif name == "creat":
            dirfd, path_addr, flags = None, a[0], os.O_CREAT | os.O_WRONLY | os.O_TRUNC
            mode = a[1] & 0o7777
        else:
            dirfd, path_addr = _s32(a[0]), a[1]
            flags, mode, resolve = self._open_how(task, a[2], a[3])
        path = task.read_path(path_addr)
        self._check(n.id)
        write = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
        # A read-only open/openat only reaches us from a full-audit filter, so it is always decided;
        # openat2 always reaches us, and its read-only opens are decided only in full-audit mode.
        audit_read = self.spec.full_audit or name != "openat2"
        if flags & O_PATH or (not write and not audit_read):
            self._send(n.id, cont=True)  # O_PATH grants no access; read-only opens Landlock bounds
            return
        if resolve & RESOLVE_CACHED:
            raise _Reply(errno.EAGAIN)  # callers retry without RESOLVE_CACHED
        no_magic = RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_IN_ROOT
        walker = _Walker(task, stack, no_symlinks=bool(resolve & RESOLVE_NO_SYMLINKS),
                         no_magic=bool(resolve & no_magic))
        excl = bool(flags & os.O_CREAT and flags & os.O_EXCL)
        res = walker.resolve(dirfd, path, follow=not (flags & os.O_NOFOLLOW or excl),
                             beneath=bool(resolve & RESOLVE_BENEATH), in_root=bool(resolve & RESOLVE_IN_ROOT))
        self._check(n.id)
        if self._fast is not None and res.obj is None and res.name != "." and name != "openat2":
            # the next plain names in this directory may be answered by the core (if the engine proves it)
            self._fast.consider(Op.WRITE if write else Op.READ, "/" + "/".join(res.comps[:-1]), res.parent)
        if not write:  # full audit: a read-only open is decided, then CONTINUEd (Landlock bounds reads)
            if res.anonymous or self._judge([Action(op=Op.READ, target=res.path, pid=n.pid)]):
                self._send(n.id, cont=True)
            else:
                self._send(n.id, error=errno.EACCES)
            return
        # What the kernel answers whatever the permissions, for objects the task can see: EEXIST for an
        # exclusive create of an existing name, EISDIR for writing a directory (or creating "name/").
        tmpfile = (flags & O_TMPFILE) == O_TMPFILE
        if res.obj is None and not res.anonymous and not tmpfile:
            there = None if res.name == "." else _lstat_or_none(res.parent, res.name)
            if flags & os.O_CREAT and flags & os.O_EXCL and (there is not None or res.name == "."):
                raise _Reply(errno.EEXIST)
            is_dir = res.name == "." or (there is not None and stat.S_ISDIR(there.st_mode))
            if is_dir or res.must_be_dir:
                raise _Reply(errno.EISDIR if is_dir or flags & os.O_CREAT else errno.ENOENT)
        # a `.git` coming into being changes which repository the paths around it lie in (fastpath.forget)
        fast = self._fast if res.name == ".git" and flags & os.O_CREAT else None
        if fast is not None:
            fast.forget()
        if not res.anonymous and not self._judge_names(res, n.pid):
            self._send(n.id, error=errno.EACCES)
            return
        cloexec = bool(flags & os.O_CLOEXEC)
        target: os.stat_result | None
        obj = res.obj
        if obj is None:
            target = _lstat_or_none(res.parent, res.name)
            if target is not None and stat.S_ISCHR(target.st_mode) and target.st_rdev == _DEV_TTY:
                # /dev/tty means the opener's controlling terminal: the task's, not ours.
                obj = task.controlling_tty()
        if obj is not None:
            target = os.fstat(obj)
            held, name, ours = os.dup(obj), "", _our_flags(flags) & ~os.O_NOFOLLOW
        else:
            held, name, ours = os.dup(res.parent), res.name, 0
        fifo = target is not None and stat.S_ISFIFO(target.st_mode)

        writes = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC))
        action = Action(op=Op.WRITE, target=res.path, pid=n.pid)
        # O_TRUNC is applied only after the link count is checked on the file actually opened: the
        # kernel would truncate during the open, before any check could refuse it.
        trunc = bool(flags & os.O_TRUNC)
        ours &= ~os.O_TRUNC

        def opener() -> int:
            try:
                with self._as_task(task):  # DAC checks as the task: never our uid or capabilities
                    if ours:
                        fd = os.open(f"/proc/self/fd/{held}", ours)
                    else:
                        fd = self._open_at(task, held, name, flags & ~os.O_TRUNC, mode)
            finally:
                os.close(held)
                if fast is not None:
                    fast.forget()
            try:
                st = os.fstat(fd)
                if writes and not res.anonymous and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    # A hard link planted before launch (to ~/.bashrc, to a file outside every grant) is
                    # another name for this very file, one the policy never judged.
                    self._refuse(action, _OTHER_NAMES)
                    raise OSError(errno.EACCES, _OTHER_NAMES)
                if trunc and stat.S_ISREG(st.st_mode):
                    with self._as_task(task):
                        _truncate(fd, flags)
            except BaseException:
                os.close(fd)
                raise
            return fd

        self._check(n.id)  # /proc was read since the last check (the tty lookup)
        self._inject(n.id, opener, cloexec, blocking=fifo)

    def _open_how(self, task: _Task, addr: int, size: int) -> tuple[int, int, int]:
        if size < _OPEN_HOW.size:
            raise _Reply(errno.EINVAL)
        if size > 4096:
            raise _Reply(errno.E2BIG)
        raw = task.read(addr, size)
        if len(raw) < size:
            raise _Reply(errno.EFAULT)
        if any(raw[_OPEN_HOW.size:]):
            raise _Reply(errno.E2BIG)
        flags, mode, resolve = _OPEN_HOW.unpack_from(raw)
        if flags >> 32 or mode & ~0o7777 or resolve & ~0x3F:
            raise _Reply(errno.EINVAL)
        return flags, mode, resolve

    def _open_at(self, task: _Task, parent: int, name: str, flags: int, mode: int) -> int:
        """Open `name` under the held `parent` as the task asked, creating it with the task's umask
        and owner when the open creates it."""
        ours = _our_flags(flags)
        mode &= ~(stat.S_ISUID | stat.S_ISGID)  # a created file is never set-id (see _SETID)
        creates = bool(flags & os.O_CREAT) or (flags & O_TMPFILE) == O_TMPFILE
        if not creates:
            return os.open(name, ours, dir_fd=parent)
        if not flags & os.O_EXCL and (flags & O_TMPFILE) != O_TMPFILE:
            try:  # the common case: the file exists, and O_CREAT without O_EXCL just opens it
                return os.open(name, ours & ~os.O_CREAT, dir_fd=parent)
            except FileNotFoundError:
                pass
        umask = int(task.status("Umask") or "022", 8)
        kernel_mode = _task_umask_here(umask)  # the kernel applies the task's umask, or a default ACL
        create_mode = mode if kernel_mode else mode & ~umask
        for _ in range(3):
            try:
                if (flags & O_TMPFILE) == O_TMPFILE:
                    fd = os.open(name, ours, create_mode, dir_fd=parent)
                else:
                    fd = os.open(name, ours | os.O_EXCL, create_mode, dir_fd=parent)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                try:
                    return os.open(name, ours & ~os.O_CREAT, dir_fd=parent)
                except FileNotFoundError:
                    continue  # removed between our two opens: try creating again
            self._adopt(task, fd, None if kernel_mode else mode & ~umask)
            return fd
        raise OSError(errno.EAGAIN, "file kept appearing and disappearing")

    def _adopt(self, task: _Task, fd: int, mode: int | None) -> None:
        """Give a file the supervisor created the mode (None: the kernel gave it already) and owner the
        task would have given it."""
        if mode is not None:
            os.fchmod(fd, mode)
        uids, gids = task.status("Uid").split(), task.status("Gid").split()
        if len(uids) == 4 and len(gids) == 4:
            fsuid, fsgid = int(uids[3]), int(gids[3])
            if (fsuid, fsgid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, fsuid, fsgid)
                except PermissionError:
                    pass

    def _inject(self, nid: int, opener: Callable[[], int], cloexec: bool, *, blocking: bool) -> None:
        """Open with `opener` and install the result in the task as the syscall's return value.

        A FIFO open blocks until the other end shows up, so it runs on its own thread rather than
        stalling every other notification."""
        def work() -> None:
            try:
                fd = opener()
            except OSError as exc:
                self._send(nid, error=exc.errno or errno.EACCES)
                return
            try:
                sc.notif_addfd_send(self.fd, nid, fd, cloexec=cloexec)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EINPROGRESS):
                    self._send(nid, error=exc.errno or errno.EACCES)
            finally:
                os.close(fd)

        if not blocking:
            work()
            return
        threading.Thread(target=_quiet(work), name="guard-fifo-open", daemon=True).start()


def _truncate(fd: int, flags: int) -> None:
    """O_TRUNC, after the fact: on the descriptor when it is writable, else (O_RDONLY|O_TRUNC, which
    Linux honours) through a writable reopen of the same file."""
    if flags & (os.O_WRONLY | os.O_RDWR):
        os.ftruncate(fd, 0)
        return
    wfd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(wfd, 0)
    finally:
        os.close(wfd)


def _truncate_at(res: _Resolved, length: int) -> None:
    """truncate(2) of the regular file the walk found (the final symlink already followed)."""
    if res.obj is not None:
        st = os.fstat(res.obj)
    else:
        st = os.stat(res.name, dir_fd=res.parent, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = (os.open(f"/proc/self/fd/{res.obj}", flags & ~os.O_NOFOLLOW) if res.obj is not None
          else os.open(res.name, flags, dir_fd=res.parent))
    try:
        os.ftruncate(fd, length)
    finally:
        os.close(fd)


def _has_other_names(res: _Resolved) -> bool:
    """Whether the regular file `res` names has more than one link, checked on an O_PATH fd of it."""
    if res.obj is not None:
        st = os.fstat(res.obj)
    else:
        try:
            fd = os.open(res.name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=res.parent)
        except FileNotFoundError:
            return False  # the kernel answers ENOENT itself
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


def _subtree(res: _Resolved, budget: int, deadline: float) -> list[str] | None:
    """Relative paths of everything under the directory `res` names ([] when it is not a directory),
    symlinks not followed; None when there are more than `budget` entries or `deadline` passes."""
    try:
        top = os.open(res.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                      dir_fd=res.parent if res.obj is None else res.obj)
    except (NotADirectoryError, FileNotFoundError):
        return []
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: renaming it moves no tree
            return []
        raise
    out: list[str] = []
    todo = [(top, "")]
    try:
        while todo:
            fd, rel = todo.pop()
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        sub = f"{rel}/{entry.name}" if rel else entry.name
                        out.append(sub)
                        if len(out) > budget or time.monotonic() > deadline:
                            return None
                        if entry.is_dir(follow_symlinks=False):
                            todo.append((os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                                 | os.O_CLOEXEC, dir_fd=fd), sub))
            finally:
                os.close(fd)
    finally:
        for fd, _rel in todo:
            os.close(fd)
    return out


def _quiet(fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except Exception:
            log.exception("seccomp supervisor: background open failed")
    return run


def _our_flags(flags: int) -> int:
    """The task's open flags as the supervisor passes them: never follow the final name (it was
    resolved already), never acquire a controlling terminal, close-on-exec in our own process."""
    return (flags | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC) & 0xFFFFFFFF


_libc.connect.argtypes = _libc.bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
_libc.sendto.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p,
                         ctypes.c_uint]
_libc.sendto.restype = ctypes.c_ssize_t
_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
_libc.fchownat.restype = ctypes.c_int


def _fchown_empty(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", uid, gid, AT_EMPTY_PATH): chown the object an O_PATH fd holds (no follow)."""
    if _libc.fchownat(fd, b"", uid, gid, AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
# syscall -> index of its times argument (utime: struct utimbuf; utimes, futimesat: struct timeval[2];
# utimensat: struct timespec[2]); NULL means "now"
_TIMES_ARG = {"utime": 1, "utimes": 1, "futimesat": 2, "utimensat": 2}


def _times_arg(task: _Task, name: str, a: tuple[int, ...]) -> bytes | None:
    """The times the task asked for, read from it once, as utimensat's struct timespec[2] (None: now)."""
    addr = a[_TIMES_ARG[name]]
    if addr == 0:
        return None
    size = 16 if name == "utime" else 32
    raw = task.read(addr, size)
    if len(raw) < size:
        raise _Reply(errno.EFAULT)
    if name == "utimensat":
        return raw  # UTIME_NOW, UTIME_OMIT and range checks: the kernel's, on our call
    if name == "utime":
        atime, mtime = struct.unpack("=qq", raw)
        return struct.pack("=qqqq", atime, 0, mtime, 0)
    s0, u0, s1, u1 = struct.unpack("=qqqq", raw)
    if not (0 <= u0 < 1_000_000 and 0 <= u1 < 1_000_000):
        raise _Reply(errno.EINVAL)  # what utimes(2) answers
    return struct.pack("=qqqq", s0, u0 * 1000, s1, u1 * 1000)


def _futimens(fd: int, times: bytes | None) -> None:
    """futimens(fd, times): the times of the open file `fd` (an O_PATH one fails, as the task's would)."""
    buf = None if times is None else ctypes.create_string_buffer(times, len(times))
    if _libc.futimens(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_libc.futimens.argtypes = [ctypes.c_int, ctypes.c_void_p]
_FSXATTR_SIZE = 28  # struct fsxattr: five u32 and eight bytes of padding


def _ioctl_bytes(fd: int, cmd: int, arg: bytes) -> None:
    """ioctl(fd, cmd, &arg) with a copy of the task's argument."""
    buf = ctypes.create_string_buffer(arg, len(arg))
    if _libc.ioctl(fd, ctypes.c_ulong(cmd), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _utimens_empty(fd: int, times: bytes | None) -> None:
    """utimensat(fd, "", times, AT_EMPTY_PATH): set the times of the object an O_PATH fd holds."""
    buf = None if times is None else ctypes.create_string_buffer(times, len(times))
    if _libc.utimensat(fd, b"", buf, AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_FILE_ATTR_MAX = 4096  # struct file_attr is 24 bytes; the kernel takes larger ones with a zero tail


def _file_setattr_empty(fd: int, attr: bytes, nr: int) -> None:
    """file_setattr on /proc/self/fd/N: the inode flags of the object an O_PATH fd holds (the kernel refuses
    AT_EMPTY_PATH on an O_PATH descriptor; the magic link leads to the same inode)."""
    buf = ctypes.create_string_buffer(attr, max(len(attr), 1))
    where = ctypes.c_char_p(f"/proc/self/fd/{fd}".encode())
    res = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(AT_FDCWD), where, buf, ctypes.c_size_t(len(attr)),
                        ctypes.c_uint(0))
    if res != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _has_entries(dirfd: int, name: str) -> bool:
    """Whether the directory `name` under `dirfd` holds anything (read with our own view, not followed)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return False  # unreadable here: the act itself answers
    try:
        with os.scandir(fd) as entries:
            return next(entries, None) is not None
    finally:
        os.close(fd)


def _lstat_or_none(dirfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return None


@contextmanager
def serving(listener_fd: int, *, decide: Decide, record: Record, spec: SeccompSpec | None = None,
            workers: int = 1, check: Decide | None = None, sockets: Callable[[str], bool] | None = None,
            link_names: LinkNames | LinkMap | None = None) -> Iterator[Supervisor]:
    """Run a Supervisor on a thread for the duration of a `with` block (tests, simple embedders)."""
    sup = Supervisor(listener_fd, decide=decide, record=record, spec=spec, workers=workers, check=check,
                     sockets=sockets, link_names=link_names)
    stop = threading.Event()
    thread = threading.Thread(target=sup.serve_forever, args=(stop,), name="guard-seccomp", daemon=True)
    thread.start()
    try:
        yield sup
    finally:
        stop.set()
        thread.join()
        sup.close()


def _task_fd(task: _Task, n: sc.Notif, fd: int) -> int:
    """A duplicate of the task's descriptor `fd` (the same open file description), taken with pidfd_getfd
    from the very thread that asked (its descriptor table); the caller closes it."""
    try:
        pidfd = os.pidfd_open(n.pid, _PIDFD_THREAD)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise _Gone() from exc
        pidfd = os.pidfd_open(int(task.status("Tgid")))
    try:
        return sc.pidfd_getfd(pidfd, fd)
    except OSError as exc:
        raise _Reply(errno.EBADF if exc.errno == errno.EBADF else errno.EACCES) from exc
    finally:
        os.close(pidfd)


def _then(act: Callable[[], None], after: Callable[[], None]) -> Callable[[], None]:
    """`act`, then `after` whatever act raised."""
    def both() -> None:
        try:
            act()
        finally:
            after()
    return both
