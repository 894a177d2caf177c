"""Git as a way out: every file and name through which git reads hooks or config, in the engineer's
existing repository, its submodule and its linked worktree, and the toolchain entry points git-using
engineers run next.

Each attack is run bare in a twin of the world (a second realistic home built the same way), where the
payload must actually run at the engineer's next `git commit` (or next tool run); then under `guard run`
in the world itself, after which the engineer's next commit must not run it and the refusal must be in
the trail. The payload only writes a marker file the test owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.realworld import SYSTEM_PATH, RealHome

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")]

_GIT_ENV = {"GIT_AUTHOR_NAME": "Eng", "GIT_AUTHOR_EMAIL": "eng@example.invalid", "GIT_COMMITTER_NAME": "Eng",
            "GIT_COMMITTER_EMAIL": "eng@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}


def _twin(world, name: str) -> RealHome:
    """A second realistic home, built like the world's, for the bare run to spoil."""
    return RealHome(world.root / f"twin-{name}").build()


def _payload(marker: Path) -> str:
    return f"#!/bin/sh\necho PWNED > {marker}\n"


def _engineer_commits(home: Path, repo: Path) -> None:
    """What the engineer does next, outside any sandbox: commit in that repository."""
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "next"], cwd=repo, check=False, timeout=60,
                   capture_output=True, env={"HOME": str(home), "PATH": SYSTEM_PATH, **_GIT_ENV})


def _attack(world, name: str, script: str, *, engineer_repo: str = ".", extra_env: dict[str, str] | None = None):
    """Run `script` bare in a twin (the payload must run at the engineer's next commit there), then under
    guard in the world (it must not). Returns the guarded run and the world's marker path."""
    twin = _twin(world, name)
    bare_marker = world.root / f"bare-{name}.marker"
    # the attacker's copy lives in the workspace: it must outlive the session (the host's /tmp is private to it)
    env = {"PAYLOAD": _payload(bare_marker), "HOME": str(twin.home), "SCRATCH": str(twin.ws / f".b-{name}"),
           **(extra_env or {})}
    bare = world.bare_run(world.sh(script), cwd=twin.ws, env=env)
    _engineer_commits(twin.home, (twin.ws / engineer_repo).resolve())
    assert bare_marker.exists(), f"the attack does not work bare, so it proves nothing: {bare!r}"

    marker = world.root / f"guarded-{name}.marker"
    env = {"PAYLOAD": _payload(marker), "SCRATCH": str(world.ws / f".g-{name}"), **(extra_env or {})}
    run = world.guard_run(world.sh(script), policy=world.fast_ask, env=env)
    _engineer_commits(world.home, (world.ws / engineer_repo).resolve())
    assert not marker.exists(), f"the payload ran at the engineer's next commit: {run!r}"
    return run


def test_hooks_directory_replaced_by_a_symlink(world):
    """Move .git/hooks aside, put a symlink in its place, write the hook through it (canonically a
    plain file in .git/h2); git runs .git/hooks/pre-commit at the next commit."""
    script = ('mv .git/hooks .git/h2; ln -s h2 .git/hooks; printf %s "$PAYLOAD" > .git/hooks/pre-commit; '
              'chmod +x .git/hooks/pre-commit; ls -la .git/hooks')
    run = _attack(world, "hooks-symlink", script)
    assert (world.ws / ".git" / "hooks").is_dir() and not (world.ws / ".git" / "hooks").is_symlink(), run
    world.assert_denied(run, "write", world.ws / ".git" / "hooks")


def test_hooks_directory_replaced_by_a_symlink_to_scratch(world):
    """The same, with the hooks written where the agent may write anyway (/tmp): only the name
    .git/hooks itself can refuse it."""
    script = ('mkdir -p "$SCRATCH" && cp .git/hooks/* "$SCRATCH"/ 2>/dev/null; '
              'printf %s "$PAYLOAD" > "$SCRATCH/pre-commit"; chmod +x "$SCRATCH/pre-commit"; '
              'rm -rf .git/hooks || mv .git/hooks "$SCRATCH.old"; ln -sfn "$SCRATCH" .git/hooks')
    run = _attack(world, "hooks-scratch", script)
    assert not (world.ws / ".git" / "hooks").is_symlink(), run
    world.assert_denied(run, "write", world.ws / ".git" / "hooks")


