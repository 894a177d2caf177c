"""The map of protected symlinks walked on a thread of its own (guard.sandbox.link_names)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from guard.errors import SandboxError
from guard.sandbox.link_names import LinkNames, _walk_links, protected_link_names


def _home(tmp_path: Path, dirs: int = 40) -> tuple[Path, Path]:
    home, outside = tmp_path / "home", tmp_path / "outside"
    outside.mkdir()
    for i in range(dirs):
        d = home / f"d{i}" / "bin"
        d.mkdir(parents=True)
        (outside / f"tool{i}").write_text("x")
        os.symlink(outside / f"tool{i}", d / "tool")
        (d / "plain").write_text("y")
    return home, outside


def test_the_walk_on_its_own_thread_finds_what_the_walk_at_launch_finds(tmp_path: Path) -> None:
    home, _ = _home(tmp_path)
    ws = home / "d3"
    walked = LinkNames.walking([str(home)], skip=[str(ws)]).get()
    assert walked == protected_link_names([str(home)], skip=[str(ws)])
    assert len(walked) == 39 and str(tmp_path / "outside" / "tool3") not in walked


def test_a_cancelled_walk_gives_no_map_rather_than_part_of_one(tmp_path: Path) -> None:
    home, _ = _home(tmp_path)
    seen: list[int] = []

    def cancel_after_three() -> bool:
        seen.append(1)
        return len(seen) > 3

    with pytest.raises(SandboxError, match="stopped before it finished"):  # walked here: asked per directory
        protected_link_names([str(home)], clock=lambda: 0.0, cancelled=cancel_after_three)
    with pytest.raises(SandboxError, match="stopped before it finished"):  # by the core: asked per root
        protected_link_names([str(home)], cancelled=lambda: True)
    names = LinkNames()
    names.cancel()
    names.settle(error="the walk for protected symlinks was stopped before it finished")
    with pytest.raises(SandboxError):
        names.get()


def test_the_time_bound_is_read_on_the_clock_it_is_given(tmp_path: Path) -> None:
    """On its own thread the bound is that thread's CPU time (time.thread_time), which a busy agent
    cannot spend; the walk still stops, with what it found, once its clock says the time is up."""
    home, _ = _home(tmp_path)
    ticks = iter(range(1000))
    partial = protected_link_names([str(home)], seconds=2.5, clock=lambda: float(next(ticks)))
    assert 0 < len(partial) < 40
    assert len(protected_link_names([str(home)], seconds=2.5, clock=lambda: 0.0)) == 40


def test_a_map_is_settled_once() -> None:
    names = LinkNames.known({"/t": ("/l",)})
    assert names.done and names.get() == {"/t": ("/l",)}
    with pytest.raises(SandboxError, match="already settled"):
        names.settle({})


def _tree(tmp_path: Path) -> Path:
    """Directories, files, symlinks (to files, to directories, dangling, to an ancestor), a fifo, an
    unreadable directory, names that are not UTF-8, nested deep: what a real home holds."""
    root = tmp_path / "root"
    for i in range(6):
        for j in range(5):
            d = root / f"a{i}" / f"b{j}" / "c"
            d.mkdir(parents=True)
            (d / "f").write_text("x")
            if (i + j) % 2:
                os.symlink(tmp_path, d / "up")
            if j == 3:
                os.symlink(d / "f", root / f"a{i}" / f"l{j}")
    os.symlink(tmp_path / "missing", root / "dangling")
    os.symlink(root / "a1", root / "a0" / "dirlink")
    os.mkfifo(root / "fifo")
    os.mkdir(root / b"caf\xe9".decode(errors="surrogateescape"))
    os.symlink("f", root / b"caf\xe9".decode(errors="surrogateescape") / "ln")
    locked = root / "locked"
    locked.mkdir()
    os.symlink("x", locked / "hidden")
    locked.chmod(0)
    return root


@pytest.mark.parametrize("budget", [10, 37, 100, 10_000])
def test_the_compiled_walk_is_the_same_walk_entry_for_entry(tmp_path: Path, budget: int) -> None:
    """Differential: the core's walk and the Python walk find the same links in the same order, stop at
    the same directory for the same entry bound, and prune the same trees."""
    core = pytest.importorskip("guard._core", reason="the compiled core is not built")
    root = _tree(tmp_path)
    pruned = frozenset({str(root / "a2"), str(root / "a3" / "b1")})
    try:
        expected: list[str] = []
        left = budget
        stop = 0
        for links, entries in _walk_links(str(root), pruned):
            left -= entries
            expected.extend(links)
            if left <= 0:
                stop = 1
                break
        got, _entries, got_stop = core.walk_links(str(root), sorted(pruned), budget, time.CLOCK_MONOTONIC,
                                                  time.monotonic() + 3600)
        assert (got, got_stop) == (expected, stop)
        assert root.joinpath("a0", "dirlink").as_posix() in got or budget < 100
        assert not any(p.startswith(str(root / "a2") + "/") for p in got)
    finally:
        (root / "locked").chmod(0o755)


def test_on_its_own_thread_the_walk_is_bounded_by_its_own_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside the agent, the walk's bound must be a clock the agent cannot spend: the walking thread's
    CPU time, not the wall clock (an agent keeping both cores busy would stretch wall time past the bound
    and leave links unmapped). The walk itself is the launch's walk, with its entry bound."""
    from guard.sandbox import link_names

    seen: dict[str, object] = {}

    def spy(roots: list[str], **kwargs: object) -> dict[str, tuple[str, ...]]:
        seen.update(kwargs, roots=roots)
        return {}

    monkeypatch.setattr(link_names, "protected_link_names", spy)
    assert LinkNames.walking(["/r"], skip=["/r/ws"]).get() == {}
    assert seen["clock"] is time.thread_time and seen["skip"] == ["/r/ws"] and seen["roots"] == ["/r"]
    assert "max_entries" not in seen and "seconds" not in seen  # the launch's bounds, unchanged
