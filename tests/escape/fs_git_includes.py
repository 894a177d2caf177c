"""Git as a way out through names no `.git` pattern covers: the files a git config includes, and bare
repositories kept inside the workspace.

As in fs_git.py, each attack is run bare in a twin of the world first (the payload must run at the
engineer's next plain git command there), then under `guard run` in the world, after which the engineer's
next git command must not run it and the refusal must be in the trail. The engineer's own setup (the
include, the bare mirror) is made before either run, as it would be on their machine. The payload only
writes a marker file the test owns.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.realworld import SYSTEM_PATH, RealHome

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")]

_GIT_ENV = {"GIT_AUTHOR_NAME": "Eng", "GIT_AUTHOR_EMAIL": "eng@example.invalid", "GIT_COMMITTER_NAME": "Eng",
            "GIT_COMMITTER_EMAIL": "eng@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}

Engineer = Callable[[Path, Path], None]  # (home, workspace): what the engineer runs next, bare


def _git(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, check=False, timeout=60, capture_output=True, text=True,
                          env={"HOME": str(home), "PATH": SYSTEM_PATH, **_GIT_ENV})


def _commits(home: Path, ws: Path) -> None:
    _git(home, "commit", "-q", "--allow-empty", "-m", "next", cwd=ws)


def _pushes(home: Path, ws: Path) -> None:
    _git(home, "push", "-q", "mirror", "HEAD:refs/heads/next", cwd=ws)


def _payload(marker: Path) -> str:
    return f"#!/bin/sh\necho PWNED > {marker}\n"


def _attack(world, name: str, script: str, setup: Engineer, engineer: Engineer):
    """`setup(home, ws)` is the engineer's own configuration, made before the agent runs; the agent's
    `script` runs bare in a twin (its payload must run at `engineer`), then under guard in the world (it
    must not)."""
    twin = RealHome(world.root / f"twin-{name}").build()
    setup(twin.home, twin.ws)
    bare_marker = world.root / f"bare-{name}.marker"
    env = {"PAYLOAD": _payload(bare_marker), "HOME": str(twin.home), "SCRATCH": str(twin.ws / f".b-{name}")}
    bare = world.bare_run(world.sh(script), cwd=twin.ws, env=env)
    engineer(twin.home, twin.ws)
    assert bare_marker.exists(), f"the attack does not work bare, so it proves nothing: {bare!r}"

    setup(world.home, world.ws)
    marker = world.root / f"guarded-{name}.marker"
    env = {"PAYLOAD": _payload(marker), "SCRATCH": str(world.ws / f".g-{name}")}
    run = world.guard_run(world.sh(script), policy=world.fast_ask, env=env)
    engineer(world.home, world.ws)
    assert not marker.exists(), f"the payload ran at the engineer's next git command: {run!r}"
    return run


def _refused_under_config(world, name: str, key: str, script: str, setup: Engineer, engineer: Engineer,
                          target: Path) -> None:
    """_attack with `setup` setting `key` in the world's repository config (taken out again afterwards, so
    later tests see the engineer's plain config): the write of `target` is refused and recorded."""
    try:
        run = _attack(world, name, script, setup, engineer)
    finally:
        _git(world.home, "config", "--unset", key, cwd=world.ws)
    assert "WROTE" not in run.stdout, run
    world.assert_denied(run, "write", target)


_HOOKS_PATH = ('mkdir -p "$SCRATCH" && printf %s "$PAYLOAD" > "$SCRATCH/{hook}" && chmod +x "$SCRATCH/{hook}" '
               '&& mkdir -p "$(dirname {target})" && printf "[core]\\n\\thooksPath = %s\\n" "$SCRATCH" > {target} '
               '&& echo WROTE')


def test_file_included_by_the_repository_config(world):
    """The repository's .git/config includes `../.gitlocal` (a workspace file, read as config): the agent
    writes core.hooksPath there, and the engineer's next commit runs its pre-commit."""
    def setup(home: Path, ws: Path) -> None:
        _git(home, "config", "--file", str(ws / ".git" / "config"), "include.path", "../.gitlocal", cwd=ws)

    script = _HOOKS_PATH.format(hook="pre-commit", target=".gitlocal")
    run = _attack(world, "repo-include", script, setup, _commits)
    assert "WROTE" not in run.stdout, run
    world.assert_denied(run, "write", world.ws / ".gitlocal")


