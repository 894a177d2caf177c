"""User, mount, pid, ipc, network and uts namespaces: entering them, and probing whether we can.

Even as root the sandbox gets a fresh user namespace: the agent's uid maps onto itself, so it keeps the
engineer's file access (bounded by Landlock) but none of the real root's power over the host, and the
capabilities it holds inside are dropped before exec. setgroups is denied so the agent cannot shed a
supplementary group that a negative ACL relies on.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from guard.errors import SandboxError
from guard.sandbox import _syscalls as sc

SANDBOX_FLAGS = (sc.CLONE_NEWUSER | sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC | sc.CLONE_NEWNET
                 | sc.CLONE_NEWUTS)
NAMES = {sc.CLONE_NEWUSER: "user", sc.CLONE_NEWNS: "mount", sc.CLONE_NEWPID: "pid", sc.CLONE_NEWIPC: "ipc",
         sc.CLONE_NEWNET: "network", sc.CLONE_NEWUTS: "uts"}


def enter(uid: int, gid: int, *, map_ids: Callable[[], None] | None = None) -> None:
    """unshare every sandbox namespace at once and map uid/gid onto themselves.

    PR_SET_DUMPABLE first: after a setresuid (the unprivileged path) the kernel clears it, which makes
    /proc/self/uid_map owned by root and unwritable by us. `map_ids`, when given, has a process outside
    (the supervisor, root) write every id onto itself instead (`write_identity_maps`): a process may map
    only its own id from inside.
    """
    sc.set_dumpable(True)
    sc.unshare(SANDBOX_FLAGS)
    if map_ids is not None:
        map_ids()
    else:
        sc.write_id_maps(uid, gid)


_ALL_IDS = "0 0 4294967295\n"


def write_identity_maps(pid: int) -> None:
    """From outside, as root: map every uid and gid of `pid`'s fresh user namespace onto itself.

    Files of other users then show their real owners (not the overflow id), and a chown to another id is
    refused for want of CAP_CHOWN (EPERM, which tools expect), not for an unmapped id (EINVAL). It grants
    nothing: every capability is dropped before exec. setgroups stays denied as on the other path."""
    for name, text in (("setgroups", "deny"), ("uid_map", _ALL_IDS), ("gid_map", _ALL_IDS)):
        try:
            fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise SandboxError(f"write /proc/{pid}/{name} ({text.strip()}): {exc.strerror}") from None


def probe(drop_to: int | None = None) -> str | None:
    """Try `enter` in a throw-away child (optionally after dropping to uid/gid `drop_to`).

    Returns None when it works, else the reason. Forks, so it is exact for this host and this process.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(rfd)
            if drop_to is not None:
                os.setgroups([])
                os.setresgid(drop_to, drop_to, drop_to)
                os.setresuid(drop_to, drop_to, drop_to)
            enter(os.geteuid(), os.getegid())
        except (SandboxError, OSError) as exc:
            os.write(wfd, str(exc).encode()[:4000])
            code = 1
        except BaseException:
            code = 2
        os._exit(code)
    os.close(wfd)
    try:
        chunks = []
        while chunk := os.read(rfd, 4096):
            chunks.append(chunk)
    finally:
        os.close(rfd)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return b"".join(chunks).decode(errors="replace") or f"probe exited with status {status}"
