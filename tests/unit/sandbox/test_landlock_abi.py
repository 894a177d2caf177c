"""Best-effort downgrade by Landlock ABI: what each kernel generation can enforce, and what we say."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.policy_doubles import Pol, Rule

from guard.errors import SandboxError
from guard.model import Op, Verdict
from guard.sandbox import _syscalls as sc
from guard.sandbox import landlock as ll
from guard.sandbox.plan import LISTEN_PROTECTION as LISTEN
from guard.sandbox.plan import build_plan
from guard.sandbox.report import State
from guard.sandbox.scan import LaunchFacts, PathFact

POLICY = Pol((Rule("ws", Verdict.ALLOW, frozenset({Op.READ, Op.WRITE, Op.EXEC}), ("/ws/**",)),))
FACTS = LaunchFacts(paths=(PathFact("/ws", "dir", "/ws"), PathFact("/dev/tty", "other", "/dev/tty"),
                           PathFact("/dev/pts", "dir", "/dev/pts")), matches=())


def _plan(abi: int):
    return build_plan(POLICY, FACTS, workspace=Path("/ws"), protected=[], abi=abi)


@pytest.mark.parametrize(("abi", "refer", "truncate", "ioctl"), [
    (1, False, False, False), (2, True, False, False), (3, True, True, False), (4, True, True, False),
    (5, True, True, True), (6, True, True, True), (7, True, True, True), (9, True, True, True)])
def test_handled_rights_follow_the_abi(abi: int, refer: bool, truncate: bool, ioctl: bool) -> None:
    handled = ll.handled_fs(abi)
    assert bool(handled & sc.ACCESS_FS_REFER) is refer
    assert bool(handled & sc.ACCESS_FS_TRUNCATE) is truncate
    assert bool(handled & sc.ACCESS_FS_IOCTL_DEV) is ioctl
    assert handled & sc.ACCESS_FS_MAKE_SYM and handled & sc.ACCESS_FS_EXECUTE
    plan = _plan(abi)
    for grant in plan.landlock.grants:  # a rule never carries a right the ruleset does not handle
        assert grant.access & ~handled == 0


def test_no_landlock_means_not_enforced_and_require_full_refuses() -> None:
    plan = _plan(0)
    assert not plan.landlock.enabled and plan.landlock.grants == ()
    assert plan.report.get("files: allowlist (Landlock)").state is State.NOT
    with pytest.raises(SandboxError, match="allowlist"):
        plan.report.require_full()


@pytest.mark.parametrize("abi", [1, 2, 3, 4, 5])
def test_scopes_before_abi6_are_partly(abi: int) -> None:
    plan = _plan(abi)
    assert plan.landlock.scoped == 0
    assert plan.report.get("scope: signals to processes outside").state is State.PARTLY
    assert plan.report.overall is State.PARTLY


def test_abi6_has_scopes_but_no_logging_flags() -> None:
    plan = _plan(6)
    assert plan.landlock.scoped == sc.SCOPE_SIGNAL | sc.SCOPE_ABSTRACT_UNIX_SOCKET
    assert plan.landlock.restrict_flags == 0
    # logging is informational: its absence does not block --require-full
    assert plan.report.get("audit: Landlock denials logged after exec").state is State.NOT
    plan.report.require_full()


def test_abi7_full() -> None:
    plan = _plan(7)
    assert plan.landlock.restrict_flags == sc.RESTRICT_SELF_LOG_NEW_EXEC_ON
    assert plan.report.overall is State.FULLY
    tty = {g.path: g for g in plan.landlock.grants}
    assert tty["/dev/tty"].access == sc.ACCESS_FS_IOCTL_DEV and not tty["/dev/tty"].is_dir
    assert tty["/dev/pts"].access == sc.ACCESS_FS_IOCTL_DEV


def test_ioctl_dev_only_on_terminals() -> None:
    for g in _plan(7).landlock.grants:
        if g.access & sc.ACCESS_FS_IOCTL_DEV:
            assert g.path in ("/dev/tty", "/dev/pts", "/dev/ptmx")


def test_abi1_refer_is_partly() -> None:
    prot = _plan(1).report.get("files: rename/link across directories (REFER)")
    assert prot.state is State.PARTLY and "ABI 1" in prot.reason


def test_host_abi_is_probed() -> None:
    abi = sc.landlock_abi()
    if abi == 0:
        pytest.skip("Landlock is not available on this kernel")
    assert abi >= 1


# --- guard doctor's judgement, over measured facts -------------------------------------------------------
def _host(**kw: object):
    from guard.sandbox.report import HostFacts

    base: dict[str, object] = {"kernel": "x", "landlock_abi": 7, "userns_problem": None,
                               "unprivileged_userns_problem": None, "running_as_root": False,
                               "seccomp_filter": True, "user_notif": True, "addfd": True, "sync_wakeup": True}
    base.update(kw)
    return HostFacts(**base)  # type: ignore[arg-type]


def test_doctor_full_host_has_no_shortfalls() -> None:
    from guard.sandbox.report import host_report

    report = host_report(_host())
    assert report.shortfalls() == () and report.overall is State.FULLY


@pytest.mark.parametrize(("kw", "missing"), [
    ({"landlock_abi": 5}, {"scope: signals to processes outside", "scope: abstract unix sockets outside"}),
    ({"landlock_abi": 3}, {"scope: signals to processes outside", "scope: abstract unix sockets outside",
                           "landlock rights", "devices: ioctl (IOCTL_DEV)"}),
    ({"landlock_abi": 0}, {"files: allowlist (Landlock)", "scope: signals to processes outside",
                           "scope: abstract unix sockets outside"}),
    ({"userns_problem": "unshare failed: EPERM"}, {"namespaces: user, mount, pid, ipc, network, uts"}),
    ({"addfd": False}, {"decision tier (seccomp user notification)"}),
    ({"seccomp_filter": False, "user_notif": False, "addfd": False},
     {"syscall filter (seccomp)", "decision tier (seccomp user notification)"}),
    ({"unprivileged_userns_problem": "EPERM"}, {"namespaces: for unprivileged users"}),
])
def test_doctor_names_what_is_missing(kw: dict[str, object], missing: set[str]) -> None:
    from guard.sandbox.report import host_report

    report = host_report(_host(**kw))
    assert {p.name for p in report.shortfalls()} == missing


def test_doctor_informational_lines_never_fail() -> None:
    from guard.sandbox.report import host_report

    report = host_report(_host(landlock_abi=6, sync_wakeup=False, running_as_root=True,
                               unprivileged_userns_problem="EPERM"))
    assert report.shortfalls() == ()
    assert report.get("audit: Landlock denials logged after exec").state is State.NOT


# --- listen rules -> Landlock TCP bind allowlist -----------------------------------------------------------
@dataclass(frozen=True)
class Listen:
    ports: tuple[int, ...] | None
    any_port: bool = False
    reason: str = "listen rules"


@dataclass(frozen=True)
class NetPol(Pol):
    listen: Listen = Listen(())
    asked: list[int] = field(default_factory=list)

    def bind_ports(self, limit: int = 4096) -> Listen:
        self.asked.append(limit)
        return self.listen


def _net_plan(listen: Listen, abi: int):
    pol = NetPol(POLICY.rules, listen=listen)
    plan = build_plan(pol, FACTS, workspace=Path("/ws"), protected=[], abi=abi)
    assert pol.asked == [4096]
    return plan


@pytest.mark.parametrize("abi", [4, 5, 6, 7])
def test_listed_ports_become_a_bind_allowlist_with_port_0(abi: int) -> None:
    plan = _net_plan(Listen((8080, 3000)), abi)
    assert plan.landlock.handled_net == sc.ACCESS_NET_BIND_TCP  # never CONNECT: the proxy port must stay open
    assert plan.landlock.bind_ports == (0, 3000, 8080)
    line = plan.report.get(LISTEN)
    assert line.state is State.FULLY and "3000, 8080" in line.reason and "port 0" in line.reason
    assert "tcp bind: 0, 3000, 8080" in ll.describe(plan.landlock)


@pytest.mark.parametrize("abi", [1, 2, 3])
def test_before_abi4_listen_ports_are_partly_and_nothing_is_handled(abi: int) -> None:
    plan = _net_plan(Listen((3000,)), abi)
    assert plan.landlock.handled_net == 0 and plan.landlock.bind_ports == ()
    line = plan.report.get(LISTEN)
    assert line.state is State.PARTLY and f"needs Landlock ABI 4, host has {abi}" in line.reason
    with pytest.raises(SandboxError, match="listen ports"):
        plan.report.require_full()


def test_any_port_policy_handles_nothing_and_is_fully_enforced() -> None:
    plan = _net_plan(Listen(None, any_port=True, reason="rule 'lo' allows any port"), 3)
    assert plan.landlock.handled_net == 0
    assert plan.report.get(LISTEN).state is State.FULLY


def test_too_many_ports_is_partly_enforced() -> None:
    plan = _net_plan(Listen(None, reason="the listen rules grant 64512 ports"), 7)
    assert plan.landlock.handled_net == 0
    line = plan.report.get(LISTEN)
    assert line.state is State.PARTLY and "64512" in line.reason


def test_policy_without_listen_rules_binds_only_ephemeral_ports() -> None:
    plan = _plan(7)  # a policy-like with file rules only
    assert plan.landlock.handled_net == sc.ACCESS_NET_BIND_TCP and plan.landlock.bind_ports == (0,)
    assert plan.report.get(LISTEN).state is State.FULLY


def test_doctor_reports_listen_ports_as_informational() -> None:
    from guard.sandbox.report import host_report

    assert host_report(_host(landlock_abi=4)).get(LISTEN).state is State.FULLY
    old = host_report(_host(landlock_abi=3)).get(LISTEN)
    assert old.state is State.NOT and not old.required
