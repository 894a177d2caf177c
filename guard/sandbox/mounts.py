"""Mount-namespace work in the child: private propagation, the masks of a plan, a fresh /proc and /sys.

Masks exist because Landlock cannot carve a deny out of a granted tree. An empty read-only tmpfs hides a
directory; an empty read-only file, bound over it, hides anything else; a read-only (or noexec) bind of a
path onto itself write-protects it in place. The empty file comes from a scratch tmpfs briefly mounted
over /proc (always present, and remounted right after), so the host filesystem is never written to.
The agent cannot undo any of it: it holds no capabilities, Landlock refuses every mount-topology change
of a restricted process, and the seccomp filter refuses mount(2) and friends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from guard.errors import SandboxError
from guard.sandbox import _syscalls as sc
from guard.sandbox.plan import MountKind, MountOp

_STAGING = "/proc"
_EMPTY = "/proc/guard-empty"
_HARDEN = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC


def make_private() -> None:
    """Stop our mounts from propagating back to the host (and the host's into us)."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)


def apply_masks(ops: Sequence[MountOp]) -> list[str]:
    """Apply the plan's mounts, shallowest first (the planner sorted them), so deeper ones land on top.

    Returns the paths that vanished between the scan and now (nothing left there to hide or protect;
    a later re-creation is the decision tier's to refuse, like any creation after launch). Any other
    failure raises.
    """
    if not ops:
        return []
    vanished: list[str] = []
    sc.mount("tmpfs", _STAGING, "tmpfs", _HARDEN, "mode=0755,size=16k")
    try:
        fd = os.open(_EMPTY, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        os.close(fd)
        for op in ops:
            if not _apply(op):
                vanished.append(op.path)
    finally:
        sc.umount2(_STAGING, sc.MNT_DETACH)
    return vanished


def _apply(op: MountOp) -> bool:
    if not os.path.lexists(op.path):
        return False
    try:
        if op.kind is MountKind.HIDE_DIR:
            sc.mount("tmpfs", op.path, "tmpfs", sc.MS_RDONLY | _HARDEN, "mode=0555,size=4k,nr_inodes=1")
        elif op.kind is MountKind.HIDE_FILE:
            sc.mount(_EMPTY, op.path, None, sc.MS_BIND)
            sc.mount(None, op.path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _HARDEN)
        else:
            sc.mount(op.path, op.path, None, sc.MS_BIND | sc.MS_REC)
            extra = sc.MS_RDONLY if op.kind is MountKind.READ_ONLY else sc.MS_NOEXEC
            flags = sc.locked_mount_flags(op.path) | extra
            sc.mount(None, op.path, None, sc.MS_BIND | sc.MS_REMOUNT | flags)
    except SandboxError as exc:
        if not os.path.lexists(op.path):
            return False
        raise SandboxError(f"mask {op.kind.value} {op.path} for {op.reason}: {exc.message}") from None
    return True


def mount_proc_and_sys() -> None:
    """/proc of the new pid namespace (only the sandbox's processes), /sys of the new network namespace."""
    sc.mount("proc", "/proc", "proc", _HARDEN)
    sc.mount("sysfs", "/sys", "sysfs", sc.MS_RDONLY | _HARDEN)