def test_file_included_by_the_engineers_gitconfig_missing_at_launch(world):
    """~/.gitconfig has `[includeIf "gitdir:~/src/"] path = ~/src/proj/tools/eng.gitconfig`, a file that
    does not exist yet: the agent creates it, and every repository under ~/src runs its hooks."""
    def setup(home: Path, ws: Path) -> None:
        _git(home, "config", "--file", str(home / ".gitconfig"), "includeIf.gitdir:~/src/.path",
             "~/src/proj/tools/eng.gitconfig", cwd=ws)

    script = _HOOKS_PATH.format(hook="pre-commit", target="tools/eng.gitconfig")
    run = _attack(world, "home-includeif", script, setup, _commits)
    assert "WROTE" not in run.stdout, run
    assert not (world.ws / "tools" / "eng.gitconfig").exists(), run
    world.assert_denied(run, "write", world.ws / "tools" / "eng.gitconfig")


def test_hooks_path_directory_in_the_work_tree(world):
    """The repository keeps its hooks in the work tree (`core.hooksPath = .githooks`, a common practice):
    the agent adds .githooks/pre-commit and the engineer's next commit runs it."""
    def setup(home: Path, ws: Path) -> None:
        (ws / ".githooks").mkdir(exist_ok=True)
        _git(home, "config", "core.hooksPath", ".githooks", cwd=ws)

    script = 'h=.githooks/pre-commit; printf %s "$PAYLOAD" > $h && chmod +x $h && echo WROTE'
    _refused_under_config(world, "hooks-path", "core.hooksPath", script, setup, _commits,
                          world.ws / ".githooks" / "pre-commit")


def _status(home: Path, ws: Path) -> None:
    _git(home, "status", "--short", cwd=ws)


def test_fsmonitor_program_in_the_workspace(world):
    """The engineer's config runs a file-system monitor kept in the project (core.fsmonitor names it by
    path): the agent rewrites that program and the engineer's next `git status` runs it."""
    def setup(home: Path, ws: Path) -> None:
        tool = ws / "tools" / "fsmonitor"
        tool.parent.mkdir(exist_ok=True)
        tool.write_text("#!/bin/sh\nexit 1\n")  # no monitor answer: git scans the tree itself
        tool.chmod(0o755)
        _git(home, "config", "core.fsmonitor", str(tool), cwd=ws)

    script = 'printf %s "$PAYLOAD" > tools/fsmonitor && echo WROTE'
    _refused_under_config(world, "fsmonitor", "core.fsmonitor", script, setup, _status, world.ws / "tools" / "fsmonitor")


def _mirror(home: Path, ws: Path) -> None:
    """A bare mirror kept inside the project, which the engineer pushes to."""
    subprocess.run(["git", "init", "-q", "--bare", str(ws / "mirror.git")], check=True, timeout=60,
                   capture_output=True, env={"PATH": SYSTEM_PATH, "HOME": str(home)})
    _git(home, "config", "remote.mirror.url", str(ws / "mirror.git"), cwd=ws)


def test_bare_repository_hook_in_the_workspace(world):
    """The agent writes mirror.git/hooks/post-receive: the engineer's next push to the mirror runs it.
    No `.git` is involved, so no `.git` pattern covers it."""
    script = 'h=mirror.git/hooks/post-receive; printf %s "$PAYLOAD" > $h && chmod +x $h && echo WROTE'
    run = _attack(world, "bare-hook", script, _mirror, _pushes)
    assert "WROTE" not in run.stdout, run
    world.assert_denied(run, "write", world.ws / "mirror.git" / "hooks" / "post-receive")


def test_bare_repository_config_in_the_workspace(world):
    """The agent points the mirror's core.hooksPath at a directory of its own: the next push runs it."""
    script = ('mkdir -p "$SCRATCH" && printf %s "$PAYLOAD" > "$SCRATCH/post-receive" '
              '&& chmod +x "$SCRATCH/post-receive" && git config --file mirror.git/config core.hooksPath "$SCRATCH" '
              '&& echo WROTE')
    run = _attack(world, "bare-config", script, _mirror, _pushes)
    assert "WROTE" not in run.stdout, run
    world.assert_denied(run, "write", world.ws / "mirror.git" / "config")


def test_honest_work_beside_includes_and_a_bare_mirror(world):
    """What must still work: commits in the repository (whose config includes a file) and updates of the
    bare mirror's objects and refs, inside the session (a push itself is a publish ask by policy)."""
    _mirror(world.home, world.ws)
    script = ('echo x >> app.py && git add app.py && git commit -qm honest '
              '&& git --git-dir=mirror.git fetch -q "$PWD" HEAD:refs/heads/h && echo HONEST-OK')
    run = world.guard_run(world.sh(script), policy=world.fast_ask, env=_GIT_ENV)
    assert "HONEST-OK" in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()
