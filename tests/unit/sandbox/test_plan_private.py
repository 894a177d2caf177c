"""The planner's private scratch places, terminals and audit mode: hand-built policies, real temporary trees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from support.policy_doubles import Pol, Rule

from guard.model import Op, Verdict
from guard.sandbox import landlock as ll
from guard.sandbox.plan import AUDIT_MODE_RULE, MountKind, build_plan
from guard.sandbox.scan import SELF_PROTECTION_RULE, scan_launch_facts

RW = frozenset({Op.READ, Op.WRITE})
RWX = frozenset({Op.READ, Op.WRITE, Op.EXEC})
R = frozenset({Op.READ})


@dataclass(frozen=True)
class AuditPol(Pol):
    mode: str = "audit"


def _tree(tmp_path: Path) -> dict[str, Path]:
    scratch = tmp_path / "scratch"
    ws = scratch / "ws"
    (ws / "src").mkdir(parents=True)
    (scratch / "tmpdir").mkdir()
    (scratch / "host-socket-dir").mkdir()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id").write_text("KEY")
    gh = tmp_path / "gh"
    gh.mkdir()
    return {"scratch": scratch, "ws": ws, "home": home, "gh": gh}


def _rules(t: dict[str, Path]) -> tuple[Rule, ...]:
    return (Rule("tmp", Verdict.ALLOW, RWX, (f"{t['scratch']}/**", f"{t['scratch']}/tmpdir/**")),
            Rule("ws", Verdict.ALLOW, RWX, (f"{t['ws']}/**",)),
            Rule("home-read", Verdict.ALLOW, R, (f"{t['home']}/**",)),
            Rule("ssh", Verdict.DENY, RW, (f"{t['home']}/.ssh/**",)))


def _plan(t: dict[str, Path], pol: Pol):
    facts = scan_launch_facts(pol, workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    return build_plan(pol, facts, workspace=t["ws"], protected=[t["gh"]], abi=7, scratch=(str(t["scratch"]),))


def test_a_writable_scratch_place_becomes_a_private_tmpfs_with_other_grants_put_back(tmp_path: Path) -> None:
    t = _tree(tmp_path)
    plan = _plan(t, Pol(_rules(t)))
    private = [m for m in plan.mounts if m.kind is MountKind.PRIVATE]
    assert [m.path for m in private] == [str(t["scratch"])]
    op = private[0]
    assert not op.no_exec  # the tmp rule lets code run there: the session's own files only
    expose = {e.path: e for e in op.expose}
    assert expose[str(t["ws"])].kind == "dir" and not expose[str(t["ws"])].read_only
    assert expose[str(t["scratch"] / "tmpdir")].kind == "mkdir"  # same rule: created empty, not bound
    assert str(t["scratch"] / "host-socket-dir") not in expose  # the host's entries are not there
    assert any(p.name.startswith("files: private scratch") for p in plan.report.protections)


def test_a_read_only_scratch_place_stays_shared(tmp_path: Path) -> None:
    t = _tree(tmp_path)
    rules = (Rule("tmp", Verdict.ALLOW, R, (f"{t['scratch']}/**",)), *_rules(t)[1:])
    plan = _plan(t, Pol(rules))
    assert not [m for m in plan.mounts if m.kind is MountKind.PRIVATE]


def test_audit_mode_keeps_only_the_guards_own_masks_and_grants_everything_readable(tmp_path: Path) -> None:
    t = _tree(tmp_path)
    enforced = _plan(t, Pol(_rules(t)))
    assert any(m.kind is MountKind.WATCH and m.fallback is MountKind.HIDE_DIR and m.path == str(t["home"] / ".ssh")
               for m in enforced.mounts)
    audit = _plan(t, AuditPol(_rules(t)))
    assert audit.audit and not enforced.audit
    kinds = {(m.kind, m.path) for m in audit.mounts}
    assert not any(path == str(t["home"] / ".ssh") for _, path in kinds)
    assert all(m.kind is MountKind.PRIVATE or m.reason.startswith(SELF_PROTECTION_RULE) for m in audit.mounts)
    assert any(m.path == str(t["gh"]) for m in audit.mounts)  # the guard's own state stays hidden
    root = [g for g in audit.landlock.grants if g.path == "/"]
    assert root and root[0].rule_ids == (AUDIT_MODE_RULE,)
    assert root[0].access & ll.READ_RIGHTS and root[0].access & ll.EXEC_RIGHTS
    assert not root[0].access & ll.WRITE_RIGHTS  # write is added at launch, never on /proc, /sys, /dev
