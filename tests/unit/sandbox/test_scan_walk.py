"""The workspace walk of the launch scan, in the compiled core and in Python: the same facts, entry for entry.

scan._glob_walk hands the walk to the core when it is built (the cheap name test in C, the decision in
Python); these tests run the whole launch scan both ways on workspaces an engineer has (secrets at every
depth, nested and bare repositories, symlinks named like secrets, hidden trees, names that are not UTF-8,
unreadable directories) and require identical facts, and the same refusal past the entry bound.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.model import Op, Verdict
from guard.policy import load_policy
from guard.sandbox import scan

core = pytest.importorskip("guard._core", reason="the compiled core is not built")


def _workspace(root: Path) -> Path:
    ws = root / "home" / "src" / "proj"
    for i in range(4):
        for j in range(6):
            d = ws / f"pkg{i}" / f"mod{j}" / "lib"
            d.mkdir(parents=True)
            (d / "index.js").write_text("x")
            (d / "README").write_text("r")
            if (i + j) % 3 == 0:
                (d / ".env").write_text("SECRET=1")
            if j == 2:
                (d / ".env.local").write_text("SECRET=2")
                (d / "id_rsa").write_text("k")
                os.symlink("index.js", d / ".envrc")
    for repo in (ws, ws / "pkg1" / "vendored"):
        (repo / ".git" / "hooks").mkdir(parents=True)
        (repo / ".git" / "config").write_text("[core]\n")
        (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (repo / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    for tool in ("husky", "lefthook"):  # hooks directories outside .git: their files go by their parent's name
        (ws / tool / "hooks").mkdir(parents=True)
        (ws / tool / "hooks" / "pre-push").write_text("#!/bin/sh\n")
    (ws / "vault" / "secrets" / "inner").mkdir(parents=True)
    (ws / "vault" / "secrets" / "inner" / ".env").write_text("covered")
    bare = ws / "mirror.git"
    for d in ("objects", "refs", "hooks"):
        (bare / d).mkdir(parents=True)
    (bare / "HEAD").write_text("ref: refs/heads/main\n")
    (ws / "deep" / ("d/" * 60)).mkdir(parents=True)  # deeper than the directories the core keeps open
    (ws / "deep" / ("d/" * 60) / ".env").write_text("deep")
    odd = ws / os.fsdecode(b"caf\xe9")
    odd.mkdir()
    (odd / ".env").write_text("odd")
    os.mkfifo(ws / "pipe")
    os.symlink(ws / "pkg0", ws / "loop")
    (ws / ".ssh").mkdir()
    (ws / ".ssh" / "id_ed25519").write_text("k")
    locked = ws / "locked"
    locked.mkdir()
    (locked / ".env").write_text("locked")
    locked.chmod(0)
    return ws


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Path]:
    ws = _workspace(tmp_path)
    yield ws
    (ws / "locked").chmod(0o755)


def _facts(ws: Path, *, compiled: bool, monkeypatch: pytest.MonkeyPatch, max_entries: int = 200_000) -> Any:
    home = ws.parent.parent
    policy = load_policy("coding-agent", workspace=ws, env={"HOME": str(home), "TMPDIR": "/tmp"})
    used: list[int] = []
    real = scan._compiled_glob_walk

    def counted(names: Any) -> Any:
        walk = real(names) if compiled else None
        if walk is None:
            return None

        def run(*args: Any) -> Any:
            used.append(1)
            return walk(*args)
        return run

    with monkeypatch.context() as m:
        m.setattr(scan, "_compiled_glob_walk", counted)
        try:
            facts: Any = scan.scan_launch_facts(policy, workspace=ws, protected=[home / "gh"], home=home,
                                                max_entries=max_entries)
        except scan.ScanCapped as exc:
            facts = ("capped", exc.message)
    assert bool(used) == compiled  # the core did walk when it was meant to
    return facts


def test_the_core_and_python_find_the_same_facts(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_core = _facts(ws, compiled=True, monkeypatch=monkeypatch)
    by_python = _facts(ws, compiled=False, monkeypatch=monkeypatch)
    assert by_core == by_python
    found = {m.path for m in by_core.matches}
    assert str(ws / "deep" / ("d/" * 60) / ".env").rstrip("/") in found
    assert str(ws / os.fsdecode(b"caf\xe9") / ".env") in found
    assert str(ws / "mirror.git") in by_core.head_dirs


@pytest.mark.parametrize("short_by", [1, 37, "half"])
def test_past_the_entry_bound_both_refuse_alike(ws: Path, monkeypatch: pytest.MonkeyPatch,
                                                short_by: int | str) -> None:
    """A bound the workspace walk runs out of (one entry short, a few dozen, half of it): both refuse to
    start, with the same words."""
    total = _facts(ws, compiled=False, monkeypatch=monkeypatch).entries
    in_walk = sum(len(dirs) + len(files) for _, dirs, files in os.walk(ws))
    bound = total - (in_walk // 2 if short_by == "half" else int(short_by))
    by_python = _facts(ws, compiled=False, monkeypatch=monkeypatch, max_entries=bound)
    by_core = _facts(ws, compiled=True, monkeypatch=monkeypatch, max_entries=bound)
    assert by_core == by_python and by_core[0] == "capped"


def test_a_decision_that_raises_ends_the_walk_with_it(ws: Path) -> None:
    """The Python side of a candidate may fail (a path that vanished, a bug): the core stops and the
    error is the scan's, nothing half-walked is returned."""

    def boom(path: str, name: str, parent: str, kind: str) -> bool:
        raise RuntimeError(f"refused at {name}")

    with pytest.raises(RuntimeError, match=r"refused at \.env"):
        core.glob_walk(str(ws), [".env"], [], [], [], 10_000, boom, [], None)


