"""The thin, hazardous layer: raw Linux syscalls through ctypes, one function per call, nothing clever.

Everything above this module speaks in plans and paths; everything here speaks in numbers and fails with
`SandboxError` naming the call and the errno, so a failure inside the child can be sent to the parent as a
precise reason. Constants are the kernel's UAPI values (include/uapi/linux/landlock.h, prctl.h, sched.h,
mount.h, seccomp.h); they are fixed ABI and never computed at run time.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import socket
import struct

from guard.errors import SandboxError

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# --- syscall numbers (the Landlock ones are shared by every architecture) -------------------------------
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
# the new mount API: numbered after the 2019 unification, the same on every architecture
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
_ARCH_NR = {
    "x86_64": {"seccomp": 317, "capset": 126},
    "aarch64": {"seccomp": 277, "capset": 91},
}
_NR = _ARCH_NR.get(platform.machine(), {})

# --- Landlock ------------------------------------------------------------------------------------------
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2  # ABI 4

ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5

ACCESS_NET_BIND_TCP = 1 << 0  # ABI 4
ACCESS_NET_CONNECT_TCP = 1 << 1  # ABI 4

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

RESTRICT_SELF_LOG_SAME_EXEC_OFF = 1 << 0  # ABI 7
RESTRICT_SELF_LOG_NEW_EXEC_ON = 1 << 1  # ABI 7
RESTRICT_SELF_LOG_SUBDOMAINS_OFF = 1 << 2  # ABI 7

# --- prctl ---------------------------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

SECBIT_NOROOT = 1 << 0
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 7

# --- namespaces ------------------------------------------------------------------------------------------
CLONE_FS = 0x00000200  # the calling thread's own cwd, root and umask
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# --- mount -----------------------------------------------------------------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

# statvfs f_flag bits -> the mount flags a bind remount must keep (locked flags cannot be cleared in a userns)
_ST_TO_MS = ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
             (2048, MS_NODIRATIME), (4096, MS_RELATIME))

# --- seccomp (only what `guard doctor` probes; the filter itself lives in seccomp.py) -------------------
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_IOCTL_NOTIF_ADDFD = 0x40182103
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104

# --- network interface flags -----------------------------------------------------------------------------
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _fail(call: str, err: int, detail: str = "") -> SandboxError:
    name = errno.errorcode.get(err, str(err))
    where = f" ({detail})" if detail else ""
    return SandboxError(f"{call}{where} failed: {name} {os.strerror(err)}")


def _check(result: int, call: str, detail: str = "") -> int:
    if result < 0:
        raise _fail(call, ctypes.get_errno(), detail)
    return result


def _syscall(nr: int, *args: int | bytes | ctypes.Array[ctypes.c_char] | None) -> int:
    conv: list[object] = []
    for a in args:
        if isinstance(a, int):
            conv.append(ctypes.c_long(a))
        else:
            conv.append(a)
    return int(_libc.syscall(ctypes.c_long(nr), *conv))


# --- Landlock --------------------------------------------------------------------------------------------
def landlock_abi() -> int:
    """The Landlock ABI version of the running kernel; 0 when Landlock is absent or disabled at boot."""
    result = _syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if result < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise _fail("landlock_create_ruleset(VERSION)", err)
    return result


def landlock_create_ruleset(handled_fs: int, handled_net: int = 0, scoped: int = 0) -> int:
    """A new ruleset fd. The attr is always the 24-byte ABI 6 layout: older kernels accept it when the
    fields they do not know are zero, and refuse (E2BIG) when they are not, which is what we want."""
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", handled_fs, handled_net, scoped), 24)
    size = 24 if scoped else (16 if handled_net else 8)
    return _check(_syscall(SYS_LANDLOCK_CREATE_RULESET, attr, size, 0), "landlock_create_ruleset",
                  f"fs={handled_fs:#x} net={handled_net:#x} scoped={scoped:#x}")


def landlock_add_path_rule(ruleset_fd: int, parent_fd: int, allowed: int, path: str) -> None:
    """Grant `allowed` beneath the file or directory open as `parent_fd` (struct is packed: 12 bytes)."""
    attr = ctypes.create_string_buffer(struct.pack("=Qi", allowed, parent_fd), 12)
    _check(_syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, attr, 0),
           "landlock_add_rule", f"{path} access={allowed:#x}")


def landlock_add_net_rule(ruleset_fd: int, allowed: int, port: int) -> None:
    """Grant `allowed` (ACCESS_NET_*) on TCP `port` (struct landlock_net_port_attr: two u64, 16 bytes)."""
    attr = ctypes.create_string_buffer(struct.pack("=QQ", allowed, port), 16)
    _check(_syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_NET_PORT, attr, 0),
           "landlock_add_rule", f"tcp port {port} access={allowed:#x}")


def landlock_restrict_self(ruleset_fd: int, flags: int = 0) -> None:
    _check(_syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset_fd, flags), "landlock_restrict_self",
           f"flags={flags:#x}")


# --- process attributes ------------------------------------------------------------------------------------
def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0, *, what: str) -> int:
    result = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                         ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    return _check(int(result), f"prctl({what})")


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig, what="PR_SET_PDEATHSIG")


def set_dumpable(value: bool) -> None:
    prctl(PR_SET_DUMPABLE, int(value), what="PR_SET_DUMPABLE")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")


def no_new_privs() -> bool:
    return bool(prctl(PR_GET_NO_NEW_PRIVS, what="PR_GET_NO_NEW_PRIVS"))


def drop_capabilities() -> None:
    """Leave no capability behind, and lock the securebits so exec as uid 0 cannot grant them back.

    Inside the sandbox's user namespace the process holds every capability of that namespace (it owns
    the mount and network namespaces); the agent must not inherit them, or it could unmount the masks.
    """
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())  # noqa: SIM115 - tiny procfs read
    prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP
          | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE
          | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED, what="PR_SET_SECUREBITS")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="PR_CAP_AMBIENT_CLEAR_ALL")
    for cap in range(last_cap + 1):
        prctl(PR_CAPBSET_DROP, cap, what=f"PR_CAPBSET_DROP {cap}")
    nr = _NR.get("capset")
    if nr is None:
        raise SandboxError(f"capset: unsupported architecture {platform.machine()}")
    header = ctypes.create_string_buffer(struct.pack("=Ii", 0x20080522, 0), 8)  # _LINUX_CAPABILITY_VERSION_3
    data = ctypes.create_string_buffer(bytes(24), 24)  # two empty {effective, permitted, inheritable}
    _check(_syscall(nr, header, data), "capset", "clear all")


# --- namespaces and ids ---------------------------------------------------------------------------------
def unshare(flags: int) -> None:
    _check(int(_libc.unshare(ctypes.c_int(flags))), "unshare", f"flags={flags:#x}")


def write_id_maps(uid: int, gid: int) -> None:
    """Map the current uid/gid onto themselves in a fresh user namespace, groups frozen first.

    setgroups must be denied before gid_map may be written by an unprivileged process; doing it as root
    too keeps the agent from dropping supplementary groups that deny it access (negative ACLs).
    """
    writes = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\n"), ("gid_map", f"{gid} {gid} 1\n"))
    for name, text in writes:
        try:
            fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise _fail(f"write /proc/self/{name}", exc.errno or errno.EIO, text.strip()) from None


# --- mounts ------------------------------------------------------------------------------------------------
def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(source.encode() if source is not None else None, target.encode(),
                         fstype.encode() if fstype is not None else None, ctypes.c_ulong(flags),
                         data.encode() if data is not None else None)
    _check(int(result), "mount", f"{fstype or 'bind'} {source or ''} -> {target} flags={flags:#x}")


def umount2(target: str, flags: int) -> None:
    _check(int(_libc.umount2(target.encode(), ctypes.c_int(flags))), "umount2", target)


def clone_tree(path: str) -> int:
    """A detached recursive copy of the mounts at `path` (open_tree OPEN_TREE_CLONE), as an fd: taken
    before `path` is covered, it can be attached elsewhere later without any path reaching it."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
    return _check(_syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), flags), "open_tree", path)


