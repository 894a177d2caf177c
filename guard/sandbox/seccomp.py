"""The seccomp layer: which syscalls are refused outright, which go to the supervisor, and installing it.

The filter is built as pure data (`build_filter(spec) -> bytes`) so it can be emulated and inspected
without a kernel; `install(spec)` is the only function that touches the process.

Shape of the filter, and why:
- A foreign audit arch (i386 via `int 0x80`, arm32 compat) or an x32 syscall number kills the whole
  process: every other rule below is keyed on native numbers, so a second syscall table is a bypass.
- Kernel surfaces an agent never needs (io_uring, ptrace, bpf, keyrings, mounts, modules, ...) return
  EPERM; sockets of a family other than unix, IPv4, IPv6 and netlink return EAFNOSUPPORT (vsock is not
  confined by the network namespace). `clone3` returns ENOSYS because its flags live in memory the
  filter cannot read; libcs then fall back to `clone`, whose flags the filter checks for CLONE_NEW*.
- Arguments the kernel reads as `int`/`unsigned int` (open flags, ioctl cmd, clone flags, personality)
  are judged on their low 32 bits only, ignoring the high half: that is how the kernel reads them, so a
  value like 0x1_00005412 is still TIOCSTI (flatpak's CVE-2019-10063 was the opposite mistake).
- Syscalls whose outcome does not depend on arguments are decided before any argument is loaded, so the
  kernel's per-syscall allow cache (5.11+) skips the filter for them entirely.
- With `notify`, exec, write-intent opens (decided in BPF from the flags, so read-only opens never leave
  the kernel), openat2, path-creating/removing syscalls and attribute changes (mode, owner, times,
  xattrs, inode flags, truncation) return SECCOMP_RET_USER_NOTIF. Landlock has no right for attribute
  changes at all, so without this tier `chmod` reaches any file the user owns. connect (and sendto with a
  destination address) is notified too: Landlock does not judge connecting to a pathname unix socket.
  `full_audit` notifies every open as well, which roughly doubles the cost of file-heavy work.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from guard.errors import SandboxError
from guard.sandbox import syscalls_seccomp as sc
from guard.sandbox.bpf import Assembler, encode

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_ALLOW = 0x7FFF0000

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data offsets (little-endian: an argument's low half comes first).
OFF_NR, OFF_ARCH = 0, 4


def arg_lo(i: int) -> int:
    return 16 + 8 * i


def arg_hi(i: int) -> int:
    return 20 + 8 * i


O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0o1, 0o2, 0o100, 0o1000
WRITE_INTENT = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
# chattr's ioctls: they change inode flags (append-only, immutable, nodump, ...) through any open fd.
FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, FS_IOC_FSSETXATTR = 0x40086602, 0x40046602, 0x401C5820
NOTIFIED_IOCTLS = (FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, FS_IOC_FSSETXATTR)
CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
CLONE_NEWTIME = 0x00000080  # only meaningful to unshare/setns (in clone() it is part of CSIGNAL)
PER_LINUX, PER_QUERY = 0x0, 0xFFFFFFFF

# Refused with EPERM whatever the arguments.
REFUSED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
    "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "keyctl", "add_key", "request_key",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "open_tree_attr", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr", "setns",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "lookup_dcookie",
    "open_by_handle_at", "name_to_handle_at", "syslog", "iopl", "ioperm", "modify_ldt", "uselib",
    "vhangup", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
)

# Sent to the supervisor when spec.notify is on (open/openat only with write intent, see above).
NOTIFIED = (
    "execve", "execveat", "openat2", "creat",
    "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
    "mkdir", "mkdirat", "mknod", "mknodat", "truncate", "unlink", "unlinkat", "rmdir",
    *("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
      "utime", "utimes", "futimesat", "utimensat",
      "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
      "setxattrat", "removexattrat", "file_setattr", "ftruncate"),
    # Landlock ABI 7 does not judge connect() to a pathname unix socket, and BPF cannot read the
    # sockaddr: every connect goes to the supervisor, which decides only AF_UNIX paths. bind() of a
    # pathname unix socket creates a name on the file system, so it is decided like any create.
    "connect", "bind",
    # Not decided: the compiled core keeps each task's umask (a create must apply it) instead of reading
    # /proc/<pid>/status for every create; a umask call makes it forget what it kept, then continues.
    "umask",
)
# sendto with a destination address (arg 4 non-NULL) names a socket path too; sendmsg's address is
# inside a struct BPF cannot read, so it stays a documented residual.
SENDTO_ADDR_ARG = 4
FLAG_OPENS = {"openat": 2, "open": 1}  # syscall -> index of its flags argument
# socket(2) families the sandbox may create; every other answers EAFNOSUPPORT, as for a family the kernel
# lacks. The network namespace confines these four; AF_VSOCK is not confined by it and reaches the
# hypervisor's host (a VM's, WSL2's) around the proxy, and the rest (bluetooth, CAN, TIPC, RDS, ...) are
# kernel surface an agent has no use for.
SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)

_X86_64 = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "process_madvise": 440, "pidfd_getfd": 438,
    "kcmp": 312, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "fanotify_init": 300,
    "keyctl": 250, "add_key": 248, "request_key": 249, "mount": 165, "umount2": 166, "pivot_root": 155,
    "chroot": 161, "move_mount": 429, "open_tree": 428, "open_tree_attr": 467, "fsopen": 430,
    "fsmount": 432, "fsconfig": 431, "fspick": 433, "mount_setattr": 442, "setns": 308,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163, "quotactl": 179,
    "quotactl_fd": 443, "lookup_dcookie": 212, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "syslog": 103, "iopl": 172, "ioperm": 173, "modify_ldt": 154, "uselib": 134, "vhangup": 153,
    "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159,
    "unshare": 272, "clone": 56, "clone3": 435, "personality": 135, "ioctl": 16,
    "execve": 59, "execveat": 322, "open": 2, "openat": 257, "openat2": 437, "creat": 85,
    "rename": 82, "renameat": 264, "renameat2": 316, "link": 86, "linkat": 265, "symlink": 88,
    "symlinkat": 266, "mkdir": 83, "mkdirat": 258, "mknod": 133, "mknodat": 259, "truncate": 76,
    "unlink": 87, "unlinkat": 263, "rmdir": 84,
    "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
    "lchown": 94, "fchownat": 260, "utime": 132, "utimes": 235, "futimesat": 261, "utimensat": 280,
    "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
    "fremovexattr": 199, "setxattrat": 463, "removexattrat": 466, "file_setattr": 469, "ftruncate": 77,
    "connect": 42, "sendto": 44, "bind": 49, "umask": 95, "socket": 41,
}

# The generic table (asm-generic/unistd.h) as arm64 uses it; it has no legacy path syscalls.
_AARCH64 = {
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "ptrace": 117,
    "process_vm_readv": 270, "process_vm_writev": 271, "process_madvise": 440, "pidfd_getfd": 438,
    "kcmp": 272, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "fanotify_init": 262,
    "keyctl": 219, "add_key": 217, "request_key": 218, "mount": 40, "umount2": 39, "pivot_root": 41,
    "chroot": 51, "move_mount": 429, "open_tree": 428, "open_tree_attr": 467, "fsopen": 430,
    "fsmount": 432, "fsconfig": 431, "fspick": 433, "mount_setattr": 442, "setns": 268,
    "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
    "delete_module": 106, "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89, "quotactl": 60,
    "quotactl_fd": 443, "lookup_dcookie": 18, "open_by_handle_at": 265, "name_to_handle_at": 264,
    "syslog": 116, "vhangup": 58, "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266,
    "adjtimex": 171, "unshare": 97, "clone": 220, "clone3": 435, "personality": 92, "ioctl": 29,
    "execve": 221, "execveat": 281, "openat": 56, "openat2": 437, "renameat": 38, "renameat2": 276,
    "linkat": 37, "symlinkat": 36, "mkdirat": 34, "mknodat": 33, "truncate": 45, "unlinkat": 35,
    "fchmod": 52, "fchmodat": 53, "fchmodat2": 452, "fchown": 55, "fchownat": 54, "utimensat": 88,
    "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15,
    "fremovexattr": 16, "setxattrat": 463, "removexattrat": 466, "file_setattr": 469, "ftruncate": 46,
    "connect": 203, "sendto": 206, "bind": 200, "umask": 166, "socket": 198,
}


@dataclass(frozen=True, slots=True)
class ArchTable:
    name: str
    audit_arch: int
    has_x32: bool
    numbers: Mapping[str, int]

    def names(self) -> dict[int, str]:
        return {nr: name for name, nr in self.numbers.items()}


ARCHES: Mapping[str, ArchTable] = {
    "x86_64": ArchTable("x86_64", AUDIT_ARCH_X86_64, True, _X86_64),
    "aarch64": ArchTable("aarch64", AUDIT_ARCH_AARCH64, False, _AARCH64),
}


@dataclass(frozen=True, slots=True)
class SeccompSpec:
    """What the filter does. `notify` sends the decision-tier syscalls to a supervisor; `full_audit`
    also sends every read-only open (about 2x on file-heavy work)."""

    notify: bool = True
    full_audit: bool = False
    arch: str = field(default_factory=sc.machine)

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise SandboxError(f"seccomp: no syscall table for architecture {self.arch!r}",
                               hint=f"supported: {', '.join(sorted(ARCHES))}")
        if self.full_audit and not self.notify:
            raise SandboxError("seccomp: full_audit needs notify (a supervisor to send opens to)")

    @property
    def table(self) -> ArchTable:
        return ARCHES[self.arch]


def build_filter(spec: SeccompSpec) -> bytes:
    """The classic-BPF program for `spec`, as the bytes of a `struct sock_filter[]`."""
    nums = spec.table.numbers
    a = Assembler()
    a.load_abs(OFF_ARCH)
    a.jeq(spec.table.audit_arch, jf="kill")
    a.load_abs(OFF_NR)
    if spec.table.has_x32:
        a.jset(X32_SYSCALL_BIT, jt="kill")

    # Dispatch to argument-dependent blocks first; everything here is decided on the number alone.
    if spec.notify:
        for name in FLAG_OPENS:
            if name in nums:
                a.jeq(nums[name], jt=f"open_{name}")
        for name in NOTIFIED:
            if name in nums:
                a.jeq(nums[name], jt="notify")
        a.jeq(nums["sendto"], jt="sendto")
    a.jeq(nums["ioctl"], jt="ioctl")
    a.jeq(nums["clone"], jt="clone")
    a.jeq(nums["unshare"], jt="unshare")
    a.jeq(nums["personality"], jt="personality")
    a.jeq(nums["socket"], jt="socket")
    a.jeq(nums["clone3"], jt="enosys")
    for name in REFUSED:
        if name in nums:
            a.jeq(nums[name], jt="eperm")
    a.ret(RET_ALLOW)

    if spec.notify:
        for name, idx in FLAG_OPENS.items():
            if name not in nums:
                continue
            a.label(f"open_{name}")
            if spec.full_audit:
                a.ja("notify")
            else:
                a.load_abs(arg_lo(idx))
                a.jset(WRITE_INTENT, jt="notify", jf="allow")
        a.label("sendto")  # a 64-bit pointer: NULL only when both halves are zero
        a.load_abs(arg_lo(SENDTO_ADDR_ARG))
        a.jeq(0, jf="notify")
        a.load_abs(arg_hi(SENDTO_ADDR_ARG))
        a.jeq(0, jt="allow", jf="notify")
    a.label("ioctl")
    a.load_abs(arg_lo(1))
    if spec.notify:
        for cmd in NOTIFIED_IOCTLS:
            a.jeq(cmd, jt="notify")
    a.jeq(TIOCSTI, jt="eperm")
    a.jeq(TIOCLINUX, jt="eperm", jf="allow")
    a.label("clone")
    a.load_abs(arg_lo(0))
    a.jset(CLONE_NEW_MASK, jt="eperm", jf="allow")
    a.label("unshare")
    a.load_abs(arg_lo(0))
    a.jset(CLONE_NEW_MASK | CLONE_NEWTIME, jt="eperm", jf="allow")
    a.label("personality")
    a.load_abs(arg_lo(0))
    a.jeq(PER_LINUX, jt="allow")
    a.jeq(PER_QUERY, jt="allow", jf="eperm")
    a.label("socket")
    a.load_abs(arg_lo(0))
    for family in SOCKET_FAMILIES:
        a.jeq(family, jt="allow")
    a.ja("eafnosupport")

    a.label("allow")
    a.ret(RET_ALLOW)
    a.label("notify")
    a.ret(RET_USER_NOTIF if spec.notify else RET_ALLOW)
    a.label("eperm")
    a.ret(RET_ERRNO | errno.EPERM)
    a.label("enosys")
    a.ret(RET_ERRNO | errno.ENOSYS)
    a.label("eafnosupport")
    a.ret(RET_ERRNO | errno.EAFNOSUPPORT)
    a.label("kill")
    a.ret(RET_KILL_PROCESS)
    return encode(a.assemble())


def install(spec: SeccompSpec) -> int | None:
    """Install the filter on the calling process (all its threads) and return the listener fd, if any.

    Call it last before exec: after Landlock's restrict_self and with no_new_privs set (required, so a
    setuid binary cannot shed the filter's effect). Raises SandboxError when the kernel refuses.
    """
    if spec.arch != sc.machine():
        raise SandboxError(f"seccomp: spec is for {spec.arch}, this host is {sc.machine()}")
    if not sc.no_new_privs():
        raise SandboxError("seccomp: no_new_privs is not set on this process",
                           hint="call prctl(PR_SET_NO_NEW_PRIVS, 1) before installing the filter")
    program = build_filter(spec)
    if not spec.notify:
        _install(program, sc.SECCOMP_FILTER_FLAG_TSYNC)
        return None
    # WAIT_KILLABLE_RECV: once the supervisor holds a notification, only a fatal signal interrupts it,
    # so an injected fd or a file the supervisor created is never orphaned by a restarted syscall.
    flags = (sc.SECCOMP_FILTER_FLAG_NEW_LISTENER | sc.SECCOMP_FILTER_FLAG_TSYNC
             | sc.SECCOMP_FILTER_FLAG_TSYNC_ESRCH)
    try:
        return _install(program, flags | sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
    except SandboxError as exc:
        if exc.__cause__ is None or getattr(exc.__cause__, "errno", None) != errno.EINVAL:
            raise
    return _install(program, flags)


def _install(program: bytes, flags: int) -> int:
    try:
        return sc.seccomp_set_filter(program, flags)
    except OSError as exc:
        hint = {
            errno.EACCES: "set no_new_privs first (or hold CAP_SYS_ADMIN)",
            errno.ESRCH: "another thread could not be synchronised; install before starting threads",
            errno.EINVAL: "this kernel lacks a seccomp feature guard needs (user notification: 5.0+)",
        }.get(exc.errno or 0)
        raise SandboxError(f"seccomp: the kernel refused the filter: {exc.strerror}", hint=hint) from exc
