"""Landlock: the file allowlist and the scopes, as pure functions of the kernel's ABI plus one imperative
`restrict` that runs in the child.

The rights a ruleset *handles* are everything this ABI knows, so what is not granted is refused; rights a
newer kernel would add are simply absent on an older one (best-effort downgrade, reported, never silent).
ABI history: 1 the basic file rights (and cross-directory rename/link always refused); 2 REFER;
3 TRUNCATE; 4 TCP ports; 5 IOCTL_DEV; 6 scopes (abstract unix sockets, signals); 7 logging flags.

Of the TCP rights only BIND is handled: the network namespace already confines connects, and handling
CONNECT would cut the agent off from the guard's proxy port.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from guard.errors import SandboxError
from guard.sandbox import _syscalls as sc

READ_RIGHTS = sc.ACCESS_FS_READ_FILE | sc.ACCESS_FS_READ_DIR
WRITE_RIGHTS = (sc.ACCESS_FS_WRITE_FILE | sc.ACCESS_FS_REMOVE_DIR | sc.ACCESS_FS_REMOVE_FILE
                | sc.ACCESS_FS_MAKE_CHAR | sc.ACCESS_FS_MAKE_DIR | sc.ACCESS_FS_MAKE_REG
                | sc.ACCESS_FS_MAKE_SOCK | sc.ACCESS_FS_MAKE_FIFO | sc.ACCESS_FS_MAKE_BLOCK
                | sc.ACCESS_FS_MAKE_SYM | sc.ACCESS_FS_REFER | sc.ACCESS_FS_TRUNCATE)
EXEC_RIGHTS = sc.ACCESS_FS_EXECUTE
IOCTL_RIGHTS = sc.ACCESS_FS_IOCTL_DEV
# rights that make sense on a non-directory; the kernel refuses a file rule carrying directory rights
FILE_RIGHTS = (sc.ACCESS_FS_EXECUTE | sc.ACCESS_FS_WRITE_FILE | sc.ACCESS_FS_READ_FILE
               | sc.ACCESS_FS_TRUNCATE | sc.ACCESS_FS_IOCTL_DEV)

_ABI1_FS = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_BY_ABI = {1: _ABI1_FS, 2: _ABI1_FS | sc.ACCESS_FS_REFER,
              3: _ABI1_FS | sc.ACCESS_FS_REFER | sc.ACCESS_FS_TRUNCATE,
              4: _ABI1_FS | sc.ACCESS_FS_REFER | sc.ACCESS_FS_TRUNCATE}
_FS_LATEST = _ABI1_FS | sc.ACCESS_FS_REFER | sc.ACCESS_FS_TRUNCATE | sc.ACCESS_FS_IOCTL_DEV
LATEST_ABI = 7

RIGHT_NAMES: dict[int, str] = {
    sc.ACCESS_FS_EXECUTE: "execute", sc.ACCESS_FS_WRITE_FILE: "write_file",
    sc.ACCESS_FS_READ_FILE: "read_file", sc.ACCESS_FS_READ_DIR: "read_dir",
    sc.ACCESS_FS_REMOVE_DIR: "remove_dir", sc.ACCESS_FS_REMOVE_FILE: "remove_file",
    sc.ACCESS_FS_MAKE_CHAR: "make_char", sc.ACCESS_FS_MAKE_DIR: "make_dir", sc.ACCESS_FS_MAKE_REG: "make_reg",
    sc.ACCESS_FS_MAKE_SOCK: "make_sock", sc.ACCESS_FS_MAKE_FIFO: "make_fifo",
    sc.ACCESS_FS_MAKE_BLOCK: "make_block", sc.ACCESS_FS_MAKE_SYM: "make_sym", sc.ACCESS_FS_REFER: "refer",
    sc.ACCESS_FS_TRUNCATE: "truncate", sc.ACCESS_FS_IOCTL_DEV: "ioctl_dev",
}
RIGHT_MIN_ABI: dict[int, int] = {bit: 1 for bit in RIGHT_NAMES}
RIGHT_MIN_ABI.update({sc.ACCESS_FS_REFER: 2, sc.ACCESS_FS_TRUNCATE: 3, sc.ACCESS_FS_IOCTL_DEV: 5})
SCOPE_NAMES = {sc.SCOPE_ABSTRACT_UNIX_SOCKET: "abstract_unix_socket", sc.SCOPE_SIGNAL: "signal"}


def abi() -> int:
    """The running kernel's Landlock ABI (0 = none); the only impure function here."""
    return sc.landlock_abi()


