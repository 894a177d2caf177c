"""guard.sandbox.git_launch.launch_policy: the launch scans once when the engineer's own git configs are all
that add rules, and its policy and facts are always those of the launch as it was (scan the policy as
written, find git's other ways in, scan again with them), on real files, the real git and the real scan."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from guard.policy.engine import Policy
from guard.policy.loader import load_policy
from guard.sandbox import git_launch as g
from guard.sandbox.scan import LaunchFacts, scan_launch_facts

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"})


def _config(path: Path, key: str, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _git("config", "--file", str(path), "--add", key, value, cwd=path.parent)


def _nothing(home: Path, ws: Path) -> None:
    """No git config of the engineer's: nothing is added."""


def _helper_and_editor_by_path(home: Path, ws: Path) -> None:
    """What `gh auth setup-git` writes, and an editor named by path: the common case."""
    _config(home / ".gitconfig", "credential.https://github.com.helper", "!/usr/bin/gh auth git-credential")
    _config(home / ".gitconfig", "core.editor", "/usr/bin/vim -f")


def _repo_names_a_hooks_directory(home: Path, ws: Path) -> None:
    _helper_and_editor_by_path(home, ws)
    _config(ws / ".git" / "config", "core.hooksPath", ".githooks")


def _relative_hooks_path_at_home(home: Path, ws: Path) -> None:
    """Resolved against every work tree: the workspace is one, a nested repository another."""
    _config(home / ".gitconfig", "core.hooksPath", ".githooks")


def _relative_hooks_path_and_a_nested_repository(home: Path, ws: Path) -> None:
    _relative_hooks_path_at_home(home, ws)
    _git("init", "-q", str(ws / "vendor" / "lib"), cwd=ws)


def _included_file_at_home(home: Path, ws: Path) -> None:
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".config" / "git" / "work.inc").write_text("[core]\n\tfsmonitor = /opt/fsmon/bin/fsmon\n")
    _config(home / ".gitconfig", "include.path", "~/.config/git/work.inc")


def _a_bare_repository_in_the_workspace(home: Path, ws: Path) -> None:
    _helper_and_editor_by_path(home, ws)
    _git("init", "-q", "--bare", str(ws / "mirror.git"), cwd=ws)


def _the_engineer_includes_a_repositorys_config(home: Path, ws: Path) -> None:
    """A guessed rule that matches a repository's config itself (one outside the workspace, whose top
    the scan would then count as a work tree): the launch scans the policy as written."""
    other = home / "other"
    _git("init", "-q", str(other), cwd=home)
    _config(other / ".git" / "config", "core.hooksPath", "team-hooks")
    _config(home / ".gitconfig", "include.path", "~/other/.git/config")


WORLDS: dict[str, tuple[Callable[[Path, Path], None], int]] = {  # name -> (make it, scans now)
    "nothing": (_nothing, 1),
    "helper and editor by path": (_helper_and_editor_by_path, 1),
    "included file at home": (_included_file_at_home, 1),
    "relative hooksPath at home": (_relative_hooks_path_at_home, 1),
    "relative hooksPath and a nested repository": (_relative_hooks_path_and_a_nested_repository, 2),
    "the repository names a hooks directory": (_repo_names_a_hooks_directory, 2),
    "a bare repository in the workspace": (_a_bare_repository_in_the_workspace, 2),
    "the engineer includes a repository's config": (_the_engineer_includes_a_repositorys_config, 3),
}


def _as_before(policy: Policy, ws: str, env: dict[str, str],
               scan: Callable[[Policy], LaunchFacts]) -> tuple[Policy, LaunchFacts, list[str]]:
    """The launch as it was: the policy as written scanned, then again with what git's configs add."""
    facts = scan(policy)
    bare = g.bare_repos_under(ws, facts.head_dirs)
    configs = g.launch_configs((m.path for m in facts.matches), bare, env, policy.home)
    includes = g.include_targets(configs, policy.home, g.work_trees(configs, ws, bare))
    final = g.augment(policy, workspace=ws, includes=includes, bare_repos=bare)
    return final, (scan(final) if final is not policy else facts), bare


def _rules(policy: Policy) -> list[tuple[Any, ...]]:
    return [(r.id, r.verdict, tuple(sorted(r.ops)), tuple(p.text for p in r.paths),
             tuple(p.text for p in r.except_paths), r.audit_only) for r in policy.rules]