def attach_tree(tree_fd: int, target: str) -> None:
    """Attach a tree from `clone_tree` on `target` (move_mount)."""
    _check(_syscall(SYS_MOVE_MOUNT, tree_fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
           "move_mount", target)


def set_mount_attrs(target: str, attr_set: int, attr_clr: int = 0, *, recursive: bool) -> None:
    """mount_setattr: add (or clear) per-mount flags on the mount at `target`, and with `recursive` on
    every mount beneath it too (which a bind remount through mount(2) cannot do)."""
    attr = ctypes.create_string_buffer(struct.pack("=QQQQ", attr_set, attr_clr, 0, 0), 32)
    _check(_syscall(SYS_MOUNT_SETATTR, AT_FDCWD, target.encode(), AT_RECURSIVE if recursive else 0, attr, 32),
           "mount_setattr", f"{target} set={attr_set:#x} clr={attr_clr:#x}")


def locked_mount_flags(path: str) -> int:
    """The per-mount flags of the mount holding `path`, which a bind remount must repeat."""
    try:
        fflag = os.statvfs(path).f_flag
    except OSError as exc:
        raise _fail("statvfs", exc.errno or errno.EIO, path) from None
    return sum(ms for st, ms in _ST_TO_MS if fflag & st)


# --- network ---------------------------------------------------------------------------------------------
def loopback_up() -> None:
    """Bring `lo` up in the current network namespace (it starts down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            req = struct.pack("16sh22x", b"lo", 0)
            flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, req))[1]
            fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))
        except OSError as exc:
            raise _fail("ioctl(SIOCSIFFLAGS lo up)", exc.errno or errno.EIO) from None


def sethostname(name: str) -> None:
    try:
        socket.sethostname(name)
    except OSError as exc:
        raise _fail("sethostname", exc.errno or errno.EIO, name) from None


# --- seccomp probes (for `guard doctor`) ------------------------------------------------------------------
def seccomp_action_available(action: int) -> bool:
    nr = _NR.get("seccomp")
    if nr is None:
        return False
    buf = ctypes.create_string_buffer(struct.pack("=I", action), 4)
    return _syscall(nr, SECCOMP_GET_ACTION_AVAIL, 0, buf) == 0


def seccomp_install_probe_filter() -> int:
    """Install a filter that notifies on `getppid` only and return its listener fd (a probe, used in a
    throw-away child by `guard doctor`). Requires no_new_privs or CAP_SYS_ADMIN."""
    nr = _NR.get("seccomp")
    if nr is None:
        raise SandboxError(f"seccomp: unsupported architecture {platform.machine()}")
    getppid_nr = {"x86_64": 110, "aarch64": 173}[platform.machine()]
    # ld [nr]; jeq getppid ? notify : allow
    insns = [
        (0x20, 0, 0, 0),  # BPF_LD|BPF_W|BPF_ABS seccomp_data.nr
        (0x15, 0, 1, getppid_nr),  # BPF_JMP|BPF_JEQ|BPF_K
        (0x06, 0, 0, SECCOMP_RET_USER_NOTIF),
        (0x06, 0, 0, SECCOMP_RET_ALLOW),
    ]
    prog = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
    fprog = ctypes.create_string_buffer(struct.pack("=H6xQ", len(insns), ctypes.addressof(prog)), 16)
    return _check(_syscall(nr, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, fprog),
                  "seccomp(SET_MODE_FILTER, NEW_LISTENER)")


def seccomp_ioctl_supported(listener_fd: int, request: int) -> bool:
    """Whether the kernel knows an ioctl on a notify listener.

    ADDFD gets a zeroed struct for notification id 0, which a kernel that knows it refuses with ENOENT
    (no such notification) and one that does not with EINVAL/ENOTTY. SET_FLAGS takes its flags by value:
    SYNC_WAKE_UP (1) either works or is EINVAL.
    """
    if request == SECCOMP_IOCTL_NOTIF_SET_FLAGS:
        result = int(_libc.ioctl(ctypes.c_int(listener_fd), ctypes.c_ulong(request), ctypes.c_ulong(1)))
        return result == 0
    arg = ctypes.create_string_buffer(bytes(24), 24)
    result = int(_libc.ioctl(ctypes.c_int(listener_fd), ctypes.c_ulong(request), arg))
    if result == 0:
        return True
    return ctypes.get_errno() not in (errno.EINVAL, errno.ENOTTY)


# --- statx: a file's birth time (which no utimes() can set) ------------------------------------------------
AT_SYMLINK_NOFOLLOW_STATX = 0x100
STATX_BTIME = 0x800
_STATX_SIZE = 256
_STATX_BTIME_OFFSET = 80  # struct statx: stx_btime {__s64 tv_sec; __u32 tv_nsec; __s32 reserved}


def birth_time_ns(path: str) -> int | None:
    """When `path` (not followed if a symlink) came into being, in ns since the epoch; None where the file
    system keeps no birth time or the path cannot be examined."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    statx = getattr(_libc, "statx", None)
    if statx is None:
        return None
    if statx(-100, os.fsencode(path), AT_SYMLINK_NOFOLLOW_STATX, STATX_BTIME, buf) != 0:
        return None
    mask = struct.unpack_from("=I", buf, 0)[0]
    if not mask & STATX_BTIME:
        return None
    sec, nsec = struct.unpack_from("=qI", buf, _STATX_BTIME_OFFSET)
    return int(sec) * 1_000_000_000 + int(nsec)
