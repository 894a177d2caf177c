"""Create the agent-state folders a policy grants but that do not exist yet, before the sandbox is built.

Landlock grants attach to existing inodes, so a granted folder missing at launch cannot be granted, and the
agent cannot create it either (that would need a create right on its parent, usually the whole home). On a
fresh machine every agent's first run hits this (`mkdir ~/.claude`, `~/.gemini`, `~/.codex`). So `guard
run` creates them first, as the user who runs it, mode 0700, and says so.

Only what is unambiguous is created: the literal directory of an enforced `allow write` rule written as
`DIR/**`, inside the home, whose parent already exists (one level: `~/.claude`, never a chain such as
`~/go/pkg`), and where the policy's own decision for a file inside is an enforced allow (a write-protected
or asked folder is never created on the agent's behalf).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from guard.model import Action, Op, Verdict
from guard.sandbox.scan import PolicyLike, is_beneath, is_glob


def missing_state_dirs(policy: PolicyLike, home: Path) -> list[str]:
    """The directories `create_state_dirs` would create now (pure but for stat calls)."""
    home_s = os.path.normpath(str(home))
    out: list[str] = []
    for rule in policy.file_rules():
        if rule.verdict is not Verdict.ALLOW or Op.WRITE not in rule.ops or rule.audit_only:
            continue
        for pattern in rule.patterns:
            if not pattern.endswith("/**"):
                continue
            path = os.path.normpath(pattern[:-3])
            if any(is_glob(c) for c in path.split("/")) or path == home_s or not is_beneath(path, home_s):
                continue
            if os.path.lexists(path) or not os.path.isdir(os.path.dirname(path)) or path in out:
                continue
            decide = getattr(policy, "decide", None)
            if callable(decide):
                d = decide(Action(Op.WRITE, os.path.join(path, "state")))
                if d.verdict is not Verdict.ALLOW or d.audit_only:
                    continue
            out.append(path)
    return out


def create_state_dirs(policy: PolicyLike, home: Path) -> list[str]:
    """Create each missing state directory (mode 0700, as the caller); return those created.

    A directory that appears meanwhile is fine (EEXIST); any other failure is left to the agent, which
    then meets the same refusal it would have met without this step."""
    created: list[str] = []
    for path in missing_state_dirs(policy, home):
        try:
            os.mkdir(path, 0o700)
        except OSError:  # EEXIST: created meanwhile; anything else: the agent meets the same refusal
            continue
        created.append(path)
    return created


def describe(created: Sequence[str]) -> str:
    return "created missing agent-state folders the policy grants (mode 0700): " + ", ".join(created)