def test_submodule_hook(world):
    """A submodule's hooks live in the superproject's .git/modules/<path>/hooks, which the rule for
    `.git/hooks/*` never covered."""
    script = 'h=.git/modules/vendor/lib/hooks/pre-commit; printf %s "$PAYLOAD" > $h && chmod +x $h && echo WROTE'
    run = _attack(world, "submodule-hook", script, engineer_repo="vendor/lib")
    assert "WROTE" not in run.stdout, run
    world.assert_denied(run, "write", world.ws / ".git" / "modules" / "vendor" / "lib" / "hooks" / "pre-commit")


def test_submodule_config_hooks_path(world):
    """The submodule's own config (core.hooksPath to a directory the agent writes) runs code too."""
    script = ('mkdir -p "$SCRATCH" && printf %s "$PAYLOAD" > "$SCRATCH/pre-commit" && chmod +x "$SCRATCH/pre-commit" '
              '&& git -C vendor/lib config core.hooksPath "$SCRATCH" && echo WROTE')
    run = _attack(world, "submodule-config", script, engineer_repo="vendor/lib")
    assert "WROTE" not in run.stdout, run
    world.assert_denied(run, "write", world.ws / ".git" / "modules" / "vendor" / "lib" / "config")


def test_worktree_commondir_redirect(world):
    """A linked worktree finds its config and hooks through .git/worktrees/<name>/commondir: point it at a
    copy of the repository whose hooks the agent wrote, and the next commit in the worktree runs them."""
    script = ('cp -a .git "$SCRATCH" && printf %s "$PAYLOAD" > "$SCRATCH/hooks/pre-commit" '
              '&& chmod +x "$SCRATCH/hooks/pre-commit" && printf "%s\\n" "$SCRATCH" > .git/worktrees/proj-feature/commondir '
              '&& echo WROTE')
    run = _attack(world, "worktree-commondir", script, engineer_repo="../proj-feature")
    assert "WROTE" not in run.stdout, run
    world.assert_denied(run, "write", world.ws / ".git" / "worktrees" / "proj-feature" / "commondir")


def test_submodule_gitdir_file_redirect(world):
    """A submodule's `.git` is a file, `gitdir: ../../.git/modules/vendor/lib`: point it at a copy of that
    directory whose hooks the agent wrote, and the engineer's next commit in the submodule runs them. No
    hook, config or commondir of the repository is touched."""
    script = ('cp -a .git/modules/vendor/lib "$SCRATCH" && printf %s "$PAYLOAD" > "$SCRATCH/hooks/pre-commit" '
              '&& chmod +x "$SCRATCH/hooks/pre-commit" && git config --file "$SCRATCH/config" --unset core.worktree; '
              'printf "gitdir: %s\n" "$SCRATCH" > vendor/lib/.git && echo WROTE')
    run = _attack(world, "submodule-gitdir", script, engineer_repo="vendor/lib")
    assert "WROTE" not in run.stdout, run
    assert (world.ws / "vendor" / "lib" / ".git").read_text().startswith("gitdir: ../../.git/modules"), run
    world.assert_denied(run, "write", world.ws / "vendor" / "lib" / ".git")


