"""What to do about each thing this host lacks: the sysctl, the container flag, the kernel option.

The commonest reasons a Linux sandbox cannot start are host settings, not bugs: Ubuntu 23.10+ restricts
unprivileged user namespaces through AppArmor, older Debian kernels gate them with a sysctl, a zero
`user.max_user_namespaces` forbids them, a container's default seccomp profile refuses `unshare` and
seccomp user notification, and a kernel without Landlock in its LSM list has no file allowlist. `remedies()`
is pure: it turns measured host facts and these settings into one line each, naming the fix; `guard doctor`
prints them and `guard run` points at them when it cannot build the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guard.sandbox.report import HostFacts


@dataclass(frozen=True, slots=True)
class HostSettings:
    """Values read from /proc and /sys (None: the file does not exist on this kernel)."""

    apparmor_restrict_userns: str | None
    unprivileged_userns_clone: str | None
    max_user_namespaces: str | None
    lsm: str | None
    in_container: str | None  # how we know (a marker file or cgroup), None when not detected
    seccomp_mode: str | None  # "Seccomp:" of /proc/self/status: 2 means this process is already filtered


def remedies(host: HostFacts, settings: HostSettings) -> list[str]:
    """One line per problem: what is wrong and the command or option that fixes it."""
    out: list[str] = []
    userns_broken = host.userns_problem is not None or (
        not host.running_as_root and host.unprivileged_userns_problem is not None)
    if userns_broken or host.unprivileged_userns_problem is not None:
        if settings.apparmor_restrict_userns == "1":
            out.append("AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): allow them with "
                       "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (persist it in "
                       "/etc/sysctl.d/), or give guard's interpreter an AppArmor profile with `userns,`")
        if settings.unprivileged_userns_clone == "0":
            out.append("unprivileged user namespaces are switched off: "
                       "`sudo sysctl -w kernel.unprivileged_userns_clone=1`")
        if settings.max_user_namespaces == "0":
            out.append("user namespaces are limited to 0: `sudo sysctl -w user.max_user_namespaces=15000`")
        if settings.in_container:
            out.append(f"running inside a container ({settings.in_container}) whose seccomp profile refuses "
                       "unshare: start it with `--security-opt seccomp=unconfined` (Docker/Podman), or run "
                       "guard on the host")
    if not host.seccomp_filter or not host.user_notif:
        if settings.in_container:
            out.append("the container's seccomp profile refuses seccomp user notification: start it with "
                       "`--security-opt seccomp=unconfined` or a profile that allows seccomp(2)")
        else:
            out.append("the kernel lacks seccomp user notification (needs Linux 5.0+, ADDFD 5.9+, "
                       "CONFIG_SECCOMP_FILTER=y): upgrade the kernel")
    if host.landlock_abi <= 0:
        if settings.lsm is not None and "landlock" not in settings.lsm.split(","):
            out.append(f"Landlock is built but not enabled (active LSMs: {settings.lsm}): add `landlock` to "
                       f"the kernel's `lsm=` boot parameter (e.g. lsm=landlock,{settings.lsm}) and reboot")
        else:
            out.append("the kernel has no Landlock (needs Linux 5.13+ with CONFIG_SECURITY_LANDLOCK=y and "
                       "`landlock` in the lsm= boot parameter); without it files are confined by mounts and "
                       "the decision tier only")
    elif host.landlock_abi < 4:
        out.append(f"Landlock ABI {host.landlock_abi} lacks network rules (ABI 4, Linux 6.7+) and scopes "
                   "(ABI 6, Linux 6.12+): a newer kernel enforces more")
    return out


def read_settings(read: Callable[[str], str | None] | None = None) -> HostSettings:
    """Read the settings remedies() looks at; `read(path)` is injectable for tests."""
    reader = read or _read

    container = None
    for marker in ("/.dockerenv", "/run/.containerenv"):
        if reader(marker) is not None:
            container = marker
    cgroup = reader("/proc/1/cgroup") or ""
    for word in ("docker", "kubepods", "containerd", "libpod", "lxc"):
        if container is None and word in cgroup:
            container = f"/proc/1/cgroup mentions {word}"
    status = reader("/proc/self/status") or ""
    modes = [line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("Seccomp:")]
    mode = modes[0] if modes else None
    return HostSettings(
        apparmor_restrict_userns=_strip(reader("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")),
        unprivileged_userns_clone=_strip(reader("/proc/sys/kernel/unprivileged_userns_clone")),
        max_user_namespaces=_strip(reader("/proc/sys/user/max_user_namespaces")),
        lsm=_strip(reader("/sys/kernel/security/lsm")), in_container=container, seccomp_mode=mode)


def _strip(value: str | None) -> str | None:
    return None if value is None else value.strip()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None
