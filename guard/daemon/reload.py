"""Notice edits to policy files so sessions pick them up without a restart.

watchdog watches the *directories* holding each source file, not the files: editors save by writing a
temporary file and renaming it over the original, which a watch on the old inode would miss. Events
arrive on watchdog's thread and are handed to the event loop, debounced per file, because one save is
often several events (truncate, write, close, rename).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger(__name__)

# Events that can change what a file holds. "opened"/"closed_no_write" are left out: the reload itself
# reads the file, and reacting to that would loop.
_CHANGES = frozenset({"modified", "created", "moved", "deleted", "closed"})


class PolicyWatcher:
    """Calls `on_change(path)` on `loop` when a watched file may have changed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[Path], None], *,
                 debounce: float = 0.1) -> None:
        self._loop = loop
        self._on_change = on_change
        self._debounce = debounce
        self._files: frozenset[str] = frozenset()
        self._dirs: dict[str, ObservedWatch] = {}
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        self._observer: BaseObserver = Observer()
        self._observer.daemon = True
        self._handler = _Handler(self)
        self._started = False

    def start(self) -> None:
        self._observer.start()
        self._started = True

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._started:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._started = False

    def watch(self, files: Iterable[Path]) -> None:
        """Watch exactly these files from now on (called whenever the set of sessions changes)."""
        wanted = frozenset(os.path.abspath(f) for f in files)
        self._files = wanted
        dirs = {os.path.dirname(f) for f in wanted}
        for gone in set(self._dirs) - dirs:
            self._observer.unschedule(self._dirs.pop(gone))
        for new in dirs - set(self._dirs):
            try:
                self._dirs[new] = self._observer.schedule(self._handler, new, recursive=False)
            except OSError as exc:  # the directory vanished: nothing to reload from until it returns
                log.warning("cannot watch %s: %s", new, exc)

    def watched(self) -> frozenset[str]:
        return self._files

    def _from_thread(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGES:
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        for raw in paths:
            text = os.fsdecode(raw) if raw else ""
            if text and text in self._files:
                self._loop.call_soon_threadsafe(self._schedule, Path(text))

    def _schedule(self, path: Path) -> None:
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        self._timers[path] = self._loop.call_later(self._debounce, self._fire, path)

    def _fire(self, path: Path) -> None:
        self._timers.pop(path, None)
        self._on_change(path)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: PolicyWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._watcher._from_thread(event)
