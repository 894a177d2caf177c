"""Environment settings that keep ordinary tools from tripping over the sandbox's refusals.

An honest session of a common tool should end with 0 denied, or "N denied" stops meaning anything:
- `GIT_OPTIONAL_LOCKS=0` when the policy does not let the agent write the workspace's git index (a review
  policy): `git status` otherwise tries to refresh the index (`.git/index.lock`), a pure cache, and every
  run logs a refused write. Git documents the variable for exactly this (background status callers).
- `TAR_OPTIONS=--no-same-owner` (prepended) when the agent runs as root: the sandbox drops CAP_CHOWN, so
  a root `tar x` of an archive owned by other users would fail on every chown; extracting as an ordinary
  user does (files owned by the extractor) is what works under guard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from guard.model import Action, Op, Verdict


def tool_env(policy: Any, workspace: Path, base: Mapping[str, str], *, euid: int) -> dict[str, str]:
    """The variables to add to the agent's environment (the caller's own settings win where they exist)."""
    out: dict[str, str] = {}
    index_lock = os.path.join(str(workspace), ".git", "index.lock")
    decision = policy.decide(Action(Op.WRITE, index_lock))
    if decision.verdict is not Verdict.ALLOW and not decision.audit_only and "GIT_OPTIONAL_LOCKS" not in base:
        out["GIT_OPTIONAL_LOCKS"] = "0"
    if euid == 0:
        user = base.get("TAR_OPTIONS", "")
        if "--same-owner" not in user.split():
            out["TAR_OPTIONS"] = " ".join(x for x in ("--no-same-owner", user) if x)
    return out
