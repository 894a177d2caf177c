"""What the sandbox actually enforces on this host, protection by protection, in three states.

A sandbox that silently enforces less than the policy asks is worse than none, because people rely on it.
So every downgrade (older Landlock ABI, a capped scan, a deny whose path does not exist yet) becomes a
line in an `EnforcementReport`; `guard doctor` prints it, `guard run` shows it, and `require_full()`
turns anything short of "fully" into a refusal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from guard.errors import SandboxError


class State(StrEnum):
    FULLY = "fully"
    PARTLY = "partly"
    NOT = "not"


@dataclass(frozen=True, slots=True)
class Protection:
    """One protection and how much of it this host and plan deliver.

    `required` is false for protections that only improve observation (a missing one never blocks
    `--require-full`).
    """

    name: str
    state: State
    reason: str
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state.value, "reason": self.reason,
                "required": self.required}


@dataclass(frozen=True, slots=True)
class EnforcementReport:
    protections: tuple[Protection, ...]

    @property
    def overall(self) -> State:
        required = [p for p in self.protections if p.required]
        if required and all(p.state is State.NOT for p in required):
            return State.NOT
        if all(p.state is State.FULLY for p in required):
            return State.FULLY
        return State.PARTLY

    @property
    def fully_enforced(self) -> bool:
        return self.overall is State.FULLY

    def summary(self) -> str:
        """One line: the overall state and what falls short."""
        short = self.shortfalls()
        if not short:
            return "fully enforced"
        names = ", ".join(f"{p.name} ({p.state.value})" for p in short)
        return f"{self.overall.value} enforced; short: {names}"

    def warnings(self) -> list[str]:
        """One line per required protection that is not fully enforced, with the reason."""
        return [f"{p.name}: {p.state.value} enforced: {p.reason}" for p in self.shortfalls()]

    def shortfalls(self) -> tuple[Protection, ...]:
        return tuple(p for p in self.protections if p.required and p.state is not State.FULLY)

    def get(self, name: str) -> Protection:
        for p in self.protections:
            if p.name == name:
                return p
        raise KeyError(name)

    def with_protections(self, extra: Iterable[Protection]) -> EnforcementReport:
        """A report with `extra` added, replacing same-named entries (spawn adds what it learnt)."""
        extra = tuple(extra)
        names = {p.name for p in extra}
        return EnforcementReport(tuple(p for p in self.protections if p.name not in names) + extra)

    def require_full(self) -> None:
        """Raise SandboxError naming every required protection that is not fully enforced."""
        missing = self.shortfalls()
        if missing:
            lines = "; ".join(f"{p.name}: {p.state.value} ({p.reason})" for p in missing)
            raise SandboxError(f"--require-full: {len(missing)} protection(s) not fully enforced: {lines}",
                               hint="run `guard doctor` to see what this host lacks, or drop --require-full")

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall.value, "protections": [p.to_dict() for p in self.protections]}

    def render(self) -> str:
        width = max((len(p.name) for p in self.protections), default=0)
        lines = [f"{p.name.ljust(width)}  {p.state.value:<6}  {p.reason}"
                 + ("" if p.required else "  (informational)") for p in self.protections]
        lines.append(f"overall: {self.overall.value}")
        return "\n".join(lines)


# --- what this host can enforce (for `guard doctor`) ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class HostFacts:
    """Measured by `probe_host`; each `*_problem` is None when the probe worked, else why not."""

    kernel: str
    landlock_abi: int
    userns_problem: str | None
    unprivileged_userns_problem: str | None
    running_as_root: bool
    seccomp_filter: bool
    user_notif: bool
    addfd: bool
    sync_wakeup: bool
    seccomp_problem: str | None = None
    fast_path_problem: str | None = None  # None: the compiled core (guard/_core.c) answers plain writes

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def host_report(host: HostFacts) -> EnforcementReport:
    """Pure: the protections the default policy needs, judged against measured host facts."""
    from guard.sandbox import landlock as ll
    from guard.sandbox.plan import landlock_protections, scope_protections

    out = landlock_protections(host.landlock_abi, [], [])
    handled = ll.handled_fs(host.landlock_abi)
    if host.landlock_abi > 0:
        missing = [name for bit, name in ll.RIGHT_NAMES.items() if not handled & bit]
        out.append(Protection("landlock rights", State.FULLY if not missing else State.PARTLY,
                              "handled: " + ", ".join(ll.right_names(handled))
                              + (f"; missing: {', '.join(missing)}" if missing else "")))
    out += scope_protections(host.landlock_abi)
    # informational: the default policy lets any port be bound; policies that list ports need ABI 4
    out.append(Protection("network: listen ports (Landlock TCP bind)",
                          State.FULLY if host.landlock_abi >= 4 else State.NOT,
                          "listen rules with ports become a TCP bind allowlist" if host.landlock_abi >= 4
                          else f"needs Landlock ABI 4, host has {host.landlock_abi}: listen rules with ports "
                               "are confined to the sandbox's network namespace only", required=False))
    out.append(Protection("audit: Landlock denials logged after exec",
                          State.FULLY if host.landlock_abi >= 7 else State.NOT,
                          "LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON" if host.landlock_abi >= 7
                          else f"needs Landlock ABI 7, host has {host.landlock_abi}", required=False))
    out.append(Protection("namespaces: user, mount, pid, ipc, network, uts",
                          State.FULLY if host.userns_problem is None else State.NOT,
                          "unshare works for this user" if host.userns_problem is None
                          else host.userns_problem))
    unpriv = host.unprivileged_userns_problem
    out.append(Protection("namespaces: for unprivileged users", State.FULLY if unpriv is None else State.NOT,
                          "unshare works after dropping to nobody" if unpriv is None else unpriv,
                          required=not host.running_as_root))
    out.append(Protection("syscall filter (seccomp)", State.FULLY if host.seccomp_filter else State.NOT,
                          "seccomp filters can be installed" if host.seccomp_filter
                          else host.seccomp_problem or "seccomp filters unavailable"))
    out.append(Protection("decision tier (seccomp user notification)",
                          State.FULLY if host.user_notif and host.addfd else State.NOT,
                          "user notification with fd injection (ADDFD)" if host.user_notif and host.addfd
                          else ("SECCOMP_RET_USER_NOTIF unavailable" if not host.user_notif
                                else "SECCOMP_IOCTL_NOTIF_ADDFD unavailable (kernel < 5.9)")))
    out.append(Protection("decision tier: same-CPU wake-ups (SYNC_WAKE_UP)",
                          State.FULLY if host.sync_wakeup else State.NOT,
                          "SECCOMP_IOCTL_NOTIF_SET_FLAGS available" if host.sync_wakeup
                          else "unavailable (kernel < 6.6): notified syscalls are slower", required=False))
    fast = host.fast_path_problem
    out.append(Protection("decision tier: compiled fast path", State.FULLY if fast is None else State.NOT,
                          "plain write-opens are decided from the engine's table in C" if fast is None
                          else f"{fast}: every notification is answered in Python (the same decisions, "
                               "2-3x slower on file-heavy work)", required=False))
    return EnforcementReport(tuple(out))


def probe_host() -> HostFacts:
    """Measure this host: Landlock ABI, namespaces (as we are, and as nobody when we are root), seccomp
    user notification and its ioctls, each in a throw-away child so nothing sticks to this process."""
    import os
    import platform

    from guard.sandbox import _syscalls as sc
    from guard.sandbox import namespaces

    root = os.geteuid() == 0
    userns = namespaces.probe()
    unpriv = namespaces.probe(drop_to=65534) if root else userns
    notif_avail = sc.seccomp_action_available(sc.SECCOMP_RET_USER_NOTIF)
    filt, addfd, wake, problem = _probe_seccomp()
    from guard.sandbox.core import load_core

    core, why = load_core()
    return HostFacts(kernel=platform.release(), landlock_abi=sc.landlock_abi(), userns_problem=userns,
                     unprivileged_userns_problem=unpriv, running_as_root=root, seccomp_filter=filt,
                     user_notif=notif_avail and filt, addfd=addfd, sync_wakeup=wake, seccomp_problem=problem,
                     fast_path_problem=None if core is not None else why)


def _probe_seccomp() -> tuple[bool, bool, bool, str | None]:
    import json
    import os

    from guard.sandbox import _syscalls as sc

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        result: dict[str, Any] = {"filter": False, "addfd": False, "wake": False, "problem": None}
        try:
            os.close(rfd)
            sc.set_no_new_privs()
            listener = sc.seccomp_install_probe_filter()
            result["filter"] = True
            result["addfd"] = sc.seccomp_ioctl_supported(listener, sc.SECCOMP_IOCTL_NOTIF_ADDFD)
            result["wake"] = sc.seccomp_ioctl_supported(listener, sc.SECCOMP_IOCTL_NOTIF_SET_FLAGS)
        except Exception as exc:
            result["problem"] = str(exc)
        os.write(wfd, json.dumps(result).encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    try:
        got = json.loads(data)
    except ValueError:
        return False, False, False, "seccomp probe died"
    return bool(got["filter"]), bool(got["addfd"]), bool(got["wake"]), got["problem"]
