"""The policy watcher with real inotify: in-place writes and rename-over saves both trigger, reads do not."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from guard.daemon.reload import PolicyWatcher


async def collect(tmp_path: Path, change, settle: float = 0.6) -> list[Path]:  # type: ignore[no-untyped-def]
    seen: list[Path] = []
    got = asyncio.Event()

    def on_change(path: Path) -> None:
        seen.append(path)
        got.set()

    watcher = PolicyWatcher(asyncio.get_running_loop(), on_change, debounce=0.05)
    watcher.start()
    try:
        target = tmp_path / "policy.yaml"
        watcher.watch([target])
        await asyncio.sleep(0.1)
        change(target)
        try:
            await asyncio.wait_for(got.wait(), 5.0)
        except TimeoutError:
            return seen
        await asyncio.sleep(settle)  # let any follow-up events arrive to prove debouncing
        return seen
    finally:
        watcher.stop()


def test_in_place_write_fires_once(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("a: 1\n")
    seen = asyncio.run(collect(tmp_path, lambda p: p.write_text("a: 2\n")))
    assert seen == [tmp_path / "policy.yaml"]


def test_rename_over_the_file_fires(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("a: 1\n")

    def save_like_an_editor(path: Path) -> None:
        tmp = path.with_name(".policy.yaml.swp")
        tmp.write_text("a: 3\n")
        os.replace(tmp, path)

    seen = asyncio.run(collect(tmp_path, save_like_an_editor))
    assert seen == [tmp_path / "policy.yaml"]


def test_reading_or_touching_other_files_does_not_fire(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("a: 1\n")

    def noise(path: Path) -> None:
        path.read_text()
        (path.parent / "unrelated.yaml").write_text("x")

    seen = asyncio.run(collect(tmp_path, noise))
    assert seen == []
