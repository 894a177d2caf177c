"""The pure planner and the one launch-time walk: hand-built policies, real temporary trees, no kernel."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.policy_doubles import Pol, Rule

from guard.errors import SandboxError
from guard.model import Op, Verdict
from guard.sandbox import landlock as ll
from guard.sandbox.plan import MountKind, build_plan
from guard.sandbox.report import State
from guard.sandbox.scan import LaunchFacts, ScanCapped, literal_prefix, matcher, scan_launch_facts

RW = frozenset({Op.READ, Op.WRITE})
R = frozenset({Op.READ})
W = frozenset({Op.WRITE})


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    ws = tmp_path / "ws"
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    (ws / "src").mkdir()
    (ws / "src" / ".env").write_text("TOKEN=1")
    (ws / "src" / "main.py").write_text("print(1)")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("KEY")
    gh = tmp_path / "guard-home"
    gh.mkdir()
    return {"ws": ws, "home": home, "gh": gh, "root": tmp_path}


def _policy(t: dict[str, Path], *extra: Rule) -> Pol:
    return Pol((Rule("ws", Verdict.ALLOW, RW, (f"{t['ws']}/**",)),
                Rule("home-read", Verdict.ALLOW, R, (f"{t['home']}/**",)),
                Rule("ssh", Verdict.DENY, RW, (f"{t['home']}/.ssh/**",)),
                Rule("env", Verdict.DENY, RW, ("/**/.env",)),
                Rule("hooks", Verdict.ASK, W, (f"{t['ws']}/.git/hooks/**",)),
                *extra))


def _plan(t: dict[str, Path], pol: Pol, abi: int = 7, workspace: Path | None = None, **scan_kw: object):
    ws = workspace or t["ws"]
    facts = scan_launch_facts(pol, workspace=ws, protected=[t["gh"]], home=t["home"], **scan_kw)  # type: ignore[arg-type]
    return facts, build_plan(pol, facts, workspace=ws, protected=[t["gh"]], abi=abi)


def test_glob_semantics() -> None:
    assert literal_prefix("/a/b/**/c") == "/a/b"
    assert literal_prefix("/**/.env") == "/"
    rx = matcher("/ws/**/.env")
    assert rx.matches("/ws/.env") and rx.matches("/ws/a/b/.env")
    assert not rx.matches("/ws/a/.envrc")
    sub = matcher("/h/.ssh/**")
    assert sub.matches("/h/.ssh") and sub.matches("/h/.ssh/id") and not sub.matches("/h/.sshx")
    one = matcher("/ws/*.py")
    assert one.matches("/ws/a.py") and not one.matches("/ws/d/a.py")
    cls = matcher("/ws/[!a]x")
    assert cls.matches("/ws/bx") and not cls.matches("/ws/ax")
    with pytest.raises(SandboxError, match="bad path pattern"):
        matcher("/ws/[")


def test_denies_inside_granted_trees_become_mounts(tree: dict[str, Path]) -> None:
    _, plan = _plan(tree, _policy(tree))
    by_path = {m.path: m.kind for m in plan.mounts}
    ops = {m.path: m for m in plan.mounts}
    # what the policy denies reading is a FUSE mask the guard answers (reads recorded), the plain mask its
    # fallback where FUSE cannot be mounted
    assert by_path[str(tree["home"] / ".ssh")] is MountKind.WATCH
    assert ops[str(tree["home"] / ".ssh")].fallback is MountKind.HIDE_DIR and ops[str(tree["home"] / ".ssh")].is_dir
    assert by_path[str(tree["ws"] / "src" / ".env")] is MountKind.WATCH
    assert ops[str(tree["ws"] / "src" / ".env")].fallback is MountKind.HIDE_FILE
    assert by_path[str(tree["ws"] / ".git" / "hooks")] is MountKind.READ_ONLY
    assert by_path[str(tree["gh"])] is MountKind.HIDE_DIR
    assert str(tree["ws"] / "src" / "main.py") not in by_path
    # shallowest first, so a deeper mount lands on top of a shallower one
    depths = [m.path.count("/") for m in plan.mounts]
    assert depths == sorted(depths)


def test_guard_home_is_hidden_even_when_the_policy_grants_it(tree: dict[str, Path]) -> None:
    pol = _policy(tree, Rule("gh", Verdict.ALLOW, RW, (f"{tree['gh']}/**",)))
    _, plan = _plan(tree, pol)
    assert any(m.path == str(tree["gh"]) and m.kind is MountKind.HIDE_DIR for m in plan.mounts)


def test_deny_outside_every_grant_needs_no_mount(tree: dict[str, Path]) -> None:
    pol = Pol((Rule("ws", Verdict.ALLOW, RW, (f"{tree['ws']}/**",)),
               Rule("ssh", Verdict.DENY, RW, (f"{tree['home']}/.ssh/**",))))
    _, plan = _plan(tree, pol)
    # Landlock refuses it: only a recording FUSE mask, with no fallback where FUSE cannot be mounted
    ssh = [m for m in plan.mounts if m.path == str(tree["home"] / ".ssh")]
    assert [(m.kind, m.fallback) for m in ssh] == [(MountKind.WATCH, None)]
    # ... but without Landlock the mount is the only protection left
    _, plan0 = _plan(tree, pol, abi=0)
    assert str(tree["home"] / ".ssh") in {m.path for m in plan0.mounts}


def test_hard_link_planted_before_launch_is_masked(tree: dict[str, Path]) -> None:
    link = tree["ws"] / "innocent.txt"
    os.link(tree["home"] / ".ssh" / "id_ed25519", link)
    facts, plan = _plan(tree, _policy(tree))
    hit = [m for m in facts.matches if m.path == str(link)]
    assert hit and hit[0].via.startswith("hard link to")
    assert any(m.path == str(link) and m.kind is MountKind.HIDE_FILE for m in plan.mounts)
    assert "1 found" in plan.report.get("files: hard links planted before launch").reason


def test_hard_link_to_a_glob_matched_file_found_later_in_the_walk(tree: dict[str, Path]) -> None:
    (tree["ws"] / "aaa").mkdir()
    os.link(tree["ws"] / "src" / ".env", tree["ws"] / "aaa" / "copy")
    facts, _ = _plan(tree, _policy(tree))
    assert str(tree["ws"] / "aaa" / "copy") in {m.path for m in facts.matches}


def test_symlinked_literal_deny_is_resolved(tree: dict[str, Path]) -> None:
    real = tree["root"] / "aws-real"
    real.mkdir()
    (tree["home"] / ".aws").symlink_to(real)
    pol = _policy(tree, Rule("aws", Verdict.DENY, RW, (f"{tree['home']}/.aws/**",)),
                  Rule("real", Verdict.ALLOW, R, (f"{real}/**",)))
    _, plan = _plan(tree, pol)
    assert str(real) in {m.path for m in plan.mounts}


def test_landlock_grants_from_literal_prefixes(tree: dict[str, Path]) -> None:
    f = tree["root"] / "tool"
    f.write_text("x")
    pol = _policy(tree, Rule("tool", Verdict.ALLOW, frozenset({Op.READ, Op.EXEC, Op.WRITE}), (str(f),)),
                  Rule("py", Verdict.ALLOW, R, (f"{tree['root']}/lib/*.py",)))
    _, plan = _plan(tree, pol)
    grants = {g.path: g for g in plan.landlock.grants}
    ws = grants[str(tree["ws"])]
    assert ws.is_dir and ws.access & ll.WRITE_RIGHTS == ll.WRITE_RIGHTS
    assert not ws.access & ll.EXEC_RIGHTS
    tool = grants[str(f)]
    assert not tool.is_dir and tool.access & ~ll.FILE_RIGHTS == 0 and tool.access & ll.EXEC_RIGHTS
    assert str(tree["root"] / "lib") not in grants  # missing at launch: not granted, and reported
    assert "missing at launch, so not granted" in plan.report.get("files: allowlist (Landlock)").reason


def test_missing_deny_under_a_writable_tree_is_left_to_the_decision_tier(tree: dict[str, Path]) -> None:
    """Nothing exists to mask; creating it later is refused by the supervisor. That is the design, not a
    host shortfall, so the protection stays fully enforced (and --require-full does not refuse it)."""
    pol = _policy(tree, Rule("secret", Verdict.DENY, RW, (f"{tree['ws']}/secrets/**",)))
    facts, plan = _plan(tree, pol)
    assert [m.ancestor for m in facts.missing] == [str(tree["ws"])]
    prot = plan.report.get("files: denies inside granted trees")
    assert prot.state is State.FULLY and "secrets" in prot.reason and "decision tier" in prot.reason
    assert not plan.report.warnings()


def test_a_scan_past_its_bound_fails_closed(tree: dict[str, Path]) -> None:
    """A secret must never become readable because the workspace is large: past the bound, no plan."""
    for i in range(20):
        (tree["ws"] / f"f{i}").write_text("")
    with pytest.raises(ScanCapped, match=r"stopped after 5 directory entries \(settings.scan_max_entries\)") as exc:
        _plan(tree, _policy(tree), max_entries=5)
    assert "nothing was started" in exc.value.message and "scan_max_entries: 25" in (exc.value.hint or "")
    facts, _ = _plan(tree, _policy(tree), max_entries=40)
    assert facts.entries <= 40


def test_audit_only_deny_does_not_mask(tree: dict[str, Path]) -> None:
    pol = Pol((Rule("ws", Verdict.ALLOW, RW, (f"{tree['ws']}/**",)),
               Rule("env", Verdict.DENY, RW, ("/**/.env",), audit_only=True)))
    _, plan = _plan(tree, pol)
    assert str(tree["ws"] / "src" / ".env") not in {m.path for m in plan.mounts}


def test_allow_excepts_are_carved_out(tree: dict[str, Path]) -> None:
    pol = Pol((Rule("ws", Verdict.ALLOW, RW, (f"{tree['ws']}/**",), excepts=(f"{tree['ws']}/src/**",)),))
    _, plan = _plan(tree, pol)
    assert any(m.path == str(tree["ws"] / "src") and m.kind is MountKind.HIDE_DIR for m in plan.mounts)


def test_nothing_under_a_hidden_directory_is_mounted_again(tree: dict[str, Path]) -> None:
    pol = _policy(tree, Rule("key", Verdict.DENY, RW, (str(tree["home"] / ".ssh" / "id_ed25519"),)))
    _, plan = _plan(tree, pol)
    assert str(tree["home"] / ".ssh" / "id_ed25519") not in {m.path for m in plan.mounts}


def test_plan_is_pure_given_facts(tree: dict[str, Path]) -> None:
    pol = _policy(tree)
    facts = scan_launch_facts(pol, workspace=tree["ws"], protected=[tree["gh"]], home=tree["home"])
    a = build_plan(pol, facts, workspace=tree["ws"], protected=[tree["gh"]], abi=7)
    b = build_plan(pol, facts, workspace=tree["ws"], protected=[tree["gh"]], abi=7)
    assert a == b
    empty = LaunchFacts(paths=(), matches=())
    bare = build_plan(pol, empty, workspace=tree["ws"], protected=[], abi=7)
    assert bare.mounts == () and bare.landlock.grants == ()


def test_matched_directory_is_mounted_once_not_file_by_file(tree: dict[str, Path]) -> None:
    for name in ("a.sample", "b.sample", "c.sample"):
        (tree["ws"] / ".git" / "hooks" / name).write_text("")
    (tree["ws"] / ".git" / "zzz").mkdir()  # a sibling walked after the hooks directory
    _, plan = _plan(tree, _policy(tree))
    hooks = str(tree["ws"] / ".git" / "hooks")
    assert [m.path for m in plan.mounts if m.path.startswith(hooks)] == [hooks]


def test_per_process_proc_grants_widen_to_read_on_proc(tree: dict[str, Path]) -> None:
    pol = Pol((Rule("self", Verdict.ALLOW, RW, ("/proc/self/**", "/proc/self/fd/**")),
               Rule("std", Verdict.ALLOW, RW, ("/dev/stdout",)),
               Rule("cpu", Verdict.ALLOW, R, ("/proc/cpuinfo",)),
               Rule("deny", Verdict.DENY, R, ("/proc/1/environ",))))
    _, plan = _plan(tree, pol)
    grants = {g.path: g for g in plan.landlock.grants}
    assert grants["/proc"].access == ll.READ_RIGHTS  # never write under /proc: /proc/sys is host-wide
    assert not any(p.startswith("/proc/") and p[6:7].isdigit() for p in grants)
    assert "/dev/stdout" not in grants and not any(g.startswith("/tmp/") for g in grants)
    assert "/proc/cpuinfo" in grants
    assert not any(m.path.startswith("/proc") for m in plan.mounts)
    reason = plan.report.get("files: allowlist (Landlock)").reason
    assert "/proc/self" in reason and "/dev/stdout" in reason


def _carve_policy(tree: dict[str, Path], *extra: Rule) -> Pol:
    return Pol((Rule("root", Verdict.ALLOW, RW, (f"{tree['root']}/**",), excepts=(f"{tree['home']}/**",)),
                Rule("cfg", Verdict.ALLOW, R, (str(tree["home"] / ".gitconfig"),)),
                Rule("ssh", Verdict.DENY, RW, (f"{tree['home']}/.ssh/**",)), *extra))


def test_except_holding_other_grants_is_carved_and_the_grants_put_back(tree: dict[str, Path]) -> None:
    home = tree["home"]
    (home / ".gitconfig").write_text("[user]\n")
    (home / "Documents").mkdir()
    (home / ".cache" / "pip").mkdir(parents=True)
    (home / ".cache" / "pip" / ".env").write_text("X=1")
    pol = _carve_policy(tree, Rule("cache", Verdict.ALLOW, frozenset({Op.READ, Op.WRITE, Op.EXEC}),
                                   (f"{home}/.cache/**",)),
                        Rule("env", Verdict.DENY, RW, ("/**/.env",)))
    _, plan = _plan(tree, pol, workspace=home / ".cache")
    carve = next(m for m in plan.mounts if m.path == str(home))
    assert carve.kind is MountKind.CARVE
    back = {e.path: e for e in carve.expose}
    assert set(back) == {str(home / ".gitconfig"), str(home / ".cache")}
    assert back[str(home / ".gitconfig")].kind == "file" and back[str(home / ".gitconfig")].read_only
    assert not back[str(home / ".cache")].read_only and not back[str(home / ".cache")].no_exec
    paths = [m.path for m in plan.mounts]
    # the ssh mask's recording FUSE mask lands on the carve's placeholder, after the carve, like a mask
    # inside a put-back grant
    ssh = next(m for m in plan.mounts if m.path == str(home / ".ssh"))
    assert ssh.kind is MountKind.WATCH and ssh.is_dir
    assert paths.index(str(home / ".ssh")) > paths.index(str(home))
    assert paths.index(str(home / ".cache" / "pip" / ".env")) > paths.index(str(home))
    prot = plan.report.get("files: denies inside granted trees")
    assert prot.state is State.FULLY and "carved" in prot.reason


def test_carve_puts_back_symlinks_on_the_way_to_a_grant(tree: dict[str, Path]) -> None:
    home = tree["home"]
    (home / "dotfiles").mkdir()
    (home / "dotfiles" / "gitconfig").write_text("[user]\n")
    (home / ".gitconfig").symlink_to("dotfiles/gitconfig")
    _, plan = _plan(tree, _carve_policy(tree))
    carve = next(m for m in plan.mounts if m.kind is MountKind.CARVE)
    back = {e.path: e for e in carve.expose}
    assert back[str(home / ".gitconfig")] .kind == "link"
    assert back[str(home / ".gitconfig")].target == "dotfiles/gitconfig"
    assert back[str(home / "dotfiles" / "gitconfig")].kind == "file"


def test_carve_with_a_missing_grant_puts_nothing_back_for_it(tree: dict[str, Path]) -> None:
    (tree["home"] / ".gitconfig").write_text("[user]\n")
    pol = _carve_policy(tree, Rule("npm", Verdict.ALLOW, RW, (f"{tree['home']}/.npm/**",)))
    _, plan = _plan(tree, pol)
    carve = next(m for m in plan.mounts if m.kind is MountKind.CARVE)
    assert [e.path for e in carve.expose] == [str(tree["home"] / ".gitconfig")]
    assert str(tree["home"] / ".npm") not in {g.path for g in plan.landlock.grants}


def test_except_wholly_granted_by_another_rule_is_not_a_hole(tree: dict[str, Path]) -> None:
    pol = Pol((Rule("root", Verdict.ALLOW, RW, (f"{tree['root']}/**",), excepts=(f"{tree['home']}/**",)),
               Rule("home", Verdict.ALLOW, R, (f"{tree['home']}/**",))))
    _, plan = _plan(tree, pol)
    assert str(tree["home"]) not in {m.path for m in plan.mounts}


def test_writable_non_exec_trees_are_noexec_and_exec_grants_inside_bound_back(tree: dict[str, Path]) -> None:
    rwx = frozenset({Op.READ, Op.WRITE, Op.EXEC})
    (tree["root"] / "scratch").mkdir()
    (tree["root"] / "tools").mkdir()
    pol = Pol((Rule("tmp", Verdict.ALLOW, RW, (f"{tree['root']}/**",)),
               Rule("ws", Verdict.ALLOW, rwx, (f"{tree['ws']}/**",)),
               Rule("tools", Verdict.ALLOW, frozenset({Op.READ, Op.EXEC}), (f"{tree['root']}/tools/**",)),
               Rule("hooks", Verdict.DENY, W, (f"{tree['ws']}/.git/hooks/**",)),
               Rule("sys", Verdict.ALLOW, frozenset({Op.READ, Op.EXEC}), ("/usr/**",))))
    _, plan = _plan(tree, pol)
    kinds = {(m.path, m.kind) for m in plan.mounts}
    assert (str(tree["root"]), MountKind.NO_EXEC) in kinds
    assert (str(tree["ws"]), MountKind.EXEC) in kinds and (str(tree["root"] / "tools"), MountKind.EXEC) in kinds
    assert not any(m.path == "/usr" for m in plan.mounts)
    paths = [m.path for m in plan.mounts]
    assert paths.index(str(tree["root"])) < paths.index(str(tree["ws"])) < paths.index(
        str(tree["ws"] / ".git" / "hooks"))
    assert plan.report.get("exec: code mapped from writable trees (ld.so, dlopen)").state is State.FULLY


def test_a_write_protection_above_a_tree_bound_back_is_repeated_on_it(tree: dict[str, Path]) -> None:
    rwx = frozenset({Op.READ, Op.WRITE, Op.EXEC})
    pol = Pol((Rule("tmp", Verdict.ALLOW, RW, (f"{tree['root']}/**",)),
               Rule("ws", Verdict.ALLOW, rwx, (f"{tree['ws']}/**",)),
               Rule("frozen", Verdict.DENY, W, (f"{tree['root']}/**",))))
    _, plan = _plan(tree, pol)
    kinds = [(m.path, m.kind) for m in plan.mounts]
    assert kinds.index((str(tree["ws"]), MountKind.EXEC)) < kinds.index((str(tree["ws"]), MountKind.READ_ONLY))


def test_grant_inside_a_denied_directory_is_dropped(tree: dict[str, Path]) -> None:
    (tree["home"] / ".ssh" / "config").write_text("Host *\n")
    pol = _policy(tree, Rule("sshcfg", Verdict.ALLOW, R, (str(tree["home"] / ".ssh" / "config"),)))
    _, plan = _plan(tree, pol)
    assert str(tree["home"] / ".ssh" / "config") not in {g.path for g in plan.landlock.grants}
    assert "inside hidden (denied) directories" in plan.report.get("files: allowlist (Landlock)").reason


def test_a_walk_root_inside_a_glob_match_is_matched_whole(tree: dict[str, Path]) -> None:
    hooks = tree["root"] / "proj" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "pre-push").write_text("")
    pol = Pol((Rule("hooks-rw", Verdict.ALLOW, RW, (f"{hooks}/**",)),
               Rule("hooks-ask", Verdict.ASK, W, ("/**/.git/hooks/**",))))
    facts = scan_launch_facts(pol, workspace=tree["ws"], protected=[], home=tree["home"])
    plan = build_plan(pol, facts, workspace=tree["ws"], protected=[], abi=7)
    masks = [(m.path, m.kind) for m in plan.mounts if m.kind is not MountKind.NO_EXEC]
    assert masks == [(str(hooks), MountKind.READ_ONLY)]


def test_glob_without_a_literal_anchor_is_tested_on_every_path(tree: dict[str, Path]) -> None:
    (tree["ws"] / "src" / "server.pem").write_text("KEY")
    pol = _policy(tree, Rule("pem", Verdict.DENY, RW, ("/**/*.pem",)))
    _, plan = _plan(tree, pol)
    assert str(tree["ws"] / "src" / "server.pem") in {m.path for m in plan.mounts}


# --- the launch scan in a realistic layout (issue 13, class 1) -------------------------------------------
def _home_layout(tmp_path: Path) -> dict[str, Path]:
    """The workspace under HOME, HOME under a scratch grant whose except carves HOME out (as base's `tmp`)."""
    scratch = tmp_path / "scratch"
    home = scratch / "home"
    ws = home / "src" / "proj"
    (ws / "src").mkdir(parents=True)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("KEY")
    (home / ".cache" / "pip").mkdir(parents=True)
    gh = tmp_path / "gh"
    gh.mkdir()
    return {"scratch": scratch, "home": home, "ws": ws, "gh": gh}


def _home_policy(t: dict[str, Path]) -> Pol:
    return Pol((Rule("tmp", Verdict.ALLOW, RW, (f"{t['scratch']}/**",), excepts=(f"{t['home']}/**",)),
                Rule("ws", Verdict.ALLOW, RW, (f"{t['ws']}/**",)),
                Rule("caches", Verdict.ALLOW, RW, (f"{t['home']}/.cache/**",)),
                Rule("cfg", Verdict.ALLOW, R, (f"{t['home']}/.editorconfig",)),
                Rule("ssh", Verdict.DENY, RW, (f"{t['home']}/.ssh/**",)),
                Rule("env", Verdict.DENY, RW, ("/**/.env",))))


def test_hard_links_beneath_an_except_are_found(tmp_path: Path) -> None:
    """The except carving HOME out of a grant is not a denied directory: links planted beneath it, in the
    workspace, a cache or as a home configuration file, are the key."""
    t = _home_layout(tmp_path)
    key = t["home"] / ".ssh" / "id_ed25519"
    links = [t["ws"] / "src" / "notes.txt", t["home"] / ".cache" / "pip" / "entry", t["home"] / ".editorconfig"]
    for link in links:
        os.link(key, link)
    facts = scan_launch_facts(_home_policy(t), workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    found = {m.path for m in facts.matches if m.via.startswith("hard link to")}
    assert found == {str(p) for p in links}
    assert facts.unfound == 0
    plan = build_plan(_home_policy(t), facts, workspace=t["ws"], protected=[t["gh"]], abi=7)
    assert "3 found and masked" in plan.report.get("files: hard links planted before launch").reason


def test_no_second_name_means_no_walk_beyond_the_workspace(tmp_path: Path) -> None:
    t = _home_layout(tmp_path)
    for i in range(30):
        (t["home"] / ".cache" / "pip" / f"f{i}").write_text("")
    facts = scan_launch_facts(_home_policy(t), workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    assert facts.walked == (str(t["ws"]),)
    assert facts.entries < 30


def test_a_second_name_outside_every_grant_is_counted_not_masked(tmp_path: Path) -> None:
    t = _home_layout(tmp_path)
    (t["home"] / "backup").mkdir()
    os.link(t["home"] / ".ssh" / "id_ed25519", t["home"] / "backup" / "key")
    facts = scan_launch_facts(_home_policy(t), workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    assert facts.unfound == 1
    assert not [m for m in facts.matches if m.via.startswith("hard link")]


def test_globs_without_double_star_are_expanded_by_listing(tmp_path: Path) -> None:
    t = _home_layout(tmp_path)
    (t["scratch"] / "krb5cc_1000").write_text("TICKET")
    (t["scratch"] / "krb5cc_other").mkdir()
    pol = Pol((*_home_policy(t).rules,
               Rule("krb", Verdict.DENY, RW, (f"{t['scratch']}/krb5cc_*",))))
    facts = scan_launch_facts(pol, workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    hit = {m.path: m.kind for m in facts.matches if m.rule_id == "krb"}
    assert hit == {str(t["scratch"] / "krb5cc_1000"): "file", str(t["scratch"] / "krb5cc_other"): "dir"}


def test_a_directory_several_globs_list_is_listed_once_and_each_finds_its_own(tmp_path: Path,
                                                                              monkeypatch) -> None:
    """Five of the default policy's globs list /tmp (krb5cc_*, dbus-*, .s.PGSQL.*, vscode-*): one listing
    serves them all, and each still gets exactly its matches."""
    t = _home_layout(tmp_path)
    for name in ("krb5cc_1000", "dbus-abc", ".s.PGSQL.5432", "other", "krb5cc_x"):
        (t["scratch"] / name).write_text("x")
    pol = Pol((*_home_policy(t).rules,
               Rule("krb", Verdict.DENY, RW, (f"{t['scratch']}/krb5cc_*",)),
               Rule("dbus", Verdict.DENY, RW, (f"{t['scratch']}/dbus-*",)),
               Rule("pg", Verdict.DENY, RW, (f"{t['scratch']}/.s.PGSQL.*",))))
    listed: list[str] = []
    real = os.scandir

    def counting(path: object = ".") -> object:
        listed.append(os.fspath(path))  # type: ignore[arg-type]
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", counting)
    facts = scan_launch_facts(pol, workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    assert listed.count(str(t["scratch"])) == 1, listed
    hit = {(m.rule_id, os.path.basename(m.path)) for m in facts.matches if m.rule_id in ("krb", "dbus", "pg")}
    assert hit == {("krb", "krb5cc_1000"), ("krb", "krb5cc_x"), ("dbus", "dbus-abc"), ("pg", ".s.PGSQL.5432")}


def test_each_name_is_looked_at_once_a_scan_for_the_proc_check(tree: dict[str, Path], monkeypatch) -> None:
    """The facts of a launch share their leading directories (the home, the workspace): whether a name on
    the way is a symlink is asked of the kernel once per scan, not once per path."""
    asked: list[str] = []
    real = os.path.islink

    def counting(path: str) -> bool:
        asked.append(path)
        return real(path)

    monkeypatch.setattr(os.path, "islink", counting)
    facts, _ = _plan(tree, _policy(tree))
    assert asked and len(asked) == len(set(asked)), sorted(p for p in set(asked) if asked.count(p) > 1)
    assert facts.fact(str(tree["home"] / ".ssh")) is not None


@pytest.mark.parametrize("name", ["base", "coding-agent", "offline", "review-readonly"])
def test_the_scan_matches_with_the_engines_compiled_patterns_which_are_its_own(name: str, tmp_path: Path) -> None:
    """deny_targets takes each rule's pattern as the engine compiled it (no second compile at launch): for
    every shipped policy that is exactly what compiling the pattern's text gives, and the targets are the
    same as without the engine's patterns."""
    from guard.policy import load_policy
    from guard.policy.paths import compile_path
    from guard.sandbox.scan import deny_targets

    home, ws = tmp_path / "home", tmp_path / "home" / "ws"
    ws.mkdir(parents=True)
    policy = load_policy(name, workspace=ws, home=home, env={"HOME": str(home), "TMPDIR": "/tmp"})
    known = policy.path_patterns()
    assert known and all(compile_path(text) == pattern for text, pattern in known.items())

    class TextsOnly:  # the same rules, no compiled patterns to take
        def file_rules(self):  # type: ignore[no-untyped-def]
            return policy.file_rules()

    with_engine = deny_targets(policy, [tmp_path / "gh"])
    compiled_here = deny_targets(TextsOnly(), [tmp_path / "gh"])  # type: ignore[arg-type]
    assert with_engine == compiled_here
    assert any(t.glob is known.get(t.pattern) for t in with_engine)


def test_private_write_grants_become_layers_or_lose_their_write(tmp_path: Path) -> None:
    t = _home_layout(tmp_path)

    @dataclass(frozen=True)
    class PRule(Rule):
        private: bool = True

    pol = Pol((Rule("ws", Verdict.ALLOW, RW, (f"{t['ws']}/**",)),
               PRule("caches", Verdict.ALLOW, RW, (f"{t['home']}/.cache/**",))))
    facts = scan_launch_facts(pol, workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    plan = build_plan(pol, facts, workspace=t["ws"], protected=[t["gh"]], abi=7, private_root="/layers")
    layer = [m for m in plan.mounts if m.kind is MountKind.LAYER]
    assert [(m.path, m.layer) for m in layer] == [(str(t["home"] / ".cache"), "/layers/0")]
    assert plan.mounts[0].kind is MountKind.LAYER
    closed = build_plan(pol, facts, workspace=t["ws"], protected=[t["gh"]], abi=7)
    assert not [m for m in closed.mounts if m.kind is MountKind.LAYER]
    cache = {g.path: g for g in closed.landlock.grants}[str(t["home"] / ".cache")]
    assert not cache.access & ll.WRITE_RIGHTS


def test_private_layers_in_the_guard_state_are_hidden_but_not_walked(tmp_path: Path) -> None:
    """Other sessions' layers (their agents' cache writes) live in the hidden guard state: walking them for
    second names of secrets would only spend the scan's bound."""
    t = _home_layout(tmp_path)
    layer = t["gh"] / "layers" / "other" / "0" / "upper"
    layer.mkdir(parents=True)
    for i in range(40):
        (layer / f"f{i}").write_text("")
    kw = {"workspace": t["ws"], "protected": [t["gh"]], "home": t["home"], "max_entries": 30}
    with pytest.raises(ScanCapped):
        scan_launch_facts(_home_policy(t), **kw)  # type: ignore[arg-type]
    facts = scan_launch_facts(_home_policy(t), unhunted=[t["gh"] / "layers"], **kw)  # type: ignore[arg-type]
    assert str(t["gh"]) in {m.path for m in facts.matches}


def test_a_private_write_grant_on_a_file_loses_its_write(tmp_path: Path) -> None:
    """An overlay covers directories; a file granted by a `writes: private` rule is never written in place."""
    t = _home_layout(tmp_path)
    lock = t["home"] / ".cargo-lock"
    lock.write_text("")

    @dataclass(frozen=True)
    class PRule(Rule):
        private: bool = True

    pol = Pol((Rule("ws", Verdict.ALLOW, RW, (f"{t['ws']}/**",)), PRule("lock", Verdict.ALLOW, RW, (str(lock),))))
    facts = scan_launch_facts(pol, workspace=t["ws"], protected=[t["gh"]], home=t["home"])
    plan = build_plan(pol, facts, workspace=t["ws"], protected=[t["gh"]], abi=7, private_root="/layers")
    grant = {g.path: g for g in plan.landlock.grants}[str(lock)]
    assert not grant.access & ll.WRITE_RIGHTS and grant.access & ll.READ_RIGHTS


def test_an_ask_on_write_is_left_to_the_supervisor_when_it_decides_every_write(tree: dict[str, Path]) -> None:
    """Under `guard run` the supervisor asks and then performs the approved write itself: a read-only
    bind would make the approval useless (EROFS). Denies keep their mounts; so does a plan without a
    deciding supervisor."""
    pol = _policy(tree, Rule("hooks-deny", Verdict.DENY, W, (f"{tree['ws']}/src/main.py",)))
    facts, plan = _plan(tree, pol)
    hooks = str(tree["ws"] / ".git" / "hooks")
    assert {m.path: m.kind for m in plan.mounts}[hooks] is MountKind.READ_ONLY
    decided = build_plan(pol, facts, workspace=tree["ws"], protected=[tree["gh"]], abi=7, decided_asks=True)
    by_path = {m.path: m.kind for m in decided.mounts}
    assert hooks not in by_path
    assert by_path[str(tree["ws"] / "src" / "main.py")] is MountKind.READ_ONLY
    # hidden either way: a FUSE mask that records each attempt (WATCH) where the plan can watch, else HIDE_DIR
    assert by_path[str(tree["home"] / ".ssh")] in (MountKind.WATCH, MountKind.HIDE_DIR)
