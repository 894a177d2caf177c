"""Protected names that are symlinks leading out of their protected tree, and the walk that finds them.

`~/.local/bin/ruff` is a symlink into uv's tool cache, which the agent may write: writing the cache's
copy is writing `~/.local/bin/ruff`, though the agent never used that name. So the supervisor judges a
write to such a target (or beneath a linked directory) as a write of the symlink's name as well, and the
compiled fast path never answers for a directory such a link points into or above.

The walk reads up to 20,000 entries of each protected tree (the home, mostly): about 25-35 ms on a real
home, a sixth of a launch. Only writes need its answer, and nothing can write before the agent runs,
so `LinkNames.walking` walks on a thread of its own beside the agent's start, and every consumer asks
`LinkNames.get()`, which waits for the walk to be complete: no write is decided, and no directory is
entered in the fast path's table, without the whole map. `guard run -- true` never waits for it.

Started at launch, the walk races nothing of the agent's: the trees it walks are the ones the agent may
not write (a deny or ask write rule covers them), and the workspace is skipped. Its time bound is the
walking thread's own CPU time, so an agent that keeps the machine busy cannot make it stop early and
leave a link unmapped; the entry bound is the same as ever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from guard.errors import SandboxError
from guard.sandbox.core import compiled

log = logging.getLogger("guard.sandbox")

LINK_SCAN_MAX = 20_000  # entries looked at under each protected tree, at most
LINK_SCAN_S = 1.0  # seconds of the walk's clock in all (wall time at launch, CPU time on its own thread)

LinkMap = Mapping[str, tuple[str, ...]]


def protected_link_names(roots: Iterable[str], *, max_entries: int = LINK_SCAN_MAX,
                         seconds: float = LINK_SCAN_S, skip: Iterable[str] = (),
                         clock: Callable[[], float] = time.monotonic,
                         cancelled: Callable[[], bool] = lambda: False) -> dict[str, tuple[str, ...]]:
    """Symlinks at or under the protected `roots` (existing paths a deny or ask write rule covers, found
    at launch) that lead out of them: canonical target -> the symlinks' own paths. Bounded (entries, and
    `seconds` of `clock`): what is beyond is not mapped.

    `skip`: trees the agent may write (the workspace) are not walked from a root above them: a link
    there names a place the agent may write anyway, so it adds nothing to a decision, and a workspace
    under the home (its node_modules) would spend the whole budget of the home's walk. A protected root
    inside a skipped tree (the workspace's .git/hooks) is still walked.

    `cancelled` is asked after each directory (after each root when the compiled core walks it, bounded
    by the same entries and clock); when it says yes the walk raises SandboxError (a partial map must
    never pass for a whole one)."""
    found: dict[str, list[str]] = {}
    deadline = clock() + seconds
    skipped = tuple(skip)

    def add(link: str, root: str) -> None:
        target = os.path.realpath(link)
        if target == "/" or link.startswith(target + "/"):
            return  # a link to an ancestor of itself (a loop, ~, /) names nothing of its own
        if target != root and not target.startswith(root.rstrip("/") + "/") and os.path.exists(target):
            found.setdefault(target, []).append(link)

    # deepest first: small bin directories (~/.local/bin) before whole toolchain trees (~/.rustup)
    for root in sorted(dict.fromkeys(roots), key=lambda r: -r.count("/")):
        budget = max_entries
        if os.path.islink(root):
            add(root, root)
            continue
        if not os.path.isdir(root):
            continue
        pruned = frozenset(p for p in skipped if p != root and p.startswith(root.rstrip("/") + "/"))
        links, stopped = _walk_root(root, pruned, budget, clock, deadline, cancelled)
        if cancelled():
            raise SandboxError("the walk for protected symlinks was stopped before it finished")
        for path in links:
            add(path, root)
        if stopped == "time":
            log.warning("seccomp supervisor: stopped looking for symlinks at %s (time budget)", root)
            return {k: tuple(v) for k, v in found.items()}
        if stopped == "entries":
            log.warning("seccomp supervisor: stopped looking for symlinks under %s (too many)", root)
    return {k: tuple(v) for k, v in found.items()}


def _walk_root(root: str, pruned: frozenset[str], budget: int, clock: Callable[[], float], deadline: float,
               cancelled: Callable[[], bool]) -> tuple[list[str], str | None]:
    """The symlinks under one root in walk order, and why the walk stopped short ("time", "entries") if it
    did: by the compiled core when it is built and the clock is one it reads (the same walk, without the
    GIL, a third faster), else here."""
    walk = compiled("walk_links")
    clock_id = _CLOCK_IDS.get(clock)
    if walk is not None and clock_id is not None:
        links, _entries, stop = walk(root, sorted(pruned), budget, clock_id, deadline)
        return links, _STOPS[stop]
    out: list[str] = []
    for links, entries in _walk_links(root, pruned):
        if cancelled():
            raise SandboxError("the walk for protected symlinks was stopped before it finished")
        budget -= entries
        out.extend(links)
        if clock() > deadline:
            return out, "time"
        if budget <= 0:
            return out, "entries"
    return out, None


_CLOCK_IDS: dict[Callable[[], float], int] = {time.monotonic: time.CLOCK_MONOTONIC,
                                              time.thread_time: time.CLOCK_THREAD_CPUTIME_ID}
_STOPS: dict[int, str | None] = {0: None, 1: "entries", 2: "time"}


def _walk_links(root: str, pruned: frozenset[str] = frozenset()) -> Iterator[tuple[list[str], int]]:
    """Depth first from `root`, symlinks never followed: (a directory's symlinks, its number of entries).

    The kind comes from the directory entry itself (d_type), so a tree costs one getdents per directory
    and no stat per file: the protected trees include the guard's own interpreter and code (thousands of
    files), and this walk is on the path of every launch. Unreadable directories are skipped, as os.walk
    skips them."""
    stack = [root]
    while stack:
        top = stack.pop()
        links: list[str] = []
        subdirs: list[str] = []
        count = 0
        try:
            with os.scandir(top) as it:
                for entry in it:
                    count += 1
                    try:
                        if entry.is_symlink():
                            links.append(entry.path)
                        elif entry.is_dir(follow_symlinks=False) and entry.path not in pruned:
                            subdirs.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue
        yield links, count
        stack.extend(reversed(subdirs))


class LinkNames:
    """The map of protected symlinks, given whole (`known`) or being walked on a thread (`walking`).

    `get()` returns the whole map, waiting for the walk if it is still going; it raises SandboxError when
    the walk failed or was cancelled, so a consumer fails closed rather than decide without it."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._map: LinkMap = {}
        self._error: str | None = None

    @classmethod
    def known(cls, mapping: LinkMap | None = None) -> LinkNames:
        names = cls()
        names.settle(mapping or {})
        return names

    @classmethod
    def walking(cls, roots: Iterable[str], *, skip: Iterable[str] = ()) -> LinkNames:
        """Start the walk on a daemon thread (its bound is that thread's CPU time: see the module doc)."""
        names = cls()
        roots, skip = list(roots), list(skip)

        def walk() -> None:
            try:
                found = protected_link_names(roots, skip=skip, clock=time.thread_time,
                                             cancelled=names._cancel.is_set)
            except SandboxError as exc:
                names.settle(error=exc.message)
            except Exception as exc:  # fail closed: every consumer will refuse
                log.exception("seccomp supervisor: the walk for protected symlinks failed")
                names.settle(error=f"the walk for protected symlinks failed: {exc!r}")
            else:
                names.settle(found)

        threading.Thread(target=walk, name="guard-link-walk", daemon=True).start()
        return names

    @classmethod
    def of(cls, value: LinkNames | LinkMap | None) -> LinkNames:
        return value if isinstance(value, LinkNames) else cls.known(value)

    def settle(self, mapping: LinkMap | None = None, *, error: str | None = None) -> None:
        """The walk is over: its whole map, or why there is none. Once only; waiters go on."""
        if self._done.is_set():
            raise SandboxError("the map of protected symlinks is already settled")
        self._map, self._error = dict(mapping or {}), error
        self._done.set()

    def get(self) -> LinkMap:
        self._done.wait()
        if self._error is not None:
            raise SandboxError(self._error)
        return self._map

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop a walk still going (the session is ending): it settles with an error, so a get() after
        it raises. A map already whole stays whole."""
        self._cancel.set()