def handled_fs(abi: int) -> int:
    """Every file right this ABI can enforce; 0 when Landlock is absent."""
    if abi <= 0:
        return 0
    return _FS_BY_ABI.get(abi, _FS_LATEST)


def handled_net(abi: int) -> int:
    """The network rights the sandbox handles on this ABI: TCP bind only (see the module docstring)."""
    return sc.ACCESS_NET_BIND_TCP if abi >= 4 else 0


def scopes(abi: int) -> int:
    return sc.SCOPE_ABSTRACT_UNIX_SOCKET | sc.SCOPE_SIGNAL if abi >= 6 else 0


def restrict_flags(abi: int) -> int:
    """Log denials in programs the agent execs too (by default Landlock stops logging after execve)."""
    return sc.RESTRICT_SELF_LOG_NEW_EXEC_ON if abi >= 7 else 0


def right_names(access: int) -> list[str]:
    return [name for bit, name in RIGHT_NAMES.items() if access & bit]


@dataclass(frozen=True, slots=True)
class PathGrant:
    """`access` beneath `path` (a directory) or on `path` alone (anything else)."""

    path: str
    access: int
    is_dir: bool
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LandlockPlan:
    abi: int
    handled_fs: int
    scoped: int
    restrict_flags: int
    grants: tuple[PathGrant, ...]
    handled_net: int = 0
    bind_ports: tuple[int, ...] = ()  # TCP ports the agent may bind; only meaningful with handled_net

    @property
    def enabled(self) -> bool:
        return self.abi > 0 and (self.handled_fs != 0 or self.handled_net != 0)


def restrict(plan: LandlockPlan) -> None:
    """Build the ruleset and restrict the calling thread. Runs in the child after no_new_privs is set.

    A granted path that vanished since the scan is an error, not a skipped rule: the plan the user saw is
    the plan that is enforced, or nothing runs.
    """
    if not plan.enabled:
        return
    ruleset = sc.landlock_create_ruleset(plan.handled_fs, plan.handled_net, plan.scoped)
    try:
        if plan.handled_net & sc.ACCESS_NET_BIND_TCP:
            for port in plan.bind_ports:
                sc.landlock_add_net_rule(ruleset, sc.ACCESS_NET_BIND_TCP, port)
        for grant in plan.grants:
            access = grant.access & plan.handled_fs
            if not grant.is_dir:
                access &= FILE_RIGHTS
            if not access:
                continue
            try:
                fd = os.open(grant.path, os.O_PATH | os.O_CLOEXEC)
            except OSError as exc:
                raise SandboxError(
                    f"landlock: cannot open granted path {grant.path}: {exc.strerror}",
                    hint="the path changed between the scan and the launch; run again") from None
            try:
                sc.landlock_add_path_rule(ruleset, fd, access, grant.path)
            finally:
                os.close(fd)
        sc.landlock_restrict_self(ruleset, plan.restrict_flags)
    finally:
        os.close(ruleset)


def describe(plan: LandlockPlan) -> Sequence[str]:
    """One line per grant, for `guard run --explain`-style output and the docs."""
    lines = [f"{g.path}{'/' if g.is_dir else ''}: {','.join(right_names(g.access))}" for g in plan.grants]
    if plan.handled_net:
        lines.append(f"tcp bind: {', '.join(map(str, plan.bind_ports)) or '-'}")
    return lines
