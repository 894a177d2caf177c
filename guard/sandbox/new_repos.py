"""Is a path inside a git repository the session itself created (`git init`, `git clone`)?

The README's promise: repositories the agent creates or clones during a session are its own. A fresh clone
checks out `.github/workflows/`, `.vscode/` and `CLAUDE.md`; asking a human for each stalls every clone.
The ask still holds in the engineer's own trees, so the answer must not be forgeable by the agent:

- the repository is the nearest directory above the path that holds a `.git` entry;
- it is the session's own only if that directory was *born* after the session started. A birth time is
  set by the kernel when the inode is created and no utimes()/touch can change it; renaming an old tree
  keeps its birth time (and renaming one is a write of every path in it, which the supervisor judges).
  `git init` in a directory that existed before (the workspace itself) does not make it new.
- where the file system keeps no birth time, nothing is new: the rule keeps asking (fail closed).

The session (guard.session.Decider) adds one condition: the protected name must lie *inside* the new
repository, as it would at a repository's root (`clone/.github/workflows/ci.yml` reads as
`.github/workflows/ci.yml`). A fresh repository whose directory *is* part of the protected name
(`git init .github`, then `workflows/x.yml`, then `rm -rf .github/.git`) would otherwise plant a CI
workflow in the engineer's repository without an ask.
"""

from __future__ import annotations

import os
import time

from guard.sandbox._syscalls import birth_time_ns


def session_clock_ns() -> int:
    """Now, on the fine realtime clock. The kernel stamps a new inode from the coarse clock (or, with
    multigrain timestamps, the fine one), so anything born before this call has a birth time at or
    before it; a directory born in the next few milliseconds may still read as older (fail closed)."""
    return time.time_ns()


def repository_of(path: str) -> str | None:
    """The nearest directory above `path` (itself excluded) holding a `.git` file or directory."""
    current = os.path.dirname(path.rstrip("/"))
    while current and current != "/":
        if os.path.lexists(os.path.join(current, ".git")):
            return current
        current = os.path.dirname(current)
    return None


def new_repository_of(path: str, since_ns: int) -> str | None:
    """The repository `path` lies in, if its top directory was born after `since_ns`; else None."""
    top = repository_of(path)
    if top is None:
        return None
    born = birth_time_ns(top)
    return top if born is not None and born > since_ns else None


def in_new_repository(path: str, since_ns: int) -> bool:
    """Whether `path` lies in a repository whose top directory was born after `since_ns`."""
    return new_repository_of(path, since_ns) is not None
