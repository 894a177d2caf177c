"""guard doctor names the fix for each thing a host lacks (pure: facts and settings in, lines out)."""

from __future__ import annotations

from dataclasses import replace

from guard.sandbox.remedies import HostSettings, read_settings, remedies
from guard.sandbox.report import HostFacts

GOOD = HostFacts(kernel="6.18", landlock_abi=7, userns_problem=None, unprivileged_userns_problem=None,
                 running_as_root=False, seccomp_filter=True, user_notif=True, addfd=True, sync_wakeup=True)
PLAIN = HostSettings(apparmor_restrict_userns=None, unprivileged_userns_clone=None, max_user_namespaces="1000",
                     lsm="lockdown,capability,landlock,yama", in_container=None, seccomp_mode="0")


def test_a_capable_host_needs_nothing() -> None:
    assert remedies(GOOD, PLAIN) == []


def test_ubuntu_apparmor_restriction_names_the_sysctl() -> None:
    host = replace(GOOD, userns_problem="unshare(CLONE_NEWUSER): Permission denied")
    fixes = remedies(host, replace(PLAIN, apparmor_restrict_userns="1"))
    assert any("kernel.apparmor_restrict_unprivileged_userns=0" in f for f in fixes), fixes


def test_debian_clone_switch_and_zero_namespaces() -> None:
    host = replace(GOOD, userns_problem="denied")
    fixes = " ".join(remedies(host, replace(PLAIN, unprivileged_userns_clone="0", max_user_namespaces="0")))
    assert "kernel.unprivileged_userns_clone=1" in fixes and "user.max_user_namespaces" in fixes


def test_container_default_seccomp_profile() -> None:
    host = replace(GOOD, userns_problem="denied", seccomp_filter=True, user_notif=False)
    fixes = " ".join(remedies(host, replace(PLAIN, in_container="/.dockerenv", seccomp_mode="2")))
    assert "--security-opt seccomp=unconfined" in fixes and "/.dockerenv" in fixes


def test_landlock_built_but_not_in_the_lsm_list() -> None:
    fixes = remedies(replace(GOOD, landlock_abi=0), replace(PLAIN, lsm="capability,apparmor"))
    assert fixes == [f for f in fixes if "lsm=landlock,capability,apparmor" in f] and fixes


def test_old_landlock_abi() -> None:
    assert any("ABI 3" in f for f in remedies(replace(GOOD, landlock_abi=3), PLAIN))


def test_settings_are_read_from_proc_and_markers() -> None:
    files = {"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1\n", "/run/.containerenv": "",
             "/proc/self/status": "Name:\tx\nSeccomp:\t2\n", "/proc/1/cgroup": "0::/"}
    got = read_settings(files.get)
    assert (got.apparmor_restrict_userns, got.in_container, got.seccomp_mode) == ("1", "/run/.containerenv", "2")
    assert got.lsm is None and got.max_user_namespaces is None


def test_this_hosts_settings_read_without_error() -> None:
    settings = read_settings()
    assert settings.seccomp_mode is not None  # every Linux /proc/self/status has the line