@pytest.mark.parametrize("world", list(WORLDS))
def test_the_launch_gets_the_policy_and_facts_it_always_got(tmp_path: Path, world: str) -> None:
    make, scans_now = WORLDS[world]
    home = tmp_path / "home"
    ws = home / "src" / "proj"
    ws.mkdir(parents=True)
    _git("init", "-q", cwd=ws)
    (ws / "README.md").write_text("x\n")
    make(home, ws)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    policy = load_policy("coding-agent", workspace=ws, home=home)
    calls: list[Policy] = []

    def scan(under: Policy) -> LaunchFacts:
        calls.append(under)
        return scan_launch_facts(under, workspace=ws, protected=[tmp_path / "guard-home"])

    final, facts, bare = g.launch_policy(policy, workspace=str(ws), env=env, scan=scan)
    assert len(calls) == scans_now
    calls.clear()
    ref_policy, ref_facts, ref_bare = _as_before(policy, str(ws), env, scan)
    assert _rules(final) == _rules(ref_policy)
    assert facts == ref_facts
    assert bare == ref_bare
    assert (final is policy) == (world == "nothing")  # elsewhere something was added, and the scan saw it


def test_a_config_git_cannot_read_still_stops_the_launch(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ws = home / "ws"
    ws.mkdir(parents=True)
    (home / ".gitconfig").write_text("[include\n\tpath = x\n")
    policy = load_policy("coding-agent", workspace=ws, home=home)
    with pytest.raises(g.SandboxError, match="cannot read"):
        g.launch_policy(policy, workspace=str(ws), env={"HOME": str(home)},
                        scan=lambda under: scan_launch_facts(under, workspace=ws, protected=[]))


def test_each_config_is_read_by_git_once_a_launch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    ws = home / "ws"
    ws.mkdir(parents=True)
    _git("init", "-q", cwd=ws)
    _helper_and_editor_by_path(home, ws)
    asked: list[str] = []
    real = g._git_config
    monkeypatch.setattr(g, "_git_config", lambda git, config: asked.append(config) or real(git, config))
    policy = load_policy("coding-agent", workspace=ws, home=home)
    g.launch_policy(policy, workspace=str(ws), env={"HOME": str(home)},
                    scan=lambda under: scan_launch_facts(under, workspace=ws, protected=[]))
    assert str((home / ".gitconfig").resolve()) in asked
    assert len(asked) == len(set(asked))


def test_when_git_refuses_one_config_of_several_the_launch_stops_and_no_git_is_left(tmp_path: Path) -> None:
    """git is asked about every config at once; one it cannot read stops the launch, and every git
    started is reaped (none left running or unreaped)."""
    home = tmp_path / "home"
    xdg = home / ".config" / "git"
    xdg.mkdir(parents=True)
    _helper_and_editor_by_path(home, home)
    (xdg / "config").write_text("[core]\n\teditor = /usr/bin/vim\n[include\n")  # names a key; git refuses it
    before = {c.pid for c in psutil.Process().children()}
    with pytest.raises(g.SandboxError, match="git cannot read"):
        g.include_targets(g.home_configs({}, str(home)), str(home))
    assert {c.pid for c in psutil.Process().children()} <= before


def test_many_repositories_are_read_a_few_gits_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A workspace of many repositories whose configs name programs: every config is read, never more
    than GIT_AT_ONCE gits at a time, and what each adds is the same as one by one."""
    home = tmp_path / "home"
    configs = []
    for i in range(11):
        repo = home / "src" / f"r{i}"
        _git("init", "-q", str(repo), cwd=tmp_path)
        _config(repo / ".git" / "config", "core.fsmonitor", f"/opt/tool{i}/fsmon")
        configs.append(str(repo / ".git" / "config"))
    in_flight = 0
    most = 0
    real_start, real_answer = g._git_config, g._answer

    def started(git: str, config: str) -> Any:  # a git started and not yet answered counts until it is
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        return real_start(git, config)

    def answered(config: str, proc: Any) -> Any:
        nonlocal in_flight
        in_flight -= 1
        return real_answer(config, proc)

    monkeypatch.setattr(g, "_git_config", started)
    monkeypatch.setattr(g, "_answer", answered)
    together = g.include_targets(configs, str(home))
    assert most == g.GIT_AT_ONCE, most
    one_by_one = [t for c in configs for t in g.include_targets([c], str(home))]
    assert sorted(together) == sorted(one_by_one) and len(together) == 11, together