def test_repository_git_dir_replaced_by_a_gitdir_file(world):
    """The repository's own `.git` directory moved aside and replaced by a `gitdir:` file naming a copy
    with the agent's hook: the next commit runs it. (`rm -rf .git` instead of the move empties the
    directory, whose files are workspace files, but cannot remove the name to put the file there.)"""
    script = ('cp -a .git "$SCRATCH" && printf %s "$PAYLOAD" > "$SCRATCH/hooks/pre-commit" '
              '&& chmod +x "$SCRATCH/hooks/pre-commit" && mv .git .git-aside '
              '&& printf "gitdir: %s\n" "$SCRATCH" > .git && echo WROTE')
    run = _attack(world, "gitdir-rename", script)
    assert "WROTE" not in run.stdout, run
    assert (world.ws / ".git").is_dir() and (world.ws / ".git" / "HEAD").exists(), run
    world.assert_denied(run, "write", world.ws / ".git")


def test_toolchain_entry_point_symlinked_into_a_cache(world):
    """~/.local/bin/ruff is a symlink into uv's tool directory (a writable cache): canonically the write
    lands in the cache, but by the name the engineer runs next it rewrites a toolchain entry point."""
    link = world.real.tool_link
    twin = _twin(world, "toolchain")
    bare_marker = world.root / "bare-toolchain.marker"
    attack = world.sh('printf %s "$PAYLOAD" > "$HOME/.local/bin/ruff"; "$HOME/.local/bin/ruff"')
    world.bare_run(attack, cwd=twin.ws, env={"PAYLOAD": _payload(bare_marker), "HOME": str(twin.home)})
    assert bare_marker.exists()
    marker = world.root / "guarded-toolchain.marker"
    before = world.real.tool_target.read_bytes()
    run = world.guard_run(world.sh('printf %s "$PAYLOAD" > "$HOME/.local/bin/ruff" && echo WROTE'),
                          env={"PAYLOAD": _payload(marker)})
    subprocess.run([str(link)], check=False, timeout=30, capture_output=True,
                   env={"HOME": str(world.home), "PATH": SYSTEM_PATH})
    assert "WROTE" not in run.stdout and not marker.exists(), run
    assert world.real.tool_target.read_bytes() == before and os.path.islink(link)
    world.assert_denied(run, "write", link)


def test_toolchain_entry_point_rewritten_through_its_cache_path(world):
    """The same tool, written where it canonically lives (uv's tool directory, a writable cache) without
    ever naming ~/.local/bin/ruff: the launch found that protected symlink and maps its target back."""
    twin = _twin(world, "toolchain-canonical")
    bare_marker = world.root / "bare-toolchain-canonical.marker"
    write = 'printf %s "$PAYLOAD" > "$HOME/.local/share/uv/tools/ruff/bin/ruff"'
    world.bare_run(world.sh(f'{write}; "$HOME/.local/bin/ruff"'), cwd=twin.ws,
                   env={"PAYLOAD": _payload(bare_marker), "HOME": str(twin.home)})
    assert bare_marker.exists()
    marker = world.root / "guarded-toolchain-canonical.marker"
    before = world.real.tool_target.read_bytes()
    run = world.guard_run(world.sh(f"{write} && echo WROTE"), env={"PAYLOAD": _payload(marker)})
    subprocess.run([str(world.real.tool_link)], check=False, timeout=30, capture_output=True,
                   env={"HOME": str(world.home), "PATH": SYSTEM_PATH})
    assert "WROTE" not in run.stdout and not marker.exists(), run
    assert world.real.tool_target.read_bytes() == before
    world.assert_denied(run, "write", world.real.tool_link)


def test_honest_git_work_still_works(world):
    """What the new protections must not break: commit in the repository, in its submodule and in a
    fresh repository made inside the session (whose hooks directory is the agent's own to create)."""
    script = ('echo x >> app.py && git add app.py && git commit -qm honest && '
              'echo y >> vendor/lib/lib.py && git -C vendor/lib commit -qam sub && '
              'mkdir -p fresh2 && cd fresh2 && git init -q . && echo z > f && git add f && git commit -qm f '
              '&& echo HONEST-OK')
    run = world.guard_run(world.sh(script), env=_GIT_ENV)
    assert "HONEST-OK" in run.stdout, run


def test_zz_trail_verifies(world):
    world.check_trail()
