"""The session's private layers (guard.runner): made per session, removed at its end, and the leftovers of a
killed `guard run` removed at the next launch."""

from __future__ import annotations

import subprocess
from pathlib import Path

from guard.runner import _private_layers, _remove_private_layers


def test_layers_are_per_session_and_removed_even_when_overlay_left_a_mode_000_directory(tmp_path: Path) -> None:
    root = _private_layers(tmp_path, "s1")
    work = root / "0" / "work" / "work"
    work.mkdir(parents=True)
    (work / "x").write_text("")
    work.chmod(0)
    _remove_private_layers(tmp_path, "s1")
    assert not root.exists()


def test_leftovers_of_a_dead_guard_run_are_removed_at_the_next_launch(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    old = tmp_path / "layers" / "old"
    (old / "0" / "upper").mkdir(parents=True)
    (old / "pid").write_text(str(dead.pid))
    live = tmp_path / "layers" / "live"
    live.mkdir()
    (live / "pid").write_text("1")  # pid 1 is alive
    _private_layers(tmp_path, "new")
    assert not old.exists() and live.exists()
