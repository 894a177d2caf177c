"""`guard.sandbox.new_repos`: a repository is the session's own only if its directory was born after launch.

Real directories on the test's own file system; the birth time is the kernel's (statx), so these are also
the checks that nothing an agent can do to an old tree (touch it, `git init` in it, rename it) makes it new.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from guard.sandbox._syscalls import birth_time_ns
from guard.sandbox.new_repos import in_new_repository, repository_of, session_clock_ns


@pytest.fixture
def old_tree(tmp_path: Path) -> Path:
    old = tmp_path / "ws"
    (old / ".git").mkdir(parents=True)
    if birth_time_ns(str(old)) is None:
        pytest.skip("this file system keeps no birth time (the rule then always holds: fail closed)")
    return old


def test_a_repository_born_after_the_session_started_is_new(old_tree: Path) -> None:
    since = session_clock_ns()
    _next_tick(since, old_tree)
    clone = old_tree / "clone"
    (clone / ".git").mkdir(parents=True)
    assert repository_of(str(clone / ".vscode" / "settings.json")) == str(clone)
    assert in_new_repository(str(clone / ".vscode" / "settings.json"), since)
    assert in_new_repository(str(clone / ".github" / "workflows"), since)


def test_the_old_repository_and_a_new_plain_directory_in_it_are_not(old_tree: Path) -> None:
    since = session_clock_ns()
    assert not in_new_repository(str(old_tree / ".vscode" / "settings.json"), since)
    (old_tree / "newdir").mkdir()  # no .git of its own: still the engineer's repository
    assert not in_new_repository(str(old_tree / "newdir" / ".vscode" / "x.json"), since)


def test_git_init_touch_or_rename_never_make_an_old_tree_new(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    if birth_time_ns(str(plain)) is None:
        pytest.skip("this file system keeps no birth time")
    since = session_clock_ns()
    subprocess.run(["git", "init", "-q", str(plain)], check=True, timeout=60)  # init in an old directory
    assert not in_new_repository(str(plain / ".vscode" / "settings.json"), since)
    future = since // 1_000_000_000 + 3600
    os.utime(plain, (future, future))  # times an agent can set say nothing about birth
    assert not in_new_repository(str(plain / ".vscode" / "settings.json"), since)
    moved = tmp_path / "moved"
    plain.rename(moved)  # a renamed tree keeps its birth
    assert not in_new_repository(str(moved / ".vscode" / "settings.json"), since)


def test_outside_any_repository_nothing_is_new(tmp_path: Path) -> None:
    since = session_clock_ns()
    _next_tick(since, tmp_path)
    (tmp_path / "fresh").mkdir()
    if repository_of(str(tmp_path)) is not None:
        pytest.skip("the test's temporary directory lies inside a git repository")
    assert repository_of(str(tmp_path / "fresh" / ".vscode" / "x")) is None
    assert not in_new_repository(str(tmp_path / "fresh" / ".vscode" / "x"), since)


def _next_tick(since: int, where: Path) -> None:
    """Wait (bounded) until the kernel's inode clock has moved past `since`: what is born now is after it."""
    probe = where / ".tick-probe"
    for _ in range(10_000):
        probe.mkdir()
        born = birth_time_ns(str(probe))
        probe.rmdir()
        if born is None or born > since:
            return
        time.sleep(0.001)
    pytest.fail("the file system's clock did not move")