def _walk_calls(ws: Path, *, compiled: bool, budget: int = 100_000) -> tuple[list[tuple[str, ...]], Any]:
    """Every call of the decision during one workspace walk (what it was asked, in order), and the
    walk's own results: its own patterns (names, parents, prefixes) and a decision that keeps the walk
    out of what it matches named `secrets`."""
    def target(pattern: str) -> Any:
        return scan._Target(pattern, "t", frozenset({Op.READ}), Verdict.DENY, scan.matcher(pattern),
                            scan.literal_prefix(pattern), scan.is_subtree_pattern(pattern))

    names = scan._Names([target(f"{ws}/**/{tail}") for tail in (".env", ".env.*", "hooks/*", "secrets")])
    assert (scan._compiled_glob_walk(names) is not None) is True
    calls: list[tuple[str, ...]] = []

    def on_match(path: str, name: str, parent: str, kind: str) -> bool:
        calls.append((path, name, parent, kind))
        return name == "secrets"

    unreadable: list[str] = []
    heads: list[str] = []
    budget_left = scan._Budget(budget)
    try:
        if compiled:
            scan._glob_walk(ws.as_posix(), names, budget_left, unreadable, {str(ws / "pkg3")}, on_match, heads)
        else:
            scan._glob_walk_here(ws.as_posix(), names, budget_left, unreadable, {str(ws / "pkg3")}.__contains__,
                                 on_match, heads)
        capped = None
    except scan.ScanCapped as exc:
        capped = exc.message
    return calls, (unreadable, heads, budget_left.left, capped)


@pytest.mark.parametrize("budget", [100_000, 60, 7])
def test_the_walk_asks_the_same_questions_in_the_same_order(ws: Path, budget: int) -> None:
    """Below the scan: the core's walk and Python's ask the decision about the same entries (by name, by
    their directory's name, by a name's literal start), in the same order, skip the same pruned and
    matched trees, and note the same unreadable directories and repositories."""
    by_core = _walk_calls(ws, compiled=True, budget=budget)
    by_python = _walk_calls(ws, compiled=False, budget=budget)
    assert by_core == by_python
    if budget == 100_000:
        asked = {c[0] for c in by_core[0]}
        assert str(ws / "husky" / "hooks" / "pre-push") in asked  # by its parent's name
        assert str(ws / "pkg0" / "mod2" / "lib" / ".env.local") in asked  # by its literal start
        assert not any(p.startswith(str(ws / "pkg3") + "/") for p in asked)  # pruned
        assert not any(p.startswith(str(ws / "vault" / "secrets") + "/") for p in asked)  # matched: covered


def test_switched_off_the_scan_walks_in_python_with_the_same_facts(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GUARD_FAST_PATH=0 turns the whole compiled core off, the launch's walks included (guard.sandbox.core)."""
    by_core = _facts(ws, compiled=True, monkeypatch=monkeypatch)
    monkeypatch.setenv("GUARD_FAST_PATH", "0")
    names = scan._Names([])
    assert scan._compiled_glob_walk(names) is None
    assert by_core == _facts(ws, compiled=False, monkeypatch=monkeypatch)
