"""Mount-namespace work in the child: private propagation, the masks of a plan, a fresh /proc and /sys.

Masks exist because Landlock cannot carve a deny out of a granted tree. An empty read-only tmpfs hides a
directory; an empty read-only file, bound over it, hides anything else; a read-only (or noexec) bind of a
path onto itself write-protects it in place. The empty file comes from a scratch tmpfs briefly mounted
over /proc (always present, and remounted right after), so the host filesystem is never written to.
A carve covers a directory with an empty tmpfs and puts back the grants inside it; those, and the
executable trees inside a noexec one, are bound from their originals, cloned (open_tree) before any mount
of the plan covers them, so nothing has to reach a covered path later and no mask above leaks its flags
into them (the plan repeats the ones that must apply).
The agent cannot undo any of it: it holds no capabilities, Landlock refuses every mount-topology change
of a restricted process, and the seccomp filter refuses mount(2) and friends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from guard.errors import SandboxError
from guard.sandbox import _syscalls as sc
from guard.sandbox.fuse_mask import mount_mask
from guard.sandbox.plan import MountKind, MountOp

_STAGING = "/proc"
_EMPTY = "/proc/guard-empty"
_HARDEN = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC


def make_private() -> None:
    """Stop our mounts from propagating back to the host (and the host's into us)."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)


def apply_masks(ops: Sequence[MountOp], watched: list[tuple[int, str, str]] | None = None) -> list[str]:
    """Apply the plan's mounts, shallowest first (the planner sorted them), so deeper ones land on top.

    Returns the paths that vanished between the scan and now (nothing left there to hide or protect;
    a later re-creation is the decision tier's to refuse, like any creation after launch). Any other
    failure raises. FUSE masks mounted are appended to `watched` as (descriptor, path, shape).
    """
    global _watched
    _watched = watched if watched is not None else []
    if not ops:
        return []
    vanished: list[str] = []
    # Private layers first, while every path (the caches, the layer directories) is still the host's:
    # a carve's exposures are cloned afterwards and so carry them, and later masks land on top of them.
    for op in ops:
        if op.kind is MountKind.LAYER and not _private_layer(op):
            vanished.append(op.path)
    ops = [op for op in ops if op.kind is not MountKind.LAYER]
    originals: dict[str, int] = {}
    try:
        for path in _originals_needed(ops):
            if os.path.lexists(path):
                originals[path] = sc.clone_tree(path)
        # what the carved directories hold, read before any mount of the plan covers them
        listings = {op.path: _listings(op) for op in ops if op.kind is MountKind.CARVE}
        sc.mount("tmpfs", _STAGING, "tmpfs", _HARDEN, "mode=0755,size=16k")
        try:
            fd = os.open(_EMPTY, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            os.close(fd)
            for op in ops:
                if not _apply(op, originals, listings.get(op.path, {})):
                    vanished.append(op.path)
        finally:
            sc.umount2(_STAGING, sc.MNT_DETACH)
    finally:
        for fd in originals.values():
            os.close(fd)
    return vanished


def _overlay_path(path: str) -> str:
    """A path as an overlay option: its separators (`,` `:`) and the escape itself escaped."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _private_layer(op: MountOp) -> bool:
    """An overlay on op.path: the directory as it is below, what the agent writes in op.layer above.
    `userxattr`: overlay's own bookkeeping in user.* attributes, as a user namespace requires."""
    if not os.path.isdir(op.path):
        return False
    upper, work = os.path.join(op.layer, "upper"), os.path.join(op.layer, "work")
    os.makedirs(upper, mode=0o700, exist_ok=True)
    os.makedirs(work, mode=0o700, exist_ok=True)
    data = (f"lowerdir={_overlay_path(op.path)},upperdir={_overlay_path(upper)},"
            f"workdir={_overlay_path(work)},userxattr")
    try:
        sc.mount("overlay", op.path, "overlay", sc.MS_NOSUID | sc.MS_NODEV, data)
    except (SandboxError, OSError) as exc:
        why = exc.message if isinstance(exc, SandboxError) else f"{exc.strerror}"
        raise SandboxError(f"private layer over {op.path} for {op.reason}: {why}",
                           hint="the kernel must allow overlayfs in a user namespace (Linux 5.11 or later)"
                           ) from None
    return True


def _originals_needed(ops: Sequence[MountOp]) -> list[str]:
    out = [op.path for op in ops if op.kind is MountKind.EXEC]
    out += [e.path for op in ops if op.kind in (MountKind.CARVE, MountKind.PRIVATE) for e in op.expose
            if e.kind in ("dir", "file")]
    return out


def _attrs(read_only: bool, no_exec: bool) -> int:
    return ((sc.MOUNT_ATTR_RDONLY if read_only else 0) | (sc.MOUNT_ATTR_NOEXEC if no_exec else 0)
            | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV)


def _carve(op: MountOp, originals: dict[str, int], listing: dict[str, list[tuple[str, bool]]]) -> None:
    """Empty tmpfs over op.path; the exposures' mount points (parents as plain directories), symlinks and
    binds from the originals with their own flags; then the tmpfs itself read-only.

    Refused must look refused: every other entry of those directories (`~/git-mirrors`, `../.venv` next to
    the workspace) becomes a placeholder: a file of mode 0 (opening it answers EACCES, "Permission denied",
    not ENOENT) or an empty search-only directory (listing it answers EACCES; a name beneath it is absent,
    and a write there still reaches the supervisor's recorded decision, also for an unprivileged
    supervisor); the directories themselves are search-only (0111), so their names cannot be listed, as
    Landlock refuses listing a home it does not grant."""
    inodes = len(op.expose) * 8 + 64 + sum(len(v) for v in listing.values())
    sc.mount("tmpfs", op.path, "tmpfs", _HARDEN, f"mode=0755,size=256k,nr_inodes={inodes}")
    _expose(op, originals)
    for directory, entries in listing.items():
        if not os.path.isdir(directory) or os.path.islink(directory):
            continue
        for name, is_dir in entries:
            where = os.path.join(directory, name)
            if os.path.lexists(where):
                continue
            if is_dir:  # search-only: a write beneath still reaches the supervisor's (recorded) decision
                os.mkdir(where, 0)
                os.chmod(where, 0o111)  # noqa: S103 - search-only, on a tmpfs remounted read-only below
            else:
                os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
                os.chmod(where, 0)  # the umask is not ours to trust
        os.chmod(directory, 0o111)  # noqa: S103 - search-only, on a tmpfs remounted read-only below
    sc.mount(None, op.path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _HARDEN)


_watched: list[tuple[int, str, str]] = []


def _watch(op: MountOp) -> None:
    """A FUSE mask the guard answers (guard.sandbox.fuse_mask); where FUSE cannot be mounted, the plan's
    fallback mask (none when Landlock already refuses the path: then only the record is lost)."""
    try:
        # a file inside a grant was an empty file; one outside (or a carve's placeholder) refused opening
        shape = "dir" if op.is_dir else "empty" if op.fallback is MountKind.HIDE_FILE else "file"
        fd = mount_mask(op.path, shape)
    except (SandboxError, OSError):
        if op.fallback is not None:
            _apply(MountOp(op.fallback, op.path, op.reason), {}, {})
        return
    _watched.append((fd, op.path, shape))


_PLACEHOLDER_LIMIT = 4096  # entries per carve; a directory with more is left as the tmpfs shows it


def _listings(op: MountOp) -> dict[str, list[tuple[str, bool]]]:
    """The original entries (name, is a directory) of op.path and of every directory between it and an
    exposure, read before the tmpfs covers them."""
    dirs = {op.path}
    for e in op.expose:
        parent = os.path.dirname(e.path)
        while parent != op.path and parent.startswith(op.path + "/"):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    out: dict[str, list[tuple[str, bool]]] = {}
    budget = _PLACEHOLDER_LIMIT
    for d in sorted(dirs):
        try:
            with os.scandir(d) as it:
                entries = [(x.name, x.is_dir(follow_symlinks=False)) for x in it]
        except OSError:
            continue
        if len(entries) > budget:
            continue
        budget -= len(entries)
        out[d] = entries
    return out


def _private(op: MountOp, originals: dict[str, int]) -> None:
    """A fresh writable tmpfs of the session's own over op.path (sticky and world-writable like the
    shared one it replaces; noexec when the policy lets nothing run from it), the exposures put back."""
    flags = sc.MS_NOSUID | sc.MS_NODEV | (sc.MS_NOEXEC if op.no_exec else 0)
    sc.mount("tmpfs", op.path, "tmpfs", flags, "mode=1777")
    _expose(op, originals)


def _expose(op: MountOp, originals: dict[str, int]) -> None:
    for e in op.expose:
        parent = os.path.dirname(e.path)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        if e.kind == "link":
            os.symlink(e.target, e.path)
            continue
        if e.kind in ("mkdir", "mountpoint"):
            os.makedirs(e.path, mode=0o700 if e.kind == "mkdir" else 0o755, exist_ok=True)
            continue
        tree = originals.get(e.path)
        if tree is None:
            continue  # gone since the scan: nothing to put back, the empty tmpfs stays empty there
        if e.kind == "dir":
            os.makedirs(e.path, mode=0o755, exist_ok=True)
        else:
            os.close(os.open(e.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        sc.attach_tree(tree, e.path)
        sc.set_mount_attrs(e.path, _attrs(e.read_only, e.no_exec), recursive=True)


def _apply(op: MountOp, originals: dict[str, int], listing: dict[str, list[tuple[str, bool]]]) -> bool:
    if not os.path.lexists(op.path):
        return False
    try:
        if op.kind is MountKind.CARVE:
            _carve(op, originals, listing)
        elif op.kind is MountKind.PRIVATE:
            _private(op, originals)
        elif op.kind is MountKind.WATCH:
            _watch(op)
        elif op.kind is MountKind.EXEC:
            tree = originals.get(op.path)
            if tree is None:
                return False
            sc.attach_tree(tree, op.path)
            sc.set_mount_attrs(op.path, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV, recursive=True)
        elif op.kind is MountKind.NO_SUID:  # writable tree: set-id bits and device nodes mean nothing
            sc.mount(op.path, op.path, None, sc.MS_BIND | sc.MS_REC)
            sc.set_mount_attrs(op.path, sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV, recursive=True)
        elif op.kind is MountKind.HIDE_DIR:
            # mode 0: "Permission denied" for the directory and anything named inside it (refused, not absent)
            sc.mount("tmpfs", op.path, "tmpfs", sc.MS_RDONLY | _HARDEN, "mode=0000,size=4k,nr_inodes=1")
        elif op.kind is MountKind.HIDE_FILE:
            sc.mount(_EMPTY, op.path, None, sc.MS_BIND)
            sc.mount(None, op.path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _HARDEN)
        elif op.kind is MountKind.READ_ONLY:
            sc.mount(op.path, op.path, None, sc.MS_BIND | sc.MS_REC)
            flags = sc.locked_mount_flags(op.path) | sc.MS_RDONLY
            sc.mount(None, op.path, None, sc.MS_BIND | sc.MS_REMOUNT | flags)
        else:  # noexec on the whole tree, mounts beneath included (mmap(PROT_EXEC) of a file there fails)
            sc.mount(op.path, op.path, None, sc.MS_BIND | sc.MS_REC)
            sc.set_mount_attrs(op.path, sc.MOUNT_ATTR_NOEXEC | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV,
                               recursive=True)
    except (SandboxError, OSError) as exc:
        if not os.path.lexists(op.path):
            return False
        why = exc.message if isinstance(exc, SandboxError) else f"{exc.strerror}: {exc.filename}"
        raise SandboxError(f"mask {op.kind.value} {op.path} for {op.reason}: {why}") from None
    return True


_PTS = "/dev/pts"


def session_terminals() -> list[str]:
    """The host pseudo-terminals the agent starts with (its stdin, stdout, stderr): the session's own."""
    names: list[str] = []
    for fd in (0, 1, 2):
        try:
            name = os.ttyname(fd)
        except OSError:
            continue
        if os.path.dirname(name) == _PTS and name not in names:
            names.append(name)
    return names


def private_devpts(own: Sequence[str]) -> list[int]:
    """A devpts instance of the sandbox's own over /dev/pts, with only the session's terminals put back.

    The host's devpts holds every terminal of the user (other shells, tmux panes: type-ahead, passwords,
    fake prompts, resizes). The new instance holds only the ptys the agent creates (/dev/ptmx opens the
    instance next to it, so `script`, tmux and node-pty work inside). The session's own terminals keep
    their names (ttyname() matches, `tty` works): the instance's indices up to theirs are allocated, each
    host terminal is bound over the entry of its number, and the masters of those entries are held,
    locked, by the caller (the returned fds; closing one would remove the entry and the bind with it).
    The lower ones are released for the agent's own ptys.
    """
    clones = {name: sc.clone_tree(name) for name in own}
    held: list[int] = []
    try:
        sc.mount("devpts", _PTS, "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
        numbers = {int(os.path.basename(n)) for n in own}
        while len(held) <= max(numbers, default=-1):
            held.append(os.open(f"{_PTS}/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
        for name, tree in clones.items():
            sc.attach_tree(tree, name)
        for index, fd in enumerate(held):  # only the entries the terminals are bound over must stay
            if index not in numbers:
                os.close(fd)
        held = [fd for index, fd in enumerate(held) if index in numbers]
    except BaseException:
        for fd in held:
            os.close(fd)
        raise
    finally:
        for fd in clones.values():
            os.close(fd)
    return held


def mount_proc_and_sys() -> None:
    """/proc of the new pid namespace (only the sandbox's processes), /sys of the new network namespace."""
    sc.mount("proc", "/proc", "proc", _HARDEN)
    sc.mount("sysfs", "/sys", "sysfs", sc.MS_RDONLY | _HARDEN)
