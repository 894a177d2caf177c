"""guard.sandbox.git_launch on real files and the real git: which include targets and bare repositories
it finds, and what the policy it builds decides for them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from guard.errors import SandboxError
from guard.model import Verdict
from guard.policy.loader import load_policy
from guard.sandbox import git_launch

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1"})


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    home = tmp_path / "home"
    ws = home / "src" / "proj"
    ws.mkdir(parents=True)
    _git("init", "-q", cwd=ws)
    _git("init", "-q", "--bare", str(ws / "mirror.git"), cwd=ws)
    return {"home": home, "ws": ws}


def test_include_targets_resolved_as_git_does_and_followed(tree: dict[str, Path]) -> None:
    home, ws = tree["home"], tree["ws"]
    config = ws / ".git" / "config"
    _git("config", "--file", str(config), "--add", "include.path", "../local.inc", cwd=ws)
    _git("config", "--file", str(config), "includeIf.gitdir:/x/.path", "~/shared.inc", cwd=ws)
    (home / "shared.inc").write_text("[include]\n\tpath = nested/deeper.inc\n")
    targets = git_launch.include_targets([str(config)], str(home))
    assert str(ws / "local.inc") in targets  # relative to the including file's directory
    assert str(home / "shared.inc") in targets  # ~/ is HOME
    assert str(home / "nested" / "deeper.inc") in targets  # followed into an existing included file


def test_an_unreadable_config_fails_closed(tree: dict[str, Path]) -> None:
    bad = tree["ws"] / ".git" / "config"
    bad.write_text("[include\n\tpath = x\n")
    with pytest.raises(SandboxError, match="cannot read"):
        git_launch.include_targets([str(bad)], str(tree["home"]))


def test_bare_repositories_found_and_dot_git_left_to_the_policy(tree: dict[str, Path]) -> None:
    ws = tree["ws"]
    found = git_launch.bare_repos_under(str(ws), [str(ws / ".git"), str(ws / "mirror.git"), str(ws / "x")])
    assert found == [str(ws / "mirror.git")]


def test_augmented_policy_protects_the_bare_repository_like_a_dot_git(tree: dict[str, Path]) -> None:
    home, ws = tree["home"], tree["ws"]
    policy = load_policy("coding-agent", workspace=ws, home=home)
    bare = str(ws / "mirror.git")
    out = git_launch.augment(policy, workspace=str(ws), includes=[str(ws / "local.inc")], bare_repos=[bare])

    def verdict(target: str) -> Verdict:
        return out.decide(out.action(f"write {target}")).verdict

    assert verdict(f"{bare}/hooks/post-receive") is Verdict.DENY
    assert verdict(f"{bare}/hooks") is Verdict.DENY
    assert verdict(f"{bare}/config") is Verdict.ASK
    assert verdict(bare) is Verdict.DENY  # the name, not what lies in it
    assert verdict(f"{bare}/objects/ab/cdef") is Verdict.ALLOW
    assert verdict(f"{bare}/refs/heads/main") is Verdict.ALLOW
    assert verdict(f"{bare}/hooks/pre-push.sample") is Verdict.ALLOW
    assert verdict(str(ws / "local.inc")) is Verdict.ASK
    assert policy.decide(policy.action(f"write {bare}/hooks/post-receive")).verdict is Verdict.ALLOW
    assert git_launch.augment(policy, workspace=str(ws), includes=[], bare_repos=[]) is policy


def test_hooks_directories_and_programs_named_by_config(tree: dict[str, Path]) -> None:
    home, ws = tree["home"], tree["ws"]
    config = ws / ".git" / "config"
    _git("config", "--file", str(config), "core.hooksPath", ".githooks", cwd=ws)
    _git("config", "--file", str(config), "core.fsmonitor", str(ws / "tools" / "fsmon"), cwd=ws)
    _git("config", "--file", str(config), "alias.lint", "!./scripts/lint.sh", cwd=ws)
    _git("config", "--file", str(config), "core.pager", "less -R", cwd=ws)
    tops = git_launch.work_trees([str(config)], str(ws), [])
    out = git_launch.include_targets([str(config)], str(home), tops)
    assert str(ws / ".githooks") in out and str(ws / ".githooks" / "pre-commit") in out
    assert str(ws / ".githooks" / "README.md") not in out  # the names git runs, not all it holds
    assert str(ws / "tools" / "fsmon") in out
    assert not any("lint" in p or p.endswith("/less") for p in out)  # typed by the engineer; found on PATH


def test_the_engineers_configs_follow_their_environment(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "GIT_CONFIG_GLOBAL": str(tmp_path / "g.cfg"),
           "GIT_CONFIG_SYSTEM": "relative/ignored"}
    got = git_launch.home_configs(env, str(tmp_path / "h"))
    assert got == [str(tmp_path / "h" / ".gitconfig"), str(tmp_path / "xdg" / "git" / "config"),
                   "/etc/gitconfig", str(tmp_path / "g.cfg")]
